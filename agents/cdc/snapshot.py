"""The initial snapshot: every row of the captured tables as read events (``op`` ``r``).

The slot is created *before* the snapshot is read, in one REPEATABLE READ transaction,
so every change is either in the snapshot or in the stream that follows (a row changed in
between can be in both: a duplicate, never a loss). Rows come through a cursor a page at a
time; ``source.snapshot`` says ``first`` on the first row, ``last`` on the last and
``true`` in between, as Debezium does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import asyncpg

from edgewise.agents.cdc.envelope import (
    CaptureSource,
    ChangeEvent,
    ChangePosition,
    SnapshotMarker,
    snapshot_event,
)
from edgewise.agents.cdc.pgoutput import Relation
from edgewise.agents.cdc.postgres import CapturedTable, qualified_name, relation_from_catalog

SnapshotMode = Literal["initial", "never", "always"]


def needs_snapshot(mode: SnapshotMode, slot_created: bool, snapshot_completed: bool) -> bool:
    """Whether to read the tables before streaming.

    ``initial`` snapshots when the slot is new, and again when a snapshot started for this
    slot never completed (the capture died in the middle: its rows may be missing).
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    return slot_created or not snapshot_completed


def tables_to_snapshot(mode: SnapshotMode, slot_created: bool, snapshotted: set[str],
                       tables: Sequence[str]) -> list[str]:
    """Which of ``tables`` (``schema.table``) to read before streaming.

    ``initial`` reads every table on a new slot, and otherwise the tables no completed
    snapshot of this slot covered: a table added to the publication later, or all of them
    when a snapshot died halfway.
    """
    if mode == "always" or (mode == "initial" and slot_created):
        return list(tables)
    if mode == "never":
        return []
    return [name for name in tables if name not in snapshotted]


def snapshot_query(relation: Relation) -> str:
    """The SELECT of one table's snapshot, columns in table order, names quoted."""
    columns = ", ".join(f'"{c.name.replace(chr(34), chr(34) * 2)}"' for c in relation.columns)
    return f"SELECT {columns} FROM {qualified_name(relation.namespace, relation.name)}"


def snapshot_marker(index: int, is_last: bool) -> SnapshotMarker:
    """``source.snapshot`` of the ``index``-th row of the whole snapshot."""
    if is_last:
        return "last"
    return "first" if index == 0 else "true"


async def _rows(conn: asyncpg.Connection, tables: Sequence[CapturedTable], page_rows: int
                ) -> AsyncIterator[tuple[CapturedTable, Relation, dict[str, Any]]]:
    for table in tables:
        relation = await relation_from_catalog(conn, table)
        async for record in conn.cursor(snapshot_query(relation), prefetch=page_rows):
            yield table, relation, dict(record.items())


async def snapshot_events(
    conn: asyncpg.Connection, tables: Sequence[CapturedTable], source: CaptureSource,
    page_rows: int,
) -> AsyncIterator[ChangeEvent]:
    """Read events for every row of ``tables``, from one consistent transaction."""
    async with conn.transaction(isolation="repeatable_read"):
        info = await conn.fetchrow(
            "SELECT pg_current_wal_lsn() AS lsn, txid_current() AS txid, now() AS started")
        position = ChangePosition(lsn=int(info["lsn"]), tx_id=int(info["txid"]),
                                  commit_time=info["started"])
        held: tuple[CapturedTable, Relation, dict[str, Any]] | None = None
        index = 0
        async for current in _rows(conn, tables, page_rows):
            if held is not None:
                yield _read_event(source, held, position, snapshot_marker(index, False))
                index += 1
            held = current
        if held is not None:
            yield _read_event(source, held, position, snapshot_marker(index, True))


def _read_event(source: CaptureSource, held: tuple[CapturedTable, Relation, dict[str, Any]],
                position: ChangePosition, marker: SnapshotMarker) -> ChangeEvent:
    table, relation, row = held
    return snapshot_event(source, relation, row, position, snapshot=marker,
                          key_columns=table.primary_key)
