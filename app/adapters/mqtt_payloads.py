"""What travels over MQTT between edges and the hub, built and validated in one place.

Samples and predictions travel as the binary frames of ``app.wire`` (with ``site`` and
``geo`` added to their header). Faces, window metrics and commands are small JSON
documents, readable by any MQTT tool:

- face: one detected face, its bounding box, confidence, model and the crop as a PNG;
- metrics: one tumbling window of an edge (counts, labels, confidence summary);
- command: a model update, carrying the model artifact and its registry metadata.

``parse_*`` are the bridge's gate: they raise :class:`BadInput` with a short reason, so the
bridge dead-letters the original bytes and carries on. Size is checked before anything
else is trusted; a PNG's declared size is read from its header before it is decoded.
Timestamps follow the rules of every boundary (``app.core.bounds``): finite, after 2000,
and at most the future-skew bound ahead, so one edge with a clock far ahead cannot push
the windows of a site's other edges out of the ``site_metrics`` table.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import orjson

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_MODEL_VERSION,
    check_ids,
    check_time,
    is_int,
    is_number,
)
from edgewise.app.core.frames import BadInput, decode_frame, encode_frame, json_object

SCHEMA_VERSION = 1
FACE_MODEL = "haar-frontalface"
FACE_MODEL_VERSION = 1
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">4sII")  # chunk type, width, height (after the 8-byte magic and length)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_LABELS = 1000
MAX_COUNT = 2**53  # counts stay exact in JSON doubles (dashboards) and in sums
MAX_WINDOW_SECONDS = 86_400.0  # an edge window longer than a day is not a window


def parse_geo(text: str) -> dict[str, float] | None:
    """``"lat,lon"`` as ``{"lat": .., "lon": ..}``; None for an empty string."""
    if not text:
        return None
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"geo {text!r} must be 'lat,lon' in degrees") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"geo {text!r} is outside -90..90, -180..180")
    return {"lat": lat, "lon": lon}


def with_header_fields(frame: bytes, frame_kind: int, fields: dict[str, Any]) -> bytes:
    """A sample or prediction frame with extra header fields (site, geo); same arrays."""
    meta, arrays = decode_frame(frame, frame_kind)
    return encode_frame(frame_kind, {**meta, **fields}, arrays)


def _loads(data: bytes, max_bytes: int) -> dict[str, Any]:
    if not data:
        raise BadInput("empty", "message has no bytes")
    if len(data) > max_bytes:
        raise BadInput("oversize", f"{len(data)} bytes > limit {max_bytes}")
    doc = json_object(data, "payload")
    schema = doc.get("schema")
    if isinstance(schema, bool) or schema != SCHEMA_VERSION:
        raise BadInput("unknown_schema_version", f"schema {schema!r}")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if value is None:
        raise BadInput("missing_field", name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadInput("bad_field", f"{name} has the wrong type ({type(value).__name__})")
    return value


def _name(doc: dict[str, Any], field: str) -> str:
    value = _field(doc, field, str)
    if not _NAME.fullmatch(value):
        raise BadInput("bad_field", f"{field} {value[:80]!r} is not a plain name")
    return value


def _timestamp(doc: dict[str, Any], field: str, future_skew: float, now: float | None
               ) -> float:
    return check_time(_field(doc, field, (int, float)), field, future_skew, now)


def _count(doc: dict[str, Any], field: str) -> int:
    value = _field(doc, field, int)
    if not 0 <= value <= MAX_COUNT:
        raise BadInput("bad_field", f"{field} must lie in 0..2**53")
    return value


def _model_version(doc: dict[str, Any]) -> int:
    version = _field(doc, "model_version", int)
    if not 1 <= version <= MAX_MODEL_VERSION:
        raise BadInput("bad_field", f"model_version must lie in 1..{MAX_MODEL_VERSION}")
    return version


def _geo(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and set(value) == {"lat", "lon"}
            and all(is_number(v) for v in value.values())
            and -90 <= value["lat"] <= 90 and -180 <= value["lon"] <= 180):
        raise BadInput("bad_field", "geo must be {lat, lon} degrees in -90..90, -180..180")
    return value


# -- faces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceMessage:
    """One face seen by an edge camera; ``png`` is the crop of exactly ``box``."""

    id: str
    site: str
    device: str
    timestamp: float
    confidence: float
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    frame_size: tuple[int, int]  # width, height of the whole frame
    png: bytes
    model: str = FACE_MODEL
    model_version: int = FACE_MODEL_VERSION
    geo: dict[str, float] | None = None

    def encode(self) -> bytes:
        """The MQTT payload (JSON, PNG in base64)."""
        doc = asdict(self)
        doc.update(schema=SCHEMA_VERSION, kind="face", box=list(self.box),
                   frame=list(self.frame_size), png=base64.b64encode(self.png).decode())
        doc.pop("frame_size")
        return orjson.dumps(doc)

    def metadata(self) -> dict[str, str]:
        """Object-store metadata: ASCII strings only, as S3 requires."""
        return {
            "kind": "face", "id": self.id, "site": self.site, "device": self.device,
            "timestamp": f"{self.timestamp:.3f}", "confidence": f"{self.confidence:.4f}",
            "model": f"{self.model}:{self.model_version}",
            "box": ",".join(str(v) for v in self.box),
            **({"geo": f"{self.geo['lat']},{self.geo['lon']}"} if self.geo else {}),
        }


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG header, without decoding it; BadInput when not a PNG."""
    if len(png) < 24 or not png.startswith(PNG_MAGIC):
        raise BadInput("bad_image", "not a PNG")
    chunk, width, height = _IHDR.unpack_from(png, 12)
    if chunk != b"IHDR":
        raise BadInput("bad_image", "PNG without IHDR header")
    return width, height


def parse_face_payload(
    data: bytes, max_bytes: int, max_side: int, decode: bool = True, now: float | None = None,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
) -> FaceMessage:
    """Validate a face message: fields, box inside the frame, PNG exactly the box's size."""
    doc = _loads(data, max_bytes)
    face_id = _field(doc, "id", str)
    check_ids([face_id], "id")
    confidence = float(_field(doc, "confidence", (int, float)))
    if not 0.0 <= confidence <= 1.0:
        raise BadInput("bad_field", f"confidence {confidence} outside 0..1")
    box, frame = _field(doc, "box", list), _field(doc, "frame", list)
    if len(box) != 4 or len(frame) != 2 or not all(is_int(v) for v in box + frame):
        raise BadInput("bad_field", "box must be [x, y, w, h] and frame [width, height]")
    x, y, w, h = box
    if min(x, y) < 0 or min(w, h) <= 0 or x + w > frame[0] or y + h > frame[1]:
        raise BadInput("bad_field", f"box {box} does not lie inside frame {frame}")
    try:
        png = base64.b64decode(_field(doc, "png", str), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("bad_image", "png is not valid base64") from None
    width, height = png_size(png)
    if max(width, height) > max_side:
        raise BadInput("image_too_large", f"{width}x{height} > {max_side} pixels a side")
    if (width, height) != (w, h):
        raise BadInput("wrong_image_size", f"PNG is {width}x{height}, box is {w}x{h}")
    if decode:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.shape[:2] != (height, width):
            raise BadInput("bad_image", "PNG does not decode")
    return FaceMessage(
        id=face_id, site=_name(doc, "site"), device=_name(doc, "device"),
        timestamp=_timestamp(doc, "timestamp", future_skew, now), confidence=confidence,
        box=(x, y, w, h), frame_size=(frame[0], frame[1]), png=png,
        model=_name(doc, "model"), model_version=_model_version(doc), geo=_geo(doc.get("geo")),
    )


# -- window metrics ------------------------------------------------------------------------


def encode_metrics(fields: dict[str, Any]) -> bytes:
    """The MQTT payload of one edge window (see ``agents.edge_windows``)."""
    return orjson.dumps({"schema": SCHEMA_VERSION, "kind": "metrics", **fields})


def parse_metrics_payload(
    data: bytes, max_bytes: int, now: float | None = None,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
) -> dict[str, Any]:
    """Validate one edge window's metrics; the dict holds exactly the fields the hub uses.

    The window's start is held to the future-skew bound; its end may lie up to one window
    later (an edge that stops sends its open window).
    """
    doc = _loads(data, max_bytes)
    start = _timestamp(doc, "window_start", future_skew, now)
    end = _field(doc, "window_end", (int, float))
    if not is_number(end) or not start < end <= start + MAX_WINDOW_SECONDS:
        raise BadInput("bad_field", "window_end must be after window_start, within a day")
    end = float(end)
    out: dict[str, Any] = {
        "site": _name(doc, "site"), "device": _name(doc, "device"),
        "window_start": start, "window_end": end,
        "detect": _field(doc, "detect", str)[:32], "model": str(doc.get("model") or "")[:100],
    }
    for name in ("frames", "count", "scored", "low", "dropped"):
        out[name] = _count(doc, name)
    if out["low"] > out["scored"] or out["scored"] > out["count"]:
        raise BadInput("bad_field", "need low <= scored <= count")
    labels = _field(doc, "labels", dict)
    if len(labels) > MAX_LABELS or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels.values()):
        raise BadInput("bad_field", "labels must map label to a count")
    out["labels"] = {str(k)[:32]: v for k, v in labels.items()}
    if sum(out["labels"].values()) > out["count"]:
        raise BadInput("bad_field", "label counts add up to more than count")
    out["conf_sum"] = float(_field(doc, "conf_sum", (int, float)))
    for name in ("conf_min", "conf_max"):
        value = doc.get(name)
        if value is not None and (not is_number(value) or not 0.0 <= value <= 1.0):
            raise BadInput("bad_field", f"{name} must be a number in 0..1 or null")
        out[name] = value
    if not 0.0 <= out["conf_sum"] <= out["scored"] + 1e-6:
        raise BadInput("bad_field", "conf_sum must lie in 0..scored")
    if (out["conf_min"] is None) != (out["conf_max"] is None) or (
            out["conf_min"] is not None and out["conf_min"] > out["conf_max"]):
        raise BadInput("bad_field", "need conf_min <= conf_max, both or neither")
    return out


# -- commands (hub -> edge) ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelCommand:
    """A model version for the edges: registry metadata and the artifact bytes.

    ``issued_ms`` (when the bridge issued it), ``target`` (the command topic it was sent
    to) and ``signature`` (HMAC of all of it, ``app.adapters.model_signing``) let an edge
    tell a command from the hub from a forged, redirected or replayed one.
    """

    meta: dict[str, Any]
    artifact: bytes
    issued_ms: int = 0
    target: str = ""
    signature: str = ""

    def encode(self) -> bytes:
        return orjson.dumps({
            "schema": SCHEMA_VERSION, "command": "model-update", "meta": self.meta,
            "artifact": base64.b64encode(self.artifact).decode(),
            "issued_ms": self.issued_ms, "target": self.target, "signature": self.signature,
        })


def parse_model_command(data: bytes, max_bytes: int) -> ModelCommand:
    """Validate a model-update command; the artifact must hash to the announced sha256.

    The signature is only read here (64 hex digits or absent); checking it needs the key.
    """
    doc = _loads(data, max_bytes)
    if doc.get("command") != "model-update":
        raise BadInput("unknown_command", repr(doc.get("command"))[:80])
    meta = _field(doc, "meta", dict)
    _name(meta, "name")
    if not 1 <= _field(meta, "version", int) <= MAX_MODEL_VERSION:
        raise BadInput("bad_field", f"version must lie in 1..{MAX_MODEL_VERSION}")
    sha = _field(meta, "sha256", str)
    if not _SHA256.fullmatch(sha):
        raise BadInput("bad_field", "sha256 must be 64 hex digits")
    issued = doc.get("issued_ms", 0)
    if isinstance(issued, bool) or not isinstance(issued, int) or not 0 <= issued < MAX_COUNT:
        raise BadInput("bad_field", "issued_ms must be a whole number of milliseconds")
    target, signature = doc.get("target", ""), doc.get("signature", "")
    if not isinstance(target, str) or len(target) > 1024:
        raise BadInput("bad_field", "target must be a topic")
    if not isinstance(signature, str) or (signature and not _SHA256.fullmatch(signature)):
        raise BadInput("bad_field", "signature must be 64 hex digits")
    try:
        artifact = base64.b64decode(_field(doc, "artifact", str), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("bad_field", "artifact is not valid base64") from None
    if hashlib.sha256(artifact).hexdigest() != sha:
        raise BadInput("sha_mismatch", "artifact does not match its sha256")
    return ModelCommand(meta, artifact, issued, target, signature)
