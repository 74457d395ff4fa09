"""The review queue: low-confidence predictions keyed by sample id, and its views (the list,
and each item's image: the stored object it points to, or its inline pixels as a PNG)."""

from __future__ import annotations

from typing import Any

import faust
from aiohttp import web as aioweb

from edgewise.app.adapters.object_store import ImageStore, ObjectNotFound, store_for
from edgewise.app.adapters.review_images import review_png
from edgewise.app.core.context import StageContext, json_schema
from edgewise.app.core.frames import BadInput

TABLE = "review_queue"
MAX_LIMIT = 1000


def define(ctx: StageContext) -> faust.Table:
    """Create the table and attach ``/api/review``."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="predictions waiting for a person, keyed by sample id",
    )
    store = store_for(ctx.settings)

    @ctx.app.on_before_shutdown.connect
    async def close_store(app: Any, **kwargs: Any) -> None:
        await store.close()

    @ctx.app.page("/api/review")
    async def review(web: Any, request: Any) -> Any:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise aioweb.HTTPBadRequest(text="limit must be a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise aioweb.HTTPBadRequest(text=f"limit must be 1..{MAX_LIMIT}")
        items = sorted(table.values(), key=lambda item: item["confidence"])[:limit]
        items = [{**item, "image": f"/api/review/{item['id']}/image"} for item in items]
        return web.json({"items": items, "count": len(items), "queued": len(table)})

    @ctx.app.page("/api/review/{item_id}/image")
    @ctx.app.table_route(table=table, match_info="item_id")
    async def review_image(web: Any, request: Any, item_id: str) -> Any:
        item = table.get(item_id)
        if item is None:
            raise aioweb.HTTPNotFound(text=f"no review item {item_id}")
        try:
            body = await review_image_bytes(item, store)
        except (ObjectNotFound, BadInput) as exc:
            raise aioweb.HTTPNotFound(text=f"no image for review item {item_id}: {exc}") from None
        return web.bytes(body, content_type="image/png")

    return table


async def review_image_bytes(item: dict[str, Any], store: ImageStore) -> bytes:
    """The stored object the item points to, or a PNG of its inline pixels."""
    if item.get("image_url"):
        body, _ = await store.get(item["image_url"])
        return body
    return review_png(item)
