"""aggregate: prediction batches folded into tumbling and hopping windows per device.

One device record write (plus its id chunk) per gathered group of batches: a device's, see
``tables.gathering``. A replayed input is recognised by its offset and a repeated sample by
its id, so nothing is counted twice (see ``tables.seen_ids``), at a cost proportional to
the batch.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

import numpy as np

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import Origin, PredictionBatch, joined_predictions
from edgewise.models.review_rule import route_low_confidence
from edgewise.tables import device_windows
from edgewise.tables.device_roster import DeviceRoster, evict_silent_devices
from edgewise.tables.gathering import batch_group, batch_owner, unfolded
from edgewise.tables.seen_ids import SeenIds, id_hashes
from edgewise.tables.windows import WindowSpec, fold_device_batch

STAGE = "aggregate"


def fold_prediction_batch(
    table: MutableMapping[str, Any], seen: SeenIds, batch: PredictionBatch, spec: WindowSpec,
    low_confidence: float, min_margin: float, origin: Origin | None = None,
    hashes: np.ndarray | None = None,
) -> int:
    """Fold one batch into its device's window record; returns the samples counted."""
    low = route_low_confidence(batch.confidence, batch.margins(), low_confidence, min_margin)
    rows = {
        "timestamps": batch.timestamps, "labels": batch.labels,
        "confidence": batch.confidence, "low": low, "true_labels": batch.true_labels,
        "latency_ms": batch.latency_ms,
    }
    return fold_device_batch(table, seen, batch.device, spec,
                             f"{batch.model}:{batch.model_version}", batch.ids, rows, origin,
                             hashes)


def register(ctx: StageContext) -> None:
    """Attach the window table, its views and the aggregate agent to the app."""
    settings = ctx.settings
    table = device_windows.define(ctx)
    spec = device_windows.window_spec(ctx)
    seen = SeenIds(settings.dedupe_seconds, settings.dedupe_max_ids)
    roster = DeviceRoster(settings.device_max_age_seconds, settings.device_max_count)
    source = ctx.names.predictions

    @ctx.agent(ctx.topic(source), name="edgewise.aggregate", stage=STAGE)
    async def aggregate(stream: Any) -> None:
        async def handle(members: list[tuple[PredictionBatch, Origin, bytes]]) -> None:
            batches, origin = unfolded(table, members)
            if not batches:
                return
            batch = joined_predictions(batches)
            counted = fold_prediction_batch(
                table, seen, batch, spec, settings.low_confidence, settings.min_margin,
                origin, np.concatenate([ctx.id_hashes(b, id_hashes) for b in batches]))
            evict_silent_devices(roster, table, seen.drop, origin.partition, batch.device)
            if counted:
                ctx.metrics.observe_latencies((time.time() - batch.timestamps) * 1000.0,
                                              ctx.metrics.window_latency)
            ctx.count(STAGE, samples=counted)

        await ctx.gathered(stream, STAGE, source, ctx.decode_predictions, batch_group, handle,
                           settings.fold_take, settings.fold_take_within, batch_owner)

