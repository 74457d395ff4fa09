"""The transport's producer tells the delivery guard which buffered records (Faust's table
changelog writes go through its buffer) are not yet acknowledged, and the guard's settle
waits for them."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.exceptions import NotReady

from edgewise.app.core.deliveries import DeliveryFailed, DeliveryGuard
from edgewise.app.run.transport import Producer


async def test_buffered_records_are_waited_for_until_acknowledged() -> None:
    app = faust.App("t-transport", broker="edgewise://127.0.0.1:1", store="memory://",
                    autodiscover=False)
    producer = app.producer
    assert isinstance(producer, Producer)
    topic = app.topic("t-changelog")
    first, second = (topic.as_future_message(key=b"k", value=v) for v in (b"1", b"2"))
    producer.send_soon(first)
    producer.send_soon(second)
    assert producer.unacknowledged_buffered() == [first, second]
    second.set_result(None)  # acknowledged out of order: the first still waits
    assert producer.unacknowledged_buffered() == [first]

    guard = DeliveryGuard()
    settling = asyncio.create_task(guard.settle(producer, timeout=5))
    await asyncio.sleep(0.05)
    assert not settling.done()
    first.set_result(None)
    await asyncio.wait_for(settling, 1)
    assert producer.unacknowledged_buffered() == [] and not producer.buffered


async def test_a_send_that_raises_gives_its_token_back() -> None:
    """The producer's send raises (here: not started, as before it connects; likewise a
    record over aiokafka's size estimate): Faust reports no outcome, so without the
    transport telling the guard, every later commit would wait 60 s and be refused."""
    app = faust.App("t-transport-raise", broker="edgewise://127.0.0.1:1", store="memory://",
                    autodiscover=False)
    guard = app.edgewise_guard = DeliveryGuard()
    token = guard.on_send_initiated(app.producer, "t-out", None, 1, 1)  # as Faust does
    with pytest.raises(NotReady):
        await app.producer.send("t-out", b"k", b"v", None, None, None)
    assert token not in guard.unacknowledged and not guard.failures
    await asyncio.wait_for(guard.settle(app.producer, timeout=5), 1)


async def test_a_send_cancelled_half_way_refuses_the_commit() -> None:
    """A stop cancels a send waiting for room in the producer: its event may still be
    acknowledged as the stream unwinds, so the commit must not go through."""
    guard = DeliveryGuard()
    token = guard.on_send_initiated(None, "t-out", None, 1, 1)
    assert guard.starting() == token and guard.starting() is None  # taken once
    guard.not_sent(token, asyncio.CancelledError())
    with pytest.raises(DeliveryFailed, match="CancelledError"):
        await asyncio.wait_for(guard.settle(Buffered(), timeout=5), 1)


class Buffered:
    """A producer with nothing buffered."""

    def unacknowledged_buffered(self) -> list[asyncio.Future[None]]:
        return []


async def test_a_seek_without_an_offset_reads_from_the_start() -> None:
    """Faust's recovery seeks standby partitions a rebalance added after it built their
    offsets (None), or offsets below -1; aiokafka refuses those ("Offset must be a
    positive integer") and the recovery service crashes the worker. The consumer reads
    them from the start instead and passes the others through."""
    from faust.types import TP

    app = faust.App("t-seek", broker="edgewise://127.0.0.1:1", store="memory://",
                    autodiscover=False)
    consumer = app.consumer

    class Thread:
        asked: list[dict[TP, int]] = []

        async def seek_wait(self, partitions: dict[TP, int]) -> None:
            self.asked.append(dict(partitions))

    consumer._thread = Thread()
    new, odd, known, first = (TP("t-seek-changelog", p) for p in range(4))
    await consumer.seek_wait({new: None, odd: -2, known: 17, first: 0})
    assert Thread.asked == [{new: 0, odd: 0, known: 17, first: 0}]
