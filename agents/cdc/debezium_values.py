"""Column values as Debezium's PostgreSQL connector writes them through Kafka's JSON converter.

Debezium is the reference (it runs beside edgewise's capture in the test suite and
``edgewise bench cdc --vs debezium``, and the envelopes are compared field by field), in its
default settings except ``decimal.handling.mode=string``:

- bytea: base64 string; uuid: string; json/jsonb: the JSON text, unparsed;
- numeric: plain decimal string, scale kept (``"-12.3400"``); NaN and infinities as
  ``"NAN"``, ``"POSITIVE_INFINITY"``, ``"NEGATIVE_INFINITY"``;
- real: the shortest decimal that reads back as the same 32-bit float (``1.1``, not
  ``1.100000023841858``); real and double NaN and infinities as the strings ``"NaN"``,
  ``"Infinity"``, ``"-Infinity"`` (Jackson's way of writing them);
- date: days since 1970-01-01;
- timestamp: microseconds since 1970-01-01, milliseconds for ``timestamp(0..3)``
  (``time.precision.mode=adaptive``);
- timestamptz: ISO-8601 in UTC with as many fraction digits as the column's precision
  (six by default), ``"2024-05-01T10:30:00.250000Z"``;
- time: microseconds since midnight, milliseconds for ``time(0..3)``; interval:
  microseconds, a month counted as 365.25 / 12 = 30.4375 days (``MicroDuration``);
- arrays: JSON arrays of their elements, each encoded as above;
- a TOASTed column an UPDATE did not send: ``"__debezium_unavailable_value"``.

The type comes from the table's Relation (pgoutput's, or one built from the catalog for the
snapshot), so snapshot rows (asyncpg's values) and streamed rows (pgoutput's) encode alike.
"""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

from edgewise.agents.cdc.pgoutput import Relation, UnchangedToast
from edgewise.agents.cdc.pgoutput_values import (
    ARRAY_ELEMENTS,
    FLOAT4,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    PgInterval,
)

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""Debezium's placeholder for a TOASTed value PostgreSQL did not resend."""

DEFAULT_PRECISION = 6
"""Fraction digits of a timestamp, timestamptz or time column declared without any."""

_UNIX_EPOCH_DATE = date(1970, 1, 1)
_UNIX_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)
_MICROS_PER_DAY = 86_400_000_000
_MICROS_PER_MONTH = 2_629_800_000_000  # 30.4375 days, Debezium's average month
_FLOAT32 = struct.Struct(">f")
_SPECIAL_DECIMALS = {"NaN": "NAN", "Infinity": "POSITIVE_INFINITY",
                     "-Infinity": "NEGATIVE_INFINITY"}


def precision(type_modifier: int) -> int:
    """Fraction digits of a time-like column from its ``atttypmod`` (-1: not declared)."""
    return DEFAULT_PRECISION if not 0 <= type_modifier <= 6 else type_modifier


def zoned_timestamp(moment: datetime, digits: int = DEFAULT_PRECISION) -> str:
    """A timestamptz in UTC, ISO-8601, with ``digits`` fraction digits (none when 0)."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    text = utc.replace(microsecond=0).isoformat()
    if digits:
        text += "." + f"{utc.microsecond:06d}"[:digits]
    return text + "Z"


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same 32-bit float: what Java prints for a float."""
    packed = _FLOAT32.pack(value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if _FLOAT32.pack(candidate) == packed:
                return candidate
        except OverflowError:  # rounded up past the largest float
            continue
    return value


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def json_value(value: Any) -> Any:
    """One value in Debezium's JSON encoding, where the type alone decides (see the module
    docstring); :func:`column_json` also knows the column's type and precision."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return _SPECIAL_DECIMALS.get(str(value), str(value))
        return format(value, "f")
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return zoned_timestamp(value)
        return (value - _UNIX_EPOCH) // _MICROSECOND
    if isinstance(value, date):
        return (value - _UNIX_EPOCH_DATE).days
    if isinstance(value, time_of_day):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + (
            value.microsecond
        )
    if isinstance(value, timedelta):
        return value // _MICROSECOND
    if isinstance(value, PgInterval):
        return (value.months * _MICROS_PER_MONTH + value.days * _MICROS_PER_DAY
                + value.microseconds)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, UnchangedToast):
        return UNAVAILABLE_VALUE
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def column_encoder(type_oid: int, type_modifier: int = -1) -> Callable[[Any], Any]:
    """The function writing one column's values as Debezium does, chosen once per column:
    types whose encoding depends on the column (real, timestamptz, timestamp(0..3),
    time(0..3), arrays of those) get their own; the rest share :func:`json_value`."""
    element = ARRAY_ELEMENTS.get(type_oid)
    if element is not None:
        inner = column_encoder(element, type_modifier)
        return lambda value: [inner(item) for item in value] if isinstance(
            value, list | tuple) else json_value(value)
    if type_oid == FLOAT4:
        return _real
    if type_oid == TIMESTAMPTZ:
        digits = precision(type_modifier)
        return lambda value: zoned_timestamp(value, digits) if isinstance(
            value, datetime) and value.tzinfo is not None else json_value(value)
    if type_oid in (TIMESTAMP, TIME) and 0 <= type_modifier <= 3:
        return _milliseconds
    return json_value


def _real(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return shortest_float32(value)
    return json_value(value)


def _milliseconds(value: Any) -> Any:
    micros = json_value(value)
    return micros // 1000 if isinstance(micros, int) and not isinstance(micros, bool) else micros


def column_json(value: Any, type_oid: int, type_modifier: int = -1) -> Any:
    """One column's value as Debezium writes it, given the column's type OID and modifier."""
    return column_encoder(type_oid, type_modifier)(value)


_ENCODERS: dict[int, tuple[Relation, dict[str, Callable[[Any], Any]]]] = {}
_MAX_RELATIONS = 1024


def relation_encoders(relation: Relation) -> dict[str, Callable[[Any], Any]]:
    """Column name -> encoder of a relation, made once per Relation object (the cache holds
    the object, so its id cannot be reused while cached)."""
    cached = _ENCODERS.get(id(relation))
    if cached is not None and cached[0] is relation:
        return cached[1]
    if len(_ENCODERS) >= _MAX_RELATIONS:
        _ENCODERS.clear()
    encoders = {c.name: column_encoder(c.type_oid, c.type_modifier) for c in relation.columns}
    _ENCODERS[id(relation)] = (relation, encoders)
    return encoders


def row_json(row: Mapping[str, Any] | None, relation: Relation | None = None
             ) -> dict[str, Any] | None:
    """A whole row (``before`` / ``after``); typed by ``relation`` when it is given."""
    if row is None:
        return None
    if relation is None:
        return {name: json_value(value) for name, value in row.items()}
    encoders = relation_encoders(relation)
    return {name: encoders.get(name, json_value)(value) for name, value in row.items()}
