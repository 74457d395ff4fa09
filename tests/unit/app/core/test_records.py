"""Joining the batches of one gathering per device (what the score stage sends on)."""

from __future__ import annotations

import numpy as np

from edgewise.app.core.records import SampleBatch, merged_per_device


def batch(device: str, n: int, start: int = 0, shape: tuple[int, ...] = (8, 8),
          kind: str = "digits") -> SampleBatch:
    return SampleBatch(
        device=device, kind=kind, ids=[f"{device}-{start + i}" for i in range(n)],
        timestamps=np.arange(start, start + n, dtype=np.float64),
        labels=np.full(n, start % 10, dtype=np.int32),
        pixels=np.full((n, *shape), start % 7, dtype=np.uint8),
    )


def test_batches_of_a_device_join_in_order_of_arrival() -> None:
    batches = [batch("a", 3, 0), batch("b", 2, 0), batch("a", 4, 3), batch("b", 1, 2)]
    out = merged_per_device(batches, max_samples=100, max_bytes=10 ** 6)
    assert [b.device for b in out] == ["a", "b"]
    a, b = out
    assert a.ids == [f"a-{i}" for i in range(7)]
    np.testing.assert_array_equal(a.timestamps, np.arange(7.0))
    np.testing.assert_array_equal(a.labels, [0, 0, 0, 3, 3, 3, 3])
    assert a.pixels.shape == (7, 8, 8) and a.pixels[3, 0, 0] == 3
    assert b.ids == ["b-0", "b-1", "b-2"]


def test_every_sample_kept_once_and_within_the_bounds() -> None:
    rng = np.random.default_rng(3)
    batches = [batch(f"d{rng.integers(4)}", int(rng.integers(1, 40)), i * 100)
               for i in range(200)]
    out = merged_per_device(batches, max_samples=64, max_bytes=6_000)
    assert sorted(i for b in out for i in b.ids) == sorted(i for b in batches for i in b.ids)
    for joined in out:
        assert len(joined) <= 64 or len(joined) in {len(b) for b in batches}
        assert len(set(joined.ids)) == len(joined.ids)
    assert len(out) < len(batches)


def test_other_kinds_and_shapes_and_oversize_batches_stay_apart() -> None:
    big = batch("a", 50, 100)
    batches = [batch("a", 2), batch("a", 2, 10, shape=(4, 4)), batch("a", 2, 20, kind="x"),
               big, batch("a", 2, 30)]
    out = merged_per_device(batches, max_samples=40, max_bytes=10 ** 6)
    assert [len(b) for b in out] == [2, 2, 2, 50, 2]  # a device's samples keep their order
    assert out[3] is big


def test_a_batch_repeating_an_id_is_not_joined() -> None:
    """A frame must hold each id once (the boundary refuses duplicates): a resent batch
    stays a frame of its own, for the tables' dedupe to recognise."""
    first, again, other = batch("a", 3, 0), batch("a", 3, 0), batch("a", 2, 10)
    out = merged_per_device([first, again, other], max_samples=100, max_bytes=10 ** 6)
    assert [len(b) for b in out] == [3, 5]
    for joined in out:
        assert len(set(joined.ids)) == len(joined.ids)
