"""Window maths and per-window statistics, as pure functions over plain dicts.

A device's record in the window table holds its windows' statistics; which samples it
already counted is tracked by ``tables.seen_ids`` (a source-offset watermark in the same
record, and id chunks beside it), so a replay or a repeated sample is never counted twice.

Record layout (JSON)::

    {"tumbling": {"<start>": {"total": stats, "models": {"<model>:<version>": stats}}},
     "hopping": {...}, "ids": {"first", "last", "watermark": {"<partition>": offset}},
     "newest": <newest sample time>, "late": n, "replayed": n, "evicted_windows": n}
    stats = {"count", "labels": {"<label>": n}, "conf_sum", "conf_min", "low", "labelled",
             "correct", "latency": {"<bucket>": n}, "confidence": {"<tenth>": n}}

Bounded whatever the rate: at most ``max_models`` model versions per window (the smallest
is folded into ``(other)``; the window's total keeps everything), at most ``max_labels``
labels per stats (the rest under ``other``), a sparse latency histogram, and when a record
still outgrows ``max_record_bytes`` its oldest closed windows are evicted and counted.

Lateness, said out loud: a window accepts samples until it falls out of the newest
``kept`` windows of its kind (measured against the newest sample time of the device);
samples older than the oldest kept tumbling window are counted in ``late`` and dropped.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgewise.app.core.records import Origin
from edgewise.tables.device_roster import stamp
from edgewise.tables.seen_ids import SeenIds, id_hashes, is_replay, new_ids_state

LATENCY_BUCKETS = 80
CONFIDENCE_BINS = 10  # the confidence histogram: tenths of 0..1
LATENCY_BASE_MS = 0.1
LATENCY_FACTOR = 2 ** 0.25  # each bucket 19% wider than the last: 0.1 ms .. ~100 s
OTHER_MODELS = "(other)"
#: The record layout: a record of another (older) layout is started over, not misread.
LAYOUT = 2
OTHER_LABELS = "other"


@dataclass(frozen=True)
class WindowSpec:
    """Sizes of the two window kinds, how many are kept, and the record's bounds."""

    tumbling: float
    hopping: float
    step: float
    kept: int
    max_models: int = 4
    max_labels: int = 100
    max_record_bytes: int = 64 * 1024


def tumbling_starts(ts: np.ndarray, size: float) -> np.ndarray:
    """Start of the tumbling window of each timestamp."""
    return np.floor(ts / size) * size


def hopping_starts(ts: np.ndarray, size: float, step: float) -> np.ndarray:
    """(n, m) starts of the m hopping windows holding each timestamp (NaN where fewer)."""
    per = math.ceil(size / step)
    base = np.floor(ts / step) * step
    starts = base[:, None] - step * np.arange(per)[None, :]
    return np.where(starts + size > ts[:, None], starts, np.nan)


def latency_buckets(latency_ms: np.ndarray) -> np.ndarray:
    """Histogram bucket of each latency (log spaced)."""
    safe = np.maximum(latency_ms.astype(np.float64), LATENCY_BASE_MS)
    index = np.floor(np.log(safe / LATENCY_BASE_MS) / math.log(LATENCY_FACTOR)).astype(int)
    return np.clip(index, 0, LATENCY_BUCKETS - 1)


def dense_histogram(hist: dict[str, int] | list[int]) -> list[int]:
    """A latency histogram as a list of LATENCY_BUCKETS counts (records keep it sparse)."""
    if isinstance(hist, list):
        return hist
    out = [0] * LATENCY_BUCKETS
    for bucket, count in hist.items():
        out[int(bucket)] += count
    return out


def latency_quantile(hist: dict[str, int] | list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, as the upper edge of its bucket."""
    counts = dense_histogram(hist)
    total = sum(counts)
    if not total:
        return None
    rank = max(q * total, 1)
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= rank:
            return round(LATENCY_BASE_MS * LATENCY_FACTOR ** (index + 1), 3)
    return None


def empty_stats() -> dict[str, Any]:
    return {"count": 0, "labels": {}, "conf_sum": 0.0, "conf_min": 1.0, "low": 0,
            "labelled": 0, "correct": 0, "latency": {}, "confidence": {}}


def confidence_tenths(confidence: np.ndarray) -> dict[str, int]:
    """How many confidences fall in each tenth of 0..1 (``"9"`` holds 0.9..1.0), sparse."""
    # a hair above, so a float32 0.9 (0.89999998) lands in the tenth people expect
    tenths = np.clip((np.asarray(confidence, dtype=np.float64) * CONFIDENCE_BINS + 1e-6)
                     .astype(np.int64), 0, CONFIDENCE_BINS - 1)
    counts = np.bincount(tenths, minlength=CONFIDENCE_BINS)
    return {str(i): int(n) for i, n in enumerate(counts.tolist()) if n}


def confidence_histogram(stats: dict[str, Any]) -> list[int]:
    """A stats block's confidence counts per tenth, all ten (records from before the
    histogram existed give zeros)."""
    counts = stats.get("confidence") or {}
    return [int(counts.get(str(i), 0)) for i in range(CONFIDENCE_BINS)]


def _add_counts(into: dict[str, int], counts: dict[str, int], bound: int) -> None:
    """Add counts by name; past ``bound`` names, new ones add up under ``other``."""
    for name, count in counts.items():
        if name in into:
            into[name] += count
        elif len(into) < bound:
            into[name] = count
        else:
            into[OTHER_LABELS] = into.get(OTHER_LABELS, 0) + count


def add_to_stats(stats: dict[str, Any], rows: dict[str, np.ndarray],
                 max_labels: int = 100) -> None:
    """Fold the given rows (labels, confidence, low, true_labels, latency_ms) into stats."""
    n = len(rows["labels"])
    if not n:
        return
    stats["count"] += n
    values, counts = np.unique(rows["labels"], return_counts=True)
    _add_counts(stats["labels"], dict(zip(map(str, values.tolist()), counts.tolist(),
                                          strict=True)), max_labels)
    stats["conf_sum"] += float(rows["confidence"].sum())
    stats["conf_min"] = min(stats["conf_min"], float(rows["confidence"].min()))
    stats["low"] += int(rows["low"].sum())
    known = rows["true_labels"] >= 0
    stats["labelled"] += int(known.sum())
    stats["correct"] += int((rows["labels"][known] == rows["true_labels"][known]).sum())
    buckets, counts = np.unique(latency_buckets(rows["latency_ms"]), return_counts=True)
    _add_counts(stats["latency"], dict(zip(map(str, buckets.tolist()), counts.tolist(),
                                           strict=True)), LATENCY_BUCKETS)
    _add_counts(stats.setdefault("confidence", {}), confidence_tenths(rows["confidence"]),
                CONFIDENCE_BINS)


def merge_stats(into: dict[str, Any], stats: dict[str, Any], max_labels: int = 100) -> None:
    """Add one stats block to another."""
    into["count"] += stats["count"]
    _add_counts(into["labels"], stats["labels"], max_labels)
    into["conf_sum"] += stats["conf_sum"]
    into["conf_min"] = min(into["conf_min"], stats["conf_min"])
    for name in ("low", "labelled", "correct"):
        into[name] += stats[name]
    latency = stats["latency"]
    if isinstance(latency, list):
        latency = {str(i): n for i, n in enumerate(latency) if n}
    _add_counts(into["latency"], latency, LATENCY_BUCKETS)
    _add_counts(into.setdefault("confidence", {}), stats.get("confidence") or {},
                CONFIDENCE_BINS)


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """What a view shows for one window: counts, confidence, accuracy, latency p50/p95."""
    count = stats["count"]
    labels = sorted(stats["labels"].items(),
                    key=lambda kv: (kv[0] == OTHER_LABELS, int(kv[0]) if kv[0].lstrip("-")
                                    .isdigit() else 0))
    return {
        "count": count,
        "labels": dict(labels),
        "mean_confidence": round(stats["conf_sum"] / count, 4) if count else None,
        "min_confidence": round(stats["conf_min"], 4) if count else None,
        "low_confidence": stats["low"],
        "labelled": stats["labelled"],
        "accuracy": round(stats["correct"] / stats["labelled"], 4) if stats["labelled"] else None,
        "latency_p50_ms": latency_quantile(stats["latency"], 0.5),
        "latency_p95_ms": latency_quantile(stats["latency"], 0.95),
        "confidence_histogram": confidence_histogram(stats),
    }


def new_device_state() -> dict[str, Any]:
    return {"layout": LAYOUT, "tumbling": {}, "hopping": {}, "ids": new_ids_state(),
            "newest": 0.0, "late": 0, "replayed": 0, "evicted_windows": 0}


def fold_stats(state: dict[str, Any], spec: WindowSpec, model_key: str,
               rows: dict[str, np.ndarray], fresh: np.ndarray) -> int:
    """Add the ``fresh`` rows of one batch to the windows of a device's state; returns how
    many were counted (late ones are counted in ``late`` instead).

    Rows that fall in the same tumbling window and the same hopping windows (nearly always
    all of a batch) are summed once, and that sum is added to each of their windows.
    """
    ts = rows["timestamps"].astype(np.float64)
    horizon = late_horizon(state, spec)
    tumble = tumbling_starts(ts, spec.tumbling)
    keep = fresh & (tumble >= horizon)
    state["late"] += int((fresh & ~keep).sum())
    if not keep.any():
        _expire(state, spec, horizon)
        return 0
    hops = hopping_starts(ts, spec.hopping, spec.step)
    places = np.nan_to_num(np.column_stack([tumble, hops]), nan=-1.0)
    kept = {name: values[keep] for name, values in rows.items()}
    placed = places[keep]
    if (placed == placed[0]).all():  # the usual batch: one tumbling and one hopping set
        groups, which = placed[:1], np.zeros(len(placed), dtype=np.intp)
    else:
        groups, which = np.unique(placed, axis=0, return_inverse=True)
    for g, place in enumerate(groups):
        picked = kept if len(groups) == 1 else {
            name: values[which.ravel() == g] for name, values in kept.items()}
        delta = empty_stats()
        add_to_stats(delta, picked, spec.max_labels)
        targets = [(state["tumbling"], place[0])]
        targets += [(state["hopping"], start) for start in place[1:] if start != -1.0]
        for windows, start in targets:
            window = windows.setdefault(repr(float(start)),
                                        {"total": empty_stats(), "models": {}})
            merge_stats(window["total"], delta, spec.max_labels)
            merge_stats(_model_stats(window["models"], model_key, spec), delta,
                        spec.max_labels)
    _expire(state, spec, horizon)
    return int(keep.sum())


def late_horizon(state: dict[str, Any], spec: WindowSpec) -> float:
    """Start of the oldest tumbling window that still takes samples."""
    newest = tumbling_starts(np.array([state["newest"]]), spec.tumbling)[0]
    return float(newest - spec.kept * spec.tumbling)


def fold_device_batch(
    table: MutableMapping[str, Any], seen: SeenIds, device: str, spec: WindowSpec,
    model_key: str, ids: list[str], rows: dict[str, np.ndarray], origin: Origin | None = None,
    hashes: np.ndarray | None = None,
) -> int:
    """Fold one prediction batch into a device's record of ``table``; returns the samples
    counted. Work is proportional to the batch: a replayed input is recognised by its
    offset, a repeated sample by its id, and only the batch's windows and ids are touched.
    ``hashes`` are the ``id_hashes`` of ``ids`` when the caller has them already.
    """
    state = table.get(device)
    if not state or state.get("layout") != LAYOUT:
        state = new_device_state()  # none yet, or written by an older edgewise: start over
    ts = rows["timestamps"].astype(np.float64)
    if is_replay(state["ids"], origin):
        state["replayed"] += len(ts)  # shown by the views; not worth a changelog record
        return 0
    if len(ts):
        state["newest"] = max(state["newest"], float(ts.max()))
    known = seen.known(table, device, state["ids"])
    hashes = id_hashes(ids) if hashes is None else hashes
    fresh = seen.fresh(known, hashes)
    state["replayed"] += int((~fresh).sum())
    counted = fold_stats(state, spec, model_key, rows, fresh) if len(ts) else 0
    seen.record(table, device, state["ids"], known, hashes[fresh], origin, state["newest"])
    stamp(state, origin)
    bound_record(state, spec)
    table[device] = state
    return counted



def _model_stats(models: dict[str, Any], model_key: str, spec: WindowSpec) -> dict[str, Any]:
    """The stats of ``model_key`` in a window; past ``max_models`` the smallest model's
    stats are folded into ``(other)`` to make room."""
    if model_key not in models and len(models) >= spec.max_models:
        named = [k for k in models if k != OTHER_MODELS]
        smallest = min(named, key=lambda k: models[k]["count"])
        other = models.setdefault(OTHER_MODELS, empty_stats())
        merge_stats(other, models.pop(smallest), spec.max_labels)
        if len(models) >= spec.max_models:  # (other) itself took the freed place
            return other
    return models.setdefault(model_key, empty_stats())


def _expire(state: dict[str, Any], spec: WindowSpec, horizon: float) -> None:
    state["tumbling"] = {k: v for k, v in state["tumbling"].items() if float(k) >= horizon}
    hop_horizon = horizon - spec.hopping
    state["hopping"] = {k: v for k, v in state["hopping"].items() if float(k) >= hop_horizon}


def bound_record(state: dict[str, Any], spec: WindowSpec) -> None:
    """Evict the oldest windows (hopping first) until the record fits ``max_record_bytes``."""
    while len(orjson.dumps(state)) > spec.max_record_bytes:
        kind = "hopping" if len(state["hopping"]) > 1 else "tumbling"
        if len(state[kind]) <= 1:
            return  # a single window per kind is bounded by max_models and max_labels
        del state[kind][min(state[kind], key=float)]
        state["evicted_windows"] = state.get("evicted_windows", 0) + 1


def window_view(state: dict[str, Any], kind: str, size: float) -> list[dict[str, Any]]:
    """Windows of one kind, newest first: start, end, whether open, stats per model."""
    newest = state.get("newest", 0.0)
    out = []
    for key in sorted(state.get(kind, {}), key=float, reverse=True):
        start = float(key)
        window = state[kind][key]
        out.append({
            "start": start, "end": start + size, "current": start + size > newest,
            "total": summarize(window["total"]),
            "models": {m: summarize(s) for m, s in sorted(window["models"].items())},
        })
    return out
