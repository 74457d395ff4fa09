"""Which sample ids a device's counts already hold, so that nothing is counted twice, at a
cost per batch proportional to the batch and with every changelog record bounded.

Two kinds of repeat reach a table, and each has its own cheap proof:

- A *replayed record* (a worker died after its table write but before committing the input
  offset, so the input is read again): the device's record keeps, per source partition, the
  offset of the last input folded into it (``watermark``), in the same changelog record as
  the counts. A record at or below it is skipped whole, exactly, whatever its size.
- A *repeated sample* in a new record (a score worker re-scored a batch, the bridge got a
  redelivery, a CDC snapshot was redone with new timestamps, a re-score after a model swap):
  recognised by sample id. The ids counted within the dedupe horizon (``dedupe_seconds`` of
  event time, at most ``dedupe_max_ids`` per device) live in *chunk records* of the same
  table, ``<device>\\x1f<n>``, each at most ``CHUNK_IDS`` 64-bit hashes, dropped
  (tombstoned) whole when they fall out of the horizon. The newest few hundred ids wait in
  the device record itself, so most batches cost one changelog record, not two.
  In memory, a set per device answers lookups; it is rebuilt from the chunks after recovery.

Chunk records are written before the device record, to the same changelog partition (Faust
writes a table's changelog to the partition of the input event), so after a crash the
changelog holds either both or only the chunk: segments newer than the device record's
watermark are dropped when the set is rebuilt, since their samples were never counted.
A repeat arriving after its id left the horizon is counted again; said in the README.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import MutableMapping
from typing import Any

import numpy as np

from edgewise.app.core.records import Origin

#: Ids per chunk record: 8 KB of hashes, about 11 KB as base64.
CHUNK_IDS = 1024
#: Ids a device record holds before they move to a chunk: most batches write one record.
PENDING_IDS = 256
SEP = "\x1f"


def id_hashes(ids: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of sample ids (collisions are negligible at 2**-64)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
         for i in ids], dtype=np.uint64,
    )


def chunk_key(device: str, number: int) -> str:
    return f"{device}{SEP}{number}"


def is_chunk_key(key: str) -> bool:
    """Chunk records share the table with device records; views skip them."""
    return SEP in key


def new_ids_state() -> dict[str, Any]:
    """The part of a device record that tracks ids: chunk range, source watermarks, and the
    newest ids not yet moved to a chunk."""
    return {"first": 0, "last": 0, "watermark": {}, "pending": []}


def is_replay(ids_state: dict[str, Any], origin: Origin | None) -> bool:
    """Whether the input at ``origin`` is already folded into the record (a replay)."""
    if origin is None:
        return False
    return origin.offset <= ids_state["watermark"].get(str(origin.partition), -1)


def went_back(current: Any, incoming: Any) -> bool:
    """Whether a device record read from the changelog (``incoming``) has folded less of
    some source partition than the one it would replace (``current``): a stale write of a
    worker the group had dropped, never the owner's (its watermarks only move on; a
    device dropped and seen again starts after a deletion)."""
    try:
        before, after = current["ids"]["watermark"], incoming["ids"]["watermark"]
        return any(after[p] < before[p] for p in after.keys() & before.keys())
    except (KeyError, TypeError):
        return False  # not a device record (an id chunk, another layout): applied


def folded_already(record: Any, origin: Origin) -> bool:
    """Whether a device record (windows or evaluation) already holds the input at
    ``origin``: a gathering's replayed members are dropped before the others are joined."""
    return (isinstance(record, dict) and isinstance(record.get("ids"), dict)
            and is_replay(record["ids"], origin))


def _segment_hashes(segment: list[Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(segment[3]), dtype=np.uint64)


class SeenIds:
    """The in-memory sets of counted ids per device, kept in step with the chunk records."""

    def __init__(self, horizon_seconds: float, max_ids: int) -> None:
        self.horizon = horizon_seconds
        self.max_chunks = max(2, -(-max_ids // CHUNK_IDS))
        self.sets: dict[str, set[int]] = {}
        self.synced: dict[str, tuple[Any, ...]] = {}  # the record state each set matches

    def known(self, table: MutableMapping[str, Any], device: str,
              ids_state: dict[str, Any]) -> set[int]:
        """The device's set, rebuilt from its chunk records when not in memory or when the
        record moved on without us (recovery, or the partition came back after a rebalance);
        segments the device record's watermark does not cover are dropped."""
        found = self.sets.get(device)
        if found is not None and self.synced.get(device) == _sync_mark(ids_state):
            return found
        found = set()
        marks = ids_state["watermark"]
        for number in range(ids_state["first"], ids_state["last"] + 2):
            chunk = table.get(chunk_key(device, number))
            if chunk is None:
                continue
            kept = [s for s in chunk["segments"] if s[1] <= marks.get(str(s[0]), -1)]
            if len(kept) != len(chunk["segments"]):
                chunk = {**chunk, "segments": kept, "count": sum(s[2] for s in kept)}
                table[chunk_key(device, number)] = chunk
            for segment in kept:
                found.update(_segment_hashes(segment).tolist())
        for segment in ids_state.get("pending", []):
            found.update(_segment_hashes(segment).tolist())
        self.sets[device] = found
        self.synced[device] = _sync_mark(ids_state)
        return found

    def fresh(self, known: set[int], hashes: np.ndarray) -> np.ndarray:
        """Mask of the hashes not counted yet (the first of any repeated within the batch)."""
        values = hashes.tolist()
        distinct = set(values)
        if len(distinct) == len(values) and known.isdisjoint(distinct):
            return np.ones(len(values), dtype=bool)  # the usual case, at C speed
        mask = np.zeros(len(hashes), dtype=bool)
        batch: set[int] = set()
        for i, value in enumerate(values):
            if value not in known and value not in batch:
                batch.add(value)
                mask[i] = True
        return mask

    def record(
        self, table: MutableMapping[str, Any], device: str, ids_state: dict[str, Any],
        known: set[int], hashes: np.ndarray, origin: Origin | None, newest: float,
    ) -> None:
        """Note the newly counted ``hashes`` and move the watermark; call before writing the
        device record itself.

        A batch's ids first wait in the device record (``pending``, written with the counts
        in one changelog record); past ``PENDING_IDS`` they move to the current chunk (a new
        one when it is full), and chunks past the horizon or the count bound are dropped.
        """
        if len(hashes):
            partition, offset = (origin.partition, origin.offset) if origin else (-1, -1)
            segment = [partition, offset, int(len(hashes)),
                       base64.b64encode(hashes.astype(np.uint64).tobytes()).decode()]
            pending = ids_state.setdefault("pending", [])
            pending.append(segment)
            known.update(hashes.tolist())
            if sum(s[2] for s in pending) > PENDING_IDS:
                self._flush(table, device, ids_state, newest)
        if origin is not None:
            ids_state["watermark"][str(origin.partition)] = origin.offset
        self._expire(table, device, ids_state, known, newest)
        self.synced[device] = _sync_mark(ids_state)

    def _flush(self, table: MutableMapping[str, Any], device: str, ids_state: dict[str, Any],
               newest: float) -> None:
        """Move the pending segments to chunk records (skipping any a replay already put
        there), written before the device record that no longer holds them."""
        key = chunk_key(device, ids_state["last"])
        chunk = table.get(key) or {"segments": [], "count": 0, "newest": newest}
        there = {(s[0], s[1]) for s in chunk["segments"]}
        for segment in ids_state.pop("pending"):
            if (segment[0], segment[1]) in there:
                continue
            if chunk["count"] + segment[2] > CHUNK_IDS and chunk["count"]:
                table[key] = chunk
                ids_state["last"] += 1
                key = chunk_key(device, ids_state["last"])
                chunk = {"segments": [], "count": 0, "newest": newest}
            chunk = {"segments": [*chunk["segments"], segment],
                     "count": chunk["count"] + segment[2],
                     "newest": max(chunk["newest"], newest)}
        table[key] = chunk
        ids_state["pending"] = []

    def _expire(self, table: MutableMapping[str, Any], device: str, ids_state: dict[str, Any],
                known: set[int], newest: float) -> None:
        while ids_state["first"] <= ids_state["last"]:
            key = chunk_key(device, ids_state["first"])
            chunk = table.get(key)
            too_many = ids_state["last"] - ids_state["first"] + 1 > self.max_chunks
            if chunk is None and ids_state["first"] == ids_state["last"]:
                break  # the current chunk, not written yet
            if chunk is not None and not too_many and chunk["newest"] >= newest - self.horizon:
                break
            if chunk is not None:
                for segment in chunk["segments"]:
                    known.difference_update(_segment_hashes(segment).tolist())
                del table[key]
            if ids_state["first"] == ids_state["last"]:  # the current one went stale too
                ids_state["last"] += 1
            ids_state["first"] += 1

    def drop(self, table: MutableMapping[str, Any], device: str) -> None:
        """Delete a device's record and its id chunks (tombstones), and forget its set."""
        record = table.get(device)
        if isinstance(record, dict) and "ids" in record:
            for number in range(record["ids"]["first"], record["ids"]["last"] + 2):
                if chunk_key(device, number) in table:
                    del table[chunk_key(device, number)]
        if device in table:
            del table[device]
        self.forget(device)

    def forget(self, device: str) -> None:
        """Drop a device's set from memory (it is rebuilt from the chunks when needed)."""
        self.sets.pop(device, None)
        self.synced.pop(device, None)


def _sync_mark(ids_state: dict[str, Any]) -> tuple[Any, ...]:
    return (ids_state["first"], ids_state["last"], tuple(sorted(ids_state["watermark"].items())))
