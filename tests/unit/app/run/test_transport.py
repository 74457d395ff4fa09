"""The transport's producer tells the delivery guard which buffered records (Faust's table
changelog writes go through its buffer) are not yet acknowledged, and the guard's settle
waits for them."""

from __future__ import annotations

import asyncio

import faust

from edgewise.app.core.deliveries import DeliveryGuard
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
