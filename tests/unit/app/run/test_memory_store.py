"""The memory store shows only the active partitions' keys (as Faust's RocksDB store does):
a standby copy and a key written of a lost partition are neither counted nor swept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from edgewise.app.core.context import current_event
from edgewise.app.run.factory import STORES
from edgewise.app.run.memory_store import Store


class Event:
    """What a store reads of Faust's current event (an object a weak reference can name)."""

    def __init__(self, partition: int, key: bytes = b"", value: Any = None) -> None:
        self.key, self.value = key, value
        self.message = SimpleNamespace(partition=partition, value=value)


@pytest.fixture
def table() -> Any:
    app = faust.App("t-memory-store", broker="edgewise://127.0.0.1:1",
                    store=STORES["memory"], autodiscover=False)
    table = app.Table("windows", default=None, partitions=4)
    active = {0, 2}
    app.assignor.assigned_actives = lambda: {TP(table.changelog_topic_name, p) for p in active}
    table.active = active  # the test changes the assignment through it
    return table


def test_the_settings_memory_store_is_this_one(table: Any) -> None:
    assert isinstance(table.data, Store)


def test_standby_copies_and_lost_partitions_keys_are_not_shown(table: Any) -> None:
    store = table.data
    for partition, device in ((0, "a"), (1, "b"), (2, "c")):
        with current_event(Event(partition)):
            store[device] = {"count": 1}
    store["timer"] = {"count": 1}  # written outside any event: its partition is unknown
    # the standby copy of partition 3, as Faust's recovery applies it
    store.apply_changelog_batch([Event(3, b"d", {"count": 9})], bytes.decode, lambda v: v)

    assert sorted(store) == sorted(store.keys()) == ["a", "c", "timer"]
    assert dict(store.items()) == {k: {"count": 1} for k in ("a", "c", "timer")}
    assert len(store) == 3 and sum(v["count"] for v in store.values()) == 3
    assert store["d"] == {"count": 9} and "b" in store  # reading by name is unchanged

    table.active.update({1, 3})  # the standby became active
    assert sorted(store) == ["a", "b", "c", "d", "timer"]


async def test_faust_forgets_the_keys_a_worker_wrote_of_a_partition_it_lost(table: Any) -> None:
    store = table.data
    for partition, device in ((0, "a"), (1, "b")):
        with current_event(Event(partition)):
            store[device] = {"count": 1}
    with current_event(Event(1)):
        del store["b"]
        store["b"] = {"count": 2}
    await store.on_recovery_completed({TP(table.changelog_topic_name, 0)}, set())
    assert "b" not in store and store.data == {"a": {"count": 1}}
