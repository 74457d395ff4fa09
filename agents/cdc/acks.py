"""Which commits may the slot move past? Those whose every event Kafka acknowledged.

Events are numbered as they are produced; acknowledgements may arrive out of order, but
only the unbroken prefix of acknowledged events counts. Each commit remembers how many
events had been produced when it was read, so a commit is covered once the prefix reaches
that number. This is the whole no-loss argument of the capture, kept pure and small.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from edgewise.app.core.dead_letters import is_rejection


def advance_slot_after_ack(commits: Sequence[tuple[int, int]], acked: int) -> int | None:
    """The LSN the slot may be advanced to, or None.

    ``commits`` are ``(events produced up to this commit, commit end LSN)`` in commit
    order; ``acked`` is how many leading events Kafka has acknowledged (acks can arrive out
    of order; only the unbroken prefix counts). A commit qualifies once all its events are
    inside that prefix; the answer is the end LSN of the last one that does.
    """
    lsn = None
    for produced, end_lsn in commits:
        if produced > acked:
            break
        lsn = end_lsn
    return lsn


Record = tuple[str, bytes | None, bytes | None]
"""What was sent: (topic, key bytes, value bytes), kept so a rejected record can be
dead-lettered instead of replayed forever."""

Redirect = Callable[[Record, BaseException], Awaitable["asyncio.Future[Any]"]]
"""Sends a rejected record to the dead-letter topic; returns the dead letter's ack future."""

ACK_TIMEOUT_SECONDS = 120.0
"""How long ``wait_until`` waits without any ack progress before it gives up: a lost
callback or a wedged producer must rebuild the session, not hang the capture forever."""


class SendCancelled(KafkaError):
    """A send future was cancelled before Kafka answered: the record may not be stored,
    so the session is rebuilt and it is replayed (a KafkaError, hence transient)."""

    retriable = True


class AckTracker:
    """Numbers produced events, learns their acks, and knows which commits are covered.

    A record Kafka rejects for good (:func:`is_rejection`) is handed to ``redirect`` (the
    dead-letter producer) and counts as acknowledged once its dead letter is; any other
    failure, including cancellation, is kept in ``error`` for ``wait_until`` to raise.
    """

    def __init__(self, redirect: Redirect | None = None,
                 ack_timeout: float = ACK_TIMEOUT_SECONDS) -> None:
        self.produced = 0
        self.acked = 0  # unbroken prefix of acknowledged events
        self._done_out_of_order: set[int] = set()
        self._pending: set[asyncio.Future[Any]] = set()
        self._redirects: set[asyncio.Task[None]] = set()
        self.commits: deque[tuple[int, int]] = deque()
        self.error: BaseException | None = None
        self.peak_in_flight = 0  # what bounded memory looked like, for tests and logs
        self.rejected = 0  # records the broker refused, dead-lettered instead
        self._redirect = redirect
        self._ack_timeout = ack_timeout
        self._changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self.produced - self.acked

    def add(self, future: asyncio.Future[Any], record: Record | None = None) -> None:
        """Track one sent event; ``record`` makes it dead-letterable if Kafka rejects it."""
        number = self.produced
        self.produced += 1
        self.peak_in_flight = max(self.peak_in_flight, self.produced - self.acked)
        self._pending.add(future)
        future.add_done_callback(lambda f: self._done(number, f, record))

    def _done(self, number: int, future: asyncio.Future[Any], record: Record | None) -> None:
        self._pending.discard(future)
        # future.exception() itself raises on a cancelled future: ask cancelled() first, and
        # report it as a transient error (a bare CancelledError would end the capture task)
        exc = SendCancelled("send cancelled") if future.cancelled() else future.exception()
        if exc is None:
            self._acknowledge(number)
        elif record is not None and self._redirect is not None and is_rejection(exc):
            task = asyncio.ensure_future(self._dead_letter(number, record, exc))
            self._redirects.add(task)
            task.add_done_callback(self._redirects.discard)
        else:
            self.error = self.error or exc
        self._changed.set()

    async def _dead_letter(self, number: int, record: Record, exc: BaseException) -> None:
        assert self._redirect is not None
        self.rejected += 1
        try:
            letter = await self._redirect(record, exc)
        except BaseException as failure:  # noqa: BLE001 - surfaced through wait_until
            self.error = self.error or failure
            self._changed.set()
            return
        self._pending.add(letter)
        letter.add_done_callback(lambda f: self._done(number, f, None))

    def _acknowledge(self, number: int) -> None:
        self._done_out_of_order.add(number)
        while self.acked in self._done_out_of_order:
            self._done_out_of_order.discard(self.acked)
            self.acked += 1

    def commit(self, end_lsn: int) -> None:
        self.commits.append((self.produced, end_lsn))

    def take_advance(self) -> int | None:
        """The LSN now safe to advance to; the commits it covers are forgotten."""
        lsn = advance_slot_after_ack(self.commits, self.acked)
        while self.commits and self.commits[0][0] <= self.acked:
            self.commits.popleft()
        return lsn

    async def wait_until(self, in_flight: int) -> None:
        """Wait until at most ``in_flight`` events are unacknowledged; raise a send error.

        Raises TimeoutError (a transient error: the session is rebuilt from the slot) when
        no ack or error arrives for ``ack_timeout`` seconds.
        """
        while self.in_flight > in_flight and self.error is None:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), self._ack_timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no Kafka acknowledgement for {self._ack_timeout:.0f}s with "
                    f"{self.in_flight} events in flight") from None
        if self.error is not None:
            raise self.error
