"""The binary frame on the wire between stages: a small JSON header, then raw arrays.

A batch of samples travels as one Kafka message so that per-event costs are paid once per
batch. Pixels are raw bytes, not JSON number lists. Layout::

    b"EW" | schema version (u8) | kind (u8) | header length (u32, big endian) | header | body

The header (orjson) holds the metadata and, under ``"arrays"``, ``[name, dtype, shape]``
for each array; the body is the arrays' bytes in that order. Decoding never copies pixel
data (``np.frombuffer`` views) and checks every size before trusting it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

MAGIC = b"EW"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
KIND_SAMPLES = 1
KIND_PREDICTIONS = 2
_PREFIX = struct.Struct(">2sBBI")
ALLOWED_DTYPES = frozenset({"uint8", "int32", "int64", "float32", "float64"})


class BadInput(ValueError):
    """Input that fails validation; ``reason`` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def json_object(data: bytes, what: str = "message") -> dict[str, Any]:
    """Parse JSON that must be an object; BadInput("bad_json") otherwise."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise BadInput("bad_json", f"{what} is not a JSON object")
    return doc


def encode_frame(kind: int, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Pack metadata and arrays into one frame."""
    layout = []
    chunks = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.name
        if dtype not in ALLOWED_DTYPES:
            raise TypeError(f"array {name} has unsupported dtype {dtype}")
        layout.append([name, dtype, list(array.shape)])
        chunks.append(array.tobytes())
    header = orjson.dumps({**meta, "arrays": layout}, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([_PREFIX.pack(MAGIC, SCHEMA_VERSION, kind, len(header)), header, *chunks])


def is_frame(data: bytes) -> bool:
    """True when the bytes start like a frame (whatever their version)."""
    return data[:2] == MAGIC


def decode_frame(data: bytes, expect_kind: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Unpack a frame into (meta, arrays), raising BadInput for anything inconsistent."""
    if len(data) < _PREFIX.size:
        raise BadInput("truncated", f"{len(data)} bytes is shorter than a frame prefix")
    magic, version, kind, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BadInput("not_a_frame", "missing EW magic")
    if version not in SUPPORTED_VERSIONS:
        raise BadInput("unknown_schema_version", f"version {version}")
    if kind != expect_kind:
        raise BadInput("wrong_kind", f"frame kind {kind}, expected {expect_kind}")
    start = _PREFIX.size
    if start + header_len > len(data):
        raise BadInput("truncated", "header runs past the end of the message")
    try:
        meta = orjson.loads(data[start : start + header_len])
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_header", str(exc)) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), list):
        raise BadInput("bad_header", "header is not an object with 'arrays'")
    arrays: dict[str, np.ndarray] = {}
    offset = start + header_len
    view = memoryview(data)
    for entry in meta.pop("arrays"):
        name, dtype, shape = _array_entry(entry)
        if name in arrays:
            raise BadInput("bad_header", f"array {name} appears twice")
        size = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
        if offset + size > len(data):
            raise BadInput("truncated", f"array {name} runs past the end of the message")
        arrays[name] = np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    if offset != len(data):
        raise BadInput("trailing_bytes", f"{len(data) - offset} bytes after the last array")
    return meta, arrays


def _array_entry(entry: Any) -> tuple[str, str, tuple[int, ...]]:
    try:
        name, dtype, shape = entry
    except (TypeError, ValueError):
        raise BadInput("bad_header", f"bad array entry {str(entry)[:100]}") from None
    # whole numbers only: int(1.9) or int(True) would quietly read a different shape
    if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise BadInput("bad_header", f"array shape {str(shape)[:100]} is not whole numbers")
    shape = tuple(shape)
    if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise BadInput("bad_dtype", f"array {str(name)[:50]!r} dtype {str(dtype)[:50]!r}")
    if any(n < 0 for n in shape) or len(shape) > 4:
        raise BadInput("wrong_shape", f"array {name} shape {shape}")
    return name, dtype, shape
