"""pgoutput against a real PostgreSQL: what the slot emits decodes to what was written.

A throwaway cluster (initdb, wal_level=logical) gets a table with the column types CDC
meets most, a publication and a pgoutput slot. Inserts, updates (plain, TOAST untouched,
primary-key change), deletes and a truncate are read back with
``pg_logical_slot_peek_binary_changes`` in binary and in text mode, decoded with our
decoder, compared with the values written, turned into Debezium envelopes, and finally the
slot is advanced and survives a server restart.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from edgewise.agents.cdc.envelope import (
    CaptureSource,
    ChangeEvent,
    ChangePosition,
    change_events,
    snapshot_event,
)
from edgewise.agents.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    RelationCache,
    Truncate,
    Update,
    decode_message,
    lsn_to_text,
)
from tests.fixtures.postgres import PostgresServer, start_postgres

pytestmark = pytest.mark.integration

SLOT, PUBLICATION = "edgewise_slot", "edgewise_pub"
PEEK = (
    "SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, "
    "'proto_version', '1', 'publication_names', $2, 'binary', $3)"
)
BIG_PAYLOAD = random.Random(7).randbytes(20_000)  # incompressible: stored out of line (TOAST)
WRITTEN: dict[int, dict[str, Any]] = {
    1: {"id": 1, "label": "zürich ✓", "payload": b"\x00\x01\xff",
        "amount": Decimal("12345.6789"), "seen_at": datetime(2024, 5, 1, 12, 30, 0, 250000, UTC),
        "ok": True, "score": 0.1, "meta": '{"a": [1, 2], "b": null}'},
    2: {"id": 2, "label": None, "payload": b"", "amount": Decimal("-0.0001"),
        "seen_at": datetime(1999, 12, 31, 23, 59, 59, 999999, UTC), "ok": False,
        "score": float("inf"), "meta": "[]"},
    3: {"id": 3, "label": "big", "payload": BIG_PAYLOAD, "amount": Decimal("5.0000"),
        "seen_at": None, "ok": None, "score": -0.5, "meta": None},
    4: {"id": 4, "label": "full", "payload": b"\x04", "amount": Decimal("-1234567890123456.7891"),
        "seen_at": datetime(2030, 1, 1, tzinfo=UTC), "ok": True, "score": 4.0,
        "meta": '{"n": 4}'},
}
COLUMNS = ("id", "label", "payload", "amount", "seen_at", "ok", "score", "meta")


@dataclass(frozen=True)
class SlotRow:
    """One row of the peek function: the change's LSN, its transaction, the decoded message."""

    lsn: int
    xid: int
    message: Message


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path) as server:
        yield server


@pytest_asyncio.fixture
async def db(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres.dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def insert(db: asyncpg.Connection, row: dict[str, Any]) -> None:
    await db.execute(
        "INSERT INTO public.readings VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        *(row[c] for c in COLUMNS),
    )


async def write_changes(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """The workload; returns the rows a snapshot SELECT saw before the truncate."""
    await db.execute(
        "CREATE TABLE public.readings (id int PRIMARY KEY, label text, payload bytea, "
        "amount numeric(20, 4), seen_at timestamptz, ok bool, score float8, meta jsonb)"
    )
    await db.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE public.readings")
    await db.execute(f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
    async with db.transaction():
        for key in (1, 2, 3):
            await insert(db, WRITTEN[key])
    await db.execute("UPDATE public.readings SET ok = true WHERE id = 3")  # TOAST untouched
    await db.execute("UPDATE public.readings SET id = 20 WHERE id = 2")  # key change
    await db.execute("UPDATE public.readings SET label = 'changed', score = 2.5 WHERE id = 1")
    await db.execute("DELETE FROM public.readings WHERE id = 20")
    snapshot = await db.fetch("SELECT * FROM public.readings ORDER BY id")
    await db.execute("TRUNCATE public.readings")
    await db.execute("ALTER TABLE public.readings REPLICA IDENTITY FULL")
    await insert(db, WRITTEN[4])
    await db.execute("UPDATE public.readings SET score = 5.0 WHERE id = 4")
    await db.execute("DELETE FROM public.readings WHERE id = 4")
    return snapshot


async def peek(db: asyncpg.Connection, *, binary: bool = True) -> list[SlotRow]:
    rows = await db.fetch(PEEK, SLOT, PUBLICATION, "true" if binary else "false")
    return [SlotRow(r["lsn"], r["xid"], decode_message(r["data"])) for r in rows]


Change = tuple[str, dict[str, Any] | None, dict[str, Any] | None]


def decoded_changes(rows: list[SlotRow]) -> list[Change]:
    """(kind, old row, new row) for every data change, decoded by a RelationCache."""
    cache, changes = RelationCache(), list[Change]()
    for row in rows:
        message = row.message
        cache.observe(message)
        if isinstance(message, Insert):
            changes.append(("I", None, cache.decode_tuple(message.relation_oid, message.new)))
        elif isinstance(message, Update):
            old = None if message.old is None else cache.decode_tuple(
                message.relation_oid, message.old)
            changes.append((f"U{message.old_kind or ''}", old,
                            cache.decode_tuple(message.relation_oid, message.new)))
        elif isinstance(message, Delete):
            changes.append((f"D{message.old_kind}",
                            cache.decode_tuple(message.relation_oid, message.old), None))
        elif isinstance(message, Truncate):
            changes.append(("T", None, None))
    return changes


def with_values(key: int, **changes: Any) -> dict[str, Any]:
    return {**WRITTEN[key], **changes}


def key_only(key: int) -> dict[str, Any]:
    """An old row sent as its replica identity key: the key set, every other column NULL."""
    return dict.fromkeys(COLUMNS) | {"id": key}


EXPECTED_CHANGES = [
    ("I", None, WRITTEN[1]),
    ("I", None, WRITTEN[2]),
    ("I", None, WRITTEN[3]),
    ("U", None, with_values(3, ok=True, payload=UNCHANGED_TOAST)),
    ("UK", key_only(2), with_values(2, id=20)),
    ("U", None, with_values(1, label="changed", score=2.5)),
    ("DK", key_only(20), None),
    ("T", None, None),
    ("I", None, WRITTEN[4]),
    ("UO", WRITTEN[4], with_values(4, score=5.0)),
    ("DO", with_values(4, score=5.0), None),
]


def exact(value: Any) -> Any:
    """Decimals compare with their scale (``5`` must come back as ``5.0000``)."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [exact(v) for v in value]
    return ("decimal", str(value)) if isinstance(value, Decimal) else value


@pytest.mark.asyncio
async def test_slot_changes_decode_to_the_written_values(db: asyncpg.Connection) -> None:
    snapshot = await write_changes(db)
    rows = await peek(db)

    assert all(isinstance(row.lsn, int) for row in rows)  # asyncpg gives pg_lsn as int
    assert exact(decoded_changes(rows)) == exact(EXPECTED_CHANGES)
    relation = next(row.message for row in rows if isinstance(row.message, Relation))
    assert (relation.namespace, relation.name, relation.replica_identity) == (
        "public", "readings", "d")
    assert relation.key_columns == ("id",)
    assert [c.name for c in relation.columns] == list(COLUMNS)
    full = [row.message for row in rows if isinstance(row.message, Relation)][-1]
    assert full.replica_identity == "f"

    begins = [row for row in rows if isinstance(row.message, Begin)]
    commits = [row.message for row in rows if isinstance(row.message, Commit)]
    assert len(begins) == len(commits) == 9
    for begin, commit in zip(begins, commits, strict=True):
        assert isinstance(begin.message, Begin)
        assert begin.message.xid == begin.xid
        assert begin.message.final_lsn == commit.commit_lsn < commit.end_lsn
        assert commit.commit_time == begin.message.commit_time
        assert abs(datetime.now(UTC) - commit.commit_time) < timedelta(minutes=5)

    as_selected = {r["id"]: dict(r) for r in snapshot}
    assert exact(as_selected) == exact({1: with_values(1, label="changed", score=2.5),
                                        3: with_values(3, ok=True)})


@pytest.mark.asyncio
async def test_text_mode_decodes_to_the_same_values(db: asyncpg.Connection) -> None:
    await write_changes(db)
    binary, text = await peek(db, binary=True), await peek(db, binary=False)
    assert {row.message.new[0].kind for row in text if isinstance(row.message, Insert)} == {"t"}
    assert exact(decoded_changes(text)) == exact(decoded_changes(binary))


async def primary_key(db: asyncpg.Connection, table: str) -> list[str]:
    return [r["attname"] for r in await db.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
        table)]


def envelopes(rows: list[SlotRow], pk: list[str]) -> list[tuple[SlotRow, Begin, ChangeEvent]]:
    source, cache = CaptureSource(name="edgewise", db="postgres", version="test"), RelationCache()
    out: list[tuple[SlotRow, Begin, ChangeEvent]] = []
    begin: Begin | None = None
    last_commit: int | None = None
    for row in rows:
        message = row.message
        cache.observe(message)
        if isinstance(message, Begin):
            begin = message
        elif isinstance(message, Commit):
            last_commit = message.commit_lsn
        elif isinstance(message, Insert | Update | Delete | Truncate):
            assert begin is not None
            position = ChangePosition(row.lsn, begin.xid, begin.commit_time, last_commit)
            oid = getattr(message, "relation_oid", 0)
            for event in change_events(message, cache, source, position,
                                       key_columns={oid: pk}, processed_ms=1):
                out.append((row, begin, event))
    return out


@pytest.mark.asyncio
async def test_envelopes_field_by_field(db: asyncpg.Connection) -> None:
    snapshot = await write_changes(db)
    pk = await primary_key(db, "public.readings")
    assert pk == ["id"]
    rows = await peek(db)
    events = envelopes(rows, pk)
    assert events[2][2].value is not None

    summary = [(e.topic, e.key, None if e.value is None else e.value["payload"]["op"])
               for _, _, e in events]
    topic = "edgewise.public.readings"
    assert summary == [
        (topic, {"id": 1}, "c"), (topic, {"id": 2}, "c"), (topic, {"id": 3}, "c"),
        (topic, {"id": 3}, "u"),
        (topic, {"id": 2}, "d"), (topic, {"id": 2}, None), (topic, {"id": 20}, "c"),
        (topic, {"id": 1}, "u"),
        (topic, {"id": 20}, "d"), (topic, {"id": 20}, None),
        # the truncate yields nothing: skipped, as Debezium does (compacted topics need keys)
        (topic, {"id": 4}, "c"), (topic, {"id": 4}, "u"), (topic, {"id": 4}, "d"),
        (topic, {"id": 4}, None),
    ]
    for row, begin, event in events:
        orjson.dumps(event.key), orjson.dumps(event.value)  # must serialise
        if event.value is None:
            continue
        payload = event.value["payload"]
        assert payload["ts_ms"] == 1
        source = payload["source"]
        commit_ms = (begin.commit_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            milliseconds=1)
        commit_us = (begin.commit_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            microseconds=1)
        assert source == {
            "version": "test", "connector": "postgresql", "name": "edgewise",
            "ts_ms": commit_ms, "snapshot": "false", "db": "postgres",
            "sequence": source["sequence"], "ts_us": commit_us, "ts_ns": commit_us * 1000,
            "schema": "public", "table": "readings", "txId": row.xid, "lsn": row.lsn,
            "xmin": None, "origin": None, "origin_lsn": None,
        }
        assert orjson.loads(source["sequence"])[1] == str(row.lsn)

    first = events[0][2].value
    assert first is not None and first["payload"]["before"] is None
    assert first["payload"]["after"] == {
        "id": 1, "label": "zürich ✓", "payload": "AAH/", "amount": "12345.6789",
        "seen_at": "2024-05-01T12:30:00.250000Z", "ok": True, "score": 0.1,
        "meta": '{"a": [1, 2], "b": null}',
    }
    assert orjson.loads(events[0][2].value["payload"]["source"]["sequence"])[0] is None
    second = events[1][2].value
    assert second is not None
    assert second["payload"]["after"]["seen_at"] == "1999-12-31T23:59:59.999999Z"
    assert second["payload"]["after"]["amount"] == "-0.0001"
    assert second["payload"]["after"]["payload"] == ""
    toast_update = events[3][2].value
    assert toast_update is not None
    assert toast_update["payload"]["after"]["payload"] == "__debezium_unavailable_value"
    assert toast_update["payload"]["after"]["amount"] == "5.0000"
    key_delete = events[4][2].value
    assert key_delete is not None and key_delete["payload"]["before"]["id"] == 2
    full_delete = events[12][2].value
    assert full_delete is not None
    assert full_delete["payload"]["before"]["label"] == "full"
    assert full_delete["payload"]["before"]["score"] == 5.0
    assert full_delete["payload"]["after"] is None

    readings = next(r.message for r in rows if isinstance(r.message, Relation))
    assert isinstance(readings, Relation) and readings.replica_identity == "d"
    position = ChangePosition(lsn=1, tx_id=None, commit_time=datetime(2024, 1, 1, tzinfo=UTC))
    read = snapshot_event(CaptureSource("edgewise", "postgres", "test"), readings,
                          dict(snapshot[1]), position, snapshot="last", processed_ms=2)
    assert read.topic == topic and read.key == {"id": 3} and read.value is not None
    assert read.value["payload"]["op"] == "r" and read.value["payload"]["before"] is None
    assert read.value["payload"]["source"]["snapshot"] == "last"
    assert read.value["payload"]["source"]["ts_ms"] == 1_704_067_200_000
    assert read.value["payload"]["after"] == {
        "id": 3, "label": "big", "payload": events[2][2].value["payload"]["after"]["payload"],
        "amount": "5.0000", "seen_at": None, "ok": True, "score": -0.5, "meta": None,
    }
    orjson.dumps(read.value)


@pytest.mark.asyncio
async def test_slot_advance_survives_restart(postgres: PostgresServer) -> None:
    db = await asyncpg.connect(postgres.dsn)
    try:
        await write_changes(db)
        rows = await peek(db)
        end = max(row.message.end_lsn for row in rows if isinstance(row.message, Commit))
        await db.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                         SLOT, lsn_to_text(end))
        assert await peek(db) == []
    finally:
        await db.close()

    old_pid = postgres.pid
    postgres.restart()
    assert postgres.pid != old_pid and postgres.is_running

    db = await asyncpg.connect(postgres.dsn)
    try:
        assert await peek(db) == []
        await insert(db, with_values(1, id=100))
        changes = decoded_changes(await peek(db))
        assert exact(changes) == exact([("I", None, with_values(1, id=100))])
    finally:
        await db.close()
