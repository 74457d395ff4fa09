"""A gathering whose members a device record already holds (a replay) writes that record
again, with its newest id chunks: after a SIGKILL a RocksDB record can be ahead of its
changelog, and the replayed inputs are committed on the strength of it."""

from __future__ import annotations

import random
from collections import UserDict
from typing import Any

from edgewise.app.core.records import Origin
from edgewise.tables.gathering import unfolded
from edgewise.tables.seen_ids import chunk_key
from tests.fixtures import hostile


class Written(UserDict):  # type: ignore[type-arg]
    """A table that notes every key written, as the changelog would get it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.writes: list[str] = []
        super().__init__(data)
        self.writes.clear()

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)


def record(watermark: int, first: int, last: int) -> dict[str, Any]:
    return {"ids": {"first": first, "last": last, "watermark": {"0": watermark},
                    "pending": []}, "replayed": 0}


def members(offsets: list[int]) -> list[Any]:
    rng = random.Random(5)
    return [(hostile.good_prediction_batch(rng, device="cam-1", n=4), Origin(0, o), b"")
            for o in offsets]


def table_with_chunks(watermark: int) -> Written:
    return Written({"cam-1": record(watermark, first=3, last=6),
                    **{chunk_key("cam-1", n): {"segments": [], "count": 0, "newest": 0.0}
                       for n in range(3, 7)}})


def test_a_replayed_gathering_writes_the_record_and_its_newest_chunks_again() -> None:
    table = table_with_chunks(watermark=12)
    live, origin = unfolded(table, members([10, 11, 12]))
    assert live == [] and origin == Origin(0, 12)
    assert sorted(table.writes) == sorted(["cam-1", chunk_key("cam-1", 5),
                                           chunk_key("cam-1", 6)])
    assert table["cam-1"]["replayed"] == 12


def test_a_partly_replayed_gathering_leaves_the_record_to_the_fold() -> None:
    table = table_with_chunks(watermark=11)
    live, _ = unfolded(table, members([10, 11, 12]))
    assert len(live) == 1
    assert sorted(table.writes) == sorted([chunk_key("cam-1", 5), chunk_key("cam-1", 6)])


def test_new_input_writes_nothing_before_its_fold() -> None:
    table = table_with_chunks(watermark=9)
    live, _ = unfolded(table, members([10, 11]))
    assert len(live) == 2 and table.writes == []
