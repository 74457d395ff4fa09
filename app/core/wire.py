"""Encoding and validating batches at the boundaries of a stage.

``decode_sample_batch`` is the one gate every sample passes: it accepts the binary frame
(what edgewise itself sends) and JSON (what HTTP collectors and MQTT devices send), and
raises :class:`BadInput` with a short reason for anything it cannot trust, so the stage
can dead-letter the original bytes and carry on.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import time
from typing import Any

import numpy as np

from edgewise.app.core.frames import (
    KIND_PREDICTIONS,
    KIND_SAMPLES,
    SUPPORTED_VERSIONS,
    BadInput,
    decode_frame,
    encode_frame,
    is_frame,
    json_object,
)
from edgewise.app.core.records import SAMPLE_KINDS, PredictionBatch, SampleBatch

MAX_ID_LENGTH = 200
MAX_LABEL = 1_000_000
MAX_CLOCK_SKEW_SECONDS = 3600.0  # a sample from further in the future would make all else late


def encode_sample_batch(batch: SampleBatch) -> bytes:
    """The binary frame of a sample batch."""
    meta = {"device": batch.device, "kind": batch.kind, "ids": batch.ids}
    arrays = {
        "timestamps": np.asarray(batch.timestamps, dtype=np.float64),
        "labels": np.asarray(batch.labels, dtype=np.int32),
        "pixels": np.asarray(batch.pixels, dtype=np.uint8),
    }
    return encode_frame(KIND_SAMPLES, meta, arrays)


def decode_sample_batch(data: bytes, max_bytes: int, max_samples: int) -> SampleBatch:
    """Validate and decode a sample batch from a frame or JSON; BadInput when unusable."""
    if not data:
        raise BadInput("empty", "message has no bytes")
    if len(data) > max_bytes:
        raise BadInput("oversize", f"{len(data)} bytes > limit {max_bytes}")
    if is_frame(data):
        meta, arrays = decode_frame(data, KIND_SAMPLES)
        for name in ("timestamps", "labels", "pixels"):
            if name not in arrays:
                raise BadInput("missing_field", f"array {name}")
        device, kind, ids = _meta_fields(meta)
        labels = arrays["labels"]
        if labels.size and (labels.min() < -1 or labels.max() > MAX_LABEL):
            raise BadInput("bad_label", "labels must be -1 (unknown) or a class number")
        batch = SampleBatch(
            device=device, kind=kind, ids=ids, timestamps=arrays["timestamps"],
            labels=labels.astype(np.int32, copy=False), pixels=arrays["pixels"],
        )
    else:
        batch = _from_json(data)
    return validate_sample_batch(batch, max_samples)


def _meta_fields(meta: dict[str, Any]) -> tuple[str, str, list[str]]:
    device, kind, ids = meta.get("device"), meta.get("kind", "digits"), meta.get("ids")
    if not isinstance(device, str) or not device or len(device) > MAX_ID_LENGTH:
        raise BadInput("missing_field", "device must be a non-empty string")
    if not isinstance(kind, str):
        raise BadInput("unknown_kind", repr(kind))
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BadInput("missing_field", "ids must be a list of non-empty strings")
    return device, kind, ids


def _from_json(data: bytes) -> SampleBatch:
    """A batch from JSON: {"schema": 1, "device", "kind", "samples": [{id, ts, pixels…}]}."""
    doc = json_object(data, "batch")
    schema = doc.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema not in SUPPORTED_VERSIONS:
        raise BadInput("unknown_schema_version", f"schema {doc.get('schema')!r}")
    samples = doc.get("samples")
    if not isinstance(samples, list):
        if "id" not in doc:
            raise BadInput("missing_field", "samples")
        samples = [doc]  # a single sample is a batch of one
    kind = doc.get("kind", "digits")
    ids = [s.get("id") if isinstance(s, dict) else None for s in samples]
    device, kind, ids = _meta_fields({"device": doc.get("device"), "kind": kind, "ids": ids})
    if kind not in SAMPLE_KINDS:
        raise BadInput("unknown_kind", kind)
    shape, _, _ = SAMPLE_KINDS[kind]
    pixels = np.stack([_json_pixels(s, shape) for s in samples]) if samples else None
    if pixels is None:
        raise BadInput("empty_batch", "no samples")
    stamps = np.array([_json_number(s.get("ts", s.get("timestamp")), "ts") for s in samples])
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
        except (TypeError, ValueError):
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


def _json_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("bad_timestamp", f"{name} must be a number, got {value!r}")
    return float(value)


def _json_label(value: Any) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"label must be an integer 0..{MAX_LABEL}, got {value!r}")
    return value


def validate_sample_batch(
    batch: SampleBatch, max_samples: int, now: float | None = None
) -> SampleBatch:
    """Check a decoded batch against its kind: counts, shape, range, NaN, ids, labels, time.

    Returns the batch with pixels as uint8 (whole values only: 1.5 is not a pixel).
    """
    n = len(batch.ids)
    if n == 0:
        raise BadInput("empty_batch", "no samples")
    if n > max_samples:
        raise BadInput("too_many_samples", f"{n} > limit {max_samples}")
    if batch.kind not in SAMPLE_KINDS:
        raise BadInput("unknown_kind", batch.kind)
    shape, low, high = SAMPLE_KINDS[batch.kind]
    if batch.pixels.shape != (n, *shape):
        raise BadInput("wrong_shape", f"pixels {batch.pixels.shape}, expected {(n, *shape)}")
    if batch.timestamps.shape != (n,) or batch.labels.shape != (n,):
        raise BadInput("wrong_shape", "timestamps and labels need one value per sample")
    if batch.pixels.dtype.kind == "f" and not np.all(np.isfinite(batch.pixels)):
        raise BadInput("nan", "pixels contain NaN or infinity")
    if batch.pixels.size and (batch.pixels.min() < low or batch.pixels.max() > high):
        raise BadInput("out_of_range", f"{batch.kind} pixels must lie in {low:g}..{high:g}")
    if batch.pixels.dtype.kind == "f" and np.any(batch.pixels != np.round(batch.pixels)):
        raise BadInput("out_of_range", "pixels must be whole numbers")
    if batch.timestamps.dtype.kind != "f" or not np.all(np.isfinite(batch.timestamps)) or \
            np.any(batch.timestamps <= 0):
        raise BadInput("bad_timestamp", "timestamps must be positive finite seconds")
    latest = (time.time() if now is None else now) + MAX_CLOCK_SKEW_SECONDS
    if np.any(batch.timestamps > latest):
        raise BadInput("bad_timestamp", "timestamps more than an hour in the future")
    if np.any(batch.labels < -1) or np.any(batch.labels > MAX_LABEL):
        raise BadInput("bad_label", "labels must be -1 (unknown) or a class number")
    if len(set(batch.ids)) != n:
        raise BadInput("duplicate_ids", "a batch holds the same id twice")
    if any(len(i) > MAX_ID_LENGTH for i in batch.ids):
        raise BadInput("bad_id", f"ids longer than {MAX_ID_LENGTH} characters")
    if batch.pixels.dtype != np.uint8:
        batch = dataclasses.replace(batch, pixels=batch.pixels.astype(np.uint8))
    return batch


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
        "pixels": np.asarray(batch.pixels, dtype=np.uint8),
    }
    return encode_frame(KIND_PREDICTIONS, meta, arrays)


def decode_prediction_batch(data: bytes, max_bytes: int) -> PredictionBatch:
    """Decode a prediction frame; BadInput when it is not one or is inconsistent."""
    if len(data) > max_bytes:
        raise BadInput("oversize", f"{len(data)} bytes > limit {max_bytes}")
    if not is_frame(data):
        raise BadInput("not_a_frame", "predictions travel as frames")
    meta, arrays = decode_frame(data, KIND_PREDICTIONS)
    device, kind, ids = _meta_fields(meta)
    names = ("timestamps", "true_labels", "labels", "confidence", "top_labels", "top_probs",
             "latency_ms", "pixels")
    missing = [name for name in names if name not in arrays]
    if missing:
        raise BadInput("missing_field", ", ".join(missing))
    if not ids:
        raise BadInput("empty_batch", "no predictions")
    dims = {"top_labels": 2, "top_probs": 2}
    for name in names:
        array = arrays[name]
        if array.ndim != dims.get(name, array.ndim) or array.ndim == 0 or len(array) != len(ids):
            raise BadInput("wrong_shape", f"column {name} needs one row per id")
    if arrays["top_labels"].shape != arrays["top_probs"].shape or \
            arrays["top_labels"].shape[1] == 0:
        raise BadInput("wrong_shape", "top_labels and top_probs need the same (n, k) shape")
    model, version = meta.get("model"), meta.get("model_version")
    if not isinstance(model, str) or not isinstance(version, int) or isinstance(version, bool):
        raise BadInput("missing_field", "model and model_version")
    scored_at = meta.get("scored_at", 0.0)
    if isinstance(scored_at, bool) or not isinstance(scored_at, int | float):
        raise BadInput("bad_timestamp", "scored_at must be a number")
    return PredictionBatch(
        device=device, kind=kind, model=model, model_version=version, ids=ids,
        scored_at=float(scored_at),
        **{name: arrays[name] for name in names},
    )
