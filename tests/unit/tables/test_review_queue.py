"""The review queue's bounds, order and records: a group of items is one table record (one
changelog write), evicted by age and by count per partition record by record (a rewrite, or
a tombstone for a record left empty), pixels capped, pages without sorting."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest

from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import load_settings
from edgewise.tables.review_index import ReviewIndex
from edgewise.tables.review_queue import (
    ReviewQueue,
    bound_item,
    max_item_bytes,
    record_items,
)


class FakeTable(dict):
    """The parts of a Faust table the queue uses; sets and deletes recorded as the records
    and tombstones Faust would write to the changelog."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.tombstones: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.writes.append(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.tombstones.append(key)


def queued_ids(table: FakeTable) -> list[str]:
    """Every item id the table's records hold (each once, or the test sees it twice)."""
    return sorted(i for value in table.values() for i in record_items(value))


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def item(sid: str, confidence: float, pixels: bytes = b"\x01" * 64, **more: Any
         ) -> dict[str, Any]:
    return {"id": sid, "device": "d", "model": "digits", "model_version": 1, "label": 3,
            "confidence": confidence, "margin": 0.1, "top_k": [[3, confidence]],
            "image_b64": base64.b64encode(pixels).decode(), "shape": [len(pixels)],
            "timestamp": 1.0, **more}


def queue(**settings: Any) -> tuple[ReviewQueue, FakeTable, Clock]:
    table, clock = FakeTable(), Clock()
    options = {"partitions": 1, "review_max_items": 1000, **settings}
    return ReviewQueue(table, load_settings(**options), clock=clock), table, clock


def test_the_oldest_go_beyond_the_count_and_each_is_a_tombstone() -> None:
    q, table, clock = queue(review_max_items=3)
    for i in range(5):
        clock.now += 1
        q.keep(item(f"s{i}", 0.5), partition=0)
    assert queued_ids(table) == ["s2", "s3", "s4"]
    assert table.tombstones == ["s0", "s1"] and q.evicted == 2


def test_the_count_is_shared_out_over_partitions() -> None:
    q, table, _ = queue(review_max_items=4, partitions=2)
    for i in range(6):
        q.keep(item(f"a{i}", 0.5), partition=0)
    q.keep(item("b0", 0.5), partition=1)
    assert queued_ids(table) == ["a4", "a5", "b0"]


def test_an_item_only_evicts_in_its_own_partition() -> None:
    """Faust writes the tombstone to the partition of the event in hand: deleting another
    partition's key would put it where the key never was."""
    q, table, clock = queue(review_max_age_seconds=10, partitions=2)
    q.keep(item("old", 0.5), partition=1)
    clock.now += 60
    q.keep(item("new", 0.5), partition=0)
    assert "old" in queued_ids(table) and table.tombstones == []
    assert [i["id"] for i in q.page(0, 10)[0]] == ["new"]  # but the view no longer shows it
    q.keep(item("newer", 0.5), partition=1)
    assert table.tombstones == ["old"]


def test_items_past_their_age_are_evicted() -> None:
    q, table, clock = queue(review_max_age_seconds=100)
    q.keep(item("a", 0.5), partition=0)
    clock.now += 50
    q.keep(item("b", 0.5), partition=0)
    clock.now += 60
    q.keep(item("c", 0.5), partition=0)
    assert queued_ids(table) == ["b", "c"] and table.tombstones == ["a"]


def test_a_replay_keeps_its_queued_time_and_its_image_url() -> None:
    q, table, clock = queue(review_max_age_seconds=100)
    q.keep(item("a", 0.5, image_url="s3://b/a.png"), partition=0)
    first = q.get("a")["queued_at"]
    clock.now += 90
    q.keep(item("a", 0.5), partition=0)
    assert q.get("a")["queued_at"] == first and q.get("a")["image_url"] == "s3://b/a.png"
    clock.now += 20
    q.keep(item("b", 0.5), partition=0)
    assert q.get("a") is None and queued_ids(table) == ["b"]  # a replay stays as old


def test_pages_are_least_confident_first_with_offset() -> None:
    q, _, _ = queue()
    rng = random.Random(3)
    confidences = [rng.random() for _ in range(50)]
    for i, c in enumerate(confidences):
        q.keep(item(f"s{i}", c), partition=i % 3)
    expected = [f"s{i}" for i in sorted(range(50), key=lambda i: (confidences[i], f"s{i}"))]
    first, queued = q.page(0, 20)
    second, _ = q.page(20, 20)
    assert [i["id"] for i in first + second] == expected[:40] and queued == 50
    assert q.page(49, 20)[0][0]["id"] == expected[49] and q.page(50, 20)[0] == []


def test_a_changed_confidence_moves_the_item() -> None:
    q, _, _ = queue()
    q.keep(item("a", 0.2), partition=0)
    q.keep(item("b", 0.3), partition=0)
    q.keep(item("a", 0.4), partition=0)
    assert [i["id"] for i in q.page(0, 10)[0]] == ["b", "a"]


def test_the_order_is_rebuilt_from_the_table_after_recovery() -> None:
    q, table, clock = queue(review_max_items=3)
    for i in range(3):
        clock.now += 1
        q.keep(item(f"s{i}", 1 - i / 10), partition=0)
    recovered = ReviewQueue(table, load_settings(partitions=1, review_max_items=3),
                            clock=clock)
    recovered.rebuild()
    assert [i["id"] for i in recovered.page(0, 10)[0]] == ["s2", "s1", "s0"]
    clock.now += 1
    recovered.keep(item("s3", 0.9), partition=0)
    assert queued_ids(table) == ["s1", "s2", "s3"]  # the oldest, by its recovered queued time


def test_pixels_over_the_cap_are_dropped_and_the_record_stays_bounded() -> None:
    kept = bound_item(item("a", 0.5, pixels=bytes(1000)), max_image_bytes=999)
    assert kept["image_b64"] == "" and kept["image_omitted"] == 1000
    small = item("b", 0.5, pixels=bytes(999))
    assert bound_item(small, max_image_bytes=999) == small
    huge_fields = item("c", 0.5, reason="x" * 20_000)
    with pytest.raises(BadInput, match="oversize"):
        bound_item(huge_fields, max_image_bytes=999)
    worst = bound_item(item("d", 0.5, pixels=bytes(65_536), reason="x" * 10_000), 65_536)
    assert len(orjson.dumps(worst)) <= max_item_bytes(65_536) < 110_000


def test_index_stays_consistent_under_random_operations() -> None:
    rng = random.Random(7)
    index, live = ReviewIndex(), {}
    now = 0.0
    for step in range(3000):
        now += rng.random()
        key = f"k{rng.randrange(200)}"
        if rng.random() < 0.2:
            index.discard(key)
            live.pop(key, None)
        else:
            queued = live.get(key, (0, 0, now))[2]
            conf = rng.random()
            index.put(key, conf, hash(key) % 3, queued)
            live[key] = (conf, hash(key) % 3, queued)
        if step % 100 == 0:
            for key in index.evict(step % 3, now, 20, 200.0):
                live.pop(key)
            in_partition = [k for k, v in live.items() if v[1] == step % 3]
            assert len(in_partition) <= 20
            assert all(live[k][2] >= now - 200.0 for k in in_partition)
    assert len(index) == len(live)
    expected = sorted(live, key=lambda k: (live[k][0], k))
    assert index.page(0, 1000, now, 1e9) == expected


def test_a_group_is_one_changelog_write() -> None:
    q, table, _ = queue()
    kept, refused = q.keep_all([item(f"s{i}", 0.5) for i in range(10)], partition=0)
    assert (kept, refused) == (10, [])
    assert table.writes == ["s0"] and list(table) == ["s0"]
    assert sorted(table["s0"]["items"]) == sorted(f"s{i}" for i in range(10))
    assert q.get("s7")["id"] == "s7" and q.get("nope") is None


def test_a_group_evicted_whole_is_one_tombstone() -> None:
    q, table, clock = queue(review_max_items=10)
    for name in "abc":
        clock.now += 1
        q.keep_all([item(f"{name}{i}", 0.5) for i in range(5)], partition=0)
    assert table.writes == ["a0", "b0", "c0"] and table.tombstones == ["a0"]
    assert queued_ids(table) == sorted(f"{n}{i}" for n in "bc" for i in range(5))
    assert q.evicted == 5


def test_a_group_evicted_in_part_is_one_rewrite() -> None:
    q, table, clock = queue(review_max_items=7)
    q.keep_all([item(f"a{i}", 0.5) for i in range(5)], partition=0)
    clock.now += 1
    q.keep_all([item(f"b{i}", 0.5) for i in range(5)], partition=0)
    assert sorted(table.writes) == ["a0", "a0", "b0"] and table.tombstones == []
    assert sorted(table["a0"]["items"]) == ["a3", "a4"]
    assert [i["id"] for i in q.page(0, 10)[0]] == ["a3", "a4", "b0", "b1", "b2", "b3", "b4"]


def test_resolving_one_item_rewrites_its_group_and_the_last_tombstones_it() -> None:
    q, table, _ = queue()
    q.keep_all([item("a", 0.5), item("b", 0.4)], partition=0)
    assert q.resolve("b") and table.writes == ["a", "a"] and table.tombstones == []
    assert list(table["a"]["items"]) == ["a"] and q.get("b") is None
    assert not q.resolve("b")
    assert q.resolve("a") and table.tombstones == ["a"] and not table
    assert q.page(0, 10) == ([], 0)


def test_an_item_sent_again_in_another_group_is_kept_once_with_its_url() -> None:
    q, table, clock = queue()
    q.keep_all([item("a", 0.5), item("b", 0.5), item("c", 0.5)], partition=0)
    queued_at = q.get("c")["queued_at"]
    clock.now += 5
    q.keep_all([item("c", 0.5, image_url="s3://b/c.png"), item("d", 0.5)], partition=0)
    assert queued_ids(table) == ["a", "b", "c", "d"]
    assert sorted(table["a"]["items"]) == ["a", "b"] and sorted(table["c"]["items"]) == ["c", "d"]
    assert table.writes == ["a", "a", "c"]  # the old group rewritten once, the new one once
    q.keep_all([item("e", 0.5), item("c", 0.5)], partition=0)  # a copy without the URL
    assert queued_ids(table) == ["a", "b", "c", "d", "e"]
    assert q.get("c")["image_url"] == "s3://b/c.png" and q.get("c")["queued_at"] == queued_at
    assert q.page(0, 10)[1] == 5


def test_a_group_under_a_key_in_use_takes_up_the_items_already_there() -> None:
    q, table, _ = queue()
    q.keep_all([item("a", 0.5), item("b", 0.5)], partition=0)
    q.keep_all([item("a", 0.5, image_url="s3://b/a.png")], partition=0)
    assert queued_ids(table) == ["a", "b"] and list(table) == ["a"]
    assert q.get("a")["image_url"] == "s3://b/a.png" and q.get("b")["id"] == "b"


def test_a_group_is_split_into_records_within_the_record_bound() -> None:
    q, table, _ = queue(table_record_max_bytes=16_384)
    items = [item(f"s{i}", 0.5, pixels=bytes(4000)) for i in range(10)]
    q.keep_all(items, partition=0)
    assert 1 < len(table) < 10 and len(table.writes) == len(table)
    assert all(len(orjson.dumps(v)) <= 16_384 for v in table.values())
    assert queued_ids(table) == sorted(i["id"] for i in items)
    assert all(key in table[key]["items"] for key in table)  # each by its first item's id


def test_after_recovery_items_are_found_by_id_in_their_groups() -> None:
    q, table, clock = queue()
    q.keep_all([item("a", 0.3), item("b", 0.2)], partition=0)
    clock.now += 1
    q.keep_all([item("c", 0.1)], partition=0)
    table["old"] = {**item("old", 0.9), "queued_at": clock.now, "partition": 0}  # one item
    recovered = ReviewQueue(table, load_settings(partitions=1), clock=clock)
    recovered.rebuild()
    assert recovered.get("b")["id"] == "b" and recovered.get("old")["id"] == "old"
    assert [i["id"] for i in recovered.page(0, 10)[0]] == ["c", "b", "a", "old"]
    assert recovered.resolve("a") and sorted(table["a"]["items"]) == ["b"]
    assert recovered.resolve("old") and "old" not in table
