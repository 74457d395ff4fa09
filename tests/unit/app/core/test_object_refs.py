"""References at the boundary: S3 and MinIO event notifications (URL-encoded keys, other
events ignored), reference objects, arrays and text lines; only the configured buckets,
only paths within the image directory, every field held to its bounds, a bad reference
refused on its own, and any bytes at all either references or BadInput."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.frames import BadInput
from edgewise.app.core.object_refs import ObjectRef, RefLimits, parse_refs, sample_id

LIMITS = RefLimits(buckets=frozenset({"images", "scans.2026"}), default_device="refs",
                   max_bytes=100_000, max_refs=50, future_skew=30.0)


def event(bucket: str, key: str, name: str = "ObjectCreated:Put", **more: Any
          ) -> dict[str, Any]:
    """A record as S3 sends it (moto's and AWS's shape); MinIO's differs in eventSource."""
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-01-02T03:04:05.678Z", "eventName": name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": 1234, "eTag": "abc", **more}}}


def parsed(doc: Any) -> Any:
    return parse_refs(doc if isinstance(doc, bytes) else orjson.dumps(doc), LIMITS)


def test_an_s3_notification_names_its_objects_with_keys_decoded() -> None:
    message = parsed({"Records": [
        event("images", "digits/r%C3%A4k+1/7.png"),
        event("scans.2026", "a%2Bb/c%20d.jpg", name="s3:ObjectCreated:CompleteMultipartUpload"),
        event("images", "gone.png", name="ObjectRemoved:Delete"),
        event("images", "x.png", name="ObjectRestore:Completed")]})
    assert message.refused == [] and message.ignored == 2
    first, second = message.refs
    assert (first.bucket, first.key, first.id) == ("images", "digits/räk 1/7.png",
                                                   "s3://images/digits/räk 1/7.png")
    assert (second.bucket, second.key) == ("scans.2026", "a+b/c d.jpg")
    assert first.device == "refs" and first.label == -1 and first.size == 1234
    assert first.timestamp == pytest.approx(1767323045.678)


def test_s3_s_test_event_carries_nothing() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00Z",
                  "Bucket": "images", "RequestId": "1", "HostId": "2"}
    message = parsed(test_event)
    assert message.refs == [] and message.refused == [] and message.ignored == 1


def test_references_as_objects_arrays_and_lines() -> None:
    now = time.time()
    one = parsed({"url": "s3://images/a/b.png", "id": "cam-7-42", "device": "cam-7",
                  "label": 3, "ts": now})
    assert one.refs == [ObjectRef("cam-7-42", "cam-7", "images", "a/b.png", 3, now)]
    many = parsed(["s3://images/x%20y.png", {"url": "digits/./3.png"}, "file:scans/../4.png"])
    assert [(r.bucket, r.key, r.id) for r in many.refs] == [
        ("images", "x y.png", "s3://images/x y.png"), (None, "digits/3.png", "file:digits/3.png"),
        (None, "4.png", "file:4.png")]
    lines = parse_refs(b"s3://images/1.png\n\n  digits/2.png  \r\n", LIMITS)
    assert [r.url for r in lines.refs] == ["s3://images/1.png", "file:digits/2.png"]


def test_a_reference_too_long_for_an_id_is_named_by_its_hash() -> None:
    key = "k" * 900
    (ref,) = parsed({"Records": [event("images", key)]}).refs
    assert ref.key == key and ref.id.startswith("sha256:") and len(ref.id) == 71
    assert ref.id == sample_id(f"s3://images/{key}")


@pytest.mark.parametrize("doc,reason", [
    ({"Records": [event("other", "a.png")]}, "bucket_not_allowed"),
    (["s3://elsewhere/a.png"], "bucket_not_allowed"),
    (["../../etc/passwd"], "outside_image_dir"),
    (["/etc/passwd"], "outside_image_dir"),
    (["file:/etc/passwd"], "outside_image_dir"),
    (["a/../../b.png"], "outside_image_dir"),
    (["."], "outside_image_dir"),
    (["http://example.com/a.png"], "bad_reference"),
    (["s3://images/"], "bad_reference"),
    (["s3://images/" + "k" * 1025], "bad_reference"),
    (["s3://images/a\x00b"], "bad_reference"),
    ([{"Records": []}], "unknown_field"),
    ([{"url": "a.png", "colour": "red"}], "unknown_field"),
    ([{"id": "x"}], "missing_field"),
    ([{"url": "a.png", "label": -1}], "bad_label"),
    ([{"url": "a.png", "label": 2.5}], "bad_label"),
    ([{"url": "a.png", "label": True}], "bad_label"),
    ([{"url": "a.png", "id": ""}], "bad_id"),
    ([{"url": "a.png", "id": "a\nb"}], "bad_id"),
    ([{"url": "a.png", "device": ""}], "missing_field"),
    ([{"url": "a.png", "ts": 100.0}], "bad_timestamp"),
    ([{"url": "a.png", "ts": time.time() + 3600}], "future_timestamp"),
    ([{"url": "a.png", "ts": "soon"}], "bad_timestamp"),
    ([7], "bad_reference"),
    ({"Records": [{"eventName": "ObjectCreated:Put"}]}, "bad_event"),
    ({"Records": [{"s3": {}}]}, "bad_event"),
    ({"Records": ["x"]}, "bad_event"),
    ({"Records": [event("images", "a.png", size=-1)]}, "bad_reference"),
    ({"Records": [{**event("images", "a.png"), "eventTime": "yesterday"}]}, "bad_timestamp"),
])
def test_a_bad_reference_is_refused_with_its_reason_and_its_neighbours_go_on(
        doc: Any, reason: str) -> None:
    if isinstance(doc, list):
        doc = [*doc, "s3://images/fine.png"]
    else:
        doc = {"Records": [*doc["Records"], event("images", "fine.png")]}
    message = parsed(doc)
    assert [r.reason for r in message.refused] == [reason], message.refused
    assert [r.key for r in message.refs] == ["fine.png"]


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"x" * 100_001, "oversize"), (b"{not json", "bad_json"),
    (b"\xff\xfe\x00", "bad_utf8"), (b"   \n \n", "empty"),
    (orjson.dumps({"Records": "all"}), "bad_event"),
    (orjson.dumps(["a.png"] * 51), "too_many_samples"),
    ("\n".join(["a.png"] * 51).encode(), "too_many_samples")])
def test_a_message_that_is_not_references_is_refused_whole(data: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_refs(data, LIMITS)
    assert refused.value.reason == reason


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["Records", "url", "id", "s3", "bucket", "object", "key", "name",
                         "eventName", "label", "ts", "size", "Event"]), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSONISH.map(lambda doc: json.dumps(doc).encode())))
def test_any_message_is_references_or_bad_input(data: bytes) -> None:
    try:
        message = parse_refs(data, LIMITS)
    except BadInput:
        return
    for ref in message.refs:
        assert ref.bucket in LIMITS.buckets or (ref.bucket is None and not ref.key.startswith(
            ("/", "..")))
        assert 1 <= len(ref.id) <= 200 and ref.id.isprintable()
    assert all(isinstance(r, BadInput) for r in message.refused)
