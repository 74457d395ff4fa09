"""The corrections table: last correction wins, replays change nothing, bounded by count and
age with each eviction a tombstone, and the corrected accuracy always what the table holds."""

from __future__ import annotations

import random
from typing import Any

from edgewise.app.core.settings import load_settings
from edgewise.tables.corrections import (
    CorrectionStore,
    corrected_view,
    merge_corrected,
)
from tests.unit.tables.test_review_queue import Clock, FakeTable

NOW = 1_800_000_000.0


def record(sid: str, label: int | None, at: float, predicted: int = 3, version: int = 1,
           ts: float = NOW - 100) -> dict[str, Any]:
    return {"schema": 1, "id": sid, "label": label, "device": "d", "model": "digits",
            "model_version": version, "predicted": predicted, "confidence": 0.4,
            "corrected_at": at, "item": {"id": sid, "timestamp": ts}}


def store(**settings: Any) -> tuple[CorrectionStore, FakeTable, Clock]:
    table, clock = FakeTable(), Clock(NOW)
    options = {"partitions": 1, "corrections_max_items": 1000, **settings}
    return CorrectionStore(table, load_settings(**options), clock=clock), table, clock


def accuracy(s: CorrectionStore) -> dict[str, tuple[int, int]]:
    return {k: (m["count"], m["correct"]) for k, m in s.accuracy.models.items()}


def test_the_last_correction_wins_and_counts_once() -> None:
    s, table, _ = store()
    assert s.apply(record("a", 5, NOW), 0).action == "set"
    assert accuracy(s) == {"digits:1": (1, 0)}
    assert s.apply(record("a", 3, NOW + 1), 0).action == "set"  # now the model was right
    assert accuracy(s) == {"digits:1": (1, 1)} and table["a"]["label"] == 3
    assert s.is_corrected("a") and not s.is_corrected("b")


def test_a_replay_or_an_older_record_changes_nothing() -> None:
    s, table, _ = store()
    first, second = record("a", 5, NOW), record("a", 3, NOW + 1)
    for r in (first, second):
        s.apply(r, 0)
    writes = dict(table)
    assert s.apply(second, 0).action == "unchanged"  # the same record again
    assert s.apply(first, 0).action == "unchanged"  # an older one after a newer
    assert dict(table) == writes and accuracy(s) == {"digits:1": (1, 1)}


def test_taking_back_leaves_a_marker_that_an_older_replay_cannot_undo() -> None:
    s, table, _ = store()
    s.apply(record("a", 5, NOW), 0)
    applied = s.apply(record("a", None, NOW + 1), 0)
    assert applied.action == "retracted" and applied.previous["label"] == 5
    assert accuracy(s) == {} and not s.is_corrected("a") and "a" in table
    assert s.apply(record("a", 5, NOW), 0).action == "unchanged"  # replayed: stays taken back
    assert s.apply(record("b", None, NOW), 0).action == "unchanged"  # nothing to take back
    assert "b" not in table


def test_per_model_version_and_per_window_of_sample_time() -> None:
    s, _, _ = store(evaluation_window_seconds=60)
    s.apply(record("a", 3, NOW, predicted=3, version=1, ts=NOW - 130), 0)
    s.apply(record("b", 4, NOW, predicted=3, version=1, ts=NOW - 10), 0)
    s.apply(record("c", 7, NOW, predicted=7, version=2, ts=NOW - 10), 0)
    view = corrected_view(s.accuracy.raw(), 60, 10)
    assert view["digits:1"]["count"] == 2 and view["digits:1"]["accuracy"] == 0.5
    assert [w["count"] for w in view["digits:1"]["windows"]] == [1, 1]
    assert view["digits:2"]["accuracy"] == 1.0


def test_evicted_beyond_the_count_and_the_age_with_tombstones_and_the_tally_follows() -> None:
    s, table, clock = store(corrections_max_items=3, corrections_max_age_seconds=100)
    for i in range(5):
        clock.now += 1
        s.apply(record(f"s{i}", 3, clock.now), 0)
    assert sorted(table) == ["s2", "s3", "s4"] and table.tombstones == ["s0", "s1"]
    assert accuracy(s) == {"digits:1": (3, 3)} and s.evicted == 2
    clock.now += 200
    s.apply(record("late", 4, clock.now), 0)
    assert sorted(table) == ["late"] and accuracy(s) == {"digits:1": (1, 0)}


def test_a_recorrected_sample_moves_to_the_back_of_the_eviction_order() -> None:
    s, table, clock = store(corrections_max_items=2)
    s.apply(record("a", 1, NOW + 1), 0)
    s.apply(record("b", 1, NOW + 2), 0)
    s.apply(record("a", 2, NOW + 3), 0)
    s.apply(record("c", 1, NOW + 4), 0)
    assert sorted(table) == ["a", "c"]


def test_the_tally_rebuilt_from_the_table_equals_the_one_kept_as_records_came() -> None:
    rng = random.Random(5)
    s, table, clock = store(corrections_max_items=40, partitions=2)
    for _ in range(400):
        clock.now += rng.random()
        sid = f"s{rng.randrange(60)}"
        label = None if rng.random() < 0.2 else rng.randrange(10)
        s.apply(record(sid, label, clock.now - rng.random() * 3, predicted=rng.randrange(10),
                       version=rng.randrange(1, 4)), rng.randrange(2))
    kept = s.accuracy.raw()
    rebuilt, _, _ = store(corrections_max_items=40, partitions=2)
    rebuilt.table = table
    rebuilt.rebuild(table.items())
    assert rebuilt.accuracy.raw() == kept
    assert sum(m["count"] for m in kept.values()) == sum(
        1 for v in table.values() if v["label"] is not None)


def test_tallies_of_several_workers_add_up() -> None:
    one, _, _ = store()
    two, _, _ = store()
    one.apply(record("a", 3, NOW), 0)
    two.apply(record("b", 4, NOW), 0)
    two.apply(record("c", 3, NOW, version=2), 0)
    merged = merge_corrected([one.accuracy.raw(), two.accuracy.raw()])
    assert (merged["digits:1"]["count"], merged["digits:1"]["correct"]) == (2, 1)
    assert merged["digits:2"]["count"] == 1


def test_any_delivery_order_ends_in_the_same_table() -> None:
    records = [record("a", 5, NOW), record("a", 2, NOW), record("a", None, NOW + 1),
               record("a", 7, NOW + 1), record("a", 1, NOW - 5)]
    ends = set()
    for _ in range(30):
        random.shuffle(records)
        s, table, _ = store()
        for r in records:
            s.apply(r, 0)
        ends.add((table["a"]["label"], table["a"]["corrected_at"]))
    assert ends == {(7, NOW + 1)}
