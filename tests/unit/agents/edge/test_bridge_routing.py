"""The bridge's gate: which Kafka topic a valid message goes to, and why a bad one is refused."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from edgewise.agents.edge.bridge import parse_model_update, route_message
from edgewise.agents.simulate import DigitSimulator
from edgewise.app.adapters.mqtt_payloads import FaceMessage, encode_metrics
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from edgewise.models.digits import train_digits
from edgewise.models.faces import encode_png
from edgewise.models.registry import ModelMeta
from edgewise.models.scoring import predict_batches

SETTINGS = Settings(topic_prefix="p", max_message_bytes=50_000, max_image_side=512)
NAMES = TopicNames("p")


def samples() -> bytes:
    """A valid sample frame of device-000."""
    return encode_sample_batch(DigitSimulator(1, 3, 0.0, seed=2).next_batch(now=time.time()))


def face(device: str = "cam", site: str = "s1") -> bytes:
    png = encode_png(np.zeros((10, 10, 3), np.uint8))
    return FaceMessage(id="f1", site=site, device=device, timestamp=time.time(), confidence=0.8,
                       box=(0, 0, 10, 10), frame_size=(50, 50), png=png).encode()


def metrics(device: str = "cam", site: str = "s1") -> bytes:
    now = time.time()
    return encode_metrics({
        "site": site, "device": device, "window_start": now - 10, "window_end": now,
        "detect": "faces", "model": "haar-frontalface:1", "frames": 3, "count": 2, "scored": 2,
        "low": 0, "dropped": 0, "labels": {"1": 2}, "conf_sum": 1.8, "conf_min": 0.85,
        "conf_max": 0.95})


def test_each_kind_goes_to_its_topic_with_its_key() -> None:
    routed = route_message("edgewise/s1/device-000/sample", samples(), SETTINGS, NAMES)
    assert routed is not None and (routed.topic, routed.key) == ("p-samples", b"device-000")
    routed = route_message("edgewise/s1/cam/face", face(), SETTINGS, NAMES)
    assert routed is not None and (routed.topic, routed.key) == ("p-faces", b"cam")
    payload = metrics()
    routed = route_message("edgewise/s1/cam/metrics", payload, SETTINGS, NAMES)
    assert routed is not None and (routed.topic, routed.key) == ("p-edge-metrics", b"s1")
    assert routed.value is payload  # forwarded as is, never re-encoded


def test_predictions_are_forwarded() -> None:
    trained = train_digits("linear")
    meta = ModelMeta("digits", 1, "0" * 64, 0.0)
    batch = DigitSimulator(1, 4, 0.0, seed=1).next_batch(now=time.time())
    frame = encode_prediction_batch(predict_batches(trained.model, meta, [batch], 3)[0])
    routed = route_message("edgewise/s1/device-000/prediction", frame, SETTINGS, NAMES)
    assert routed is not None and routed.topic == "p-predictions"


def test_commands_are_not_carried_upstream() -> None:
    assert route_message("edgewise/all/all/command", b"anything", SETTINGS, NAMES) is None


@pytest.mark.parametrize(("topic", "payload", "expected"), [
    ("edgewise/s1/device-000/sample", b"{bad", "bad_json"),
    ("edgewise/s1/device-000/sample", b"x" * 60_000, "oversize"),
    ("edgewise/s1/other/sample", samples(), "device_mismatch"),
    ("edgewise/s2/cam/face", face(), "device_mismatch"),
    ("edgewise/s1/cam/metrics", metrics(site="s9"), "device_mismatch"),
    ("edgewise/s1/cam/telemetry", b"{}", "unknown_kind"),
    ("elsewhere/s1/cam/face", face(), "bad_topic"),
    ("edgewise/s1/cam/prediction", samples(), "wrong_kind"),
    ("edgewise/s1/cam/face", orjson.dumps({"schema": 1}), "missing_field"),
])
def test_bad_messages_are_refused_with_a_reason(topic: str, payload: bytes,
                                                expected: str) -> None:
    with pytest.raises(BadInput) as caught:
        route_message(topic, payload, SETTINGS, NAMES)
    assert caught.value.reason == expected


def test_model_update_records() -> None:
    assert parse_model_update(None, "digits") == ("digits", None, "all", "all")
    assert parse_model_update(orjson.dumps({"version": 3, "site": "s1"}), "digits") == (
        "digits", 3, "s1", "all")
    for bad in (b"{", b"[]", orjson.dumps({"version": 0}), orjson.dumps({"model": ""})):
        with pytest.raises(BadInput):
            parse_model_update(bad, "digits")
