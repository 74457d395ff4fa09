"""sink_samples: the raw samples into PostgreSQL, kept for training later.

Reads the samples topic and archives every sample (device, sample id, kind, time, true
label, shape, and its pixels as bytes or its tabular row with NULL where a value is
missing) in ``sink_samples_table`` (created when missing; see ``sinks.tables``: keyed by
device and sample id, the first copy stays, a BRIN index on the sample's time). Commits
follow the writes as in ``sink_predictions``; replicas share the topic's partitions.
"""

from __future__ import annotations

from typing import Any

from edgewise.agents.sinks.columns import sample_params
from edgewise.agents.sinks.gathering import sink_for, sink_gatherings
from edgewise.agents.sinks.tables import samples_table
from edgewise.app.core.context import StageContext

STAGE = "sink_samples"


def register(ctx: StageContext) -> None:
    """Attach the samples sink to the app (refused at start without a DSN)."""
    sink = sink_for(ctx, STAGE, samples_table(ctx.settings.sink_samples_table))
    source = ctx.names.samples

    @ctx.agent(ctx.topic(source), name="edgewise.sink_samples", stage=STAGE)
    async def sink_samples(stream: Any) -> None:
        await sink_gatherings(ctx, stream, STAGE, source, ctx.boundary.samples,
                              sample_params, sink)
