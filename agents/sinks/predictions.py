"""sink_predictions: every prediction into PostgreSQL, one row per sample.

Reads the predictions topic and upserts each prediction (device, sample id, kind, model
and version, label, confidence, top-k labels and probabilities, true label, latency, the
sample's time and when it was scored) into ``sink_predictions_table`` (created when
missing; see ``sinks.tables``: keyed by device and sample id, the newest scoring wins, a
BRIN index on the sample's time). A gathering's input is committed only once its rows are
(``sinks.gathering``), so a killed worker or a restarted database loses nothing, and the
upsert makes what is written again change nothing. Replicas share the topic's partitions.
"""

from __future__ import annotations

from typing import Any

from edgewise.agents.sinks.columns import prediction_params
from edgewise.agents.sinks.gathering import sink_for, sink_gatherings
from edgewise.agents.sinks.tables import predictions_table
from edgewise.app.core.context import StageContext

STAGE = "sink_predictions"


def register(ctx: StageContext) -> None:
    """Attach the predictions sink to the app (refused at start without a DSN)."""
    sink = sink_for(ctx, STAGE, predictions_table(ctx.settings.sink_predictions_table))
    source = ctx.names.predictions

    @ctx.agent(ctx.topic(source), name="edgewise.sink_predictions", stage=STAGE)
    async def sink_predictions(stream: Any) -> None:
        await sink_gatherings(ctx, stream, STAGE, source, ctx.decode_predictions,
                              prediction_params, sink)
