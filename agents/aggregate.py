"""aggregate: prediction batches folded into tumbling and hopping windows per device.

One table write per batch; idempotent by sample id (see ``tables.windows``).
"""

from __future__ import annotations

from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import PredictionBatch
from edgewise.models.review_rule import route_low_confidence
from edgewise.tables import device_windows
from edgewise.tables.windows import WindowSpec, fold_batch

STAGE = "aggregate"


def fold_prediction_batch(
    state: dict[str, Any] | None, batch: PredictionBatch, spec: WindowSpec,
    low_confidence: float, min_margin: float,
) -> tuple[dict[str, Any], int]:
    """Fold one batch into a device's window state (pure)."""
    low = route_low_confidence(batch.confidence, batch.margins(), low_confidence, min_margin)
    rows = {
        "timestamps": batch.timestamps, "labels": batch.labels,
        "confidence": batch.confidence, "low": low, "true_labels": batch.true_labels,
        "latency_ms": batch.latency_ms,
    }
    return fold_batch(state, spec, f"{batch.model}:{batch.model_version}", batch.ids, rows)


def register(ctx: StageContext) -> None:
    """Attach the window table, its views and the aggregate agent to the app."""
    settings = ctx.settings
    table = device_windows.define(ctx)
    spec = device_windows.window_spec(ctx)
    source = ctx.names.predictions

    @ctx.app.agent(ctx.topic(source), name="edgewise.aggregate")
    async def aggregate(stream: Any) -> None:
        async for batch in ctx.decoded(stream, STAGE, source, ctx.decode_predictions):
            state, counted = fold_prediction_batch(
                table.get(batch.device), batch, spec, settings.low_confidence,
                settings.min_margin)
            table[batch.device] = state
            ctx.count(STAGE, samples=counted)
