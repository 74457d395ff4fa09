"""References to objects (images in S3 or under the image directory), as the refs stage
reads them from its topic, checked at the boundary.

A message is one of:
- an S3 (or MinIO) event notification: ``{"Records": [{"eventName": "ObjectCreated:Put",
  "eventTime": "...", "s3": {"bucket": {"name": ...}, "object": {"key": ..., "size": ...}}},
  ...]}``, keys URL-encoded as S3 sends them (``+`` a space). Records that are not object
  creations (removals, restores) and S3's ``s3:TestEvent`` carry no reference and are
  ignored, counted;
- a reference object ``{"url": "s3://bucket/key" | "path/under/the/image/dir.png", "id",
  "device", "label", "ts"}`` (all but ``url`` optional), or a JSON array of them (or of
  bare reference strings);
- plain UTF-8 text, one reference per line.

Every field is held to the bounds the other boundaries apply (ids, devices, labels, times,
sizes): a bucket not configured (``bucket_not_allowed``), a path that leaves the image
directory (``outside_image_dir``), a key that is empty, longer than S3 allows or not
printable (``bad_reference``). A reference that fails is refused on its own; the others of
its message go on. A sample's id is the one given, else the reference itself
(``s3://bucket/key``, or ``file:`` and the path within the image directory), so the same
object notified twice is the same sample; a reference longer than an id may be is named
by its sha256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import orjson

from edgewise.app.core.bounds import (
    MAX_ID_LENGTH,
    MAX_LABEL,
    check_device,
    check_ids,
    check_size,
    check_time,
    is_int,
)
from edgewise.app.core.frames import BadInput

MAX_KEY_BYTES = 1024  # S3's limit on a key
#: Fields of a reference object; anything else is refused (a typo must not pass unseen).
REFERENCE_FIELDS = frozenset({"url", "id", "device", "label", "ts", "timestamp"})


@dataclass(frozen=True)
class ObjectRef:
    """One object to fetch: in S3 (``bucket`` and ``key``) or in the image directory
    (``bucket`` None, ``key`` the path within it)."""

    id: str
    device: str
    bucket: str | None
    key: str
    label: int = -1  # -1: unknown (the object's metadata may say)
    timestamp: float | None = None  # None: when it is fetched
    size: int | None = None  # as the notification states it

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket is not None else \
            f"file:{self.key}"


@dataclass
class RefMessage:
    """What one message holds: references, refusals of some of them, records ignored."""

    refs: list[ObjectRef] = field(default_factory=list)
    refused: list[BadInput] = field(default_factory=list)
    ignored: int = 0


@dataclass(frozen=True)
class RefLimits:
    """What a reference may name: the buckets allowed, and the bounds of a message."""

    buckets: frozenset[str]
    default_device: str
    max_bytes: int = 1_000_000
    max_refs: int = 4096
    future_skew: float = 30.0


def sample_id(url: str) -> str:
    """The reference as the sample's id, or its sha256 when it is too long for one."""
    if len(url) <= MAX_ID_LENGTH and url.isprintable():
        return url
    return "sha256:" + hashlib.sha256(url.encode()).hexdigest()


def checked_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES \
            or not key.isprintable():
        raise BadInput("bad_reference", f"{what} must be 1..{MAX_KEY_BYTES} bytes of "
                                        "printable text")
    return key


def local_path(text: str) -> str:
    """A path within the image directory, normalised; one that climbs out is refused."""
    path = posixpath.normpath(checked_key(text, "a path"))
    if path.startswith("/") or path == ".." or path.startswith("../") or path == ".":
        raise BadInput("outside_image_dir", f"{text[:200]!r} is not a path within the image "
                                            "directory")
    return path


def reference(url: Any, limits: RefLimits, **fields: Any) -> ObjectRef:
    """An ObjectRef from ``s3://bucket/key``, ``file:path`` or a bare path, with its fields."""
    if not isinstance(url, str):
        raise BadInput("bad_reference", "a reference must be a string")
    if url.startswith("s3://"):
        parts = urlsplit(url)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if bucket not in limits.buckets:
            raise BadInput("bucket_not_allowed", f"bucket {bucket[:80]!r} is not one of "
                                                 f"{', '.join(sorted(limits.buckets))}")
        key = checked_key(key, "an S3 key")
        path: str | None = None
    elif "://" in url:
        raise BadInput("bad_reference", f"{url[:80]!r}: only s3:// URLs and paths")
    else:
        bucket, key = None, ""
        path = local_path(url.removeprefix("file:"))
    ref = ObjectRef(id="", device=limits.default_device, bucket=bucket,
                    key=key if path is None else path)
    return with_fields(ref, limits, **fields)


def with_fields(ref: ObjectRef, limits: RefLimits, id: Any = None, device: Any = None,
                label: Any = None, ts: Any = None, size: Any = None) -> ObjectRef:
    """``ref`` with its id, device, label, time and size checked (defaults where absent)."""
    sample = check_ids([id], "id")[0] if id is not None else sample_id(ref.url)
    where = check_device(device) if device is not None else ref.device
    if label is not None and not (is_int(label) and 0 <= label <= MAX_LABEL):
        raise BadInput("bad_label", f"label must be a whole number in 0..{MAX_LABEL}")
    stamp = None if ts is None else check_time(ts, "ts", limits.future_skew)
    if size is not None and not (is_int(size) and size >= 0):
        raise BadInput("bad_reference", "an object's size must be a whole number")
    return ObjectRef(sample, where, ref.bucket, ref.key, -1 if label is None else label,
                     stamp, size)


def event_time(text: Any, future_skew: float) -> float | None:
    """An S3 ``eventTime`` (ISO 8601, UTC) as seconds, checked like every timestamp."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 40:
        raise BadInput("bad_timestamp", "eventTime must be an ISO 8601 time")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput("bad_timestamp", f"eventTime {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return check_time(moment.timestamp(), "eventTime", future_skew)


def from_record(record: Any, limits: RefLimits) -> ObjectRef | None:
    """The object an S3 event record created, or None for another event."""
    if not isinstance(record, dict):
        raise BadInput("bad_event", "an event record must be an object")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise BadInput("bad_event", "an event record needs its eventName")
    if not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict) \
            or not isinstance(bucket.get("name"), str) or not isinstance(obj.get("key"), str):
        raise BadInput("bad_event", "an event record needs s3.bucket.name and s3.object.key")
    if bucket["name"] not in limits.buckets:
        raise BadInput("bucket_not_allowed", f"bucket {bucket['name'][:80]!r} is not one of "
                                             f"{', '.join(sorted(limits.buckets))}")
    key = checked_key(unquote_plus(obj["key"]), "an S3 key")
    ref = ObjectRef("", limits.default_device, bucket["name"], key)
    return with_fields(ref, limits, size=obj.get("size"),
                       ts=event_time(record.get("eventTime"), limits.future_skew))


def add(message: RefMessage, make: Any, *args: Any) -> None:
    """``make(*args)`` added to the message: a reference, a refusal, or one more ignored."""
    try:
        ref = make(*args)
    except BadInput as refused:
        message.refused.append(refused)
        return
    if ref is None:
        message.ignored += 1
    else:
        message.refs.append(ref)


def from_object(doc: dict[str, Any], limits: RefLimits) -> ObjectRef:
    unknown = set(doc) - REFERENCE_FIELDS
    if unknown:
        raise BadInput("unknown_field", f"a reference has no field {sorted(unknown)[0]!r}")
    if "url" not in doc:
        raise BadInput("missing_field", "a reference needs its url")
    ts = doc.get("ts", doc.get("timestamp"))
    return reference(doc["url"], limits, id=doc.get("id"), device=doc.get("device"),
                     label=doc.get("label"), ts=ts)


def parse_refs(data: bytes, limits: RefLimits) -> RefMessage:
    """The references of one message (see the module's docstring); BadInput when the
    message as a whole is unusable."""
    check_size(data, limits.max_bytes)
    message = RefMessage()
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadInput("bad_json", str(exc)[:200]) from None
        items = doc if isinstance(doc, list) else [doc]
        if isinstance(doc, dict) and "Records" in doc:
            items = doc["Records"]
            if not isinstance(items, list):
                raise BadInput("bad_event", "Records must be a list")
            make: Any = from_record
        elif isinstance(doc, dict) and doc.get("Event") == "s3:TestEvent":
            message.ignored += 1
            return message
        else:
            make = None
        if len(items) > limits.max_refs:
            raise BadInput("too_many_samples", f"{len(items)} references > limit "
                                               f"{limits.max_refs}")
        for item in items:
            if make is not None:
                add(message, make, item, limits)
            elif isinstance(item, dict):
                add(message, from_object, item, limits)
            else:
                add(message, reference, item, limits)
        return message
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("bad_utf8", "references must be UTF-8 text or JSON") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadInput("empty", "no reference in the message")
    if len(lines) > limits.max_refs:
        raise BadInput("too_many_samples", f"{len(lines)} references > limit {limits.max_refs}")
    for line in lines:
        add(message, reference, line, limits)
    return message
