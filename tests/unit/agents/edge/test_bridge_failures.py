"""One bad record or a cancelled Kafka send must not stop the bridge."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError

from edgewise.agents.edge import bridge as bridge_module
from edgewise.agents.edge.bridge import Bridge, check_acked
from edgewise.app.core.settings import Settings


class FakeProducer:
    """Records sends; fails with ``error`` for sends to ``failing_topic``."""

    def __init__(self, failing_topic: str = "", error: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.failing_topic, self.error = failing_topic, error

    async def send(self, topic: str, value: bytes, key: bytes | None = None
                   ) -> asyncio.Future[Any]:
        if topic == self.failing_topic and self.error is not None:
            raise self.error
        self.sent.append((topic, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def bridge(producer: FakeProducer) -> Bridge:
    b = Bridge(Settings(topic_prefix="p", mqtt_url="mqtt://localhost:1883"))
    b._producer = producer  # type: ignore[assignment]
    return b


async def test_a_cancelled_kafka_send_ends_the_session_with_a_kafka_error() -> None:
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    acked.cancel()
    with pytest.raises(KafkaError):
        await check_acked(acked)


async def test_cancelling_the_ack_task_is_still_a_cancel() -> None:
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(check_acked(acked))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not acked.cancelled()


async def test_a_model_update_that_fails_unexpectedly_is_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing_artifact(*args: Any) -> Any:
        raise FileNotFoundError("model.joblib")

    monkeypatch.setattr(bridge_module, "export_version", missing_artifact)
    producer = FakeProducer()
    b = bridge(producer)
    await b._send_model_update(orjson.dumps({"version": 3}))
    assert [topic for topic, _ in producer.sent] == [b.names.dead_letters]
    assert b.stats.dead_letters["FileNotFoundError"] == 1


class FakeMessage:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = type("T", (), {"value": topic})()
        self.payload = payload


async def test_a_message_kafka_cannot_take_is_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = bridge_module.Forward("samples", "p-samples", b"k", b"v")
    monkeypatch.setattr(bridge_module, "route_message", lambda *a: target)
    producer = FakeProducer("p-samples", RuntimeError("serializer bug"))
    b = bridge(producer)
    acked = await b._forward(FakeMessage("edgewise/s/d/samples", b"x"))  # type: ignore[arg-type]
    assert acked is not None and await acked is None
    assert [topic for topic, _ in producer.sent] == [b.names.dead_letters]
    assert b.stats.dead_letters["RuntimeError"] == 1
    producer.error = KafkaError("down")
    with pytest.raises(KafkaError):  # Kafka itself down: the session ends, redelivered
        await b._forward(FakeMessage("edgewise/s/d/samples", b"x"))  # type: ignore[arg-type]
