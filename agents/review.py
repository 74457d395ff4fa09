"""review: keeps routed predictions in the review table, a group to a record, within bounds.

A record of the review topic carries a group of items whose sample ids all hash to the
record's partition (``core.review_groups``). The table keeps the group's items as one
record keyed by its first id, so it is co-partitioned with the topic and costs one
changelog write per group; a replayed item, or one sent again in another group (the image
sink's copy with its URL), replaces its earlier copy (``tables.review_queue``). Each item
is checked on its own: one that fails its checks, is on a partition its id does not belong
to, or is too large even without its pixels is dead-lettered alone, with its reason, and
the rest of its group is kept. Each group also evicts its partition's items past the age or
count bound.
"""

from __future__ import annotations

from typing import Any

import orjson

from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import Origin
from edgewise.app.core.review_groups import ReviewGroup, check_partition
from edgewise.tables import review_queue

STAGE = "review"


def register(ctx: StageContext) -> None:
    """Attach the review table, its view and the review agent to the app."""
    queue = review_queue.define(ctx)
    source = ctx.names.review
    partitions = ctx.settings.partitions

    @ctx.agent(ctx.topic(source), name="edgewise.review", stage=STAGE)
    async def review(stream: Any) -> None:
        async def handle(group: ReviewGroup, origin: Origin, raw: bytes) -> None:
            def original(item: dict[str, Any]) -> bytes:  # what its dead letter carries
                return raw if len(group.items) == 1 and not group.refused else orjson.dumps(item)

            for data, exc, key in group.refused:
                await ctx.dead_letter(STAGE, exc, data, source, key)
            placed = []
            for item in group.items:
                try:
                    check_partition(item, origin.partition, partitions)
                except BadInput as exc:
                    await ctx.dead_letter(STAGE, exc, original(item), source, item["id"].encode())
                    continue
                placed.append(item)
            kept, refused = queue.keep_all(placed, origin.partition)
            for item, exc in refused:
                await ctx.dead_letter(STAGE, exc, original(item), source, item["id"].encode())
            ctx.count(STAGE, samples=kept)

        await ctx.each(stream, STAGE, source, ctx.boundary.review_group, handle)
