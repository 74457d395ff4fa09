"""Prediction batches gathered from a backlog, folded per group: one fold and one table
write per device and model version instead of one per message.

Members of a group are in offset order on one partition, so the device record's
watermark tells which of them it holds already (a replay after a crash); the rest are
joined and folded as one batch whose origin is the last member's.

A record can be ahead of its changelog: a RocksDB store writes to local disk at once and
the changelog record follows, so a worker SIGKILLed in between comes back with a record
that holds inputs its changelog never got. Those inputs are read again and skipped as
replays, and their offsets committed; so when members are skipped, the record (and its
newest id chunks, which a lost fold may have filled) is written again, and the commit
waits for that write as for any other. Otherwise the replica that next rebuilds the device
from the changelog would miss the samples for good.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from edgewise.app.core.records import Origin, PredictionBatch
from edgewise.tables.seen_ids import chunk_key, folded_already


def batch_group(batch: PredictionBatch, origin: Origin) -> tuple[Any, ...]:
    """Batches folded together: one device's, of one model version, kind and shape."""
    return (origin.partition, batch.device, batch.model, batch.model_version, batch.kind,
            batch.top_probs.shape[1:], batch.pixels.shape[1:])


def batch_owner(batch: PredictionBatch, origin: Origin) -> tuple[str, int]:
    """Whose record a group is folded into, with the watermark that tells its replays."""
    return batch.device, origin.partition


def unfolded(table: MutableMapping[str, Any],
             members: list[tuple[PredictionBatch, Origin, bytes]]
             ) -> tuple[list[PredictionBatch], Origin]:
    """The members of a group its device's record does not hold yet (a replay's samples
    are counted as replayed), and the origin to record: the last member's."""
    record = table.get(members[0][0].device)
    live = [batch for batch, origin, _ in members if not folded_already(record, origin)]
    skipped = sum(len(b) for b, _, _ in members) - sum(map(len, live))
    if skipped and isinstance(record, dict):
        record["replayed"] = record.get("replayed", 0) + skipped
        resend(table, members[0][0].device, record, whole=not live)
    return live, members[-1][1]


def resend(table: MutableMapping[str, Any], device: str, record: dict[str, Any],
           whole: bool) -> None:
    """Write a device's newest id chunks again, and its record when ``whole`` (with live
    members, the fold that follows writes the record anyway)."""
    last = record["ids"]["last"]
    for number in range(max(record["ids"]["first"], last - 1), last + 1):
        chunk = table.get(chunk_key(device, number))
        if chunk is not None:
            table[chunk_key(device, number)] = chunk
    if whole:
        table[device] = record
