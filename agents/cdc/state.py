"""What the capture must remember beyond the slot: which snapshots completed.

The slot remembers where streaming resumes, but not whether the initial snapshot that
followed its creation finished: a capture killed halfway through a snapshot would, on
restart, find its slot and skip the rest of the rows. So a completed snapshot is recorded
in a compacted topic (as Debezium keeps its offsets in Kafka), keyed by database and slot,
and only after every snapshot event was acknowledged. The record lists the tables
snapshotted so far, so a table later added to the slot's publication is snapshotted on
its own instead of only ever being streamed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from edgewise.app.core.settings import Settings
from edgewise.app.core.topic_reader import TopicMissing, read_to_end
from edgewise.app.core.topics import COMPACT, TopicSpec, with_limits


def state_topic(topic_prefix: str) -> str:
    """The CDC state topic of a deployment (one per edgewise topic prefix)."""
    return f"{topic_prefix}-cdc-state"


def state_spec(settings: Settings) -> TopicSpec:
    return with_limits(TopicSpec(state_topic(settings.topic_prefix), 1, COMPACT), settings)


def state_key(database: str, slot: str) -> bytes:
    return f"{database}/{slot}".encode()


def snapshot_record(slot_lsn: int | None, rows: int, tables: Iterable[str]) -> dict[str, Any]:
    """The value recorded once a snapshot completed; ``tables`` are every ``schema.table``
    snapshotted for this slot so far (earlier snapshots included)."""
    return {"snapshot": "completed", "slot_lsn": slot_lsn, "rows": rows,
            "tables": sorted(set(tables)), "ts_ms": time.time_ns() // 1_000_000}


def snapshotted_tables(state: dict[str, Any] | None, current: Iterable[str]) -> set[str]:
    """The ``schema.table`` names whose snapshot completed for this slot.

    A record written before tables were listed covered every table captured then; as
    which those were is unknown, ``current`` (the tables captured now) is taken for it.
    """
    if not snapshot_completed(state):
        return set()
    assert state is not None
    listed = state.get("tables")
    return set(current) if listed is None else set(listed)


async def load_state(bootstrap: str, topic: str, key: bytes,
                     options: dict[str, Any]) -> dict[str, Any] | None:
    """The newest state recorded under ``key`` (None when nothing is)."""
    state = None
    try:
        async for record in read_to_end(bootstrap, topic, options):
            if record.key == key:
                state = None if record.value is None else orjson.loads(record.value)
    except TopicMissing:
        return None
    return state


def snapshot_completed(state: dict[str, Any] | None) -> bool:
    return bool(state) and state.get("snapshot") == "completed"  # type: ignore[union-attr]


async def save_state(producer: AIOKafkaProducer, topic: str, key: bytes,
                     state: dict[str, Any]) -> None:
    """Record ``state`` and wait for Kafka's acknowledgement."""
    await (await producer.send(topic, orjson.dumps(state), key=key))
