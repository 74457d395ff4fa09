"""The in-memory table store, showing only the partitions this worker is active for.

Faust's memory store keeps one dict for every key it holds: those of the partitions the
worker owns, those it reads as a standby (``table_standby_replicas``) and those it wrote of a
partition it has since lost. Its iteration shows them all, where the RocksDB store shows only
the active partitions' keys. A view that sums what a worker holds (``/api/evaluation``,
``/api/devices``, the dashboard) then counted a standby copy beside its owner's record, and a
stage that sweeps its table (eviction) would have written tombstones into a partition another
worker owns. Faust applies standby records a thousand at a time, so the copies appeared only
once enough of them had come: one chaos run in many summed 32,500 evaluated samples of 20,000.

This store notes the partition of each key it is given (a write names the current event's
partition, which is also where Faust sends its changelog record; a changelog read names its
own), so Faust's cleanup after a rebalance also forgets the keys a worker wrote of a partition
it lost; and it iterates, counts and lists only keys of the active partitions (and keys
written outside any event, whose partition it cannot know). Reading a key by name is
unchanged. Registered for Faust as ``edgewise-memory://`` (``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust import streams as faust_streams
from faust.stores.memory import Store as FaustMemoryStore


class Store(FaustMemoryStore):
    """Faust's memory store whose iteration shows only this worker's active partitions."""

    def __setitem__(self, key: Any, value: Any) -> None:
        event = faust_streams.current_event()
        if event is not None:
            self._key_partition[key] = event.message.partition
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.data[key]
        self._key_partition.pop(key, None)

    def active_partitions(self) -> set[int]:
        """The changelog partitions of this table this worker is active for."""
        topic = self.table.changelog_topic_name
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def owned_keys(self) -> Iterator[Any]:
        """Keys of the active partitions, and keys of no known partition (lazily: a caller
        that stops early pays for what it read)."""
        active, where = self.active_partitions(), self._key_partition
        for key in list(self.data):
            partition = where.get(key)
            if partition is None or partition in active:
                yield key

    def __iter__(self) -> Iterator[Any]:
        return self.owned_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.owned_keys())

    def keys(self) -> Iterator[Any]:
        return self.owned_keys()

    def items(self) -> Iterator[tuple[Any, Any]]:
        data = self.data
        return ((key, data[key]) for key in self.owned_keys())

    def values(self) -> Iterator[Any]:
        data = self.data
        return (data[key] for key in self.owned_keys())
