"""Online evaluation: accuracy and log-loss per model version, cumulative and windowed.

Only predictions whose true label is known count. The table is keyed by device (the key
of the predictions topic, so it is co-partitioned with its source and rebuilt from
``<app id>-evaluation-changelog``); the view adds the devices up per model version.

Record layout (JSON), per device::

    {"models": {"<model>:<version>": {"total": stats, "windows": {"<start>": stats},
                                      "last": <newest scored_at>}},
     "ids": {"first", "last", "watermark"}, "newest": <newest window start>,
     "replayed": n, "late": n, "evicted_models": n}
    stats = {"count", "correct", "log_loss_sum", "outside_top_k"}

Windows are tumbling windows of *scoring* time (``scored_at``), so they say how a model
did lately. A sample is evaluated once, by the first model that scored it: a replayed
input is recognised by its offset, a repeated sample (a row the change stream sent twice,
a re-score after a model swap) by its id within the dedupe horizon (``tables.seen_ids``,
id chunks in the same table); a prediction scored before the oldest kept window is counted
as ``late``. At most ``max_models`` model versions are kept per device (the one scored
least recently goes first, counted in ``evicted_models``), and the oldest windows give way
when a record would outgrow ``max_record_bytes``.

Log-loss from top-k: a prediction carries the probabilities of its top-k classes only
(``top_k`` setting). The loss of a sample is ``-ln p(true class)`` when the true class is
among them, else ``-ln floor`` (``evaluation_log_loss_floor``, 1e-6 by default), and
``outside_top_k`` counts how often the floor stood in. With ``top_k`` at least the number
of classes (10 for digits) the figure is the exact log-loss.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import faust
import numpy as np
import orjson

from edgewise.app.core.context import StageContext, json_schema
from edgewise.app.core.records import Origin
from edgewise.tables.device_roster import stamp
from edgewise.tables.seen_ids import (
    SeenIds,
    id_hashes,
    is_chunk_key,
    is_replay,
    new_ids_state,
    went_back,
)

TABLE = "evaluation"
#: The record layout: a record of another (older) layout is started over, not misread.
LAYOUT = 2


@dataclass(frozen=True)
class EvaluationSpec:
    """Window size, windows kept, and the probability standing in outside the top-k."""

    window: float
    kept: int
    floor: float
    max_models: int = 16
    max_record_bytes: int = 64 * 1024


def true_class_probability(true_labels: np.ndarray, top_labels: np.ndarray,
                           top_probs: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Probability the model gave the true class (``floor`` when not in the top-k, and at
    least ``floor``), and the mask of rows where the true class was in the top-k."""
    match = top_labels == true_labels[:, None]
    found = match.any(axis=1)
    probs = np.where(found, (top_probs * match).sum(axis=1), floor)
    return np.maximum(probs.astype(np.float64), floor), found


def empty_stats() -> dict[str, Any]:
    return {"count": 0, "correct": 0, "log_loss_sum": 0.0, "outside_top_k": 0}


def add_stats(stats: dict[str, Any], correct: np.ndarray, probs: np.ndarray,
              found: np.ndarray) -> None:
    stats["count"] += int(len(correct))
    stats["correct"] += int(correct.sum())
    stats["log_loss_sum"] += float(-np.log(probs).sum())
    stats["outside_top_k"] += int((~found).sum())


def merge_stats(into: dict[str, Any], stats: dict[str, Any]) -> None:
    for name in ("count", "correct", "log_loss_sum", "outside_top_k"):
        into[name] += stats[name]


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """Counts, accuracy and mean log-loss of one stats block."""
    count = stats["count"]
    return {
        "count": count, "correct": stats["correct"],
        "accuracy": round(stats["correct"] / count, 4) if count else None,
        "log_loss": round(stats["log_loss_sum"] / count, 4) if count else None,
        "outside_top_k": stats["outside_top_k"],
    }


def new_evaluation_state() -> dict[str, Any]:
    return {"layout": LAYOUT, "models": {}, "ids": new_ids_state(), "newest": 0.0,
            "replayed": 0, "late": 0, "evicted_models": 0}


def fold_device_evaluation(
    table: MutableMapping[str, Any], seen: SeenIds, device: str, spec: EvaluationSpec,
    model_key: str, ids: list[str], scored_at: float, true_labels: np.ndarray,
    labels: np.ndarray, top_labels: np.ndarray, top_probs: np.ndarray,
    origin: Origin | None = None, hashes: np.ndarray | None = None,
) -> int:
    """Fold the labelled predictions of one batch into a device's evaluation record;
    returns the samples counted. Work is proportional to the batch. ``hashes`` are the
    ``id_hashes`` of all of ``ids`` when the caller has them already."""
    known = np.asarray(true_labels) >= 0
    if not known.any():
        return 0
    state = table.get(device)
    if not state or state.get("layout") != LAYOUT:
        state = new_evaluation_state()  # none yet, or an older edgewise's: start over
    if is_replay(state["ids"], origin):
        state["replayed"] += int(known.sum())
        return 0
    start = math.floor(scored_at / spec.window) * spec.window
    newest = max(state["newest"], start)
    horizon = newest - (spec.kept - 1) * spec.window
    rows = np.flatnonzero(known)
    if start < horizon:
        state["late"] += len(rows)
        return 0
    state["newest"] = newest
    ids_known = seen.known(table, device, state["ids"])
    hashes = id_hashes([ids[i] for i in rows]) if hashes is None else hashes[rows]
    fresh = seen.fresh(ids_known, hashes)
    state["replayed"] += int((~fresh).sum())
    rows = rows[fresh]
    if len(rows):
        truth = np.asarray(true_labels)[rows]
        probs, found = true_class_probability(truth, np.asarray(top_labels)[rows],
                                              np.asarray(top_probs)[rows], spec.floor)
        correct = np.asarray(labels)[rows] == truth
        model = _model(state, model_key, spec)
        model["last"] = max(model["last"], scored_at)
        add_stats(model["total"], correct, probs, found)
        add_stats(model["windows"].setdefault(repr(float(start)), empty_stats()), correct,
                  probs, found)
    for other in state["models"].values():
        other["windows"] = {k: v for k, v in other["windows"].items() if float(k) >= horizon}
    seen.record(table, device, state["ids"], ids_known, hashes[fresh], origin, scored_at)
    stamp(state, origin)
    _bound(state, spec)
    table[device] = state
    return int(len(rows))


def _model(state: dict[str, Any], model_key: str, spec: EvaluationSpec) -> dict[str, Any]:
    models = state["models"]
    if model_key not in models and len(models) >= spec.max_models:
        del models[min(models, key=lambda k: models[k]["last"])]
        state["evicted_models"] = state.get("evicted_models", 0) + 1
    return models.setdefault(model_key, {"total": empty_stats(), "windows": {}, "last": 0.0})


def _bound(state: dict[str, Any], spec: EvaluationSpec) -> None:
    """Drop the oldest windows until the record fits (cumulative totals stay)."""
    while len(orjson.dumps(state)) > spec.max_record_bytes:
        starts = [float(k) for m in state["models"].values() for k in m["windows"]]
        if not starts:
            return
        oldest = repr(min(starts))
        for model in state["models"].values():
            model["windows"].pop(oldest, None)


def evaluation_view(states: list[dict[str, Any]], window: float) -> dict[str, Any]:
    """Per model version: cumulative figures and the kept windows (newest first), summed
    over the given device states."""
    totals: dict[str, dict[str, Any]] = {}
    windows: dict[str, dict[str, dict[str, Any]]] = {}
    replayed = late = 0
    for state in states:
        replayed += state.get("replayed", 0)
        late += state.get("late", 0)
        for model_key, model in state.get("models", {}).items():
            merge_stats(totals.setdefault(model_key, empty_stats()), model["total"])
            per_window = windows.setdefault(model_key, {})
            for start, stats in model["windows"].items():
                merge_stats(per_window.setdefault(start, empty_stats()), stats)
    models = {}
    for model_key in sorted(totals, key=_model_order):
        models[model_key] = {
            "cumulative": summarize(totals[model_key]),
            "windows": [
                {"start": float(start), "end": float(start) + window, **summarize(stats)}
                for start, stats in sorted(windows[model_key].items(),
                                           key=lambda kv: float(kv[0]), reverse=True)
            ],
        }
    return {"models": models, "window_seconds": window, "replayed": replayed, "late": late}


def _model_order(model_key: str) -> tuple[str, int]:
    name, _, version = model_key.rpartition(":")
    return (name, int(version) if version.isdigit() else -1)


def evaluation_spec(ctx: StageContext) -> EvaluationSpec:
    s = ctx.settings
    return EvaluationSpec(s.evaluation_window_seconds, s.evaluation_windows_kept,
                          s.evaluation_log_loss_floor, s.evaluation_max_models,
                          s.table_record_max_bytes)


def define(ctx: StageContext) -> faust.Table:
    """Create the evaluation table and serve it at ``/api/evaluation``.

    ``?device=<prefix>`` narrows the sum to devices whose id starts with the prefix (say
    ``cdc:`` for rows from the change stream). Each worker answers for the partitions it
    owns, as ``/api/devices`` does.
    """
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="accuracy and log-loss per device and model version, cumulative and windowed",
    )
    table.stale = went_back  # a dropped worker's late write never rebuilds a device
    spec = evaluation_spec(ctx)

    @ctx.app.page("/api/evaluation")
    async def evaluation(web: Any, request: Any) -> Any:
        prefix = request.query.get("device", "")
        states = [state for device, state in table.items()
                  if device.startswith(prefix) and not is_chunk_key(device)]
        view = evaluation_view(states, spec.window)
        view.update(devices=len(states), worker=ctx.app.conf.id, partitions="this worker's",
                    log_loss_floor=spec.floor, top_k=ctx.settings.top_k)
        return web.json(view)

    return table
