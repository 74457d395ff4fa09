"""Window maths and per-window statistics, as pure functions over plain dicts.

One table value per device holds everything that device's windows need, so one changelog
record carries both the statistics and the ids already counted (idempotency by sample id:
a replayed sample is recognised and not counted twice).

Value layout (JSON)::

    {"tumbling": {"<start>": {"<model>:<version>": stats}}, "hopping": {...},
     "seen": {"<tumbling start>": "<base64 sorted uint64 id hashes>"},
     "newest": <newest sample time>, "late": <samples dropped as late>,
     "replayed": <samples recognised as already counted>}

Lateness, said out loud: a window accepts samples until it falls out of the newest
``kept`` windows of its kind (measured against the newest sample time of the device);
samples older than the oldest kept tumbling window are counted in ``late`` and dropped.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LATENCY_BUCKETS = 80
LATENCY_BASE_MS = 0.1
LATENCY_FACTOR = 2 ** 0.25  # each bucket 19% wider than the last: 0.1 ms .. ~100 s


@dataclass(frozen=True)
class WindowSpec:
    """Sizes of the two window kinds and how many closed windows are kept."""

    tumbling: float
    hopping: float
    step: float
    kept: int


def tumbling_starts(ts: np.ndarray, size: float) -> np.ndarray:
    """Start of the tumbling window of each timestamp."""
    return np.floor(ts / size) * size


def hopping_starts(ts: np.ndarray, size: float, step: float) -> np.ndarray:
    """(n, m) starts of the m hopping windows holding each timestamp (NaN where fewer)."""
    per = math.ceil(size / step)
    base = np.floor(ts / step) * step
    starts = base[:, None] - step * np.arange(per)[None, :]
    return np.where(starts + size > ts[:, None], starts, np.nan)


def id_hashes(ids: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of sample ids (collisions are negligible at 2**-64)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
         for i in ids], dtype=np.uint64,
    )


def latency_buckets(latency_ms: np.ndarray) -> np.ndarray:
    """Histogram bucket of each latency (log spaced)."""
    safe = np.maximum(latency_ms.astype(np.float64), LATENCY_BASE_MS)
    index = np.floor(np.log(safe / LATENCY_BASE_MS) / math.log(LATENCY_FACTOR)).astype(int)
    return np.clip(index, 0, LATENCY_BUCKETS - 1)


def latency_quantile(hist: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, as the upper edge of its bucket."""
    total = sum(hist)
    if not total:
        return None
    rank = max(q * total, 1)
    running = 0
    for index, count in enumerate(hist):
        running += count
        if running >= rank:
            return round(LATENCY_BASE_MS * LATENCY_FACTOR ** (index + 1), 3)
    return None


def empty_stats() -> dict[str, Any]:
    return {"count": 0, "labels": {}, "conf_sum": 0.0, "conf_min": 1.0, "low": 0,
            "labelled": 0, "correct": 0, "latency": [0] * LATENCY_BUCKETS}


def add_to_stats(stats: dict[str, Any], rows: dict[str, np.ndarray]) -> None:
    """Fold the given rows (labels, confidence, low, true_labels, latency_ms) into stats."""
    n = len(rows["labels"])
    if not n:
        return
    stats["count"] += n
    values, counts = np.unique(rows["labels"], return_counts=True)
    for label, count in zip(values.tolist(), counts.tolist(), strict=False):
        stats["labels"][str(label)] = stats["labels"].get(str(label), 0) + count
    stats["conf_sum"] += float(rows["confidence"].sum())
    stats["conf_min"] = min(stats["conf_min"], float(rows["confidence"].min()))
    stats["low"] += int(rows["low"].sum())
    known = rows["true_labels"] >= 0
    stats["labelled"] += int(known.sum())
    stats["correct"] += int((rows["labels"][known] == rows["true_labels"][known]).sum())
    hist = np.bincount(latency_buckets(rows["latency_ms"]), minlength=LATENCY_BUCKETS)
    stats["latency"] = (np.asarray(stats["latency"]) + hist).tolist()


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """What a view shows for one window: counts, confidence, accuracy, latency p50/p95."""
    count = stats["count"]
    return {
        "count": count,
        "labels": dict(sorted(stats["labels"].items(), key=lambda kv: int(kv[0]))),
        "mean_confidence": round(stats["conf_sum"] / count, 4) if count else None,
        "min_confidence": round(stats["conf_min"], 4) if count else None,
        "low_confidence": stats["low"],
        "labelled": stats["labelled"],
        "accuracy": round(stats["correct"] / stats["labelled"], 4) if stats["labelled"] else None,
        "latency_p50_ms": latency_quantile(stats["latency"], 0.5),
        "latency_p95_ms": latency_quantile(stats["latency"], 0.95),
    }


def _seen_get(state: dict[str, Any], start: str) -> np.ndarray:
    blob = state["seen"].get(start)
    if not blob:
        return np.empty(0, np.uint64)
    return np.frombuffer(base64.b64decode(blob), dtype=np.uint64)


def fold_batch(
    state: dict[str, Any] | None, spec: WindowSpec, model_key: str,
    ids: list[str], rows: dict[str, np.ndarray],
) -> tuple[dict[str, Any], int]:
    """Add one prediction batch to a device's state; returns (state, samples counted).

    ``rows`` holds columns ``timestamps``, ``labels``, ``confidence``, ``low``,
    ``true_labels`` and ``latency_ms``. Samples already counted, or late, are skipped.
    """
    state = state or {"tumbling": {}, "hopping": {}, "seen": {}, "newest": 0.0, "late": 0,
                      "replayed": 0}
    ts = rows["timestamps"].astype(np.float64)
    if not len(ts):
        return state, 0
    state["newest"] = max(state["newest"], float(ts.max()))
    horizon = tumbling_starts(np.array([state["newest"]]), spec.tumbling)[0] - (
        spec.kept * spec.tumbling)
    tumble = tumbling_starts(ts, spec.tumbling)
    keep = tumble >= horizon
    state["late"] += int((~keep).sum())
    hashes = id_hashes(ids)
    for start in np.unique(tumble[keep]):
        key = repr(float(start))
        seen = _seen_get(state, key)
        in_window = keep & (tumble == start)
        fresh = in_window & ~np.isin(hashes, seen)
        state["replayed"] += int((in_window & ~fresh).sum())
        keep &= ~(in_window & ~fresh)
        state["seen"][key] = base64.b64encode(
            np.union1d(seen, hashes[fresh]).astype(np.uint64).tobytes()).decode()
    _add_windows(state["tumbling"], tumble[:, None], keep, model_key, rows)
    _add_windows(state["hopping"], hopping_starts(ts, spec.hopping, spec.step), keep,
                 model_key, rows)
    _expire(state, spec, horizon)
    return state, int(keep.sum())


def _add_windows(
    windows: dict[str, Any], starts: np.ndarray, keep: np.ndarray, model_key: str,
    rows: dict[str, np.ndarray],
) -> None:
    for column in range(starts.shape[1]):
        col = starts[:, column]
        valid = keep & ~np.isnan(col)
        for start in np.unique(col[valid]):
            mask = valid & (col == start)
            per_model = windows.setdefault(repr(float(start)), {})
            stats = per_model.setdefault(model_key, empty_stats())
            add_to_stats(stats, {name: values[mask] for name, values in rows.items()})


def _expire(state: dict[str, Any], spec: WindowSpec, horizon: float) -> None:
    state["seen"] = {k: v for k, v in state["seen"].items() if float(k) >= horizon}
    state["tumbling"] = {k: v for k, v in state["tumbling"].items() if float(k) >= horizon}
    hop_horizon = horizon - spec.hopping
    state["hopping"] = {k: v for k, v in state["hopping"].items() if float(k) >= hop_horizon}


def window_view(state: dict[str, Any], kind: str, size: float) -> list[dict[str, Any]]:
    """Windows of one kind, newest first: start, end, whether open, stats per model."""
    newest = state.get("newest", 0.0)
    out = []
    for key in sorted(state.get(kind, {}), key=float, reverse=True):
        start = float(key)
        per_model = state[kind][key]
        total = empty_stats()
        for stats in per_model.values():
            _merge(total, stats)
        out.append({
            "start": start, "end": start + size, "current": start + size > newest,
            "total": summarize(total),
            "models": {m: summarize(s) for m, s in sorted(per_model.items())},
        })
    return out


def _merge(into: dict[str, Any], stats: dict[str, Any]) -> None:
    into["count"] += stats["count"]
    for label, count in stats["labels"].items():
        into["labels"][label] = into["labels"].get(label, 0) + count
    into["conf_sum"] += stats["conf_sum"]
    into["conf_min"] = min(into["conf_min"], stats["conf_min"])
    for name in ("low", "labelled", "correct"):
        into[name] += stats[name]
    into["latency"] = [a + b for a, b in zip(into["latency"], stats["latency"], strict=False)]
