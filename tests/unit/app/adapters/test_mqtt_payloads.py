"""Payloads between edges and the hub: built by the edge, validated by the bridge."""

from __future__ import annotations

import base64
import hashlib
import random
import time

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.adapters.mqtt_payloads import (
    FaceMessage,
    ModelCommand,
    encode_metrics,
    parse_face_payload,
    parse_geo,
    parse_metrics_payload,
    parse_model_command,
    png_size,
    with_header_fields,
)
from edgewise.app.core.frames import KIND_SAMPLES, BadInput, decode_frame
from edgewise.app.core.wire import decode_sample_batch, encode_sample_batch
from edgewise.models.faces import encode_png
from tests.fixtures import hostile

NOW = 1_800_000_000.0


def face(**more: object) -> FaceMessage:
    png = encode_png(np.full((20, 30, 3), 128, np.uint8))  # 30 wide, 20 high
    base = dict(id="cam-1-r-0", site="s1", device="cam-1", timestamp=NOW, confidence=0.91,
                box=(5, 6, 30, 20), frame_size=(100, 80), png=png, geo={"lat": 1.0, "lon": 2.0})
    return FaceMessage(**{**base, **more})  # type: ignore[arg-type]


def reason(call: object) -> str:
    with pytest.raises(BadInput) as caught:
        call()  # type: ignore[operator]
    return caught.value.reason


def test_face_round_trip_and_metadata() -> None:
    message = face()
    parsed = parse_face_payload(message.encode(), 1_000_000, 2048, now=NOW)
    assert parsed == message
    meta = parsed.metadata()
    assert meta["confidence"] == "0.9100" and meta["box"] == "5,6,30,20"
    assert meta["model"] == "haar-frontalface:1" and meta["geo"] == "1.0,2.0"
    assert all(isinstance(v, str) and v.isascii() for v in meta.values())


def mutated(**changes: object) -> bytes:
    doc = orjson.loads(face().encode())
    doc.update(changes)
    return orjson.dumps(doc)


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", "empty"),
    (b"{nope", "bad_json"),
    (b"[1, 2]", "bad_json"),
    (mutated(schema=2), "unknown_schema_version"),
    (mutated(box=[5, 6, 40, 20]), "wrong_image_size"),
    (mutated(box=[90, 6, 30, 20]), "bad_field"),
    (mutated(box=[5, 6, 30]), "bad_field"),
    (mutated(png="not base64!"), "bad_image"),
    (mutated(png=base64.b64encode(b"GIF89a" + b"0" * 40).decode()), "bad_image"),
    (mutated(confidence=1.5), "bad_field"),
    (mutated(confidence=True), "bad_field"),
    (mutated(timestamp=NOW + 86_400), "future_timestamp"),
    (mutated(timestamp=1.0), "bad_timestamp"),
    (mutated(device="a/b"), "bad_field"),
    (mutated(id=""), "bad_id"),
    (mutated(geo={"lat": "x", "lon": 1}), "bad_field"),
    (mutated(site=None), "missing_field"),
])
def test_face_validation_reasons(payload: bytes, expected: str) -> None:
    assert reason(lambda: parse_face_payload(payload, 1_000_000, 2048, now=NOW)) == expected


def test_face_size_limits() -> None:
    payload = face().encode()
    assert reason(lambda: parse_face_payload(payload, 100, 2048, now=NOW)) == "oversize"
    assert reason(lambda: parse_face_payload(payload, 1_000_000, 25, now=NOW)) == \
        "image_too_large"


def test_png_declared_size_is_read_without_decoding() -> None:
    png = encode_png(np.zeros((7, 9), np.uint8))
    assert png_size(png) == (9, 7)
    corrupt = png[:40] + b"\x00" * (len(png) - 40)
    with pytest.raises(BadInput):  # same header, but it does not decode
        parse_face_payload(face(png=corrupt, box=(0, 0, 9, 7)).encode(), 10**6, 2048, now=NOW)


def metrics_doc(**more: object) -> dict[str, object]:
    return {"site": "s1", "device": "d1", "window_start": NOW - 10, "window_end": NOW,
            "detect": "digits", "model": "digits:1", "frames": 0, "count": 5, "scored": 5,
            "low": 1, "dropped": 0, "labels": {"3": 5}, "conf_sum": 4.0, "conf_min": 0.5,
            "conf_max": 0.9, **more}


def test_metrics_round_trip() -> None:
    parsed = parse_metrics_payload(encode_metrics(metrics_doc()), 10_000, now=NOW)
    assert parsed == metrics_doc()


@pytest.mark.parametrize(("change", "expected"), [
    ({"low": 6}, "bad_field"),
    ({"scored": 6}, "bad_field"),
    ({"window_end": NOW - 20}, "bad_field"),
    ({"count": -1}, "bad_field"),
    ({"labels": {"3": "five"}}, "bad_field"),
    ({"conf_min": 2.0}, "bad_field"),
    ({"conf_sum": 9.0}, "bad_field"),
    ({"device": None}, "missing_field"),
])
def test_metrics_validation(change: dict[str, object], expected: str) -> None:
    payload = encode_metrics(metrics_doc(**change))
    assert reason(lambda: parse_metrics_payload(payload, 10_000, now=NOW)) == expected


def test_model_command_round_trip_and_sha_check() -> None:
    artifact = b"skops bytes"
    meta = {"name": "digits", "version": 2, "sha256": hashlib.sha256(artifact).hexdigest()}
    command = parse_model_command(ModelCommand(meta, artifact).encode(), 10_000)
    assert command.artifact == artifact and command.meta == meta
    tampered = ModelCommand(meta, b"other bytes").encode()
    assert reason(lambda: parse_model_command(tampered, 10_000)) == "sha_mismatch"
    no_version = ModelCommand({**meta, "version": 0}, artifact).encode()
    assert reason(lambda: parse_model_command(no_version, 10_000)) == "bad_field"
    other = orjson.dumps({"schema": 1, "command": "reboot"})
    assert reason(lambda: parse_model_command(other, 10_000)) == "unknown_command"


def test_geo() -> None:
    assert parse_geo("") is None
    assert parse_geo("52.5, 13.4") == {"lat": 52.5, "lon": 13.4}
    for bad in ("52.5", "a,b", "91,0", "0,181"):
        with pytest.raises(ValueError):
            parse_geo(bad)


def test_header_fields_are_added_and_the_batch_still_decodes() -> None:
    batch = DigitSimulator(1, 4, 0.0, seed=1).next_batch(now=time.time())
    frame = with_header_fields(encode_sample_batch(batch), KIND_SAMPLES,
                               {"site": "s1", "geo": {"lat": 1.0, "lon": 2.0}})
    meta, _ = decode_frame(frame, KIND_SAMPLES)
    assert meta["site"] == "s1" and meta["geo"] == {"lat": 1.0, "lon": 2.0}
    decoded = decode_sample_batch(frame, 10**6, 100)
    assert decoded.ids == batch.ids and np.array_equal(decoded.pixels, batch.pixels)


# -- generated hostile payloads ---------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_faces_are_refused_with_their_reason(rng: random.Random) -> None:
    data, expected = hostile.hostile_face(rng)
    assert reason(lambda: parse_face_payload(data, hostile.MAX_BYTES, 2048,
                                             future_skew=hostile.SKEW)) == expected


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_metrics_are_refused_with_their_reason(rng: random.Random) -> None:
    data, expected = hostile.hostile_metrics(rng)
    assert reason(lambda: parse_metrics_payload(data, hostile.MAX_BYTES,
                                                future_skew=hostile.SKEW)) == expected


def test_an_edge_may_send_its_open_window_at_shutdown() -> None:
    start = (time.time() // 10) * 10
    doc = {**metrics_doc(), "window_start": start, "window_end": start + 10}
    assert parse_metrics_payload(encode_metrics(doc), 10_000)["window_end"] == start + 10
