"""evaluate: predictions with a known true label folded into accuracy and log-loss.

Reads the predictions topic (as aggregate does, in its own consumer group when run as its
own worker) and keeps, per device and model version, cumulative and windowed figures in
the changelog-backed ``evaluation`` table (see ``tables.evaluation``), served at
``/api/evaluation``. One table write per batch; idempotent by sample id.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import PredictionBatch
from edgewise.tables import evaluation
from edgewise.tables.evaluation import EvaluationSpec, fold_evaluation

STAGE = "evaluate"


def evaluate_batch(state: dict[str, Any] | None, batch: PredictionBatch,
                   spec: EvaluationSpec) -> tuple[dict[str, Any], int]:
    """Fold one prediction batch into its device's evaluation state (pure)."""
    return fold_evaluation(
        state, spec, f"{batch.model}:{batch.model_version}", batch.ids, batch.scored_at,
        batch.true_labels, batch.labels, batch.top_labels, batch.top_probs)


def register(ctx: StageContext) -> None:
    """Attach the evaluation table, its view and the evaluate agent to the app."""
    table = evaluation.define(ctx)
    spec = evaluation.evaluation_spec(ctx)
    source = ctx.names.predictions

    @ctx.app.agent(ctx.topic(source), name="edgewise.evaluate")
    async def evaluate(stream: Any) -> None:
        async for batch in ctx.decoded(stream, STAGE, source, ctx.decode_predictions):
            if not (batch.true_labels >= 0).any():
                continue
            state, counted = evaluate_batch(table.get(batch.device), batch, spec)
            table[batch.device] = state
            ctx.count(STAGE, samples=counted)
