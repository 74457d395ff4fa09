"""Rows of a change event as samples: which column is the id, the label, the image (and its
shape) and the device is configuration (``cdc_*_column``, ``cdc_image_shape``,
``cdc_sample_kind``). Shared by the ``cdc_transform`` stage and training from a topic.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_ID_LENGTH,
    MAX_LABEL,
    check_device,
    check_ids,
    check_time,
)
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import SAMPLE_KINDS
from edgewise.app.core.settings import Settings

ROW_OPS = frozenset({"c", "u", "r"})
SKIPPED_OPS = frozenset({"d", "t"})


@dataclass(frozen=True)
class RowMapping:
    """How a table row becomes a sample."""

    id_column: str
    label_column: str
    image_column: str
    shape: tuple[int, ...]
    kind: str
    device_column: str = ""


@dataclass(frozen=True, slots=True)
class RowSample:
    """One row, ready to be packed: device, id, commit time (s), label (-1 unknown), image."""

    device: str
    id: str
    timestamp: float
    label: int
    pixels: np.ndarray


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8x8"`` -> ``(8, 8)``."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"image shape {text!r} is not like 8x8") from None
    if not shape or any(n <= 0 for n in shape):
        raise ValueError(f"image shape {text!r} must be positive sizes like 8x8")
    return shape


def mapping_from_settings(settings: Settings) -> RowMapping:
    """The configured mapping, checked against the sample kind's image shape."""
    shape = parse_shape(settings.cdc_image_shape)
    kind = settings.cdc_sample_kind
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"sample kind {kind!r} unknown; kinds: {', '.join(SAMPLE_KINDS)}")
    if shape != SAMPLE_KINDS[kind][0]:
        raise ValueError(f"image shape {shape} does not match kind {kind} "
                         f"{SAMPLE_KINDS[kind][0]}")
    return RowMapping(settings.cdc_id_column, settings.cdc_label_column,
                      settings.cdc_image_column, shape, kind, settings.cdc_device_column)


def _image(value: Any, mapping: RowMapping) -> np.ndarray:
    if isinstance(value, str):
        try:
            pixels = np.frombuffer(base64.b64decode(value, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError):
            raise BadInput("bad_pixels", f"{mapping.image_column} is not base64") from None
    elif isinstance(value, list):
        try:
            numbers = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise BadInput("bad_pixels", f"{mapping.image_column} is not numbers") from None
        if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
            raise BadInput("bad_pixels", "pixels must be whole numbers")
        if np.any(numbers < 0) or np.any(numbers > 255):
            raise BadInput("out_of_range", "pixels must lie in 0..255")
        pixels = numbers.astype(np.uint8)
    else:
        raise BadInput("missing_field", f"column {mapping.image_column}")
    if pixels.size != math.prod(mapping.shape):
        raise BadInput("wrong_shape", f"{pixels.size} pixels, expected {mapping.shape}")
    _, low, high = SAMPLE_KINDS[mapping.kind]
    if pixels.min() < low or pixels.max() > high:
        raise BadInput("out_of_range", f"{mapping.kind} pixels must lie in {low:g}..{high:g}")
    return pixels.reshape(mapping.shape)


def _label(row: dict[str, Any], mapping: RowMapping) -> int:
    if not mapping.label_column:
        return -1
    value = row.get(mapping.label_column)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"{mapping.label_column} must be a class number, "
                                    f"got {value!r}")
    return value


def change_to_sample(
    value: bytes | None, mapping: RowMapping, future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
    now: float | None = None,
) -> RowSample | None:
    """The sample in one change event, None for events without a row to score
    (tombstones, deletes, truncates); BadInput for anything else that is not a sample.

    The commit time is the sample's time, so it obeys the rules of every timestamp: a
    database clock far ahead would push the table's windows out like an edge's would."""
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", str(exc)[:200]) from None
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, dict):
        raise BadInput("not_an_envelope", "no payload object")
    op = payload.get("op")
    if op in SKIPPED_OPS:
        return None
    if op not in ROW_OPS:
        raise BadInput("unknown_op", repr(op)[:50])
    row, source = payload.get("after"), payload.get("source")
    if not isinstance(row, dict) or not isinstance(source, dict):
        raise BadInput("not_an_envelope", "after and source must be objects")
    row_id = row.get(mapping.id_column)
    if row_id is None or isinstance(row_id, dict | list | bool) or not str(row_id):
        raise BadInput("missing_field", f"column {mapping.id_column}")
    table = f"{source.get('schema')}.{source.get('table')}"
    device = (str(row.get(mapping.device_column) or "") if mapping.device_column
              else f"cdc:{table}")
    sample_id = f"{source.get('table')}-{row_id}"
    if not device or len(device) > MAX_ID_LENGTH or len(sample_id) > MAX_ID_LENGTH:
        raise BadInput("bad_id", f"device and id must be 1..{MAX_ID_LENGTH} characters")
    check_ids([sample_id], "id")
    check_device(device)
    millis = source.get("ts_ms", payload.get("ts_ms"))
    if isinstance(millis, bool) or not isinstance(millis, int | float):
        raise BadInput("bad_timestamp", f"ts_ms {str(millis)[:50]}")
    stamp = check_time(millis / 1000.0, "ts_ms", future_skew, now)
    return RowSample(device, sample_id, stamp, _label(row, mapping),
                     _image(row.get(mapping.image_column), mapping))
