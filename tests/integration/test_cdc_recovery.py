"""Nothing lost: a SIGKILLed capture, a restarted PostgreSQL, a huge transaction, a quiet
table. Duplicates are allowed (at-least-once) and counted; a missing id fails the test."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from edgewise.app.core.settings import Settings
from edgewise.app.services.processes import stop_process
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.cdc import (
    capture_settings,
    new_database,
    payload,
    read_topic_until,
    row_ids,
    running_capture,
    slot_name,
    start_cdc_process,
)
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

CREATE = "CREATE TABLE public.events (id int PRIMARY KEY, note text)"


async def write_rows(dsn: str, ids: range, per_transaction: int, pause: float) -> None:
    """Insert ``ids`` in transactions of ``per_transaction`` rows, surviving server
    restarts: a transaction that failed is retried (ON CONFLICT: it may have committed)."""
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(ids.start, ids.stop, per_transaction):
            batch = [(i, f"note {i}") for i in range(start, min(start + per_transaction,
                                                                ids.stop))]
            while True:
                try:
                    await conn.executemany("INSERT INTO public.events VALUES ($1, $2) "
                                           "ON CONFLICT DO NOTHING", batch)
                    break
                except Exception:  # the server went away mid-statement: reconnect, retry
                    await asyncio.sleep(0.2)
                    conn.terminate()
                    try:
                        conn = await asyncpg.connect(dsn)
                    except (OSError, asyncpg.PostgresError):
                        pass
            await asyncio.sleep(pause)
    finally:
        conn.terminate()


async def table_ids(dsn: str) -> set[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM public.events")}
    finally:
        await conn.close()


async def setup_table(dsn: str, initial: int = 0) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE)
        if initial:
            await conn.executemany("INSERT INTO public.events VALUES ($1, 'before')",
                                   [(i,) for i in range(1, initial + 1)])
    finally:
        await conn.close()


def wait_for_line(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text()[-2000:]}")


def test_sigkill_mid_stream_then_restart_loses_nothing(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str, record_property: pytest.RecordProperty,
) -> None:
    dsn = new_database(postgres_module)
    asyncio.run(setup_table(dsn, initial=100))
    topic = f"{unique_prefix}.public.events"
    env = {"EDGEWISE_BROKER": broker.url, "EDGEWISE_CDC_DSN": dsn,
           "EDGEWISE_CDC_TABLES": "public.events", "EDGEWISE_TOPIC_PREFIX": unique_prefix,
           "EDGEWISE_CDC_TOPIC_PREFIX": unique_prefix, "EDGEWISE_CDC_SLOT":
           slot_name(unique_prefix), "EDGEWISE_DATA_DIR": str(tmp_path),
           "EDGEWISE_CDC_MAX_CHANGES": "300", "EDGEWISE_CDC_POLL_SECONDS": "0.02",
           "EDGEWISE_CDC_PARTITIONS": "4"}
    log = tmp_path / "cdc.log"
    first = start_cdc_process(env, log)
    second = None
    try:
        wait_for_line(log, "edgewise cdc: streaming")

        async def write_and_kill() -> int:
            writer = asyncio.create_task(write_rows(dsn, range(101, 4101), 50, 0.05))
            seen = await read_topic_until(broker.bootstrap, topic,
                                          lambda r: len(r) >= 1100, timeout=30)
            os.kill(first.pid, signal.SIGKILL)
            assert not writer.done(), "the kill must land while rows are still written"
            await writer
            return len(seen)

        seen_at_kill = asyncio.run(write_and_kill())
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        assert 1100 <= seen_at_kill < 4100
        second = start_cdc_process(env, log)
        expected = set(range(1, 4101))
        records = asyncio.run(read_topic_until(
            broker.bootstrap, topic,
            lambda r: set(row_ids(r)) >= expected, timeout=90))
    finally:
        stop_process(first, 20.0)
        if second is not None:
            stop_process(second, 20.0)
    counts = collections.Counter(row_ids(records))
    missing = expected - set(counts)
    assert not missing, (f"{len(missing)} ids lost, e.g. {sorted(missing)[:10]}; the "
                         f"captures said:\n{log.read_text()[-3000:]}")
    duplicates = sum(n - 1 for n in counts.values())
    reads = sum(1 for r in records if (payload(r) or {}).get("op") == "r")
    record_property("cdc_duplicates_after_sigkill", duplicates)
    print(f"\nSIGKILL mid-stream: {len(expected)} ids complete, {duplicates} duplicates "
          f"({seen_at_kill} events before the kill)")
    assert reads == 100, "the completed snapshot is not taken again after the restart"
    assert set(counts) == expected


def test_postgres_restart_while_streaming_recovers_alone(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    dsn = new_database(postgres_module)
    topic = f"{unique_prefix}.public.events"
    settings = capture_settings(broker, dsn, unique_prefix, tmp_path,
                                cdc_tables="public.events", cdc_reconnect_max_seconds=1.0)

    async def scenario() -> tuple[int, list[object]]:
        await setup_table(dsn)
        async with running_capture(settings, broker.bootstrap) as capture:
            writer = asyncio.create_task(write_rows(dsn, range(1, 3001), 50, 0.03))
            await read_topic_until(broker.bootstrap, topic,
                                   lambda r: len(r) >= 500, timeout=30)
            await asyncio.to_thread(postgres_module.restart)
            await writer
            expected = await table_ids(dsn)
            assert expected == set(range(1, 3001))
            records = await read_topic_until(
                broker.bootstrap, topic,
                lambda r: set(row_ids(r)) >= expected, timeout=60)
            return capture.stats.reconnects, records

    reconnects, records = asyncio.run(scenario())
    assert reconnects >= 1, "the restart should have been noticed"
    assert set(row_ids(records)) == set(range(1, 3001))


def test_a_huge_transaction_is_paged_and_the_slot_moves_past_it(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    dsn = new_database(postgres_module)
    settings = capture_settings(broker, dsn, unique_prefix, tmp_path,
                                cdc_tables="public.events", cdc_max_changes=100,
                                cdc_page_rows=50, cdc_max_in_flight=200)

    async def scenario() -> None:
        await setup_table(dsn)
        async with running_capture(settings, broker.bootstrap) as capture:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("INSERT INTO public.events "
                                   "SELECT g, 'bulk' FROM generate_series(1, 5000) g")
                after = await conn.fetchval("SELECT pg_current_wal_flush_lsn()")
                records = await read_topic_until(
                    broker.bootstrap, f"{unique_prefix}.public.events",
                    lambda r: len(r) >= 5000, timeout=60)
                assert sorted(row_ids(records)) == list(range(1, 5001))
                for _ in range(100):
                    confirmed = await conn.fetchval(
                        "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                        "WHERE slot_name = $1", settings.cdc_slot)
                    if confirmed >= after:
                        break
                    await asyncio.sleep(0.1)
                assert confirmed >= after
            finally:
                await conn.close()
            assert capture.tracker.peak_in_flight <= 200 + 2
            assert capture.stats.transactions == 1 and capture.stats.events == 5000

    asyncio.run(scenario())


def test_a_quiet_table_does_not_pin_the_wal(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    """Writes to a table outside the publication: nothing to send, yet the slot moves."""
    dsn = new_database(postgres_module)
    settings = capture_settings(broker, dsn, unique_prefix, tmp_path,
                                cdc_tables="public.events", cdc_heartbeat_seconds=0.3)

    async def scenario() -> None:
        await setup_table(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE public.other (id int PRIMARY KEY)")
            async with running_capture(settings, broker.bootstrap) as capture:
                for i in range(200):
                    await conn.execute("INSERT INTO public.other VALUES ($1)", i)
                written = await conn.fetchval("SELECT pg_current_wal_flush_lsn()")
                confirmed = 0
                for _ in range(100):
                    confirmed = await conn.fetchval(
                        "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                        "WHERE slot_name = $1", settings.cdc_slot)
                    if confirmed >= written:
                        break
                    await asyncio.sleep(0.1)
                assert confirmed >= written, "the heartbeat should advance the slot"
                assert capture.stats.events == 0
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_snapshot_modes_and_truncate(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    """initial: once per slot (recorded in Kafka); always: at every start; never: not even
    on a new slot. A TRUNCATE is skipped and counted (Debezium's default): its event
    would have no key, which a compacted topic refuses."""
    dsn = new_database(postgres_module)
    topic = f"{unique_prefix}.public.events"

    def settings(mode: str, slot: str) -> Settings:
        return capture_settings(broker, dsn, unique_prefix, tmp_path,
                                cdc_tables="public.events", cdc_snapshot_mode=mode,
                                cdc_slot=slot)

    async def reads_after(mode: str, slot: str) -> int:
        async with running_capture(settings(mode, slot), broker.bootstrap) as c:
            return c.stats.snapshot_rows

    async def scenario() -> list[int]:
        await setup_table(dsn, initial=10)
        main, other = slot_name(unique_prefix), slot_name(unique_prefix + "_never")
        counts = [await reads_after("initial", main), await reads_after("initial", main),
                  await reads_after("always", main), await reads_after("never", other)]
        conn = await asyncpg.connect(dsn)
        try:
            async with running_capture(settings("never", main),
                                       broker.bootstrap) as capture:
                await conn.execute("TRUNCATE public.events")
                await conn.execute("INSERT INTO public.events VALUES (1000, 'after')")
                records = await read_topic_until(
                    broker.bootstrap, topic,
                    lambda r: any((payload(x) or {}).get("op") == "c" for x in r))
                assert capture.stats.truncates_skipped == 1
        finally:
            await conn.close()
        assert not [r for r in records if (payload(r) or {}).get("op") == "t"]
        assert all(r.key is not None for r in records)
        reads = sum(1 for r in records if (payload(r) or {}).get("op") == "r")
        assert reads == 20  # the initial snapshot and the "always" one
        return counts

    assert asyncio.run(scenario()) == [10, 0, 10, 0]


def test_a_table_added_to_an_existing_slot_is_snapshotted(
    postgres_module: PostgresServer, broker: BrokerUnderTest,
    tmp_path: Path, unique_prefix: str,
) -> None:
    """The state records which tables were snapshotted, so a table captured later by the
    same slot gets its rows read once, and the tables done before are not read again."""
    dsn = new_database(postgres_module)

    def settings(tables: str) -> Settings:
        return capture_settings(broker, dsn, unique_prefix, tmp_path,
                                cdc_tables=tables, cdc_snapshot_mode="initial")

    async def scenario() -> list[int]:
        await setup_table(dsn, initial=10)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE public.later (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO public.later SELECT generate_series(1, 3)")
        finally:
            await conn.close()
        counts = []
        for tables in ("public.events", "public.events,public.later",
                       "public.events,public.later"):
            async with running_capture(settings(tables), broker.bootstrap) as c:
                counts.append(c.stats.snapshot_rows)
        records = await read_topic_until(
            broker.bootstrap, f"{unique_prefix}.public.later",
            lambda r: len(r) >= 3)
        assert sorted(row_ids(records)) == [1, 2, 3]
        return counts

    assert asyncio.run(scenario()) == [10, 3, 0]
