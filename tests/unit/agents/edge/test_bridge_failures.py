"""One bad record or a cancelled Kafka send must not stop the bridge."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

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
    b = Bridge(Settings(topic_prefix="p", mqtt_url="mqtt://localhost:1883",
                        model_signing_key="k"))
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
    def __init__(self, topic: str, payload: bytes, mid: int = 0) -> None:
        self.topic = type("T", (), {"value": topic})()
        self.payload = payload
        self.mid, self.qos = mid, 1


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
    producer.error = KafkaConnectionError("down")
    with pytest.raises(KafkaError):  # Kafka itself down: the session ends, redelivered
        await b._forward(FakeMessage("edgewise/s/d/samples", b"x"))  # type: ignore[arg-type]


def failed(error: Exception) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


async def test_a_record_the_producer_refuses_as_too_large_is_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = bridge_module.Forward("samples", "p-samples", b"k", b"v")
    monkeypatch.setattr(bridge_module, "route_message", lambda *a: target)
    producer = FakeProducer("p-samples", MessageSizeTooLargeError("over max_request_size"))
    b = bridge(producer)
    acked = await b._forward(FakeMessage("edgewise/s/d/samples", b"x"))  # type: ignore[arg-type]
    assert acked is not None and await acked is None
    (topic, letter), = producer.sent
    assert topic == b.names.dead_letters and orjson.loads(letter)["reason"] == "rejected"


class FakePaho:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


async def test_a_record_kafka_refuses_after_the_send_is_dead_lettered_then_acked() -> None:
    """Before, the refused ack ended the session: the broker redelivered the same record,
    and everything behind it, for ever."""
    producer = FakeProducer()
    b = bridge(producer)
    client = type("C", (), {"_client": FakePaho()})()
    pending: asyncio.Queue[Any] = asyncio.Queue()
    ok: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ok.set_result(None)
    for mid, acked in ((1, ok), (2, failed(MessageSizeTooLargeError("broker limit"))),
                       (3, ok)):
        await pending.put((FakeMessage("edgewise/s/d/sample", b"payload", mid), acked))
    task = asyncio.create_task(b._ack_in_order(client, pending))  # type: ignore[arg-type]
    while len(client._client.acked) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    assert client._client.acked == [1, 2, 3]
    (topic, letter), = producer.sent
    doc = orjson.loads(letter)
    assert topic == b.names.dead_letters and doc["reason"] == "rejected"
    assert "MessageSizeTooLargeError" in doc["detail"] and b.stats.rejected == 1


async def test_a_refused_dead_letter_is_cut_to_its_identity() -> None:
    class RefusesBigLetters(FakeProducer):
        async def send(self, topic: str, value: bytes, key: bytes | None = None
                       ) -> asyncio.Future[Any]:
            if len(value) > 5000:
                return failed(MessageSizeTooLargeError("topic made elsewhere, 1 kB"))
            return await super().send(topic, value, key)

    producer = RefusesBigLetters()
    b = bridge(producer)
    message = FakeMessage("edgewise/s/d/sample", b"x" * 100_000, 1)
    await b._settle(message, failed(MessageSizeTooLargeError("broker limit")))  # type: ignore[arg-type]
    (_, letter), = producer.sent
    doc = orjson.loads(letter)
    assert doc["truncated"] and doc["original_length"] == 100_000 and len(letter) <= 4096


async def test_kafka_away_still_ends_the_session() -> None:
    b = bridge(FakeProducer())
    message = FakeMessage("edgewise/s/d/sample", b"x", 1)
    with pytest.raises(KafkaConnectionError):
        await b._settle(message, failed(KafkaConnectionError("down")))  # type: ignore[arg-type]
