"""correct: corrections from the station folded into the corrections table, their review
items settled, and the corrected accuracy per model version kept.

The corrections topic is keyed by sample id and co-partitioned with the review topic, so a
correction reaches the worker that holds its review item, on the same partition: the item
is deleted there (a tombstone through the review table's changelog), and a correction taken
back puts the item in the queue again. A sample corrected once is settled: a late copy of
its item (a replay, the image sink's copy) is not queued again. The stage therefore runs in
the worker that runs review (``--stage review --stage correct``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.corrections import parse_correction
from edgewise.app.core.records import Origin
from edgewise.app.core.settings import SettingsError
from edgewise.tables import correction_views, corrections, review_queue
from edgewise.tables.corrections import Applied, CorrectionStore
from edgewise.tables.review_queue import ReviewQueue

STAGE = "correct"


def settle(store: CorrectionStore, queue: ReviewQueue, record: dict[str, Any],
           partition: int) -> Applied:
    """Fold one correction, then settle its review item: out of the queue when a label
    stands, back in it when the correction was taken back."""
    applied = store.apply(record, partition)
    if applied.action == "set":
        queue.resolve(record["id"])
    elif applied.action == "retracted":
        item = record.get("item") or (applied.previous or {}).get("item")
        if item:
            queue.keep(item, partition)
    return applied


def register(ctx: StageContext) -> None:
    """Attach the corrections table, its views and the correct agent to the app."""
    queue = review_queue.queue_for(ctx.app)
    if queue is None:
        raise SettingsError("the correct stage settles review items: run it in the worker "
                            "that runs review (--stage review --stage correct)")
    store = corrections.define(ctx)
    queue.settled = store.is_corrected
    correction_views.define(ctx, store, queue)
    settings = ctx.settings
    source = ctx.names.corrections
    decode = partial(parse_correction, max_bytes=settings.max_message_bytes,
                     future_skew=settings.future_skew_seconds)

    @ctx.agent(ctx.topic(source), name="edgewise.correct", stage=STAGE)
    async def correct(stream: Any) -> None:
        async def handle(record: dict[str, Any], origin: Origin, raw: bytes) -> None:
            applied = settle(store, queue, record, origin.partition)
            ctx.count(STAGE, samples=int(applied.action != "unchanged"))

        await ctx.each(stream, STAGE, source, decode, handle)
