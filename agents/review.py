"""review: keeps routed predictions in the review table, keyed by sample id.

The review topic is keyed by sample id, so the table is co-partitioned with it and a
replayed item simply overwrites itself.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.tables import review_queue

STAGE = "review"


def keep_image_url(existing: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """The item to keep: a replay without the stored image's URL must not lose it."""
    if existing and existing.get("image_url") and not item.get("image_url"):
        return {**item, "image_url": existing["image_url"]}
    return item


def register(ctx: StageContext) -> None:
    """Attach the review table, its view and the review agent to the app."""
    table = review_queue.define(ctx)
    source = ctx.names.review

    @ctx.app.agent(ctx.topic(source), name="edgewise.review")
    async def review(stream: Any) -> None:
        async for item in ctx.decoded(stream, STAGE, source, ctx.boundary.review_item):
            table[item["id"]] = keep_image_url(table.get(item["id"]), item)
            ctx.count(STAGE, samples=1)
