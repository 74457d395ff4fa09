"""The review queue's order, kept in memory beside the table: least confident first for the
view, oldest first for eviction, per partition.

Sorting the whole table on every ``/api/review`` request costs O(n log n) per request and
grows with the queue; this index is updated by the review stage as items come and go (a
binary-searched insert or delete per item), so a page costs what it returns. It is derived
state: after a rebalance or a recovery it is rebuilt from the table (``rebuild``).

Eviction is per partition because Faust writes a table's changelog record to the partition
of the event being processed: the review stage may only delete keys of the partition it is
handling, or the tombstone would land where the key never was and compaction would keep it.
The review topic's groups hold items of one partition, and the table keeps each group as
a record on that partition, so each item's partition is the one whose events write it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    """What the index knows of one item: enough to order and to evict it."""

    confidence: float
    partition: int
    queued_at: float


class ReviewIndex:
    """Item ids by confidence (one sorted list) and by arrival (one dict per partition)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._by_confidence: list[tuple[float, str]] = []
        self._by_age: dict[int, dict[str, float]] = {}  # insertion order = queued_at order

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def partition_size(self, partition: int) -> int:
        return len(self._by_age.get(partition, ()))

    def put(self, key: str, confidence: float, partition: int, queued_at: float) -> None:
        """Add or replace one item; a replaced item keeps its place in the arrival order
        when its queued time did not change (a replay, or the image sink's copy)."""
        old = self._entries.get(key)
        if old is not None:
            self._remove_order(key, old)
            if old.partition != partition or old.queued_at != queued_at:
                self._by_age[old.partition].pop(key, None)
        entry = Entry(float(confidence), partition, float(queued_at))
        self._entries[key] = entry
        bisect.insort(self._by_confidence, (entry.confidence, key))
        ages = self._by_age.setdefault(partition, {})
        if key not in ages:
            if ages and queued_at < next(reversed(ages.values())):
                self._insert_by_age(ages, key, entry.queued_at)
            else:
                ages[key] = entry.queued_at

    def discard(self, key: str) -> None:
        """Forget one item (deleted from the table)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._remove_order(key, entry)
        self._by_age[entry.partition].pop(key, None)

    def evict(self, partition: int, now: float, max_items: int, max_age: float) -> list[str]:
        """The ids to delete from one partition: older than ``max_age`` seconds, then the
        oldest beyond ``max_items``; they are forgotten here, the caller deletes them."""
        ages = self._by_age.get(partition)
        if not ages:
            return []
        cutoff = now - max_age
        out: list[str] = []
        for key, queued_at in ages.items():
            if queued_at >= cutoff and len(ages) - len(out) <= max_items:
                break
            out.append(key)
        for key in out:
            self.discard(key)
        return out

    def page(self, offset: int, limit: int, now: float, max_age: float) -> list[str]:
        """Ids of one page, least confident first, skipping items already past their age
        (they are deleted when their partition next sees an item)."""
        cutoff = now - max_age
        live = (key for _, key in self._by_confidence
                if self._entries[key].queued_at >= cutoff)
        return _slice(live, offset, limit)

    def live_count(self, now: float, max_age: float) -> int:
        """Items not yet past their age."""
        cutoff = now - max_age
        return sum(1 for e in self._entries.values() if e.queued_at >= cutoff)

    def rebuild(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Start again from the table's items (after a recovery or a rebalance)."""
        self.__init__()  # type: ignore[misc]
        rows = sorted(((float(v.get("queued_at", 0.0)), k, v) for k, v in items
                       if isinstance(v, dict)), key=lambda row: row[0])
        for queued_at, key, value in rows:
            self.put(key, float(value["confidence"]), int(value.get("partition", 0)), queued_at)

    def _remove_order(self, key: str, entry: Entry) -> None:
        at = bisect.bisect_left(self._by_confidence, (entry.confidence, key))
        if at < len(self._by_confidence) and self._by_confidence[at] == (entry.confidence, key):
            del self._by_confidence[at]

    @staticmethod
    def _insert_by_age(ages: dict[str, float], key: str, queued_at: float) -> None:
        """An item older than the newest one (rare: a clock step back): re-sort the dict."""
        ages[key] = queued_at
        ordered = sorted(ages.items(), key=lambda kv: kv[1])
        ages.clear()
        ages.update(ordered)


def _slice(live: Iterator[str], offset: int, limit: int) -> list[str]:
    out: list[str] = []
    for i, key in enumerate(live):
        if i >= offset + limit:
            break
        if i >= offset:
            out.append(key)
    return out
