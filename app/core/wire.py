"""Encoding and validating sample batches at the boundaries of a stage.

``decode_sample_batch`` is the one gate every sample passes: it accepts the binary frame
(what edgewise itself sends) and JSON (what HTTP collectors and MQTT devices send), and
raises :class:`BadInput` with a short reason for anything it cannot trust, so the stage
can dead-letter the original bytes and carry on. Prediction frames have their own gate in
``prediction_wire`` (re-exported here, so a stage imports every codec from one place).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any

import numpy as np

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_FEATURES,
    MAX_ID_LENGTH,
    MAX_LABEL,
    check_count,
    check_device,
    check_feature_rows,
    check_ids,
    check_labels,
    check_size,
    check_times,
    is_int,
)
from edgewise.app.core.frames import (
    KIND_SAMPLES,
    SUPPORTED_VERSIONS,
    BadInput,
    decode_frame,
    encode_frame,
    is_frame,
    json_object,
)
from edgewise.app.core.prediction_wire import decode_prediction_batch, encode_prediction_batch
from edgewise.app.core.records import SAMPLE_KINDS, TABULAR, SampleBatch, known_kind

__all__ = [
    "MAX_ID_LENGTH", "MAX_LABEL", "decode_prediction_batch", "decode_sample_batch",
    "encode_prediction_batch", "encode_sample_batch", "validate_sample_batch",
]
SAMPLE_COLUMNS = ("timestamps", "labels", "pixels")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def encode_sample_batch(batch: SampleBatch) -> bytes:
    """The binary frame of a sample batch."""
    meta = {"device": batch.device, "kind": batch.kind, "ids": batch.ids}
    arrays = {
        "timestamps": np.asarray(batch.timestamps, dtype=np.float64),
        "labels": np.asarray(batch.labels, dtype=np.int32),
        "pixels": np.asarray(batch.pixels, dtype=value_dtype(batch.kind)),
    }
    return encode_frame(KIND_SAMPLES, meta, arrays)


def value_dtype(kind: str) -> type[np.generic]:
    """The dtype of a kind's values on the wire: float32 rows, or uint8 pixels."""
    return np.float32 if kind == TABULAR else np.uint8


def decode_sample_batch(
    data: bytes, max_bytes: int, max_samples: int, *,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> SampleBatch:
    """Validate and decode a sample batch from a frame or JSON; BadInput when unusable."""
    check_size(data, max_bytes)
    if is_frame(data):
        meta, arrays = decode_frame(data, KIND_SAMPLES)
        missing = [name for name in SAMPLE_COLUMNS if name not in arrays]
        if missing:
            raise BadInput("missing_field", f"arrays {', '.join(missing)}")
        device, kind, ids = _meta_fields(meta, max_samples)
        check_labels(arrays["labels"], "labels", unknown_allowed=True)
        batch = SampleBatch(
            device=device, kind=kind, ids=ids, timestamps=arrays["timestamps"],
            labels=arrays["labels"].astype(np.int32, copy=False), pixels=arrays["pixels"],
        )
    else:
        batch = _from_json(data, max_samples)
    return validate_sample_batch(batch, max_samples, now, future_skew=future_skew)


def _meta_fields(meta: dict[str, Any], max_samples: int) -> tuple[str, str, list[str]]:
    """Device, kind and ids of a header; the count first, before any id is looked at."""
    device, kind, ids = meta.get("device"), meta.get("kind", "digits"), meta.get("ids")
    check_device(device)
    if not isinstance(kind, str):
        raise BadInput("unknown_kind", repr(kind)[:50])
    if not isinstance(ids, list):
        raise BadInput("missing_field", "ids must be a list of strings")
    check_count(len(ids), max_samples)
    if not all(isinstance(i, str) for i in ids):
        raise BadInput("missing_field", "ids must be a list of strings")
    return device, kind, ids


def _from_json(data: bytes, max_samples: int) -> SampleBatch:
    """A batch from JSON: {"schema": 1, "device", "kind", "samples": [{id, ts, pixels…}]}
    (tabular samples carry ``features``: numbers, null where missing, in schema order)."""
    doc = json_object(data, "batch")
    schema = doc.get("schema", 1)
    if not is_int(schema) or schema not in SUPPORTED_VERSIONS:
        raise BadInput("unknown_schema_version", f"schema {str(doc.get('schema'))[:50]}")
    samples = doc.get("samples")
    if not isinstance(samples, list):
        if "id" not in doc:
            raise BadInput("missing_field", "samples")
        samples = [doc]  # a single sample is a batch of one
    if len(samples) > max_samples:  # before a single sample's pixels are parsed
        raise BadInput("too_many_samples", f"{len(samples)} > limit {max_samples}")
    kind = doc.get("kind", "digits")
    ids = [s.get("id") if isinstance(s, dict) else None for s in samples]
    device, kind, ids = _meta_fields({"device": doc.get("device"), "kind": kind, "ids": ids},
                                     max_samples)
    if not known_kind(kind):
        raise BadInput("unknown_kind", kind[:50])
    if kind == TABULAR:
        rows = [json_features(s.get("features")) for s in samples]
        if len({len(r) for r in rows}) != 1:
            raise BadInput("wrong_shape", "every sample needs the same number of features")
        pixels = np.stack(rows)
    else:
        pixels = np.stack([_json_pixels(s, SAMPLE_KINDS[kind][0]) for s in samples])
    stamps = np.array([_json_number(s.get("ts", s.get("timestamp")), "ts") for s in samples],
                      dtype=np.float64)
    labels = np.array([_json_label(s.get("label")) for s in samples], dtype=np.int32)
    return SampleBatch(device, kind, ids, stamps, labels, pixels)


def _json_pixels(sample: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    raw = sample.get("pixels")
    if isinstance(raw, str):
        try:
            values = np.frombuffer(base64.b64decode(raw, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError):
            raise BadInput("bad_pixels", "pixels is not valid base64") from None
    elif isinstance(raw, list):
        try:
            values = np.asarray(raw, dtype=np.float64).ravel()
        except (TypeError, ValueError, OverflowError):
            raise BadInput("bad_pixels", "pixels is not a list of numbers") from None
        if not np.all(np.isfinite(values)):
            raise BadInput("nan", "pixels contain NaN or infinity")
    else:
        raise BadInput("missing_field", "pixels")
    if values.size != math.prod(shape):
        raise BadInput("wrong_shape", f"{values.size} pixels, expected {shape}")
    if values.dtype != np.uint8:
        if np.any(values < 0) or np.any(values > 255) or np.any(values != np.round(values)):
            raise BadInput("out_of_range", "pixels must be whole numbers 0..255")
        values = values.astype(np.uint8)
    return values.reshape(shape)


def json_features(raw: Any) -> np.ndarray:
    """One tabular row from JSON: 1..MAX_FEATURES numbers, null where missing, each within
    float32 (a larger one would become infinity); float32 with NaN for the nulls."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FEATURES:
        raise BadInput("missing_field", f"features must be a list of 1..{MAX_FEATURES} numbers "
                                        "or nulls")
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
               for v in raw):
        raise BadInput("bad_features", "features must be numbers or null (missing)")
    try:
        values = np.array(raw, dtype=np.float64)  # None becomes NaN
    except OverflowError:  # an int beyond any float
        raise BadInput("out_of_range", f"features must lie within ±{FLOAT32_MAX:.3g}") from None
    if np.isinf(values).any() or np.any(np.abs(values) > FLOAT32_MAX):
        raise BadInput("out_of_range", f"features must lie within ±{FLOAT32_MAX:.3g}")
    return values.astype(np.float32)


def _json_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("bad_timestamp", f"{name} must be a number, got {str(value)[:50]}")
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        raise BadInput("bad_timestamp", f"{name} is beyond any time") from None


def _json_label(value: Any) -> int:
    if value is None:
        return -1
    if not is_int(value) or not -1 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"label must be an integer 0..{MAX_LABEL}, got "
                                    f"{str(value)[:50]}")
    return value


def validate_sample_batch(
    batch: SampleBatch, max_samples: int, now: float | None = None, *,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
) -> SampleBatch:
    """Check a decoded batch against its kind: counts, shape, range, NaN, ids, labels, time.

    Returns an image batch with pixels as uint8 (whole values only: 1.5 is not a pixel);
    tabular rows must be float32 already, finite or NaN (missing).
    """
    n = len(batch.ids)
    check_count(n, max_samples)
    check_device(batch.device)
    if not known_kind(batch.kind):
        raise BadInput("unknown_kind", batch.kind[:50])
    if batch.kind == TABULAR:
        check_feature_rows(batch.pixels, n)
    else:
        batch = _checked_pixels(batch, n)
    if batch.timestamps.shape != (n,) or batch.labels.shape != (n,):
        raise BadInput("wrong_shape", "timestamps and labels need one value per sample")
    check_times(batch.timestamps, "timestamps", future_skew, now)
    check_labels(batch.labels, "labels", unknown_allowed=True)
    check_ids(batch.ids)
    return batch


def _checked_pixels(batch: SampleBatch, n: int) -> SampleBatch:
    """An image batch's pixels: its kind's shape and range, whole values, as uint8."""
    shape, low, high = SAMPLE_KINDS[batch.kind]
    if batch.pixels.shape != (n, *shape):
        raise BadInput("wrong_shape", f"pixels {batch.pixels.shape}, expected {(n, *shape)}")
    if batch.pixels.dtype.kind == "f" and not np.all(np.isfinite(batch.pixels)):
        raise BadInput("nan", "pixels contain NaN or infinity")
    if batch.pixels.min() < low or batch.pixels.max() > high:
        raise BadInput("out_of_range", f"{batch.kind} pixels must lie in {low:g}..{high:g}")
    if batch.pixels.dtype.kind == "f" and np.any(batch.pixels != np.round(batch.pixels)):
        raise BadInput("out_of_range", "pixels must be whole numbers")
    if batch.pixels.dtype != np.uint8:
        batch = dataclasses.replace(batch, pixels=batch.pixels.astype(np.uint8))
    return batch

