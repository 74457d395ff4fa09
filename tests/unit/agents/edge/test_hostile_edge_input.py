"""Hostile input at the edge's hub side: the bridge and the image sink dead-letter each bad
message with its reason and keep carrying the good ones around it."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgewise.agents.edge import image_sink
from edgewise.agents.edge.bridge import Bridge
from edgewise.app.adapters.mqtt_payloads import encode_metrics
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from tests.fixtures import hostile
from tests.fixtures.stages import build_stage, drive, next_value

HOSTILE = 1200


class FakeProducer:
    """Kafka that acknowledges every send at once, remembering (topic, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None
                   ) -> asyncio.Future[Any]:
        self.sent.append((topic, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class FakeTopic:
    value: str


@dataclass
class FakeMessage:
    topic: FakeTopic
    payload: bytes
    qos: int = 1


def good_payload(rng: random.Random, device: str) -> tuple[str, bytes]:
    kind = rng.choice(["sample", "prediction", "metrics", "face"])
    if kind == "sample":
        return kind, encode_sample_batch(hostile.good_sample_batch(rng, device))
    if kind == "prediction":
        return kind, encode_prediction_batch(hostile.good_prediction_batch(rng, device))
    if kind == "metrics":
        return kind, encode_metrics(hostile.good_metrics(rng, device))
    return kind, hostile.good_face(rng, device).encode()


KAFKA_TOPICS = {"sample": "p-samples", "prediction": "p-predictions",
                "metrics": "p-edge-metrics", "face": "p-faces"}
HOSTILE_BY_TOPIC = {"sample": hostile.hostile_sample, "prediction": hostile.hostile_prediction,
                    "metrics": hostile.hostile_metrics, "face": hostile.hostile_face}


async def test_bridge_dead_letters_hostile_payloads_and_forwards_the_rest() -> None:
    settings = Settings(topic_prefix="p", mqtt_url="mqtt://localhost:1883",
                        max_message_bytes=hostile.MAX_BYTES,
                        max_batch_samples=hostile.MAX_SAMPLES,
                        max_future_skew_seconds=hostile.SKEW, model_signing_key="k")
    bridge = Bridge(settings)
    producer = FakeProducer()
    bridge._producer = producer  # type: ignore[assignment]
    rng = random.Random(21)
    expected: list[tuple[str, str]] = []  # (kafka topic or "dead", reason)
    for i in range(HOSTILE):
        kind = rng.choice(list(HOSTILE_BY_TOPIC))
        data, reason = HOSTILE_BY_TOPIC[kind](rng)
        await bridge._forward(FakeMessage(FakeTopic(f"edgewise/s1/cam-1/{kind}"), data))
        expected.append(("p-dead-letters", reason))
        if i % 5 == 0:
            kind, data = good_payload(rng, "cam-1")
            await bridge._forward(FakeMessage(FakeTopic(f"edgewise/s1/cam-1/{kind}"), data))
            expected.append((KAFKA_TOPICS[kind], ""))
    assert [topic for topic, _ in producer.sent] == [topic for topic, _ in expected]
    reasons = [orjson.loads(value)["reason"] for topic, value in producer.sent
               if topic == "p-dead-letters"]
    assert reasons == [reason for topic, reason in expected if topic == "p-dead-letters"]
    assert len(set(reasons)) >= 25
    assert sum(bridge.stats.dead_letters.values()) == HOSTILE


async def test_image_sink_dead_letters_hostile_faces_and_stores_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_sink, "STORE_TAKE_WITHIN", 0.001)  # one message per round
    run = build_stage(image_sink.register, "edgewise.image_sink.faces", tmp_path,
                      ["unit-review"], low_confidence=1.0)
    rng = random.Random(22)
    messages: list[tuple[bytes, str | None]] = []
    goods = []
    for i in range(HOSTILE):
        messages.append(hostile.hostile_face(rng))
        if i % 10 == 0:
            face = hostile.good_face(rng)
            goods.append(face)
            messages.append((face.encode(), None))
    messages.append(hostile.hostile_face(rng))
    expected = iter(goods)

    async def reviewed(_: bytes) -> None:  # low_confidence 1.0: every face is doubtful
        [item] = orjson.loads(await next_value(run.outputs["unit-review"]))["items"]
        assert item["id"] == next(expected).id and item["image_url"]

    async with run.agent.test_context() as agent:
        await drive(run, agent, "image_sink", messages, reviewed)
    assert sum(run.reasons.values()) == HOSTILE + 1 and len(run.reasons) >= 8
    stored = list((tmp_path / "images" / "face").rglob("*.png"))
    assert len(stored) == len(goods)
