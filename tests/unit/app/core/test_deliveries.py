"""Nothing is committed before what it caused is acknowledged: the guard waits for the
producer's buffer and in-flight records, and refuses a commit after a failed send or a stage
that raised; an output the broker could never take is dead-lettered, not sent."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from edgewise.app.core.context import StageContext
from edgewise.app.core.deliveries import DeliveryFailed, DeliveryGuard
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import Origin
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, max_record_bytes


class Producer:
    """What the guard reads of the transport's producer: the records it buffered (Faust's
    futures, resolved when acknowledged) not yet acknowledged."""

    def __init__(self, queued: int) -> None:
        loop = asyncio.get_running_loop()
        self.queue = [loop.create_future() for _ in range(queued)]

    def unacknowledged_buffered(self) -> list[asyncio.Future[Any]]:
        return [fut for fut in self.queue if not fut.done()]


async def send_later(guard: DeliveryGuard, producer: Producer, in_flight: list[int]) -> None:
    """Records in flight get acknowledged, buffered ones are handed on and acknowledged,
    while new records keep arriving (a busy producer)."""
    for token in in_flight:
        await asyncio.sleep(0.005)
        guard.on_send_completed(None, token, None)
    for fut in producer.queue:
        await asyncio.sleep(0.005)
        guard.on_send_completed(None, guard.on_send_initiated(None, "t", None, 0, 0), None)
        fut.set_result(None)
    for _ in range(20):  # sent after the commit began: not waited for
        guard.on_send_initiated(None, "t", None, 0, 0)


async def test_settle_waits_for_what_was_sent_before_it_not_after() -> None:
    guard, producer = DeliveryGuard(), Producer(queued=5)
    tokens = [guard.on_send_initiated(None, "t", None, 0, 0) for _ in range(3)]
    sending = asyncio.create_task(send_later(guard, producer, in_flight=tokens))
    await guard.settle(producer, timeout=5)
    assert not producer.unacknowledged_buffered() and guard.settled == 1
    assert len(guard.unacknowledged) == 20  # the later ones, still on their way
    await sending


async def test_acknowledgements_out_of_order_do_not_let_a_commit_through_early() -> None:
    """A record sent after the commit began is acknowledged first (its partition's leader
    is another broker): the commit still waits for the earlier one."""
    guard = DeliveryGuard()
    earlier = guard.on_send_initiated(None, "t", None, 0, 0)
    settling = asyncio.create_task(guard.settle(Producer(queued=0), timeout=5))
    await asyncio.sleep(0.01)
    guard.on_send_completed(None, guard.on_send_initiated(None, "t", None, 0, 0), None)
    await asyncio.sleep(0.05)
    assert not settling.done(), "committed while a record sent before was unacknowledged"
    guard.on_send_completed(None, earlier, None)
    await asyncio.wait_for(settling, 1)
    assert guard.settled == 1


async def test_a_failed_send_refuses_the_commit() -> None:
    guard = DeliveryGuard()
    guard.on_send_error(None, RuntimeError("broker said no"), None)
    with pytest.raises(DeliveryFailed, match="broker said no"):
        await guard.settle(Producer(queued=0))


async def test_records_not_acknowledged_by_the_deadline_refuse_the_commit() -> None:
    with pytest.raises(DeliveryFailed, match="not acknowledged"):
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


@pytest.mark.parametrize("short", [0, 40], ids=["at the limit", "within the overhead"])
async def test_an_output_over_the_record_limit_is_dead_lettered_not_sent(short: int) -> None:
    """Over the limit with the producer's own overhead (up to 87 bytes) counted: a record
    the producer would refuse only after Faust noted the send is never handed to it."""
    ctx = stage_context()
    letters: list[tuple[str, Any, bytes]] = []

    async def dead_letter(stage: str, error: Any, original: bytes | None, source: str,
                          key: bytes | None = None) -> None:
        letters.append((stage, error, original or b""))

    ctx.dead_letter = dead_letter  # type: ignore[method-assign]
    huge = bytes(max_record_bytes(ctx.settings) - len(b"dev") - short)
    await ctx.send("score", "t-predictions", b"dev", huge, "t-samples")
    [(stage, error, original)] = letters
    assert stage == "score" and isinstance(error, BadInput)
    assert error.reason == "output_too_large" and original == huge


async def test_a_record_the_producer_refuses_for_good_is_dead_lettered() -> None:
    """Faust wraps the producer's error in ProducerSendError; its cause decides."""
    ctx = stage_context()
    letters: list[Any] = []

    async def dead_letter(stage: str, error: Any, original: bytes | None, source: str,
                          key: bytes | None = None) -> None:
        letters.append(error)

    class Refusing:
        async def send(self, key: bytes, value: bytes, partition: int | None = None) -> None:
            try:
                raise MessageSizeTooLargeError("too large for the producer")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError("Error while sending") from exc

    ctx.dead_letter = dead_letter  # type: ignore[method-assign]
    ctx.topics["t-review"] = Refusing()  # type: ignore[assignment]
    await ctx.send("route", "t-review", b"id", b"item", "t-predictions")
    assert [type(e) for e in letters] == [MessageSizeTooLargeError]


class Message:
    def __init__(self, offset: int) -> None:
        self.partition, self.offset = 0, offset


class Event:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.message = value, Message(offset)


class Stream:
    def __init__(self, values: list[bytes]) -> None:
        self.values = values

    async def events(self) -> Any:
        for offset, value in enumerate(self.values):
            yield Event(value, offset)


async def test_a_message_that_makes_the_stage_fail_costs_that_message_only() -> None:
    ctx = stage_context()
    letters: list[tuple[Any, bytes]] = []
    handled: list[tuple[bytes, int]] = []

    async def dead_letter(stage: str, error: Any, original: bytes | None, source: str,
                          key: bytes | None = None) -> None:
        letters.append((error, original or b""))

    async def handle(value: bytes, origin: Origin, raw: bytes) -> None:
        if value == b"boom":
            raise KeyError("a bug the message set off")
        handled.append((value, origin.offset))

    ctx.dead_letter = dead_letter  # type: ignore[method-assign]
    await ctx.each(Stream([b"a", b"boom", b"b"]), "route", "t-in", lambda raw: raw, handle)
    assert handled == [(b"a", 0), (b"b", 2)]
    [(error, original)] = letters
    assert error.reason == "stage_error" and original == b"boom"


async def test_a_failed_delivery_stops_the_stage_instead() -> None:
    ctx = stage_context()

    async def handle(value: bytes, origin: Origin, raw: bytes) -> None:
        raise KafkaConnectionError("broker gone")

    with pytest.raises(KafkaConnectionError):
        await ctx.each(Stream([b"a"]), "route", "t-in", lambda raw: raw, handle)


async def test_a_stage_stopped_in_the_middle_of_its_work_refuses_the_commit() -> None:
    ctx = stage_context()
    with ctx.finishing("sink_predictions"):
        await asyncio.sleep(0)  # work that finished: nothing to refuse
    assert ctx.app.edgewise_guard.poisoned is None
    started = asyncio.Event()

    async def writing() -> None:
        with ctx.finishing("sink_predictions"):
            started.set()
            await asyncio.sleep(60)  # a database write the stop cuts short

    task = asyncio.create_task(writing())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.app.edgewise_guard.poisoned.startswith("sink_predictions: CancelledError")
    with pytest.raises(DeliveryFailed, match="stage failed"):
        await ctx.app.edgewise_guard.settle(Producer(queued=0))
