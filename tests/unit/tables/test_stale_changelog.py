"""A changelog record read back whose watermark went back (a dropped worker's late write)
does not replace the newer one (``went_back`` and ``fresh_changelog_events``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edgewise.app.core.context import fresh_changelog_events
from edgewise.tables.seen_ids import went_back


def record(**marks: int) -> dict[str, Any]:
    return {"ids": {"watermark": dict(marks)}, "count": sum(marks.values())}


def event(key: str, value: Any) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(value=value and b"x"))


def test_a_record_that_folded_less_of_a_partition_went_back() -> None:
    assert went_back(record(**{"1": 10}), record(**{"1": 9}))
    assert not went_back(record(**{"1": 10}), record(**{"1": 10}))  # the owner's rewrite
    assert not went_back(record(**{"1": 10}), record(**{"1": 11}))
    assert not went_back(record(**{"1": 10}), record(**{"2": 3}))  # another partition only
    assert not went_back({"segments": []}, {"segments": []})  # an id chunk


def test_stale_events_are_left_out_against_the_store_and_earlier_in_the_batch() -> None:
    store = {"a": record(**{"0": 5})}
    batch = [event("a", record(**{"0": 4})),   # behind the store: left out
             event("b", record(**{"0": 7})),
             event("b", record(**{"0": 6})),   # behind the batch's own b: left out
             event("a", record(**{"0": 8})),
             event("b", None),                 # a deletion always applies
             event("b", record(**{"0": 1}))]   # after a deletion: applies
    kept = list(fresh_changelog_events(batch, store, lambda k: k, went_back))
    assert [(e.key, e.value and e.value["ids"]["watermark"]["0"]) for e in kept] == [
        ("b", 7), ("a", 8), ("b", None), ("b", 1)]
