"""Which devices a table may forget: those silent for too long, or beyond a count, per
partition, by the hub's clock (a device's own clock cannot keep it, or push others, out).

A table keyed by device (windows, evaluation) keeps a record per device id it ever saw, and
devices come and go (or send garbage ids). Eviction runs where the stage handles a message
of the same partition, because Faust writes a deletion's tombstone to the partition of the
event in hand; after a restart the roster is seeded from the records themselves, which say
their partition and when they were last written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from edgewise.app.core.records import Origin


class DeviceRoster:
    """Last-seen times of the devices of each partition; says which ones to evict."""

    def __init__(self, max_age_seconds: float, max_devices: int) -> None:
        self.max_age = max_age_seconds
        self.max_devices = max_devices
        self.seen: dict[int, dict[str, float]] = {}

    def seed(self, partition: int, records: Iterable[tuple[str, Any]]) -> None:
        """Learn a partition's devices from its records (once, after a restart)."""
        if partition in self.seen:
            return
        found = [(float(record.get("written", 0.0)), device) for device, record in records
                 if isinstance(record, dict) and record.get("partition") == partition]
        self.seen[partition] = {device: written for written, device in sorted(found)}

    def touch(self, partition: int, device: str, now: float | None = None) -> float:
        """Note that ``device`` was written now; returns the time, to keep in its record."""
        moment = time.time() if now is None else now
        devices = self.seen.setdefault(partition, {})
        devices.pop(device, None)
        devices[device] = moment  # kept in least-recently-written order
        return moment

    def expired(self, partition: int, now: float | None = None) -> list[str]:
        """The partition's devices to evict now: silent past the age, then the least
        recently written beyond the count; forgotten here as they are returned."""
        moment = time.time() if now is None else now
        devices = self.seen.get(partition, {})
        out = []
        for device, written in list(devices.items()):
            if written >= moment - self.max_age and len(devices) <= self.max_devices:
                break
            out.append(device)
            del devices[device]
        return out


def stamp(state: dict[str, Any], origin: Origin | None) -> None:
    """Where and when (by the hub's clock) a record was last written, for its eviction."""
    state["written"] = time.time()
    if origin is not None:
        state["partition"] = origin.partition


def evict_silent_devices(roster: DeviceRoster, table: Any, drop: Any, partition: int,
                         device: str) -> int:
    """After ``device``'s record on ``partition`` was written (and stamped): note it, and
    drop (``drop(table, device)``) the partition's devices past the age or the count;
    returns how many."""
    record = table.get(device)
    if not isinstance(record, dict) or "written" not in record:
        return 0
    written = record["written"]
    roster.seed(partition, ((k, v) for k, v in table.items() if isinstance(v, dict)
                            and "layout" in v))
    roster.touch(partition, device, written)
    gone = roster.expired(partition, written)
    for old in gone:
        drop(table, old)
    return len(gone)
