"""evaluate: predictions with a known true label folded into accuracy and log-loss.

Reads the predictions topic (as aggregate does, in its own consumer group when run as its
own worker) and keeps, per device and model version, cumulative and windowed figures in
the changelog-backed ``evaluation`` table (see ``tables.evaluation``), served at
``/api/evaluation``. One record write per gathered group of labelled batches (see
``tables.gathering``); each sample counted once.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import numpy as np

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import Origin, PredictionBatch, joined_predictions
from edgewise.tables import evaluation
from edgewise.tables.device_roster import DeviceRoster, evict_silent_devices
from edgewise.tables.evaluation import EvaluationSpec, fold_device_evaluation
from edgewise.tables.gathering import batch_group, batch_owner, unfolded
from edgewise.tables.seen_ids import SeenIds, id_hashes

STAGE = "evaluate"


def evaluate_batch(table: MutableMapping[str, Any], seen: SeenIds, batch: PredictionBatch,
                   spec: EvaluationSpec, origin: Origin | None = None,
                   hashes: np.ndarray | None = None) -> int:
    """Fold one prediction batch into its device's evaluation record; returns the count."""
    return fold_device_evaluation(
        table, seen, batch.device, spec, f"{batch.model}:{batch.model_version}", batch.ids,
        batch.scored_at, batch.true_labels, batch.labels, batch.top_labels, batch.top_probs,
        origin, hashes)


def register(ctx: StageContext) -> None:
    """Attach the evaluation table, its view and the evaluate agent to the app."""
    table = evaluation.define(ctx)
    spec = evaluation.evaluation_spec(ctx)
    settings = ctx.settings
    seen = SeenIds(settings.dedupe_seconds, settings.dedupe_max_ids)
    roster = DeviceRoster(settings.device_max_age_seconds, settings.device_max_count)
    source = ctx.names.predictions

    @ctx.agent(ctx.topic(source), name="edgewise.evaluate", stage=STAGE)
    async def evaluate(stream: Any) -> None:
        async def handle(members: list[tuple[PredictionBatch, Origin, bytes]]) -> None:
            batches, origin = unfolded(table, members)
            labelled = [b for b in batches if (b.true_labels >= 0).any()]
            if not labelled:
                return
            batch = joined_predictions(labelled)
            hashes = np.concatenate([ctx.id_hashes(b, id_hashes) for b in labelled])
            ctx.count(STAGE, samples=evaluate_batch(table, seen, batch, spec, origin, hashes))
            evict_silent_devices(roster, table, seen.drop, origin.partition, batch.device)

        def group(batch: PredictionBatch, origin: Origin) -> tuple[Any, ...]:
            return (*batch_group(batch, origin), math.floor(batch.scored_at / spec.window))

        await ctx.gathered(stream, STAGE, source, ctx.decode_predictions, group, handle,
                           settings.fold_take, settings.fold_take_within, batch_owner)
