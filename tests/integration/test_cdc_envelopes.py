"""Snapshot then stream, under REPLICA IDENTITY FULL and DEFAULT: every envelope checked.

500 rows exist before the capture starts (the snapshot), 500 more are inserted in ten
transactions while it streams, then 100 rows are updated and 50 deleted, and a column is
added mid-stream. Every event on the topic is compared field by field with what was
written: op, key, before, after (bytea as base64, numeric as a string, timestamptz as ISO
UTC with six fraction digits), source (connector, name, db, schema, table, snapshot marker,
txId of the writing transaction, lsn, sequence) and the tombstone after each delete. A
consumer that is not edgewise (confluent-kafka, librdkafka) then reads the same topic.
"""

from __future__ import annotations

import asyncio
import base64
import collections
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import ConsumerRecord
from confluent_kafka import Consumer

from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.cdc import (
    capture_settings,
    key_of,
    new_database,
    payload,
    read_topic_until,
    running_capture,
)
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

CREATE = ("CREATE TABLE public.items (id int PRIMARY KEY, name text, payload bytea, "
          "amount numeric(10, 2), seen_at timestamptz, label smallint)")
INSERT = "INSERT INTO public.items VALUES ($1, $2, $3, $4, $5, $6)"
BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_row(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item-{i}", "payload": bytes([i % 256, 0, 255]) * (i % 4),
            "amount": Decimal(i) / 4, "seen_at": BASE_TIME + timedelta(microseconds=i * 1001),
            "label": None if i % 7 == 0 else i % 10}


def expected_json(row: dict[str, Any]) -> dict[str, Any]:
    """The row as Debezium encodes it, computed here without edgewise's encoder."""
    seen = row["seen_at"].astimezone(UTC)
    return {
        "id": row["id"], "name": row["name"],
        "payload": base64.b64encode(row["payload"]).decode(),
        "amount": f"{row['amount']:.2f}",
        "seen_at": seen.strftime("%Y-%m-%dT%H:%M:%S") + f".{seen.microsecond:06d}Z",
        "label": row["label"],
        **({"note": row["note"]} if "note" in row else {}),
    }


@dataclass
class Written:
    """What the test wrote, and in which transaction."""

    initial: dict[int, dict[str, Any]] = field(default_factory=dict)
    inserted: dict[int, dict[str, Any]] = field(default_factory=dict)
    insert_txid: dict[int, int] = field(default_factory=dict)
    updated: dict[int, dict[str, Any]] = field(default_factory=dict)
    update_txid: int = 0
    deleted: list[int] = field(default_factory=list)
    delete_txid: int = 0
    noted: dict[str, Any] = field(default_factory=dict)
    noted_txid: int = 0


@dataclass
class Run:
    identity: str
    database: str
    prefix: str
    written: Written
    records: list[ConsumerRecord]
    bootstrap: str


async def write_and_capture(dsn: str, identity: str, broker: BrokerUnderTest, prefix: str,
                            tmp: Path) -> tuple[Written, list[ConsumerRecord]]:
    written = Written()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE)
        await conn.execute(f"ALTER TABLE public.items REPLICA IDENTITY {identity}")
        for start in range(1, 501, 100):
            rows = [make_row(i) for i in range(start, start + 100)]
            await conn.executemany(INSERT, [tuple(r.values()) for r in rows])
            written.initial.update({r["id"]: r for r in rows})
        settings = capture_settings(broker, dsn, prefix, tmp, cdc_tables="public.items")
        async with running_capture(settings, broker.bootstrap):
            for start in range(501, 1001, 50):
                async with conn.transaction():
                    txid = await conn.fetchval("SELECT txid_current()")
                    rows = [make_row(i) for i in range(start, start + 50)]
                    await conn.executemany(INSERT, [tuple(r.values()) for r in rows])
                written.inserted.update({r["id"]: r for r in rows})
                written.insert_txid.update(dict.fromkeys((r["id"] for r in rows), txid))
            async with conn.transaction():
                written.update_txid = await conn.fetchval("SELECT txid_current()")
                await conn.execute("UPDATE public.items SET name = 'renamed-' || id, "
                                   "amount = amount + 1 WHERE id <= 100")
            for i in range(1, 101):
                old = written.initial[i]
                written.updated[i] = {**old, "name": f"renamed-{i}",
                                      "amount": old["amount"] + 1}
            async with conn.transaction():
                written.delete_txid = await conn.fetchval("SELECT txid_current()")
                await conn.execute("DELETE FROM public.items WHERE id BETWEEN 901 AND 950")
            written.deleted = list(range(901, 951))
            await conn.execute("ALTER TABLE public.items ADD COLUMN note text")
            async with conn.transaction():
                written.noted_txid = await conn.fetchval("SELECT txid_current()")
                written.noted = {**make_row(2000), "note": "added mid-stream"}
                await conn.execute(INSERT.replace("$6)", "$6, $7)"),
                                   *written.noted.values())
            expected = 500 + 500 + 100 + 50 * 2 + 1
            records = await read_topic_until(broker.bootstrap, f"{prefix}.public.items",
                                             lambda r: len(r) >= expected, timeout=60)
    finally:
        await conn.close()
    return written, records


@pytest.fixture(scope="module", params=["DEFAULT", "FULL"])
def run(request: pytest.FixtureRequest, postgres_module: PostgresServer,
        broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    identity = request.param
    dsn = new_database(postgres_module)
    prefix = f"env{broker.name}{identity.lower()}{id(request) % 10_000}"
    written, records = asyncio.run(write_and_capture(
        dsn, identity, broker, prefix, tmp_path_factory.mktemp("cdc")))
    return Run(identity, dsn.rsplit("/", 1)[1], prefix, written, records,
               broker.bootstrap)


def events(run: Run, op: str) -> list[ConsumerRecord]:
    return [r for r in run.records if (payload(r) or {}).get("op") == op]


def check_source(run: Run, body: dict[str, Any], snapshot: str | set[str]) -> None:
    source = body["source"]
    assert source["connector"] == "postgresql"
    assert source["name"] == run.prefix
    assert source["db"] == run.database
    assert (source["schema"], source["table"]) == ("public", "items")
    assert source["snapshot"] in ({snapshot} if isinstance(snapshot, str) else snapshot)
    assert isinstance(source["version"], str) and source["version"]
    assert isinstance(source["lsn"], int) and source["lsn"] > 0
    assert isinstance(source["ts_ms"], int)
    assert abs(source["ts_ms"] / 1000 - datetime.now(UTC).timestamp()) < 300
    last_commit, lsn = orjson.loads(source["sequence"])
    assert lsn == str(source["lsn"])
    assert last_commit is None or int(last_commit) < source["lsn"]
    assert body["ts_ms"] >= source["ts_ms"]


def test_counts_per_operation(run: Run) -> None:
    ops = collections.Counter((payload(r) or {"op": "tombstone"})["op"] for r in run.records)
    assert ops == {"r": 500, "c": 501, "u": 100, "d": 50, "tombstone": 50}
    assert len(run.records) == 1201  # nothing more arrived than was written


def test_snapshot_reads(run: Run) -> None:
    reads = events(run, "r")
    markers = collections.Counter(payload(r)["source"]["snapshot"] for r in reads)
    assert markers == {"first": 1, "true": 498, "last": 1}
    txids = {payload(r)["source"]["txId"] for r in reads}
    assert len(txids) == 1 and isinstance(txids.pop(), int)  # one consistent snapshot
    for record in reads:
        body = payload(record)
        row = run.written.initial[body["after"]["id"]]
        assert key_of(record) == {"id": row["id"]}
        assert body["before"] is None
        assert body["after"] == expected_json(row)
        check_source(run, body, {"first", "true", "last"})


def test_streamed_inserts(run: Run) -> None:
    creates = events(run, "c")
    assert sorted(payload(r)["after"]["id"] for r in creates) == [*range(501, 1001), 2000]
    for record in creates:
        body = payload(record)
        row_id = body["after"]["id"]
        assert key_of(record) == {"id": row_id}
        assert body["before"] is None
        if row_id == 2000:  # after ALTER TABLE ADD COLUMN: the new column flows
            assert body["after"] == expected_json(run.written.noted)
            assert body["source"]["txId"] == run.written.noted_txid
        else:
            assert body["after"] == expected_json(run.written.inserted[row_id])
            assert body["source"]["txId"] == run.written.insert_txid[row_id]
        check_source(run, body, "false")


def test_updates_carry_the_old_row_only_under_full(run: Run) -> None:
    updates = events(run, "u")
    assert sorted(payload(r)["after"]["id"] for r in updates) == list(range(1, 101))
    for record in updates:
        body = payload(record)
        row_id = body["after"]["id"]
        assert key_of(record) == {"id": row_id}
        assert body["after"] == expected_json(run.written.updated[row_id])
        if run.identity == "FULL":
            assert body["before"] == expected_json(run.written.initial[row_id])
        else:
            assert body["before"] is None
        assert body["source"]["txId"] == run.written.update_txid
        check_source(run, body, "false")


def test_deletes_then_tombstones(run: Run) -> None:
    by_partition: dict[int, list[ConsumerRecord]] = collections.defaultdict(list)
    for record in run.records:
        by_partition[record.partition].append(record)
    deletes = events(run, "d")
    assert sorted(key_of(r)["id"] for r in deletes) == run.written.deleted
    for record in deletes:
        body = payload(record)
        row_id = key_of(record)["id"]
        old = run.written.inserted[row_id]
        if run.identity == "FULL":
            assert body["before"] == expected_json(old)
        else:  # the replica identity key only: every other column null
            assert body["before"] == {k: (row_id if k == "id" else None)
                                      for k in expected_json(old)}
        assert body["after"] is None
        assert body["source"]["txId"] == run.written.delete_txid
        check_source(run, body, "false")
        history = [r for r in by_partition[record.partition] if r.key == record.key]
        assert [(payload(r) or {"op": None})["op"] for r in history] == ["c", "d", None]
        assert history[-1].value is None and history[-1].offset > record.offset


def test_each_key_keeps_its_order_on_one_partition(run: Run) -> None:
    partitions: dict[Any, set[int]] = collections.defaultdict(set)
    lsns: dict[Any, list[int]] = collections.defaultdict(list)
    for record in sorted(run.records, key=lambda r: (r.partition, r.offset)):
        key = orjson.dumps(key_of(record))
        partitions[key].add(record.partition)
        body = payload(record)
        if body is not None and body["op"] != "r":
            lsns[key].append(body["source"]["lsn"])
    assert all(len(p) == 1 for p in partitions.values())
    assert all(values == sorted(values) for values in lsns.values())


def test_a_consumer_that_is_not_edgewise_reads_the_envelopes(run: Run) -> None:
    """confluent-kafka (librdkafka) in its own consumer group reads and decodes the topic."""
    consumer = Consumer({"bootstrap.servers": run.bootstrap, "group.id": f"{run.prefix}-ck",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([f"{run.prefix}.public.items"])
    seen: list[tuple[Any, Any]] = []
    try:
        for _ in range(200):
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None, message.error()
                value = message.value()
                seen.append((orjson.loads(message.key())["payload"],
                             None if value is None else orjson.loads(value)["payload"]))
            if len(seen) >= len(run.records):
                break
    finally:
        consumer.close()
    assert len(seen) == len(run.records)
    creates = {key["id"]: body for key, body in seen if body and body["op"] == "c"}
    assert creates[777]["after"] == expected_json(run.written.inserted[777])
    assert creates[777]["source"]["connector"] == "postgresql"
    assert sum(body is None for _, body in seen) == 50


def test_all_tables_including_ones_created_while_streaming(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    """No table list: a publication FOR ALL TABLES; a table created later gets its topic
    and its primary key as the record key."""
    dsn = new_database(postgres_module)
    settings = capture_settings(broker, dsn, unique_prefix, tmp_path)

    async def scenario() -> tuple[list[ConsumerRecord], list[ConsumerRecord]]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE public.first (id int PRIMARY KEY, v text)")
            await conn.execute("INSERT INTO public.first VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            async with running_capture(settings, broker.bootstrap):
                assert await conn.fetchval(
                    "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                    settings.cdc_publication)
                await conn.execute("CREATE TABLE public.later (code text, n int, v text, "
                                   "PRIMARY KEY (code, n))")
                await conn.execute("INSERT INTO public.later VALUES ('x', 1, 'p'), ('y', 2, 'q')")
                later = await read_topic_until(broker.bootstrap,
                                               f"{unique_prefix}.public.later",
                                               lambda r: len(r) >= 2, timeout=30)
            first = await read_topic_until(broker.bootstrap,
                                           f"{unique_prefix}.public.first",
                                           lambda r: len(r) >= 3, timeout=10)
        finally:
            await conn.close()
        return first, later

    first, later = asyncio.run(scenario())
    assert sorted(payload(r)["after"]["id"] for r in first) == [1, 2, 3]
    assert {payload(r)["op"] for r in first} == {"r"}
    assert sorted(orjson.dumps(key_of(r)) for r in later) == [
        b'{"code":"x","n":1}', b'{"code":"y","n":2}']
    assert [payload(r)["op"] for r in later] == ["c", "c"]
