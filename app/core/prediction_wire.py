"""Encoding and validating prediction batches: the frames between score and the stages
that read predictions (route, aggregate, evaluate), and from edges that score themselves.

Predictions from an edge are input like any other, so ``decode_prediction_batch`` checks
every column as strictly as samples are checked, before any stage computes with them: a
NaN label crashed the route stage converting it to int, an infinite timestamp poisoned a
device's windows for good, a NaN probability made log-loss NaN for ever, and a frame of
50,000 rows went past the batch limit. What is checked, in order: size; framing; device,
kind and ids (count first); model name and version; the shape of every column against the
ids and of top-k against its bound; dtypes; finiteness and range of every float column;
labels; that label and confidence are the first of the top-k, whose probabilities fall
and whose labels differ; then times (samples and scoring) within the future-skew bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_LATENCY_MS,
    MAX_TOP_K,
    check_count,
    check_device,
    check_feature_rows,
    check_ids,
    check_labels,
    check_model,
    check_probabilities,
    check_size,
    check_time,
    check_times,
)
from edgewise.app.core.frames import (
    KIND_PREDICTIONS,
    BadInput,
    decode_frame,
    encode_frame,
    is_frame,
)
from edgewise.app.core.records import SAMPLE_KINDS, TABULAR, PredictionBatch, known_kind

PREDICTION_COLUMNS = ("timestamps", "true_labels", "labels", "confidence", "top_labels",
                      "top_probs", "latency_ms", "pixels")
DEFAULT_MAX_SAMPLES = 4096  # the settings' default
TOP_K_SUM_SLACK = 1e-3  # float32 rounding of probabilities that sum to one


def encode_prediction_batch(batch: PredictionBatch) -> bytes:
    """The binary frame of a prediction batch."""
    meta = {
        "device": batch.device, "kind": batch.kind, "model": batch.model,
        "model_version": batch.model_version, "ids": batch.ids, "scored_at": batch.scored_at,
    }
    arrays = {
        "timestamps": np.asarray(batch.timestamps, dtype=np.float64),
        "true_labels": np.asarray(batch.true_labels, dtype=np.int32),
        "labels": np.asarray(batch.labels, dtype=np.int32),
        "confidence": np.asarray(batch.confidence, dtype=np.float32),
        "top_labels": np.asarray(batch.top_labels, dtype=np.int32),
        "top_probs": np.asarray(batch.top_probs, dtype=np.float32),
        "latency_ms": np.asarray(batch.latency_ms, dtype=np.float32),
        "pixels": np.asarray(batch.pixels,
                             dtype=np.float32 if batch.kind == TABULAR else np.uint8),
    }
    return encode_frame(KIND_PREDICTIONS, meta, arrays)


def decode_prediction_batch(
    data: bytes, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES, *,
    max_top_k: int = MAX_TOP_K, future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
    now: float | None = None,
) -> PredictionBatch:
    """Decode and validate a prediction frame; BadInput with its reason when unusable."""
    check_size(data, max_bytes)
    if not is_frame(data):
        raise BadInput("not_a_frame", "predictions travel as frames")
    meta, arrays = decode_frame(data, KIND_PREDICTIONS)
    missing = [name for name in PREDICTION_COLUMNS if name not in arrays]
    if missing:
        raise BadInput("missing_field", f"arrays {', '.join(missing)}")
    device = check_device(meta.get("device"))
    kind = meta.get("kind", "digits")
    if not isinstance(kind, str) or not known_kind(kind):
        raise BadInput("unknown_kind", str(kind)[:50])
    ids = meta.get("ids")
    if not isinstance(ids, list):
        raise BadInput("missing_field", "ids must be a list of strings")
    check_count(len(ids), max_samples, "predictions")
    check_ids(ids)
    model, version = check_model(meta.get("model"), meta.get("model_version"))
    _check_shapes(arrays, len(ids), max_top_k)
    if kind == TABULAR:
        check_feature_rows(arrays["pixels"], len(ids), "rows")
    else:
        _check_pixels(arrays["pixels"], len(ids), SAMPLE_KINDS[kind])
    _check_values(arrays)
    check_times(arrays["timestamps"], "timestamps", future_skew, now)
    scored_at = check_time(meta.get("scored_at"), "scored_at", future_skew, now)
    return PredictionBatch(
        device=device, kind=kind, model=model, model_version=version, ids=ids,
        scored_at=scored_at, **{name: arrays[name] for name in PREDICTION_COLUMNS},
    )


def _check_shapes(arrays: dict[str, np.ndarray], n: int, max_top_k: int) -> None:
    """One row per id in every column; top-k (n, k) with 1 <= k <= max_top_k."""
    for name in ("timestamps", "true_labels", "labels", "confidence", "latency_ms"):
        if arrays[name].shape != (n,):
            raise BadInput("wrong_shape", f"column {name} is {arrays[name].shape}, not ({n},)")
    top_labels, top_probs = arrays["top_labels"], arrays["top_probs"]
    if top_labels.ndim != 2 or top_labels.shape != top_probs.shape or len(top_labels) != n:
        raise BadInput("wrong_shape", "top_labels and top_probs need the same (n, k) shape")
    k = top_labels.shape[1]
    if k == 0:
        raise BadInput("wrong_shape", "top-k needs at least one column")
    if k > max_top_k:
        raise BadInput("top_k_too_wide", f"top-k of {k} > limit {max_top_k}")


def _check_pixels(pixels: np.ndarray, n: int,
                  kind: tuple[tuple[int, ...], float, float]) -> None:
    """An image kind's pixels: its shape, uint8, its range."""
    image, low, high = kind
    if pixels.shape != (n, *image):
        raise BadInput("wrong_shape", f"pixels {pixels.shape}, expected {(n, *image)}")
    if pixels.dtype != np.uint8:
        raise BadInput("bad_dtype", f"pixels must be uint8, not {pixels.dtype}")
    if pixels.min() < low or pixels.max() > high:
        raise BadInput("out_of_range", f"pixels must lie in {low:g}..{high:g}")


def _check_values(arrays: dict[str, np.ndarray]) -> None:
    """Dtypes, finiteness and ranges of every column, and top-k agreeing with itself."""
    check_labels(arrays["labels"], "labels", unknown_allowed=False)
    check_labels(arrays["true_labels"], "true_labels", unknown_allowed=True)
    check_labels(arrays["top_labels"], "top_labels", unknown_allowed=False)
    check_probabilities(arrays["confidence"], "confidence")
    check_probabilities(arrays["top_probs"], "top_probs")
    latency = arrays["latency_ms"]
    if latency.dtype.kind != "f":
        raise BadInput("bad_dtype", f"latency_ms must be floats, not {latency.dtype}")
    if not np.all(np.isfinite(latency)):
        raise BadInput("nan", "latency_ms holds NaN or infinity")
    if float(np.abs(latency).max()) > MAX_LATENCY_MS:
        raise BadInput("out_of_range", f"latency_ms beyond {MAX_LATENCY_MS:g}")
    _check_top_k(arrays)


def _check_top_k(arrays: dict[str, Any]) -> None:
    """The prediction is the first of its top-k; probabilities fall; labels differ.

    Review margins (top-1 minus top-2) and log-loss (the true class's probability) read
    top-k as the score stage writes it; a frame that says otherwise would feed them
    negative margins or a class counted twice.
    """
    top_labels, top_probs = arrays["top_labels"], arrays["top_probs"]
    if np.any(arrays["labels"] != top_labels[:, 0]) or np.any(
            arrays["confidence"] != top_probs[:, 0]):
        raise BadInput("inconsistent", "label and confidence must be the first of the top-k")
    if np.any(np.diff(top_probs, axis=1) > 0):
        raise BadInput("bad_top_k", "top-k probabilities must not rise")
    if np.any(top_probs.sum(axis=1, dtype=np.float64) > 1.0 + TOP_K_SUM_SLACK):
        raise BadInput("bad_top_k", "top-k probabilities add up to more than 1")
    ordered = np.sort(top_labels, axis=1)
    if np.any(ordered[:, 1:] == ordered[:, :-1]):
        raise BadInput("bad_top_k", "a label appears twice in one top-k")
