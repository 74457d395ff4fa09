"""Rows posted to ``/api/ingest``: parsed, held to the served model's input schema, and
packed into tabular sample batches, one per device.

A body is one JSON row, a JSON array of rows, or NDJSON (one row per line); its media type
says which. A row is an object holding every feature of the schema by name (``null`` marks
a missing value, allowed where the schema says so) and, optionally, ``id`` (the sample id;
one is made when absent), ``device`` (the configured default when absent), ``ts`` (seconds
since the epoch, or ``timestamp``; the time of arrival when absent) and ``label`` (the
true class, when known). Nothing else: an unknown field is refused, as is a missing one, a
value of the wrong type, a number beyond float32, a time before 2000 or ahead of this
host's clock, a repeated id. Every refusal is a :class:`BadInput`, whose reason the view
answers with.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_LABEL,
    check_device,
    check_ids,
    check_times,
    is_int,
)
from edgewise.app.core.frames import BadInput
from edgewise.app.core.input_schema import RESERVED_NAMES, InputSchema, check_schema_value
from edgewise.app.core.records import PREDICTION_COLUMN_BYTES, TABULAR, SampleBatch

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
ACCEPTED_TYPES = ", ".join(sorted(JSON_TYPES | NDJSON_TYPES))
#: Reasons answered with 413 and 415 rather than 400.
TOO_LARGE = frozenset({"oversize", "too_many_rows"})
UNSUPPORTED = "unsupported_media_type"
FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_TYPES = frozenset({int, float, type(None)})


@dataclass(frozen=True)
class IngestedRows:
    """The accepted rows: their batches (one per device, in order of first appearance) and
    every id, in the order the rows came."""

    batches: list[SampleBatch]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def body_format(content_type: str) -> str:
    """``json`` or ``ndjson`` from a Content-Type header (UTF-8 only); BadInput otherwise."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            raise BadInput(UNSUPPORTED, f"charset {value.strip()[:40]}: bodies are UTF-8")
    if media in JSON_TYPES:
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    raise BadInput(UNSUPPORTED, f"Content-Type {media[:80] or '(none)'}; accepted: "
                                f"{ACCEPTED_TYPES}")


def parse_body(body: bytes, form: str, max_rows: int) -> list[Any]:
    """The rows of a body (each still to be checked), at most ``max_rows`` of them."""
    if form == "ndjson":
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > max_rows:
            raise BadInput("too_many_rows", f"{len(lines)} rows > limit {max_rows}")
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BadInput("bad_json", f"line {number}: {str(exc)[:200]}") from None
        return rows
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", str(exc)[:200]) from None
    if isinstance(doc, dict):
        return [doc]
    if not isinstance(doc, list):
        raise BadInput("bad_json", "a body is a row (an object) or an array of rows")
    if len(doc) > max_rows:
        raise BadInput("too_many_rows", f"{len(doc)} rows > limit {max_rows}")
    return doc


def rows_to_batches(
    rows: list[Any], schema: InputSchema, default_device: str, new_id: Callable[[], str], *,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> IngestedRows:
    """Rows held to ``schema`` and packed per device; BadInput naming the first row at fault."""
    if not rows:
        raise BadInput("empty_batch", "no rows")
    names = schema.names
    allowed = frozenset(names) | RESERVED_NAMES
    width = len(names)
    arrived = time.time() if now is None else now
    values: list[list[Any]] = []
    ids, devices, stamps, labels = [], [], [], []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise BadInput("bad_row", f"row {i} is not an object")
        if len(row) != width or not row.keys() <= allowed:
            _check_fields(row, allowed, names, i)
        try:
            values.append([row[name] for name in names])
        except KeyError:
            _check_fields(row, allowed, names, i)
        if len(row) > width:  # reserved fields, checked as a whole further down
            sid, device = row.get("id"), row.get("device", default_device)
            stamp, label = _row_time(row, i), row.get("label")
        else:
            sid, device, stamp, label = None, default_device, None, None
        ids.append(new_id() if sid is None else sid)
        devices.append(device)
        stamps.append(arrived if stamp is None else stamp)
        labels.append(_row_label(label, i))
    matrix = _feature_matrix(values, schema)
    if not all(type(s) is str for s in ids):
        raise BadInput("bad_id", f"row {_first(ids, lambda s: type(s) is not str)}: id must be "
                                 "a string")
    check_ids(ids, "row ids")
    for device in set(devices):
        try:
            check_device(device)
        except BadInput:
            raise BadInput("bad_device", "device must be a non-empty printable string of at "
                                         "most 200 characters") from None
    if not all(type(s) in (int, float) for s in stamps):
        at = _first(stamps, lambda s: type(s) not in (int, float))
        raise BadInput("bad_timestamp", f"row {at}: ts must be seconds since the epoch")
    times = np.array(stamps, dtype=np.float64)
    check_times(times, "ts", future_skew, arrived)
    return IngestedRows(_per_device(ids, devices, times, np.array(labels, dtype=np.int32),
                                    matrix), ids)


def _check_fields(row: dict[str, Any], allowed: frozenset[str], names: list[str], i: int
                  ) -> None:
    unknown = sorted(k for k in row if k not in allowed)
    if unknown:
        raise BadInput("unknown_field", f"row {i}: unknown field(s) "
                                        f"{', '.join(str(k)[:40] for k in unknown[:5])}")
    absent = [n for n in names if n not in row]
    if absent:
        raise BadInput("missing_field", f"row {i} has no {absent[0][:80]} (null marks a "
                                        "missing value)")


def _row_time(row: dict[str, Any], i: int) -> Any:
    stamp = row.get("ts", row.get("timestamp"))
    if "ts" in row and "timestamp" in row:
        raise BadInput("bad_timestamp", f"row {i}: ts and timestamp both given")
    if isinstance(stamp, bool):
        raise BadInput("bad_timestamp", f"row {i}: ts must be seconds since the epoch")
    return stamp


def _row_label(label: Any, i: int) -> int:
    if label is None:
        return -1
    if not is_int(label) or not 0 <= label <= MAX_LABEL:
        raise BadInput("bad_label", f"row {i}: label must be a class number 0..{MAX_LABEL} or "
                                    f"null, not {str(label)[:50]}")
    return label


def _first(values: list[Any], wrong: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(values) if wrong(v))


def _feature_matrix(values: list[list[Any]], schema: InputSchema) -> np.ndarray:
    """float32 rows, NaN for null; types, float32 range and the schema's rules checked."""
    types = set(map(type, itertools.chain.from_iterable(values)))
    if not types <= _NUMBER_TYPES or schema.flags.any():
        for i, row in enumerate(values):  # the slow path: find the value at fault
            for feature, value in zip(schema.features, row, strict=True):
                try:
                    check_schema_value(feature, value)
                except BadInput as exc:
                    raise BadInput(exc.reason, f"row {i}: {exc.detail}") from None
        values = [[float(v) if type(v) is bool else v for v in row] for row in values]
    matrix = np.array(values, dtype=np.float64)  # None becomes NaN
    beyond = np.abs(matrix) > FLOAT32_MAX
    if beyond.any():
        row, column = (int(k[0]) for k in np.nonzero(beyond))
        raise BadInput("out_of_range", f"row {row}: {schema.names[column][:80]} is beyond "
                                       f"float32 (±{FLOAT32_MAX:.3g})")
    rows = matrix.astype(np.float32)
    schema.check_rows(rows)
    return rows


def _per_device(ids: list[str], devices: list[str], times: np.ndarray, labels: np.ndarray,
                rows: np.ndarray) -> list[SampleBatch]:
    first = devices[0]
    if all(d == first for d in devices):
        return [SampleBatch(first, TABULAR, ids, times, labels, rows)]
    order: dict[str, list[int]] = {}
    for i, device in enumerate(devices):
        order.setdefault(device, []).append(i)
    return [SampleBatch(device, TABULAR, [ids[i] for i in pick], times[pick], labels[pick],
                        rows[pick]) for device, pick in order.items()]


def frames_within(batch: SampleBatch, max_samples: int, max_bytes: int) -> list[SampleBatch]:
    """``batch`` cut into batches of at most ``max_samples`` rows whose frames stay within
    about ``max_bytes`` (as prediction frames too, which carry the rows again)."""
    per_row = batch.pixels.shape[1] * 4 + PREDICTION_COLUMN_BYTES + max(map(len, batch.ids))
    step = max(1, min(max_samples, max_bytes // per_row))
    if len(batch) <= step:
        return [batch]
    return [SampleBatch(batch.device, batch.kind, batch.ids[i:i + step],
                        batch.timestamps[i:i + step], batch.labels[i:i + step],
                        batch.pixels[i:i + step]) for i in range(0, len(batch), step)]


def parse_ingest(
    body: bytes, content_type: str, schema: InputSchema, *, max_rows: int,
    default_device: str, new_id: Callable[[], str],
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> IngestedRows:
    """A body to accepted rows, or the BadInput saying why not."""
    form = body_format(content_type)
    if not body:
        raise BadInput("empty", "the body is empty")
    return rows_to_batches(parse_body(body, form, max_rows), schema, default_device, new_id,
                           future_skew=future_skew, now=now)
