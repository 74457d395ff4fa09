"""The review queue's bounds and order: evicted by age and by count per partition, each
eviction a table delete (a changelog tombstone), pixels capped, pages without sorting."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest

from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import load_settings
from edgewise.tables.review_index import ReviewIndex
from edgewise.tables.review_queue import ReviewQueue, bound_item, max_item_bytes


class FakeTable(dict):
    """The parts of a Faust table the queue uses; deletes recorded as the tombstones Faust
    would write to the changelog."""

    def __init__(self) -> None:
        super().__init__()
        self.tombstones: list[str] = []

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.tombstones.append(key)


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
    assert sorted(table) == ["s2", "s3", "s4"]
    assert table.tombstones == ["s0", "s1"] and q.evicted == 2


def test_the_count_is_shared_out_over_partitions() -> None:
    q, table, _ = queue(review_max_items=4, partitions=2)
    for i in range(6):
        q.keep(item(f"a{i}", 0.5), partition=0)
    q.keep(item("b0", 0.5), partition=1)
    assert sorted(table) == ["a4", "a5", "b0"]


def test_an_item_only_evicts_in_its_own_partition() -> None:
    """Faust writes the tombstone to the partition of the event in hand: deleting another
    partition's key would put it where the key never was."""
    q, table, clock = queue(review_max_age_seconds=10, partitions=2)
    q.keep(item("old", 0.5), partition=1)
    clock.now += 60
    q.keep(item("new", 0.5), partition=0)
    assert "old" in table and table.tombstones == []
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
    assert sorted(table) == ["b", "c"] and table.tombstones == ["a"]


def test_a_replay_keeps_its_queued_time_and_its_image_url() -> None:
    q, table, clock = queue(review_max_age_seconds=100)
    q.keep(item("a", 0.5, image_url="s3://b/a.png"), partition=0)
    first = table["a"]["queued_at"]
    clock.now += 90
    q.keep(item("a", 0.5), partition=0)
    assert table["a"]["queued_at"] == first and table["a"]["image_url"] == "s3://b/a.png"
    clock.now += 20
    q.keep(item("b", 0.5), partition=0)
    assert "a" not in table  # a replay does not make an item young again


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
    assert sorted(table) == ["s1", "s2", "s3"]  # the oldest, by its recovered queued time


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
