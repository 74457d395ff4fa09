"""Which commits may the slot move past? Those whose every event Kafka acknowledged.

Events are numbered as they are produced; acknowledgements may arrive out of order, but
only the unbroken prefix of acknowledged events counts. Each commit remembers how many
events had been produced when it was read, so a commit is covered once the prefix reaches
that number. This is the whole no-loss argument of the capture, kept pure and small.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any


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



class AckTracker:
    """Numbers produced events, learns their acks, and knows which commits are covered."""

    def __init__(self) -> None:
        self.produced = 0
        self.acked = 0  # unbroken prefix of acknowledged events
        self._done_out_of_order: set[int] = set()
        self._pending: set[asyncio.Future[Any]] = set()
        self.commits: deque[tuple[int, int]] = deque()
        self.error: BaseException | None = None
        self.peak_in_flight = 0  # what bounded memory looked like, for tests and logs
        self._changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self.produced - self.acked

    def add(self, future: asyncio.Future[Any]) -> None:
        number = self.produced
        self.produced += 1
        self.peak_in_flight = max(self.peak_in_flight, self.produced - self.acked)
        self._pending.add(future)
        future.add_done_callback(lambda f: self._done(number, f))

    def _done(self, number: int, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.error = self.error or (future.exception() or asyncio.CancelledError())
        else:
            self._done_out_of_order.add(number)
            while self.acked in self._done_out_of_order:
                self._done_out_of_order.discard(self.acked)
                self.acked += 1
        self._changed.set()

    def commit(self, end_lsn: int) -> None:
        self.commits.append((self.produced, end_lsn))

    def take_advance(self) -> int | None:
        """The LSN now safe to advance to; the commits it covers are forgotten."""
        lsn = advance_slot_after_ack(self.commits, self.acked)
        while self.commits and self.commits[0][0] <= self.acked:
            self.commits.popleft()
        return lsn

    async def wait_until(self, in_flight: int) -> None:
        """Wait until at most ``in_flight`` events are unacknowledged; raise a send error."""
        while self.in_flight > in_flight and self.error is None:
            self._changed.clear()
            await self._changed.wait()
        if self.error is not None:
            raise self.error
