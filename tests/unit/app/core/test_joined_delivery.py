"""Rows of concurrent requests for one device leave as one frame while the device's last
frame is on its way; each request is answered with its own frame's outcome."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from edgewise.app.core.joined_delivery import JoinedDelivery
from edgewise.app.core.records import TABULAR, SampleBatch
from edgewise.app.core.wire import decode_sample_batch


def rows(device: str, ids: list[str]) -> SampleBatch:
    n = len(ids)
    return SampleBatch(device, TABULAR, ids, np.full(n, time.time()),
                       np.full(n, -1, dtype=np.int32), np.ones((n, 3), dtype=np.float32))


class Recorder:
    """Keeps each frame sent and the future of its acknowledgement, settled by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, SampleBatch, asyncio.Future[Any]]] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((key, decode_sample_batch(value, 10**6, 100), ack))
        return ack


async def settle(recorder: Recorder, error: Exception | None = None) -> None:
    for _, _, ack in recorder.sent:
        if not ack.done():
            ack.set_exception(error) if error else ack.set_result(None)
    await asyncio.sleep(0)


async def test_requests_waiting_for_a_device_leave_together() -> None:
    recorder = Recorder()
    delivery = JoinedDelivery(recorder.send, max_samples=5, max_bytes=10**6)
    first = asyncio.create_task(delivery.deliver(rows("d1", ["a"])))
    await asyncio.sleep(0.01)
    assert [b.ids for _, b, _ in recorder.sent] == [["a"]]  # idle: at once
    later = [asyncio.create_task(delivery.deliver(rows(d, ids))) for d, ids in (
        ("d1", ["b", "c"]), ("d1", ["d"]), ("d2", ["x"]), ("d1", ["b"]), ("d1", ["e", "f"]))]
    await asyncio.sleep(0.01)
    assert [b.ids for _, b, _ in recorder.sent] == [["a"], ["x"]]  # d1 waits for its frame
    await settle(recorder)
    await asyncio.sleep(0.01)
    assert first.done() and not any(t.done() for t in later[:2])
    # b, c, d together; b again is a frame of its own, and e, f join it (within 5 rows)
    assert [b.ids for _, b, _ in recorder.sent[2:]] == [["b", "c", "d"], ["b", "e", "f"]]
    await settle(recorder, ConnectionError("broker gone"))
    results = await asyncio.gather(*later, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ConnectionError", "ConnectionError",
                                                    "NoneType", "ConnectionError",
                                                    "ConnectionError"]
    assert delivery.frames == 4 and not delivery.draining


async def test_a_send_that_raises_reaches_its_requests() -> None:
    async def refuse(key: bytes, value: bytes) -> asyncio.Future[Any]:
        raise ValueError("record too large")

    delivery = JoinedDelivery(refuse, max_samples=5, max_bytes=10**6)
    with pytest.raises(ValueError, match="too large"):
        await delivery.deliver(rows("d1", ["a"]))
    assert not delivery.draining
