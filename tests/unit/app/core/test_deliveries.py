"""Nothing is committed before what it caused is acknowledged: the guard waits for the
producer's buffer and in-flight records, and refuses a commit after a failed send or a stage
that raised; an output the broker could never take is dead-lettered, not sent."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest

from edgewise.app.core.context import StageContext
from edgewise.app.core.deliveries import DeliveryFailed, DeliveryGuard
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, max_record_bytes


class Buffer:
    def __init__(self, size: int) -> None:
        self.size = size


class Inner:
    def __init__(self) -> None:
        self.flushed = 0

    async def flush(self) -> None:
        self.flushed += 1


class Producer:
    """What the guard reads of Faust's producer: its buffer and the aiokafka producer."""

    def __init__(self, queued: int) -> None:
        self.buffer = Buffer(queued)
        self._producer = Inner()


async def drain_later(producer: Producer) -> None:
    while producer.buffer.size:
        await asyncio.sleep(0.01)
        producer.buffer.size -= 1


async def test_settle_waits_until_the_buffer_is_empty_and_flushes() -> None:
    guard, producer = DeliveryGuard(), Producer(queued=5)
    draining = asyncio.create_task(drain_later(producer))
    await guard.settle(producer)
    await draining
    assert producer.buffer.size == 0 and producer._producer.flushed == 1 and guard.settled == 1


async def test_a_failed_send_refuses_the_commit() -> None:
    guard = DeliveryGuard()
    guard.on_send_error(None, RuntimeError("broker said no"), None)
    with pytest.raises(DeliveryFailed, match="broker said no"):
        await guard.settle(Producer(queued=0))


async def test_records_still_queued_at_the_deadline_refuse_the_commit() -> None:
    with pytest.raises(DeliveryFailed, match="still queued"):
        await DeliveryGuard().settle(Producer(queued=3), timeout=0.05)


def stage_context() -> StageContext:
    app = faust.App("t-deliveries", broker="kafka://127.0.0.1:1", store="memory://",
                    autodiscover=False)
    app.edgewise_guard = DeliveryGuard()
    return StageContext(app=app, settings=Settings(), names=TopicNames("t"))


async def test_a_stage_that_raises_poisons_the_guard() -> None:
    ctx = stage_context()

    @ctx.agent(ctx.topic("t-in"), name="t.failing", stage="route")
    async def failing(stream: Any) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await failing.fun(None)
    assert "route: ValueError: a bug" in ctx.app.edgewise_guard.poisoned
    with pytest.raises(DeliveryFailed, match="stage failed"):
        await ctx.app.edgewise_guard.settle(Producer(queued=0))


async def test_an_output_over_the_record_limit_is_dead_lettered_not_sent() -> None:
    ctx = stage_context()
    letters: list[tuple[str, Any, bytes]] = []

    async def dead_letter(stage: str, error: Any, original: bytes | None, source: str,
                          key: bytes | None = None) -> None:
        letters.append((stage, error, original or b""))

    ctx.dead_letter = dead_letter  # type: ignore[method-assign]
    huge = bytes(max_record_bytes(ctx.settings))
    await ctx.send("score", "t-predictions", b"dev", huge, "t-samples")
    [(stage, error, original)] = letters
    assert stage == "score" and isinstance(error, BadInput)
    assert error.reason == "output_too_large" and original == huge
