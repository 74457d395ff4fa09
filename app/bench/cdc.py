"""``edgewise bench cdc``: rows/s of change data capture, from COPY to Kafka's acks.

For each producer setting (the embedded profile's one record per batch, which Tansu needs,
and, on Apache Kafka only, the Kafka profile's batching and idempotence, which Tansu cannot
take), on a fresh table, slot and topic: COPY N digit rows (8x8, 64-byte bytea), capture
them as the initial snapshot, then COPY N more and time streaming from the start of the COPY
until Kafka acknowledged every event. A third figure is the capture without Kafka at all
(peek, decode, envelope, encode) on the same rows: the ceiling a faster producer could
approach.

PostgreSQL: ``EDGEWISE_CDC_DSN`` when set (tables and slots are dropped afterwards), else a
throwaway cluster started here; the broker: the one ``settings`` point at (``edgewise bench
--broker`` runs this once per broker and prints them side by side).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from typing import Any

import asyncpg

from edgewise.agents.cdc import postgres as pg
from edgewise.agents.cdc.capture import CdcCapture, encode_event
from edgewise.agents.cdc.db_load import copy_rows, create_table_sql, digit_rows, split_digits
from edgewise.agents.cdc.envelope import CaptureSource, ChangePosition, change_events
from edgewise.agents.cdc.pgoutput import Begin, Commit, Insert, RelationCache, decode_message
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import bootstrap_of
from edgewise.app.services.embedded_broker import EmbeddedBroker

ROWS = 20_000
BAR_ROWS_PER_SECOND = 5_000
PROFILES = (("one per batch", "embedded"), ("batched", "kafka"))


def bench_rows(first_id: int, count: int) -> Any:
    """``count`` digit rows cycling through the test split, ids from ``first_id``."""
    images, labels = split_digits()["test"]
    repeat = count // len(images) + 1
    rows = digit_rows(images, labels, "bench", first_id, repeat)
    return (row for _, row in zip(range(count), rows, strict=False))


async def capture_cpu_only(conn: asyncpg.Connection, slot: str, publication: str,
                           table: pg.CapturedTable) -> tuple[int, float]:
    """Peek, decode, build envelopes and encode them, without Kafka: (events, seconds)."""
    cache, source = RelationCache(), CaptureSource(name="bench", db="bench")
    keys = {table.oid: table.primary_key}
    begin: Begin | None = None
    events = 0
    started = time.perf_counter()
    async for row in pg.peek_changes(conn, slot, publication, 1_000_000, 2000):
        message = decode_message(row["data"])
        cache.observe(message)
        if isinstance(message, Begin):
            begin = message
        elif isinstance(message, Insert) and begin is not None:
            position = ChangePosition(row["lsn"], begin.xid, begin.commit_time)
            for event in change_events(message, cache, source, position, key_columns=keys):
                encode_event(event)
                events += 1
        elif isinstance(message, Commit):
            begin = None
    return events, time.perf_counter() - started


async def measure(settings: Settings, dsn: str, rows: int, label: str, profile: str,
                  cpu: bool) -> dict[str, Any]:
    """Snapshot and streaming rates for one producer profile, on fresh objects."""
    name = f"ew_bench_{profile}_{os.urandom(3).hex()}"
    conn = await asyncpg.connect(dsn)
    figures: dict[str, Any] = {"label": label}
    try:
        await conn.execute(create_table_sql("public", name))
        started = time.perf_counter()
        await copy_rows(conn, "public", name, bench_rows(1, rows))
        figures["copy"] = rows / (time.perf_counter() - started)
        run = settings.model_copy(update={
            "cdc_dsn": dsn, "cdc_tables": f"public.{name}", "cdc_slot": name,
            "cdc_publication": name, "cdc_topic_prefix": name, "topic_prefix": name,
            "broker_profile": profile, "cdc_snapshot_mode": "initial"})
        capture = CdcCapture(run, bootstrap_of(run.broker))
        stop = asyncio.Event()
        task = asyncio.create_task(capture.run(stop))
        try:
            await asyncio.wait_for(capture.ready.wait(), 300)
            stats = capture.stats
            assert stats.snapshot_started_at and stats.snapshot_done_at
            figures["snapshot"] = rows / (stats.snapshot_done_at - stats.snapshot_started_at)
            if cpu:
                await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                                   name + "_cpu")
            started = time.perf_counter()
            await copy_rows(conn, "public", name, bench_rows(rows + 1, rows))
            while capture.tracker.acked < 2 * rows:
                if task.done():
                    task.result()
                await asyncio.sleep(0.002)
            figures["stream"] = rows / (time.perf_counter() - started)
        finally:
            stop.set()
            await task
        if cpu:
            table = (await pg.resolve_tables(conn, [("public", name)]))[0]
            events, seconds = await capture_cpu_only(conn, name + "_cpu", name, table)
            figures["cpu"] = events / seconds
    finally:
        for slot in (name, name + "_cpu"):
            await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                               "pg_replication_slots WHERE slot_name = $1", slot)
        await conn.execute(f"DROP PUBLICATION IF EXISTS {name}")
        await conn.execute(f"DROP TABLE IF EXISTS public.{name}")
        await conn.close()
    return figures


def bench_cdc(settings: Settings, rows: int = ROWS) -> list[dict[str, Any]]:
    """Both profiles' figures, on the configured or a throwaway PostgreSQL and broker."""
    with ExitStack() as stack:
        dsn = settings.cdc_dsn
        if not dsn:
            from edgewise.app.services.local_postgres import start_postgres

            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgewise-bench-"))
            dsn = stack.enter_context(start_postgres(work)).dsn
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.model_copy(update={"broker": broker.url})
        results = []
        # Tansu has no idempotent producer, which the batched (Kafka) profile asks for
        profiles = PROFILES[:1] if settings.broker_profile == "embedded" else PROFILES
        for index, (label, profile) in enumerate(profiles):
            results.append(asyncio.run(measure(settings, dsn, rows, label, profile,
                                               cpu=index == 0)))
        return results


def print_cdc(runs: list[tuple[str, list[dict[str, Any]]]], rows: int,
              partitions: int) -> None:
    """The figures side by side, per broker and producer setting, and the bar."""
    print(f"CDC of {rows:,} digit rows (64-byte bytea) into {partitions} partitions; rows/s")
    columns = [(broker, r) for broker, results in runs for r in results]
    width = max(len(r["label"]) for _, r in columns) + 2
    if len(runs) > 1:
        print(f"{'':36}" + "".join(f"{broker:>{width * len(results)}}"
                                   for broker, results in runs))
    print(f"{'':36}" + "".join(f"{r['label']:>{width}}" for _, r in columns))
    for key, title in (("copy", "COPY into PostgreSQL"),
                       ("snapshot", "snapshot: read -> all acked"),
                       ("stream", "stream: COPY start -> all acked")):
        print(f"{title:36}" + "".join(f"{r[key]:>{width},.0f}" for _, r in columns))
    cpu = columns[0][1].get("cpu")
    if cpu:
        print(f"{'capture without Kafka (ceiling)':36}{cpu:>{width},.0f}")
    for broker, results in runs:
        stream = results[0]["stream"]
        verdict = "meets" if stream >= BAR_ROWS_PER_SECOND else "MISSES"
        batched = f"; batched: {results[-1]['stream']:,.0f}" if len(results) > 1 else ""
        print(f"{broker}: streaming one record per batch {stream:,.0f} rows/s {verdict} the "
              f"bar of {BAR_ROWS_PER_SECOND:,}{batched}")
