"""Tumbling windows at the edge."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.tables.edge_windows import EdgeWindows, window_start


def test_windows_are_epoch_aligned() -> None:
    assert window_start(1234.5, 10.0) == 1230.0
    assert window_start(1240.0, 10.0) == 1240.0


def test_a_window_closes_when_a_later_one_starts_and_sums_what_it_saw() -> None:
    windows = EdgeWindows(10.0)
    assert windows.add(100.0, count=3, labels=np.array([1, 1, 7]),
                       confidence=np.array([0.9, 0.5, 0.8]), low=np.array([0, 1, 0], bool)) == []
    assert windows.add(105.0, count=2, labels=np.array([7, 2]),
                       confidence=np.array([0.95, 0.4]), low=np.array([0, 1], bool)) == []
    closed = windows.add(110.0, count=1, labels=np.array([3]), confidence=np.array([0.7]))
    assert len(closed) == 1
    fields = closed[0].fields()
    assert fields["window_start"] == 100.0 and fields["window_end"] == 110.0
    assert (fields["count"], fields["scored"], fields["low"]) == (5, 5, 2)
    assert fields["labels"] == {"1": 2, "2": 1, "7": 2}
    assert fields["conf_sum"] == pytest.approx(3.55)
    assert (fields["conf_min"], fields["conf_max"]) == (0.4, 0.95)
    assert windows.current is not None and windows.current.start == 110.0


def test_unscored_counts_and_frames() -> None:
    windows = EdgeWindows(5.0)
    windows.add(1.0, count=16)
    windows.add(2.0, frames=1, count=0)
    (tally,) = windows.flush()
    fields = tally.fields()
    assert (fields["frames"], fields["count"], fields["scored"]) == (1, 16, 0)
    assert fields["conf_min"] is None and fields["labels"] == {}
    assert windows.flush() == []


def test_due_closes_an_idle_window_on_time_and_drops_empty_ones() -> None:
    windows = EdgeWindows(10.0)
    windows.add(3.0, count=1)
    assert windows.due(9.9) == []
    assert [t.start for t in windows.due(10.0)] == [0.0]
    windows.add(25.0)  # nothing counted
    assert windows.due(31.0) == []


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EdgeWindows(0)
