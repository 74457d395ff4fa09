"""Debezium-shaped change events from decoded pgoutput changes and snapshot rows.

edgewise's CDC stage emits Debezium's envelope so that any Debezium consumer can read our
topics (DESIGN.md, "Change events"). Everything here is a pure function returning plain,
orjson-serialisable dicts; the agent that reads the slot and produces to Kafka stays thin.

Topic ``<prefix>.<schema>.<table>``; key ``{pk column: value}``; value
``{"payload": {"before", "after", "source", "op", "ts_ms"}}`` with ``op`` ``c`` insert,
``u`` update, ``d`` delete, ``r`` snapshot read. Change topics are compacted, and Kafka
refuses a record without a key on them, so nothing keyless is emitted: a TRUNCATE yields
no event (Debezium's default ``skipped.operations=t``), and the capture refuses tables
without a primary key at setup (an event whose key is still None is dead-lettered).
As Debezium does, a delete is followed by a tombstone (same key, value ``None``) so that
log compaction can drop the row, and an update that changes the primary key becomes a
delete of the old key, its tombstone and a create of the new key.

Column values are encoded as Debezium's PostgreSQL connector encodes them
(:mod:`edgewise.agents.cdc.debezium_values`), and ``source`` carries every field Debezium's
does (``xmin``, ``origin`` and ``origin_lsn`` are always null here, as Debezium's are
without ``xmin.fetch.interval.ms`` or a replication origin); ``transaction`` is null, as
Debezium's is without ``provide.transaction.metadata``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any, Literal, NamedTuple

from edgewise.agents.cdc.debezium_values import json_value, relation_encoders, row_json
from edgewise.agents.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Delete,
    Insert,
    Relation,
    RelationCache,
    Truncate,
    UnchangedToast,
    Update,
)
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import COMPACT, TopicSpec, with_limits

SnapshotMarker = Literal["true", "first", "last", "first_in_data_collection",
                         "last_in_data_collection", "false"]
"""``source.snapshot``: rows of the initial snapshot say so; streamed changes say "false"."""

_UNIX_EPOCH = datetime(1970, 1, 1)
_UNIX_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _edgewise_version() -> str:
    try:
        return metadata.version("edgewise")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class CaptureSource:
    """Which connector captured a change: fills ``source`` and the topic prefix.

    ``name`` is the logical server name; as in Debezium it is also the topic prefix.
    """

    name: str
    db: str
    version: str = field(default_factory=_edgewise_version)


@dataclass(frozen=True, slots=True)
class ChangePosition:
    """Where a change sits in the WAL and which transaction made it.

    ``lsn`` is the change's own LSN (the ``lsn`` column of the slot function);
    ``last_commit_lsn`` is the previous transaction's commit LSN, which with ``lsn`` gives
    Debezium's ``sequence`` so consumers can order and de-duplicate replayed events.
    """

    lsn: int
    tx_id: int | None
    commit_time: datetime
    last_commit_lsn: int | None = None


class ChangeEvent(NamedTuple):
    """One record to produce: topic, key dict (or None) and value dict (None = tombstone)."""

    topic: str
    key: dict[str, Any] | None
    value: dict[str, Any] | None


def topic_for(prefix: str, schema: str, table: str) -> str:
    """Debezium's topic naming, so existing Debezium consumers find our topics."""
    return f"{prefix}.{schema}.{table}"


def cdc_topic_spec(topic: str, settings: Settings) -> TopicSpec:
    """A change topic: compacted, so with tombstones it is a replayable copy of the table;
    sized like every edgewise topic."""
    return with_limits(TopicSpec(topic, settings.cdc_partitions, COMPACT), settings)


def event_key(
    relation: Relation, row: Mapping[str, Any], key_columns: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """The record key: primary-key columns of ``row``; None when the table has no key.

    By default the key is the Relation's replica identity columns, which are the primary
    key under REPLICA IDENTITY DEFAULT. Under FULL pgoutput flags every column, and a key
    that changes with every update would scatter a row's history over partitions, so the
    table is then treated as keyless (None, as Debezium does for tables without a primary
    key) unless ``key_columns``, the primary key read from the catalog, is given.
    """
    if key_columns is not None:
        names = tuple(key_columns)
    elif relation.replica_identity == "f":
        names = ()
    else:
        names = relation.key_columns
    if not names:
        return None
    encoders = relation_encoders(relation)
    return {name: encoders.get(name, json_value)(row.get(name)) for name in names}


def source_block(
    source: CaptureSource,
    relation: Relation,
    position: ChangePosition,
    snapshot: SnapshotMarker = "false",
) -> dict[str, Any]:
    """Debezium's ``source``: who captured the change, where in the WAL, in which tx."""
    last = "null" if position.last_commit_lsn is None else f'"{position.last_commit_lsn}"'
    micros = _epoch_us(position.commit_time)
    return {
        "version": source.version,
        "connector": "postgresql",
        "name": source.name,
        "ts_ms": micros // 1000,
        "snapshot": snapshot,
        "db": source.db,
        "sequence": f'[{last},"{position.lsn}"]',
        "ts_us": micros,
        "ts_ns": micros * 1000,
        "schema": relation.namespace,
        "table": relation.name,
        "txId": position.tx_id,
        "lsn": position.lsn,
        "xmin": None,
        "origin": None,
        "origin_lsn": None,
    }


def _epoch_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        return (moment - _UNIX_EPOCH) // _MICROSECOND
    return (moment - _UNIX_EPOCH_UTC) // _MICROSECOND


def _event(
    source: CaptureSource,
    relation: Relation,
    position: ChangePosition,
    op: Literal["c", "u", "d", "r", "t"],
    key: dict[str, Any] | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    processed_ms: int | None,
    snapshot: SnapshotMarker = "false",
) -> ChangeEvent:
    processed_us = time.time_ns() // 1000 if processed_ms is None else processed_ms * 1000
    payload = {
        "before": row_json(before, relation),
        "after": row_json(after, relation),
        "source": source_block(source, relation, position, snapshot),
        "transaction": None,
        "op": op,
        "ts_ms": processed_us // 1000,
        "ts_us": processed_us,
        "ts_ns": processed_us * 1000,
    }
    topic = topic_for(source.name, relation.namespace, relation.name)
    return ChangeEvent(topic, key, {"payload": payload})


def insert_event(
    source: CaptureSource,
    relation: Relation,
    after: Mapping[str, Any],
    position: ChangePosition,
    *,
    key_columns: Sequence[str] | None = None,
    processed_ms: int | None = None,
) -> ChangeEvent:
    """A create event (op ``c``) for a new row."""
    key = event_key(relation, after, key_columns)
    return _event(source, relation, position, "c", key, None, after, processed_ms)


def update_events(
    source: CaptureSource,
    relation: Relation,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    position: ChangePosition,
    *,
    key_columns: Sequence[str] | None = None,
    processed_ms: int | None = None,
) -> list[ChangeEvent]:
    """An update event (op ``u``), or delete + tombstone + create when the key changed.

    Splitting a key change the way Debezium does keeps every key's history on its own
    partition and lets compaction forget the old key.
    """
    new_key = event_key(relation, after, key_columns)
    old_key = None if before is None else event_key(relation, before, key_columns)
    if old_key is not None and old_key != new_key:
        assert before is not None
        return [
            *delete_events(source, relation, before, position, key_columns=key_columns,
                           processed_ms=processed_ms),
            insert_event(source, relation, after, position, key_columns=key_columns,
                         processed_ms=processed_ms),
        ]
    return [_event(source, relation, position, "u", new_key, before, after, processed_ms)]


def delete_events(
    source: CaptureSource,
    relation: Relation,
    before: Mapping[str, Any],
    position: ChangePosition,
    *,
    key_columns: Sequence[str] | None = None,
    processed_ms: int | None = None,
) -> list[ChangeEvent]:
    """A delete event (op ``d``) followed by its tombstone (same key, value None)."""
    key = event_key(relation, before, key_columns)
    deleted = _event(source, relation, position, "d", key, before, None, processed_ms)
    return [deleted, ChangeEvent(deleted.topic, key, None)]


def truncate_event(
    source: CaptureSource,
    relation: Relation,
    position: ChangePosition,
    *,
    processed_ms: int | None = None,
) -> ChangeEvent:
    """A truncate event (op ``t``): no key, no rows, as Debezium emits it when told to.

    Not produced by the capture: without a key it cannot go to a compacted topic, so
    :func:`change_events` skips truncates as Debezium does by default.
    """
    return _event(source, relation, position, "t", None, None, None, processed_ms)


def snapshot_event(
    source: CaptureSource,
    relation: Relation,
    row: Mapping[str, Any],
    position: ChangePosition,
    *,
    snapshot: SnapshotMarker = "true",
    key_columns: Sequence[str] | None = None,
    processed_ms: int | None = None,
) -> ChangeEvent:
    """A read event (op ``r``) for a row of the initial snapshot (a plain SELECT row).

    ``relation`` describes the table as a Relation message would (it may be built from
    the catalog); ``position`` is the snapshot's consistent point and transaction.
    """
    key = event_key(relation, row, key_columns)
    return _event(
        source, relation, position, "r", key, None, row, processed_ms, snapshot=snapshot
    )


def unchanged_from_before(after: dict[str, Any], before: Mapping[str, Any] | None
                          ) -> dict[str, Any]:
    """``after`` with the TOASTed values PostgreSQL did not resend taken from ``before``
    where the old row carries them (REPLICA IDENTITY FULL), as Debezium does; elsewhere they
    stay :data:`UNCHANGED_TOAST` (written as Debezium's placeholder)."""
    if before is None:
        return after
    return {name: before[name] if isinstance(value, UnchangedToast) and not isinstance(
        before.get(name, UNCHANGED_TOAST), UnchangedToast) else value
        for name, value in after.items()}


def change_events(
    change: Insert | Update | Delete | Truncate,
    relations: RelationCache,
    source: CaptureSource,
    position: ChangePosition,
    *,
    key_columns: Mapping[int, Sequence[str]] | None = None,
    processed_ms: int | None = None,
) -> list[ChangeEvent]:
    """All events for one decoded pgoutput change, in the order they must be produced.

    ``key_columns`` maps relation OID to its primary-key columns where the Relation's key
    flags are not the primary key (see :func:`event_key`). A truncate yields nothing: its
    event would have no key, which a compacted topic refuses (see the module docstring).
    """
    overrides = key_columns or {}
    if isinstance(change, Truncate):
        return []
    relation = relations.relation(change.relation_oid)
    keys = overrides.get(relation.oid)
    if isinstance(change, Insert):
        after = relations.decode_tuple(relation.oid, change.new)
        return [insert_event(source, relation, after, position, key_columns=keys,
                             processed_ms=processed_ms)]
    if isinstance(change, Update):
        before = None if change.old is None else relations.decode_tuple(relation.oid, change.old)
        after = relations.decode_tuple(relation.oid, change.new)
        if change.old_kind == "O":  # the whole old row: it holds what was not resent
            after = unchanged_from_before(after, before)
        return update_events(source, relation, before, after, position, key_columns=keys,
                             processed_ms=processed_ms)
    before = relations.decode_tuple(relation.oid, change.old)
    return delete_events(source, relation, before, position, key_columns=keys,
                         processed_ms=processed_ms)
