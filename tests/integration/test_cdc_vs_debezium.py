"""edgewise's CDC beside Debezium's PostgreSQL connector (Kafka Connect standalone): the
same tables, the same changes, the same Apache Kafka, and the two envelopes compared field
by field, keys and tombstones included.

Two tables, one under REPLICA IDENTITY DEFAULT and one under FULL (before-images), with a
column of every type edgewise's CDC decodes (time, interval and arrays included). Rows
written before either capture starts come as the snapshot; then inserts, updates (one
leaving a TOASTed value unsent, one changing the primary key), deletes and their tombstones
are streamed, then a TRUNCATE (skipped by both) and one more insert. Allowed to differ: when
and where (``ts_ms``/``ts_us``/``ts_ns``, ``lsn``, ``sequence``, ``txId``) and who (connector
``name``, ``version``); and the value's ``schema`` half, which edgewise does not write
(README, "Database change streams").
One Connect worker serves the whole module: its JVM takes ~8 s to be streaming.
"""

from __future__ import annotations

import asyncio
import collections
import random
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import ConsumerRecord

from edgewise.app.core.settings import load_settings
from edgewise.app.services.apache_kafka import KafkaCluster
from edgewise.app.services.kafka_connect import DebeziumConnect, connector_properties
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.cdc import capture_settings, new_database, read_topic_until, running_capture
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

TABLES = ("kinds_default", "kinds_full")
COLUMNS = """id bigint PRIMARY KEY, i2 smallint, i4 integer, n numeric(10, 4), nv numeric,
    f4 real, f8 double precision, b boolean, tx text, vc varchar(20), bp char(5), by bytea,
    d date, ts timestamp, ts3 timestamp(3), tz timestamptz, tz0 timestamptz(0), u uuid,
    j json, jb jsonb, tm time, iv interval, arr integer[], tarr text[], f4arr real[],
    big text, tm3 time(3), iv2 interval, narr numeric(6, 2)[]"""
#: Random letters do not compress, so ``big`` is stored out of line (TOAST).
BIG = "".join(random.Random(9).choices(string.ascii_letters, k=12_000))
ROWS = [
    "(1, 2, 3, 12.3400, 1.50, 1.1, 2.2, true, 'héllo ☃', 'v', 'ab', '\\x0102ff', '2024-05-01',"
    " '2024-05-01 12:30:00.25', '2024-05-01 12:30:00.123', '2024-05-01 12:30:00.25+02',"
    " '2024-05-01 12:30:00.7+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}',"
    " '{\"b\": 1, \"a\": 2}', '12:30:00.5', '1 day 2 hours 3.5 seconds', '{1,2,NULL}',"
    " '{\"x\",\"y z\"}', '{0.1,2.5}', 'short',"
    " '08:15:00.123', '1 year 2 mons 3 days', '{1.5,-2}')",
    "(2, -32768, -2147483648, -0.0001, -123456789012345678901234567890.5, -3.4e38, 1e-300,"
    " false, '', '', '', '\\x', '1969-12-31', '1969-12-31 23:59:59.999999',"
    " '1970-01-01 00:00:00', '2000-01-01 00:00:00+00', '2000-01-01 00:00:00+00',"
    " '00000000-0000-0000-0000-000000000000', '[]', '{}', '00:00:00', '0 seconds', '{}',"
    " '{}', '{}', $big,"
    " '00:00:00', '1 mon', '{}')",
    "(3, NULL, NULL, NULL, 'NaN', 'NaN', 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, 'null', 'null', NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL)",
    "(4, 7, 7, 99999.9999, 'Infinity', '-Infinity', -0.5, true, 'line\\nbreak \"quoted\"',"
    " 'x', 'abcde', '\\x00', '2262-04-11', '2262-04-11 23:47:16.854775',"
    " '2262-04-11 23:47:16.854', '1900-06-01 10:00:00.000001+05:30',"
    " '1900-06-01 10:00:00+05:30', 'ffffffff-ffff-ffff-ffff-ffffffffffff',"
    " '{\"nested\": {\"deep\": [true, null]}}', '[1, \"two\", 3.0]', '23:59:59.999999',"
    " '-1 days -00:00:01', '{-1}', '{NULL,\"\"}', '{NULL}', NULL,"
    " '23:59:59.999', '-3 mons', '{NULL}')",
]
#: Changes streamed once both captures run, in order, on each table.
CHANGES = [
    "INSERT INTO {t} VALUES " + ROWS[0].replace("(1,", "(11,", 1),
    "INSERT INTO {t} VALUES " + ROWS[1].replace("(2,", "(12,", 1),
    "INSERT INTO {t} VALUES " + ROWS[2].replace("(3,", "(13,", 1),
    "INSERT INTO {t} VALUES " + ROWS[3].replace("(4,", "(14,", 1),
    "UPDATE {t} SET i4 = i4 + 1, tx = 'updated' WHERE id IN (1, 11)",
    "UPDATE {t} SET i2 = 5 WHERE id = 12",  # leaves the TOASTed ``big`` unsent
    "UPDATE {t} SET tz = NULL, arr = '{9,8}', n = 0 WHERE id = 4",
    "UPDATE {t} SET id = 21 WHERE id = 2",  # a key change: delete, tombstone, create
    "DELETE FROM {t} WHERE id IN (3, 13)",
    "DELETE FROM {t} WHERE id = 21",
    "TRUNCATE {t}",  # no event from either (Debezium's default skipped.operations=t)
    "INSERT INTO {t} (id) VALUES (99)",  # the last event: the truncate was passed over
]
#: Where and when, and who: the only fields allowed to differ.
VOLATILE_PAYLOAD = ("ts_ms", "ts_us", "ts_ns")
VOLATILE_SOURCE = ("ts_ms", "ts_us", "ts_ns", "lsn", "sequence", "txId", "name", "version")


@dataclass
class Captured:
    """Both captures' records of one table, by record key, in each key's order."""

    table: str
    edgewise: dict[str, list[ConsumerRecord]]
    debezium: dict[str, list[ConsumerRecord]]


def key_text(record: ConsumerRecord) -> str:
    """The key's payload, as canonical text to group by."""
    return orjson.dumps(orjson.loads(record.key)["payload"], option=orjson.OPT_SORT_KEYS).decode()


def by_key(records: list[ConsumerRecord]) -> dict[str, list[ConsumerRecord]]:
    grouped: dict[str, list[ConsumerRecord]] = collections.defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped[key_text(record)].append(record)
    return dict(grouped)


def comparable(record: ConsumerRecord) -> dict[str, Any] | None:
    """The value's payload without the fields allowed to differ; None for a tombstone."""
    if record.value is None:
        return None
    body = orjson.loads(record.value)["payload"]
    for name in VOLATILE_PAYLOAD:
        assert isinstance(body.pop(name), int), name
    source = body["source"]
    for name in VOLATILE_SOURCE:
        assert name in source, f"source.{name} missing"
        source.pop(name)
    return body


def expected_events() -> int:
    """Records each capture writes per table: 4 snapshot reads, 4 creates, 4 updates, the
    key change's delete, tombstone and create, 3 deletes with their tombstones, nothing for
    the truncate and one create after it."""
    return 4 + 4 + 4 + 3 + 3 * 2 + 1


async def on_both_tables(dsn: str, statements: list[str]) -> None:
    """Run each statement on each table (``{t}``); ``$big`` is the TOASTed text."""
    conn = await asyncpg.connect(dsn)
    try:
        for table in TABLES:
            for statement in statements:
                sql = statement.replace("{t}", f"public.{table}")
                args = (BIG,) if "$big" in sql else ()
                await conn.execute(sql.replace("$big", "$1"), *args)
    finally:
        await conn.close()


async def run_edgewise(broker: BrokerUnderTest, dsn: str, prefix: str, tmp: Path,
                       dbz_prefix: str) -> list[Captured]:
    settings = capture_settings(broker, dsn, prefix, tmp, cdc_partitions=2,
                                cdc_tables=",".join(f"public.{t}" for t in TABLES))
    async with running_capture(settings, broker.bootstrap):
        await on_both_tables(dsn, CHANGES)
        out = []
        for table in TABLES:
            ours, theirs = await asyncio.gather(*(
                read_topic_until(broker.bootstrap, f"{p}.public.{table}",
                                 lambda r: len(r) >= expected_events(), timeout=60)
                for p in (prefix, dbz_prefix)))
            out.append(Captured(table, by_key(ours), by_key(theirs)))
    return out


@pytest.fixture(scope="module")
def captured(postgres_module: PostgresServer, kafka_broker: KafkaCluster,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Captured]]:
    """Both captures of the same changes to both tables, on the suite's Apache Kafka."""
    dsn = new_database(postgres_module)
    tmp = tmp_path_factory.mktemp("vs-debezium")
    asyncio.run(on_both_tables(dsn, [f"CREATE TABLE {{t}} ({COLUMNS})"]))
    asyncio.run(full_identity(dsn))
    asyncio.run(on_both_tables(dsn, [f"INSERT INTO {{t}} VALUES {row}" for row in ROWS]))
    suffix = uuid.uuid4().hex[:6]
    prefix, dbz_prefix = f"ew{suffix}", f"dbz{suffix}"
    connector = connector_properties(
        "debezium", dsn, [f"public.{t}" for t in TABLES], dbz_prefix, f"dbz_slot{suffix}",
        f"dbz_pub{suffix}", partitions=2)
    broker = BrokerUnderTest("kafka", kafka_broker.url, kafka_broker.bootstrap)
    with DebeziumConnect(kafka_broker.bootstrap, tmp / "connect", connector,
                         load_settings().kafka_cache_dir):
        yield asyncio.run(run_edgewise(broker, dsn, prefix, tmp / "edgewise", dbz_prefix))


async def full_identity(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER TABLE public.kinds_full REPLICA IDENTITY FULL")
    finally:
        await conn.close()


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Every path where the two JSON documents differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for name in sorted(set(ours) | set(theirs)):
            if name not in ours or name not in theirs:
                found.append(f"{path}.{name}: edgewise {ours.get(name, '<absent>')!r} "
                             f"debezium {theirs.get(name, '<absent>')!r}")
            else:
                found += differences(ours[name], theirs[name], f"{path}.{name}")
        return found
    if ours != theirs or type(ours) is not type(theirs):
        return [f"{path}: edgewise {ours!r} debezium {theirs!r}"]
    return []


@pytest.mark.parametrize("table", TABLES)
def test_both_capture_the_same_keys_in_the_same_order(captured: list[Captured],
                                                      table: str) -> None:
    run = next(c for c in captured if c.table == table)
    assert sum(map(len, run.edgewise.values())) == expected_events()
    assert sum(map(len, run.debezium.values())) == expected_events()
    assert sorted(run.edgewise) == sorted(run.debezium)
    for key, records in run.edgewise.items():
        ops = [None if r.value is None else orjson.loads(r.value)["payload"]["op"]
               for r in records]
        theirs = [None if r.value is None else orjson.loads(r.value)["payload"]["op"]
                  for r in run.debezium[key]]
        assert ops == theirs, key


@pytest.mark.parametrize("table", TABLES)
def test_every_envelope_agrees_field_by_field(captured: list[Captured], table: str) -> None:
    run = next(c for c in captured if c.table == table)
    found = []
    for key, records in sorted(run.edgewise.items()):
        for index, (ours, theirs) in enumerate(zip(records, run.debezium[key], strict=True)):
            found += [f"{key}#{index}{d}" for d in differences(comparable(ours),
                                                               comparable(theirs))]
    assert not found, "\n".join(found)


def test_tombstones_follow_deletes_on_both(captured: list[Captured]) -> None:
    for run in captured:
        for grouped in (run.edgewise, run.debezium):
            deleted = [k for k, records in grouped.items() if records[-1].value is None]
            assert sorted(deleted) == ['{"id":13}', '{"id":21}', '{"id":2}', '{"id":3}']
            for key in deleted:
                before = orjson.loads(grouped[key][-2].value)["payload"]
                assert before["op"] == "d" and before["after"] is None


def test_values_differ_only_by_the_schema_edgewise_leaves_out(captured: list[Captured]
                                                              ) -> None:
    record = next(iter(captured[0].edgewise.values()))[0]
    reference = next(iter(captured[0].debezium.values()))[0]
    assert set(orjson.loads(record.value)) == {"payload"}
    assert set(orjson.loads(reference.value)) == {"schema", "payload"}
    assert set(orjson.loads(record.key)) == {"payload"}
    assert set(orjson.loads(reference.key)) == {"schema", "payload"}
