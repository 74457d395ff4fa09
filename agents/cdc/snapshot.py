"""The initial snapshot: every row of the captured tables as read events (``op`` ``r``).

The slot is created *before* the snapshot is read, in one REPEATABLE READ transaction,
so every change is either in the snapshot or in the stream that follows (a row changed in
between can be in both: a duplicate, never a loss). Rows come through a cursor a page at a
time; ``source.snapshot`` marks the first and last rows of the snapshot and of each table
as Debezium does (:func:`snapshot_marker`).
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
from edgewise.agents.cdc.pgoutput_values import PgInterval
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


def snapshot_marker(first_of_table: bool, last_of_table: bool, first_table: bool,
                    last_row: bool) -> SnapshotMarker:
    """``source.snapshot`` of one row: ``first`` and ``last`` for the snapshot's first and
    last rows, ``first_in_data_collection`` / ``last_in_data_collection`` for the first and
    last rows of the other tables, ``true`` in between (a table's last row wins over its
    first, so a one-row snapshot says ``last``)."""
    if last_row:
        return "last"
    if last_of_table:
        return "last_in_data_collection"
    if first_of_table:
        return "first" if first_table else "first_in_data_collection"
    return "true"


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
    await read_intervals_whole(conn)
    async with conn.transaction(isolation="repeatable_read"):
        info = await conn.fetchrow(
            "SELECT pg_current_wal_lsn() AS lsn, txid_current() AS txid, now() AS started")
        position = ChangePosition(lsn=int(info["lsn"]), tx_id=int(info["txid"]),
                                  commit_time=info["started"])
        held: tuple[CapturedTable, Relation, dict[str, Any]] | None = None
        held_first, tables_seen = False, 0
        async for current in _rows(conn, tables, page_rows):
            new_table = held is None or current[0] is not held[0]
            if held is not None:
                yield _read_event(source, held, position, snapshot_marker(
                    held_first, new_table, tables_seen == 1, False))
            if new_table:
                tables_seen += 1
            held, held_first = current, new_table
        if held is not None:
            yield _read_event(source, held, position, snapshot_marker(
                held_first, True, tables_seen == 1, True))


async def read_intervals_whole(conn: asyncpg.Connection) -> None:
    """Have ``conn`` return intervals as :class:`PgInterval`, as pgoutput's are decoded:
    asyncpg's timedelta would fold months into 30 days (and years into 365)."""
    await conn.set_type_codec(
        "interval", schema="pg_catalog", format="tuple",
        encoder=lambda v: (v.months, v.days, v.microseconds),
        decoder=lambda parts: PgInterval(*parts))


def _read_event(source: CaptureSource, held: tuple[CapturedTable, Relation, dict[str, Any]],
                position: ChangePosition, marker: SnapshotMarker) -> ChangeEvent:
    table, relation, row = held
    return snapshot_event(source, relation, row, position, snapshot=marker,
                          key_columns=table.primary_key)
