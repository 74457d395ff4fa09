"""``edgewise bench cdc --vs debezium``: edgewise's CDC beside Debezium's, in one run.

The same measurements of each, one after the other on the same PostgreSQL and the same
Apache Kafka, each capture in its own process (``edgewise cdc``; Kafka Connect standalone
with Debezium's PostgreSQL connector, its JVM on the full JIT), on a table of its own with
the same rows, into a pre-created compacted topic of ``cdc_partitions`` partitions:

- start: from starting the process to the first snapshot event readable;
- snapshot: N digit rows (8x8, 64-byte bytea) that exist before the capture starts, rows/s
  from the first snapshot event readable to the last;
- streaming: N more rows in one COPY, rows/s from the start of the COPY to the last event
  readable;
- latency: single-row transactions at a fixed rate; for each, from COMMIT returning to
  its event being readable by a consumer (p50, p99).

"Readable" is when one plain aiokafka consumer, in a thread of this process, got the
record. Both poll an idle slot at the same interval (``cdc_poll_seconds``; Debezium's
``poll.interval.ms``, whose default is 500 ms).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from edgewise.agents.cdc.db_load import copy_rows, create_table_sql
from edgewise.agents.cdc.envelope import cdc_topic_spec
from edgewise.app.bench.cdc import bench_rows
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import bootstrap_of, create_topics
from edgewise.app.services.apache_kafka import KAFKA_VERSION
from edgewise.app.services.kafka_connect import (
    DEBEZIUM_VERSION,
    DebeziumConnect,
    connector_properties,
)
from edgewise.app.services.processes import ManagedProcess

LATENCY_RATE = 100.0
LATENCY_SECONDS = 5.0
WAIT_SECONDS = 300.0
SYSTEMS = ("edgewise", "debezium", "debezium-bare")
"""edgewise; Debezium with the JSON converter's schemas (the envelope the suite compares);
Debezium without them (the bare envelope: smaller records, no ``payload`` wrapper)."""


class TopicWatch:
    """Reads a topic from its start in a thread of its own and notes when each event came."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.arrived: dict[str, list[float]] = collections.defaultdict(list)
        self.created_at: dict[int, float] = {}
        self.value_bytes = 0
        self.events = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)

    def __enter__(self) -> TopicWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    fetch_max_wait_ms=10)
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        self._note(record.value, now)
        finally:
            await consumer.stop()

    def _note(self, value: bytes | None, now: float) -> None:
        if value is None:
            return
        document = orjson.loads(value)
        body = document.get("payload", document)  # the bare envelope has no wrapper
        self.value_bytes += len(value)
        self.events += 1
        if body["op"] == "c":
            self.created_at[body["after"]["id"]] = now
        self.arrived[body["op"]].append(now)

    def wait(self, op: str, count: int, timeout: float = WAIT_SECONDS,
             alive: ManagedProcess | None = None) -> None:
        """Block until ``count`` events of ``op`` were read (the capture must stay up)."""
        deadline = time.monotonic() + timeout
        while len(self.arrived[op]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: {len(self.arrived[op])} of {count} "
                                   f"'{op}' events after {timeout:.0f}s")
            if alive is not None and not alive.is_running:
                raise RuntimeError(f"the capture exited; log:\n{alive.log_tail()}")
            time.sleep(0.01)


def start_edgewise(settings: Settings, dsn: str, name: str, work: Path) -> ManagedProcess:
    """``edgewise cdc`` on the table ``public.<name>``, its own slot, topics and state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env.update(EDGEWISE_BROKER=settings.broker, EDGEWISE_BROKER_PROFILE="kafka",
               EDGEWISE_CDC_DSN=dsn, EDGEWISE_CDC_TABLES=f"public.{name}",
               EDGEWISE_CDC_SLOT=name, EDGEWISE_CDC_PUBLICATION=name,
               EDGEWISE_CDC_TOPIC_PREFIX=name, EDGEWISE_TOPIC_PREFIX=name,
               EDGEWISE_CDC_PARTITIONS=str(settings.cdc_partitions),
               EDGEWISE_CDC_POLL_SECONDS=str(settings.cdc_poll_seconds),
               EDGEWISE_DATA_DIR=str(work / "data"), EDGEWISE_LOG_LEVEL="warning")
    process = ManagedProcess(work / f"{name}.log")
    process.name = "edgewise cdc"
    exe = str(Path(sys.executable).with_name("edgewise"))
    process.spawn([exe, "cdc", "--progress-seconds", "3600"], env=env)
    return process


def start_debezium(settings: Settings, dsn: str, name: str, work: Path, schemas: bool = True
                   ) -> DebeziumConnect:
    """Kafka Connect with Debezium on ``public.<name>``; returns once it streams."""
    connector = connector_properties(
        name, dsn, [f"public.{name}"], name, name, name, settings.cdc_partitions,
        extra={"poll.interval.ms": max(1, round(settings.cdc_poll_seconds * 1000))})
    connect = DebeziumConnect(bootstrap_of(settings.broker), work / name, connector,
                              settings.kafka_cache_dir, quick_start=False, schemas=schemas)
    return connect.start(timeout=WAIT_SECONDS)


async def _sql(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _copy(dsn: str, name: str, first_id: int, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await copy_rows(conn, "public", name, bench_rows(first_id, rows))
    finally:
        await conn.close()


async def _paced_commits(dsn: str, name: str, first_id: int, rate: float, seconds: float
                         ) -> dict[int, float]:
    """One-row transactions at ``rate``/s; the time each COMMIT returned, by row id."""
    conn = await asyncpg.connect(dsn)
    committed: dict[int, float] = {}
    pixels = bytes(64)
    try:
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            await conn.execute(f"INSERT INTO public.{name} VALUES ($1, 0, $2, 'bench')",
                               first_id + n, pixels)
            committed[first_id + n] = time.time()
            delay = start + (n + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await conn.close()
    return committed


async def _drop(dsn: str, name: str) -> None:
    """The bench's table, publication and slot (the slot's reader is ended first)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(50):
            active = await conn.fetchval("SELECT active_pid FROM pg_replication_slots "
                                         "WHERE slot_name = $1", name)
            if active is None:
                break
            await conn.execute("SELECT pg_terminate_backend($1)", active)
            await asyncio.sleep(0.1)
        await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                           "pg_replication_slots WHERE slot_name = $1", name)
        await conn.execute(f"DROP PUBLICATION IF EXISTS {name}")
        await conn.execute(f"DROP TABLE IF EXISTS public.{name}")
    finally:
        await conn.close()


def measure(system: str, settings: Settings, dsn: str, rows: int, work: Path
            ) -> dict[str, Any]:
    """Start, snapshot, streaming and commit-to-readable figures of one system."""
    name = f"vs_{system[:3]}_{os.urandom(3).hex()}"
    starts = {"edgewise": start_edgewise, "debezium": start_debezium,
              "debezium-bare": lambda *a: start_debezium(*a, schemas=False)}
    topic = f"{name}.public.{name}"
    asyncio.run(_sql(dsn, create_table_sql("public", name)))
    asyncio.run(_copy(dsn, name, 1, rows))
    create_topics(bootstrap_of(settings.broker), [cdc_topic_spec(topic, settings)])
    capture: ManagedProcess | None = None
    try:
        with TopicWatch(bootstrap_of(settings.broker), topic) as watch:
            started = time.time()
            capture = starts[system](settings, dsn, name, work)
            watch.wait("r", rows, alive=capture)
            reads = watch.arrived["r"]
            time.sleep(1.0)  # the snapshot's state is saved and the capture streams
            copy_started = time.time()
            asyncio.run(_copy(dsn, name, rows + 1, rows))
            watch.wait("c", rows, alive=capture)
            streamed = watch.arrived["c"][rows - 1]
            committed = asyncio.run(_paced_commits(dsn, name, 2 * rows + 1, LATENCY_RATE,
                                                   LATENCY_SECONDS))
            watch.wait("c", rows + len(committed), alive=capture)
            latency = np.array([watch.created_at[i] - at for i, at in committed.items()])
            value_bytes = watch.value_bytes / max(watch.events, 1)
    finally:
        if capture is not None:
            capture.stop()
        asyncio.run(_drop(dsn, name))
    return {
        "system": system,
        "start": reads[0] - started,
        "snapshot": rows / max(reads[-1] - reads[0], 1e-9),
        "stream": rows / max(streamed - copy_started, 1e-9),
        "p50": float(np.percentile(latency, 50)) * 1000,
        "p99": float(np.percentile(latency, 99)) * 1000,
        "bytes": value_bytes,
    }


def bench_cdc_vs_debezium(settings: Settings, rows: int) -> list[dict[str, Any]]:
    """Both systems' figures on the configured (or a throwaway) PostgreSQL and on the Kafka
    ``settings.broker`` points at."""
    if settings.embedded or settings.embedded_profile:
        raise ValueError("Debezium runs in Kafka Connect, which needs Apache Kafka: "
                         "--broker kafka or kafka://host:port")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # new topics' first fetches
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgewise-vs-")))
        dsn = settings.cdc_dsn
        if not dsn:
            from edgewise.app.services.local_postgres import start_postgres

            dsn = stack.enter_context(start_postgres(work / "pg")).dsn
        return [measure(system, settings, dsn, rows, work) for system in SYSTEMS]


def print_cdc_vs_debezium(results: list[dict[str, Any]], rows: int, broker: str,
                          partitions: int, poll_seconds: float) -> None:
    """The two side by side."""
    print(f"CDC of {rows:,} digit rows (64-byte bytea) into {partitions} partitions on "
          f"{broker}; both poll an idle slot every {poll_seconds * 1000:.0f} ms")
    print(f"edgewise cdc (batched producer) beside Debezium {DEBEZIUM_VERSION} in Kafka "
          f"Connect {KAFKA_VERSION} standalone, JSON with schemas and without")
    print(f"{'':48}{'edgewise':>12}{'Debezium':>12}{'(no schema)':>12}"[:48 + 12 * len(results)])
    lines = (("start", "process start -> first event readable, s", "{:12.1f}"),
             ("snapshot", "snapshot, rows/s (first -> last readable)", "{:12,.0f}"),
             ("stream", "streaming, rows/s (COPY start -> last readable)", "{:12,.0f}"),
             ("p50", f"COMMIT -> readable p50, ms ({LATENCY_RATE:.0f} tx/s)", "{:12.1f}"),
             ("p99", f"COMMIT -> readable p99, ms ({LATENCY_RATE:.0f} tx/s)", "{:12.1f}"),
             ("bytes", "bytes per event value", "{:12,.0f}"))
    for key, title, form in lines:
        print(f"{title:48}" + "".join(form.format(r[key]) for r in results))
