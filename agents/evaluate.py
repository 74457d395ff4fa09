"""evaluate: predictions with a known true label folded into accuracy and log-loss.

Reads the predictions topic (as aggregate does, in its own consumer group when run as its
own worker) and keeps, per device and model version, cumulative and windowed figures in
the changelog-backed ``evaluation`` table (see ``tables.evaluation``), served at
``/api/evaluation``. One record write per labelled batch; each sample counted once.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import Origin, PredictionBatch
from edgewise.tables import evaluation
from edgewise.tables.evaluation import EvaluationSpec, fold_device_evaluation
from edgewise.tables.seen_ids import SeenIds

STAGE = "evaluate"


def evaluate_batch(table: MutableMapping[str, Any], seen: SeenIds, batch: PredictionBatch,
                   spec: EvaluationSpec, origin: Origin | None = None) -> int:
    """Fold one prediction batch into its device's evaluation record; returns the count."""
    return fold_device_evaluation(
        table, seen, batch.device, spec, f"{batch.model}:{batch.model_version}", batch.ids,
        batch.scored_at, batch.true_labels, batch.labels, batch.top_labels, batch.top_probs,
        origin)


def register(ctx: StageContext) -> None:
    """Attach the evaluation table, its view and the evaluate agent to the app."""
    table = evaluation.define(ctx)
    spec = evaluation.evaluation_spec(ctx)
    seen = SeenIds(ctx.settings.dedupe_seconds, ctx.settings.dedupe_max_ids)
    source = ctx.names.predictions

    @ctx.agent(ctx.topic(source), name="edgewise.evaluate", stage=STAGE)
    async def evaluate(stream: Any) -> None:
        async for batch, origin, _ in ctx.decoded_events(stream, STAGE, source,
                                                      ctx.decode_predictions):
            ctx.count(STAGE, samples=evaluate_batch(table, seen, batch, spec, origin))
