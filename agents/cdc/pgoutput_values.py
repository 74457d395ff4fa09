"""Column values of pgoutput tuples, turned into Python values by PostgreSQL type OID.

pgoutput sends a column either in the type's binary ``send`` format (when the slot is read
with ``binary 'true'``) or as the type's text output. Both are decoded here for the types
change-data-capture meets every day, into the same Python values asyncpg returns for a
``SELECT``, so that snapshot rows and streamed rows look alike downstream:

==================  ============================================================
bool                ``bool``
int2, int4, int8    ``int``
oid                 ``int``
float4, float8      ``float`` (NaN and infinities included)
numeric             ``decimal.Decimal``, exact, scale kept (``1.50`` stays ``1.50``)
text, varchar,      ``str`` (bpchar keeps its blank padding, as PostgreSQL sends it)
bpchar, name
bytea               ``bytes``
date                ``datetime.date``; ±infinity become ``date.max`` / ``date.min``
timestamp           naive ``datetime.datetime``; ±infinity become ``datetime.max/min``
timestamptz         ``datetime.datetime`` in UTC
time                ``datetime.time``
interval            :class:`PgInterval` (months, days and microseconds kept apart, as
                    PostgreSQL keeps them: a month has no fixed length)
uuid                ``uuid.UUID``
json, jsonb         ``str``, the JSON text: parsing is left to whoever needs the
                    objects, so a pass-through costs nothing and loses nothing
arrays of these     ``list`` (nested for several dimensions), NULL elements ``None``;
                    binary format only, the text output stays ``str``
==================  ============================================================

Any other type keeps its raw ``bytes`` (binary format) or its ``str`` (text format).
Text output is parsed assuming the server defaults ``DateStyle=ISO`` and UTF-8.
A value that cannot be decoded raises :class:`PgOutputError`.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any


class PgOutputError(ValueError):
    """pgoutput data that is truncated, malformed or not what the protocol allows."""


@dataclass(frozen=True, slots=True)
class PgInterval:
    """A PostgreSQL interval as it is stored: months, days and microseconds."""

    months: int
    days: int
    microseconds: int


BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID, JSON = 16, 17, 19, 20, 21, 23, 25, 26, 114
FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIMESTAMP = 700, 701, 1042, 1043, 1082, 1114
TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1184, 1700, 2950, 3802
TIME, INTERVAL = 1083, 1186

ARRAY_ELEMENTS: dict[int, int] = {
    1000: BOOL, 1001: BYTEA, 1003: NAME, 1005: INT2, 1007: INT4, 1009: TEXT, 1014: BPCHAR,
    1015: VARCHAR, 1016: INT8, 1021: FLOAT4, 1022: FLOAT8, 1028: OID, 1115: TIMESTAMP,
    1182: DATE, 1183: TIME, 1185: TIMESTAMPTZ, 1187: INTERVAL, 1231: NUMERIC, 2951: UUID,
    199: JSON, 3807: JSONB,
}
"""Array type OID -> element type OID, for the element types decoded here."""
_MAX_ARRAY_DIMENSIONS = 6  # PostgreSQL's MAXDIM

POSTGRES_EPOCH_DATE = date(2000, 1, 1)
POSTGRES_EPOCH = datetime(2000, 1, 1)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN = 0x0000, 0x4000, 0xC000
_NUMERIC_PINF, _NUMERIC_NINF = 0xD000, 0xF000


def postgres_micros_to_datetime(micros: int, *, utc: bool) -> datetime:
    """Microseconds since 2000-01-01 (PostgreSQL's epoch) as a datetime.

    PostgreSQL's ``infinity`` / ``-infinity`` have no Python equivalent; like asyncpg we
    return ``datetime.max`` / ``datetime.min`` (with UTC attached for timestamptz).
    """
    if micros == _INT64_MAX:
        moment = datetime.max
    elif micros == _INT64_MIN:
        moment = datetime.min
    else:
        moment = POSTGRES_EPOCH + timedelta(microseconds=micros)
    return moment.replace(tzinfo=UTC) if utc else moment


def _binary_bool(data: bytes) -> bool:
    if data not in (b"\x00", b"\x01"):
        raise ValueError(f"bool must be one byte 0 or 1, got {data!r}")
    return data == b"\x01"


def _unpacker(fmt: str) -> Callable[[bytes], Any]:
    layout = struct.Struct(fmt)
    return lambda data: layout.unpack(data)[0]


def _binary_numeric(data: bytes) -> Decimal:
    """Decode PostgreSQL's numeric wire format: base-10000 digits with weight and scale."""
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", data)
    if sign == _NUMERIC_NAN:
        return Decimal("NaN")
    if sign in (_NUMERIC_PINF, _NUMERIC_NINF):
        return Decimal("Infinity" if sign == _NUMERIC_PINF else "-Infinity")
    if sign not in (_NUMERIC_POS, _NUMERIC_NEG) or ndigits < 0 or dscale < 0:
        raise ValueError(f"bad numeric header {ndigits=} {weight=} {sign=:#x} {dscale=}")
    if len(data) != 8 + 2 * ndigits:
        raise ValueError(f"numeric with {ndigits} digits needs {8 + 2 * ndigits} bytes")
    coefficient = 0
    for digit in struct.unpack_from(f">{ndigits}H", data, 8):
        if digit > 9999:
            raise ValueError(f"numeric digit {digit} is not base 10000")
        coefficient = coefficient * 10000 + digit
    exponent = 4 * (weight - ndigits + 1)
    if ndigits == 0:
        exponent = -dscale
    elif exponent > -dscale:
        coefficient *= 10 ** (exponent + dscale)
        exponent = -dscale
    elif exponent < -dscale:
        quotient, remainder = divmod(coefficient, 10 ** (-dscale - exponent))
        if remainder == 0:  # only zeros below the display scale: drop them
            coefficient, exponent = quotient, -dscale
    digits = tuple(int(c) for c in str(coefficient))
    return Decimal((1 if sign == _NUMERIC_NEG else 0, digits, exponent))


def _binary_date(data: bytes) -> date:
    (days,) = struct.unpack(">i", data)
    if days == _INT32_MAX:
        return date.max
    if days == _INT32_MIN:
        return date.min
    return POSTGRES_EPOCH_DATE + timedelta(days=days)


def _binary_timestamp(data: bytes) -> datetime:
    return postgres_micros_to_datetime(struct.unpack(">q", data)[0], utc=False)


def _binary_timestamptz(data: bytes) -> datetime:
    return postgres_micros_to_datetime(struct.unpack(">q", data)[0], utc=True)


def _binary_jsonb(data: bytes) -> str:
    if data[:1] != b"\x01":
        raise ValueError(f"unsupported jsonb format version {data[:1]!r}")
    return data[1:].decode()


def _binary_time(data: bytes) -> time:
    (micros,) = struct.unpack(">q", data)
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, micro)


def _binary_interval(data: bytes) -> PgInterval:
    micros, days, months = struct.unpack(">qii", data)
    return PgInterval(months, days, micros)


def _binary_array(element_oid: int, data: bytes) -> list[Any]:
    """PostgreSQL's array ``send`` format: dimensions, then each element length-prefixed."""
    ndim, _flags, element = struct.unpack_from(">iiI", data)
    if ndim == 0:
        return []
    if not 0 < ndim <= _MAX_ARRAY_DIMENSIONS or element != element_oid:
        raise ValueError(f"array of {ndim} dimensions of type {element}, "
                         f"expected type {element_oid}")
    sizes = [struct.unpack_from(">ii", data, 12 + 8 * i)[0] for i in range(ndim)]
    offset = 12 + 8 * ndim
    total = 1
    for size in sizes:
        total *= size
    if any(size < 0 for size in sizes) or 4 * total > len(data) - offset:
        raise ValueError(f"array sizes {sizes} do not fit in {len(data)} bytes")
    decode = BINARY_DECODERS.get(element_oid, bytes)
    flat: list[Any] = []
    for _ in range(total):
        (length,) = struct.unpack_from(">i", data, offset)
        offset += 4
        if length == -1:
            flat.append(None)
            continue
        if length < 0 or offset + length > len(data):
            raise ValueError("array element runs past the end")
        flat.append(decode(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise ValueError("bytes left after the array's elements")
    for size in reversed(sizes[1:]):
        flat = [flat[i : i + size] for i in range(0, len(flat), size)]
    return flat


def _text_bool(text: str) -> bool:
    if text not in ("t", "f"):
        raise ValueError(f"bool text must be 't' or 'f', got {text!r}")
    return text == "t"


def _text_numeric(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a numeric: {text!r}") from None


def _text_bytea(text: str) -> bytes:
    """bytea text output: hex (``\\x0a0b``, the default) or the old escape format."""
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("latin-1")
            i += 1
        elif text[i + 1 : i + 2] == "\\":
            out.append(0x5C)
            i += 2
        else:
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
    return bytes(out)


def _text_date(text: str) -> date:
    if text in ("infinity", "-infinity"):
        return date.max if text == "infinity" else date.min
    return date.fromisoformat(text)


def _text_timestamp(text: str) -> datetime:
    if text in ("infinity", "-infinity"):
        return datetime.max if text == "infinity" else datetime.min
    return datetime.fromisoformat(text)


def _text_timestamptz(text: str) -> datetime:
    if text in ("infinity", "-infinity"):
        return (datetime.max if text == "infinity" else datetime.min).replace(tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamptz without a UTC offset: {text!r}")
    return moment.astimezone(UTC)


def _utf8(data: bytes) -> str:
    return data.decode()


BINARY_DECODERS: dict[int, Callable[[bytes], Any]] = {
    BOOL: _binary_bool,
    INT2: _unpacker(">h"),
    INT4: _unpacker(">i"),
    INT8: _unpacker(">q"),
    OID: _unpacker(">I"),
    FLOAT4: _unpacker(">f"),
    FLOAT8: _unpacker(">d"),
    NUMERIC: _binary_numeric,
    TEXT: _utf8,
    VARCHAR: _utf8,
    BPCHAR: _utf8,
    NAME: _utf8,
    BYTEA: bytes,
    DATE: _binary_date,
    TIMESTAMP: _binary_timestamp,
    TIMESTAMPTZ: _binary_timestamptz,
    UUID: lambda data: uuid.UUID(bytes=data),
    JSON: _utf8,
    JSONB: _binary_jsonb,
    TIME: _binary_time,
    INTERVAL: _binary_interval,
}
"""Decoders of the binary ``send`` format, by type OID."""

TEXT_DECODERS: dict[int, Callable[[str], Any]] = {
    BOOL: _text_bool,
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: float,
    FLOAT8: float,
    NUMERIC: _text_numeric,
    BYTEA: _text_bytea,
    DATE: _text_date,
    TIMESTAMP: _text_timestamp,
    TIMESTAMPTZ: _text_timestamptz,
    UUID: uuid.UUID,
    TIME: time.fromisoformat,
}
"""Decoders of the text output format, by type OID; types not listed stay ``str``."""


def decode_binary_value(type_oid: int, data: bytes) -> Any:
    """One column in binary format; unknown types keep their raw bytes."""
    decoder = BINARY_DECODERS.get(type_oid)
    element = ARRAY_ELEMENTS.get(type_oid)
    if decoder is None and element is None:
        return bytes(data)
    try:
        return decoder(data) if decoder is not None else _binary_array(element, data)
    except (ValueError, struct.error, OverflowError, IndexError) as error:
        raise PgOutputError(f"bad binary value for type {type_oid}: {error}") from None


def decode_text_value(type_oid: int, data: bytes) -> Any:
    """One column in text format; unknown types stay text."""
    try:
        text = data.decode()
        decoder = TEXT_DECODERS.get(type_oid)
        return text if decoder is None else decoder(text)
    except (ValueError, OverflowError, IndexError) as error:
        raise PgOutputError(f"bad text value for type {type_oid}: {error}") from None
