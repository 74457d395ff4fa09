"""Reconnect delays: doubling, capped, jittered downwards only, reset after success."""

from __future__ import annotations

import pytest

from edgewise.app.core.backoff import Backoff


def test_doubles_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(0.5, 5.0, jitter=0.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_jitter_only_shortens() -> None:
    shortest = Backoff(1.0, 8.0, jitter=0.25, rng=lambda: 1.0)
    longest = Backoff(1.0, 8.0, jitter=0.25, rng=lambda: 0.0)
    assert [shortest.next() for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]
    assert [longest.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_reset_starts_over_and_many_failures_stay_finite() -> None:
    backoff = Backoff(0.1, 2.0, jitter=0.0)
    for _ in range(5000):
        assert backoff.next() <= 2.0
    backoff.reset()
    assert backoff.next() == 0.1


@pytest.mark.parametrize("args", [(0, 1), (2, 1), (1, 2, 0.5), (1, 2, 2, 1.0)])
def test_refuses_nonsense(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)
