"""review: keeps routed predictions in the review table, keyed by sample id.

The review topic is keyed by sample id, so the table is co-partitioned with it and a
replayed item simply overwrites itself.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.context import StageContext
from edgewise.app.frames import BadInput, json_object
from edgewise.app.records import ReviewItem
from edgewise.tables import review_queue

STAGE = "review"


def parse_review_item(raw: bytes) -> dict[str, Any]:
    """A review item as a dict, validated; BadInput otherwise."""
    doc = json_object(raw, "review item")
    doc.pop("__faust", None)
    missing = [f for f in ReviewItem._options.fields if f not in doc and
               f not in ReviewItem._options.defaults]
    if missing:
        raise BadInput("missing_field", ", ".join(sorted(missing)))
    if not isinstance(doc["id"], str) or not isinstance(doc["confidence"], int | float):
        raise BadInput("bad_field", "id must be a string and confidence a number")
    return doc


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
        async for item in ctx.decoded(stream, STAGE, source, parse_review_item):
            table[item["id"]] = keep_image_url(table.get(item["id"]), item)
            ctx.count(STAGE, samples=1)
