"""A gathering's groups keep each owner's order: a key's items after another key's item of
the same owner start a new group (``runs_in_order``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgewise.app.core.context import runs_in_order


def test_interleaved_versions_of_one_device_are_three_runs_in_offset_order() -> None:
    # (device, model version, offset): v1, v2, v1 of one device, v1 of another between
    items = [("a", 1, 10), ("b", 1, 11), ("a", 2, 12), ("b", 1, 13), ("a", 1, 14)]
    runs = runs_in_order(items, key=lambda i: (i[0], i[1]), owner=lambda i: i[0])
    assert [[offset for *_, offset in run] for run in runs] == [[10], [11, 13], [12], [14]]


def test_one_key_per_owner_is_one_group_each() -> None:
    items = [(f"d{i % 3}", 1, i) for i in range(30)]
    runs = runs_in_order(items, key=lambda i: (i[0], i[1]), owner=lambda i: i[0])
    assert len(runs) == 3 and all(len(run) == 10 for run in runs)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), max_size=60))
def test_every_owners_groups_are_consecutive_runs_in_its_order(
    pairs: list[tuple[int, int]]) -> None:
    items = [(owner, key, offset) for offset, (owner, key) in enumerate(pairs)]
    runs = runs_in_order(items, key=lambda i: (i[0], i[1]), owner=lambda i: i[0])
    handed = sorted((i for run in runs for i in run), key=lambda i: i[2])
    assert handed == items  # nothing lost or doubled
    for owner in {i[0] for i in items}:
        mine = [i for i in items if i[0] == owner]
        handled = [i for run in runs for i in run if i[0] == owner]
        assert handled == mine  # handled in the owner's order: a watermark never goes back
        for run in runs:
            if run[0][0] == owner:
                assert len({i[1] for i in run}) == 1  # one key
                start = mine.index(run[0])
                assert mine[start:start + len(run)] == run  # consecutive
