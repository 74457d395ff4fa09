"""Reconnect delays: exponential, capped, with jitter.

A fleet of edges that lost the same broker must not all knock at once when it comes back
(jitter), must not hammer it while it is down (doubling), and must notice soon enough that
it is back (the cap). ``reset()`` after a successful connection starts over.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays ``first``, ``2 * first``, ``4 * first`` … up to ``longest``, each shortened by
    up to ``jitter`` (a fraction) at random, never lengthened: the cap is a promise."""

    def __init__(
        self, first: float, longest: float, factor: float = 2.0, jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if first <= 0 or longest < first:
            raise ValueError(f"need 0 < first <= longest, got first={first} longest={longest}")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError("factor must be >= 1 and jitter in [0, 1)")
        self.first = first
        self.longest = longest
        self.factor = factor
        self.jitter = jitter
        self.rng = rng
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        exponent = min(self.attempts, 64)  # far past any cap; keeps the float finite
        delay = min(self.longest, self.first * self.factor ** exponent)
        self.attempts += 1
        return delay * (1.0 - self.jitter * self.rng())

    def reset(self) -> None:
        """Forget the failures: the next delay is ``first`` again."""
        self.attempts = 0
