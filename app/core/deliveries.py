"""Commit an input only after what it caused is acknowledged.

Faust acks an event when the agent moves past it (a whole ``take()`` gathering at once, in a
``finally``, even when the agent raised), a send the broker refuses later only logs a
warning, and its buffer flush before a commit gives up after 0.1 s with changelog records
still queued. The guard closes each gap:

- a Faust sensor notes every send that failed (outputs, dead letters, changelog records);
- a stage that raised marks the guard poisoned: what it had gathered may be unprocessed;
- before offsets are committed, :meth:`DeliveryGuard.settle` waits until every record sent
  before it (handed to the producer, or waiting in its buffer) is acknowledged, then
  refuses the commit when anything failed or a stage raised. The worker stops without
  committing and its inputs are read again by the next one (at-least-once; the tables
  count each sample once).

A record that can never be accepted (over the size limit) is not sent but dead-lettered by
the stage (``StageContext.send``), so a refusal does not become a crash loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

from faust.sensors import Sensor

log = logging.getLogger("edgewise")

SETTLE_TIMEOUT_SECONDS = 60.0

#: The token of the send Faust is starting in this task: Faust calls the sensor, then the
#: producer's ``send``, with nothing awaited between, so the transport's producer takes it
#: there and gives it back (``DeliveryGuard.not_sent``) when the send raises.
STARTING: ContextVar[int | None] = ContextVar("edgewise_starting_send", default=None)


class DeliveryFailed(RuntimeError):
    """A record an input caused was not acknowledged: its input must not be committed."""


class DeliveryGuard(Sensor):
    """Tracks every send and stage crash between commits; settles before a commit.

    Each record handed to the producer gets a token until it is acknowledged or fails, so a
    commit waits for exactly the records sent before it: acknowledgements come back out of
    order (partitions led by other brokers, a batch retried), and a count of them would let
    a commit through while an earlier record is still unacknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []
        self.poisoned: str | None = None
        self.settled = 0
        self.sent = 0  # records handed to the producer, ever
        self.unacknowledged: set[int] = set()  # their tokens, until acknowledged or failed

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        self.sent += 1
        self.unacknowledged.add(self.sent)
        STARTING.set(self.sent)
        return self.sent  # the token Faust hands back with the outcome

    @staticmethod
    def starting() -> int | None:
        """The token of the send this task just started (once: a producer used directly,
        without Faust's sensors, finds none)."""
        token = STARTING.get()
        STARTING.set(None)
        return token

    def not_sent(self, token: int, exc: BaseException) -> None:
        """The producer's ``send`` raised: the record was never handed over, and Faust
        reports no outcome for it. Its caller sees the error and dead-letters the record or
        stops the stage (which poisons the guard), so the token just goes; a send cancelled
        half way (a stop) counts as failed, since its event may still be acknowledged."""
        if isinstance(exc, asyncio.CancelledError):
            self.on_send_error(None, exc, token)
        else:
            self.unacknowledged.discard(token)

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.unacknowledged.discard(state)

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.unacknowledged.discard(state)
        self.failures.append(f"{type(exc).__name__}: {exc}"[:300])
        log.error("a send failed (%s): its input will not be committed", self.failures[-1])

    def poison(self, stage: str, exc: BaseException) -> None:
        """A stage raised: nothing it gathered may be committed."""
        self.poisoned = f"{stage}: {type(exc).__name__}: {exc}"[:300]
        log.error("stage %s failed; inputs since the last commit will be read again",
                  self.poisoned)

    async def settle(self, producer: Any, timeout: float = SETTLE_TIMEOUT_SECONDS) -> None:
        """Wait until every record sent before this call is acknowledged: those handed to
        the producer, and those still in its buffer (``producer.unacknowledged_buffered()``,
        the transport's); raise if a send failed or a stage raised (then the offsets must
        not be committed), as soon as that is known. Records sent meanwhile are not waited
        for, so a busy producer cannot hold a commit off forever."""
        deadline = time.monotonic() + timeout
        waiting = set(self.unacknowledged)
        queued = producer.unacknowledged_buffered()
        while not (self.poisoned or self.failures):  # then refused at once, not in 60 s
            waiting &= self.unacknowledged
            queued = [fut for fut in queued if not fut.done()]
            if not waiting and not queued:
                break
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"{len(waiting) + len(queued)} records not acknowledged "
                                     f"after {timeout:.0f}s")
            await asyncio.sleep(0.002)
        if self.poisoned:
            raise DeliveryFailed(f"not committing after a stage failed: {self.poisoned}")
        if self.failures:
            raise DeliveryFailed(f"not committing: {len(self.failures)} sends failed, first: "
                                 f"{self.failures[0]}")
        self.settled += 1
