"""review: keeps routed predictions in the review table, keyed by sample id, within bounds.

The review topic is keyed by sample id, so the table is co-partitioned with it and a
replayed item simply overwrites itself. Each item arriving on a partition also evicts that
partition's items past the age or count bound (``tables.review_queue``); an item too large
even without its pixels is dead-lettered.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import Origin
from edgewise.tables import review_queue

STAGE = "review"


def register(ctx: StageContext) -> None:
    """Attach the review table, its view and the review agent to the app."""
    queue = review_queue.define(ctx)
    source = ctx.names.review

    @ctx.agent(ctx.topic(source), name="edgewise.review", stage=STAGE)
    async def review(stream: Any) -> None:
        async def handle(item: dict[str, Any], origin: Origin, raw: bytes) -> None:
            try:
                queue.keep(item, origin.partition)
            except BadInput as exc:
                await ctx.dead_letter(STAGE, exc, raw, source)
                return
            ctx.count(STAGE, samples=1)

        await ctx.each(stream, STAGE, source, ctx.boundary.review_item, handle)
