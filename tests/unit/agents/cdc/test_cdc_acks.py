"""AckTracker failure paths: cancelled sends, lost acks, records the broker refuses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from edgewise.agents.cdc.acks import AckTracker, Record, SendCancelled
from edgewise.agents.cdc.capture import TRANSIENT_ERRORS, CdcCapture
from edgewise.agents.cdc.envelope import ChangeEvent
from edgewise.app.core.dead_letters import is_rejection
from edgewise.app.core.settings import Settings


async def test_a_cancelled_send_is_an_error_not_a_hang() -> None:
    loop = asyncio.get_running_loop()
    tracker = AckTracker(ack_timeout=5)
    cancelled = loop.create_future()
    tracker.add(cancelled)
    tracker.commit(100)
    cancelled.cancel()
    with pytest.raises(SendCancelled):
        await asyncio.wait_for(tracker.wait_until(0), 2)
    assert isinstance(tracker.error, TRANSIENT_ERRORS)  # the session is rebuilt
    assert tracker.take_advance() is None


async def test_no_ack_for_too_long_raises_a_transient_timeout() -> None:
    loop = asyncio.get_running_loop()
    tracker = AckTracker(ack_timeout=0.05)
    tracker.add(loop.create_future())  # never answered
    with pytest.raises(TimeoutError, match="no Kafka acknowledgement"):
        await tracker.wait_until(0)
    assert issubclass(TimeoutError, TRANSIENT_ERRORS)


def test_only_record_level_non_retriable_errors_are_rejections() -> None:
    assert is_rejection(CorruptRecordException())  # e.g. keyless record on a compacted topic
    assert is_rejection(KafkaError())
    assert not is_rejection(NotLeaderForPartitionError())  # retriable: replay
    assert not is_rejection(TopicAuthorizationFailedError())  # would refuse everything
    assert not is_rejection(SendCancelled())
    assert not is_rejection(KafkaTimeoutError())  # the broker was away: send again
    assert not is_rejection(RuntimeError("not Kafka"))


async def test_a_rejected_record_is_dead_lettered_and_covered_once_its_letter_is_acked(
) -> None:
    loop = asyncio.get_running_loop()
    letters: list[tuple[Record, BaseException]] = []
    letter_ack: asyncio.Future[Any] = loop.create_future()

    async def redirect(record: Record, exc: BaseException) -> asyncio.Future[Any]:
        letters.append((record, exc))
        return letter_ack

    tracker = AckTracker(redirect=redirect, ack_timeout=5)
    rejected, fine = loop.create_future(), loop.create_future()
    tracker.add(rejected, ("edge.public.t", b"k", b"v"))
    tracker.add(fine, ("edge.public.t", b"k2", b"v2"))
    tracker.commit(100)
    rejected.set_exception(CorruptRecordException())
    fine.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert [record for record, _ in letters] == [("edge.public.t", b"k", b"v")]
    assert tracker.rejected == 1 and tracker.error is None
    assert tracker.take_advance() is None  # not before the dead letter is acknowledged
    letter_ack.set_result(None)
    await asyncio.wait_for(tracker.wait_until(0), 2)
    assert tracker.take_advance() == 100


async def test_a_retriable_failure_is_not_dead_lettered() -> None:
    loop = asyncio.get_running_loop()

    async def redirect(record: Record, exc: BaseException) -> asyncio.Future[Any]:
        raise AssertionError("a retriable error must not be dead-lettered")

    tracker = AckTracker(redirect=redirect, ack_timeout=5)
    failed = loop.create_future()
    tracker.add(failed, ("t", b"k", b"v"))
    failed.set_exception(NotLeaderForPartitionError())
    with pytest.raises(NotLeaderForPartitionError):
        await asyncio.wait_for(tracker.wait_until(0), 2)


class FakeProducer:
    """Records sends; each answers with a future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None
                   ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


def fake_capture() -> tuple[CdcCapture, FakeProducer]:
    capture = CdcCapture(Settings(cdc_dsn="postgresql://x", topic_prefix="ew"), "x:1")
    producer = FakeProducer()
    capture._producer = producer  # type: ignore[assignment]
    return capture, producer


async def test_a_keyless_event_is_dead_lettered_never_sent_to_its_compacted_topic() -> None:
    capture, producer = fake_capture()
    await capture._send(ChangeEvent("edge.public.t", None, {"payload": {"op": "c"}}))
    await capture._send(ChangeEvent("edge.public.t", None, None))  # a keyless tombstone
    assert [topic for topic, _, _ in producer.sent] == ["ew-dead-letters"] * 2
    assert capture.stats.dead_letters == 2 and capture.stats.events == 0
    for future in producer.futures:
        future.set_result(None)
    await asyncio.wait_for(capture.tracker.wait_until(0), 2)  # still counted for the slot


async def test_a_record_the_broker_rejects_later_is_dead_lettered_by_the_capture() -> None:
    capture, producer = fake_capture()
    await capture._send(ChangeEvent("edge.public.t", {"id": 1}, {"payload": {"op": "c"}}))
    capture.tracker.commit(100)
    producer.futures[0].set_exception(CorruptRecordException())
    for _ in range(3):
        await asyncio.sleep(0)
    assert [topic for topic, _, _ in producer.sent] == ["edge.public.t", "ew-dead-letters"]
    assert capture.tracker.take_advance() is None
    producer.futures[1].set_result(None)
    await asyncio.wait_for(capture.tracker.wait_until(0), 2)
    assert capture.tracker.take_advance() == 100 and capture.stats.dead_letters == 1
