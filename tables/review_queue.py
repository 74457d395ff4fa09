"""The review queue: low-confidence predictions keyed by sample id, and its view."""

from __future__ import annotations

from typing import Any

import faust
from aiohttp import web as aioweb

from edgewise.app.context import StageContext, json_schema

TABLE = "review_queue"
MAX_LIMIT = 1000


def define(ctx: StageContext) -> faust.Table:
    """Create the table and attach ``/api/review``."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="predictions waiting for a person, keyed by sample id",
    )

    @ctx.app.page("/api/review")
    async def review(web: Any, request: Any) -> Any:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise aioweb.HTTPBadRequest(text="limit must be a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise aioweb.HTTPBadRequest(text=f"limit must be 1..{MAX_LIMIT}")
        items = sorted(table.values(), key=lambda item: item["confidence"])[:limit]
        return web.json({"items": items, "count": len(items), "queued": len(table)})

    return table
