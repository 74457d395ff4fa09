"""Devices leave the window tables when silent too long or beyond a count, per partition,
by the hub's clock; their records and id chunks go with tombstones."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.app.core.records import Origin
from edgewise.tables.device_roster import DeviceRoster, evict_silent_devices
from edgewise.tables.seen_ids import CHUNK_IDS, SeenIds, is_chunk_key
from edgewise.tables.windows import WindowSpec, fold_device_batch

SPEC = WindowSpec(tumbling=10.0, hopping=30.0, step=10.0, kept=3)


def test_silent_devices_go_by_age_and_the_rest_by_count() -> None:
    roster = DeviceRoster(max_age_seconds=100, max_devices=3)
    for i, device in enumerate(["a", "b", "c", "d"]):
        roster.touch(0, device, now=1000 + i)
    assert roster.expired(0, now=1005) == ["a"]  # four devices, three allowed
    roster.touch(0, "c", now=1050)
    assert roster.expired(0, now=1104) == ["b", "d"]  # silent over 100 s
    assert roster.expired(1, now=5000) == []  # other partitions are theirs to evict


def test_after_a_restart_the_roster_is_seeded_from_the_records() -> None:
    roster = DeviceRoster(max_age_seconds=100, max_devices=10)
    records = [("x", {"layout": 2, "partition": 0, "written": 10.0}),
               ("y", {"layout": 2, "partition": 1, "written": 10.0}),
               ("z", {"layout": 2, "partition": 0, "written": 500.0})]
    roster.seed(0, records)
    assert roster.expired(0, now=550) == ["x"]


def rows(n: int, t: float) -> dict[str, np.ndarray]:
    return {"timestamps": np.full(n, t), "labels": np.ones(n, np.int32),
            "confidence": np.full(n, 0.9, np.float32), "low": np.zeros(n, bool),
            "true_labels": np.full(n, -1, np.int32), "latency_ms": np.full(n, 5.0, np.float32)}


def test_an_evicted_device_takes_its_id_chunks_with_it() -> None:
    table: dict[str, Any] = {}
    seen = SeenIds(600, 100_000)
    roster = DeviceRoster(max_age_seconds=1e9, max_devices=1)
    for n, device in enumerate(["old", "new"]):
        ids = [f"{device}-{i}" for i in range(CHUNK_IDS + 1)]
        fold_device_batch(table, seen, device, SPEC, "m:1", ids,
                          rows(len(ids), 1.7e9), Origin(0, n))
        gone = evict_silent_devices(roster, table, seen.drop, 0, device)
    assert gone == 1 and "old" not in table and "new" in table
    assert not [k for k in table if is_chunk_key(k) and k.startswith("old")]
    assert "old" not in seen.sets
