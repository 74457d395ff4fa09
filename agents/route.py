"""route: low-confidence predictions go to the review topic, in groups by partition.

The rule: confidence below ``low_confidence`` or a top-2 margin below ``min_margin``.
A frame's routed items travel as one record per partition their sample ids hash to
(``core.review_groups``), so the review topic stays co-partitioned with the corrections
topic and the review table, at a record per partition instead of one per item. The review
stage keeps each group as one record of the review table.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import (
    TABULAR,
    Origin,
    PredictionBatch,
    ReviewItem,
    row_values,
    top_k_pairs,
)
from edgewise.app.core.review_groups import encode_review_groups
from edgewise.models.review_rule import review_reasons, route_low_confidence

STAGE = "route"


def review_items(batch: PredictionBatch, low: float, min_margin: float) -> list[ReviewItem]:
    """Review items for the routed predictions of one batch: an image sample's carry its
    pixels, a tabular sample's its row."""
    margins = batch.margins()
    tabular = batch.kind == TABULAR
    mask = route_low_confidence(batch.confidence, margins, low, min_margin)
    items = []
    for i in np.flatnonzero(mask):
        conf, margin = float(batch.confidence[i]), float(margins[i])
        items.append(ReviewItem(
            id=batch.ids[i], device=batch.device, model=batch.model,
            model_version=batch.model_version, label=int(batch.labels[i]), confidence=conf,
            margin=margin,
            top_k=top_k_pairs(batch.top_labels[i], batch.top_probs[i]),
            image_b64="" if tabular else base64.b64encode(batch.pixels[i].tobytes()).decode(),
            shape=list(batch.pixels.shape[1:]), timestamp=float(batch.timestamps[i]),
            true_label=None if batch.true_labels[i] < 0 else int(batch.true_labels[i]),
            reason=review_reasons(conf, margin, low, min_margin), kind=batch.kind,
            row=row_values(batch.pixels[i]) if tabular else None,
        ))
    return items


def register(ctx: StageContext) -> None:
    """Attach the route agent to the app."""
    settings = ctx.settings
    source = ctx.names.predictions

    @ctx.agent(ctx.topic(source), name="edgewise.route", stage=STAGE)
    async def route(stream: Any) -> None:
        async def handle(batch: PredictionBatch, origin: Origin, raw: bytes) -> None:
            items = review_items(batch, settings.low_confidence, settings.min_margin)
            groups = encode_review_groups((item.asdict() for item in items),
                                          settings.partitions, ctx.boundary.review_group_bytes)
            # handed to the producer together: one waiting for its partition's batch does
            # not hold back the others
            await asyncio.gather(*(ctx.send(STAGE, ctx.names.review, group.key, group.value,
                                            source, partition=group.partition)
                                   for group in groups))
            ctx.metrics.record_routed(len(batch), len(items))
            ctx.count(STAGE, events_out=len(groups), samples=len(batch))

        await ctx.each(stream, STAGE, source, ctx.decode_predictions, handle)
