"""The sink half of ``edgewise bench ingest``: rows/s into PostgreSQL, from a backlog of
frames on the broker, beside a naive peer that inserts one row at a time.

The rows are those the ingest half accepts (wine rows of 13 features, a fifth missing,
four devices), as the score stage and ingest leave them: prediction frames and tabular
sample frames of 256 rows. Measured, each on its own backlog and tables:
- *writer alone*: the sink's upsert (``sinks.columns`` + ``sinks.writer``) straight from
  decoded batches, no broker: the ceiling the stage could approach;
- *sink_predictions*, *sink_samples*: ``edgewise worker --stage …`` draining the backlog;
  rows/s from the first rows in the table to the last (the table polled);
- *naive*: an aiokafka consumer decoding the same prediction frames and sending one
  ``INSERT … ON CONFLICT DO NOTHING`` per prediction, each its own transaction, into the
  same table, as a collector written row by row does.

PostgreSQL: ``EDGEWISE_SINK_DSN`` when set (the bench's tables are dropped afterwards), else
a throwaway cluster started here with ``fsync`` and ``full_page_writes`` on, as a database
that keeps what it committed has them (the test clusters run with them off).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from aiokafka import AIOKafkaConsumer

from edgewise.agents.sinks.columns import prediction_params
from edgewise.agents.sinks.tables import predictions_table
from edgewise.agents.sinks.writer import PostgresSink
from edgewise.app.bench.harness import fill_topic, start_stage_worker
from edgewise.app.core.prediction_wire import decode_prediction_batch, encode_prediction_batch
from edgewise.app.core.records import TABULAR, PredictionBatch, SampleBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.local_postgres import start_postgres
from edgewise.app.services.processes import stop_process
from edgewise.models import tabular

ROWS = 300_000
NAIVE_ROWS = 20_000
FRAME_ROWS = 256
DEVICES = 4
BAR_ROWS_PER_S = 50_000
POLL_SECONDS = 0.1
DURABLE = {"fsync": "on", "full_page_writes": "on"}
NAIVE_INSERT = ("INSERT INTO {table} (device, sample_id, kind, model, model_version, label, "
                "confidence, top_labels, top_probs, true_label, latency_ms, sample_time, "
                "scored_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                "to_timestamp($12), to_timestamp($13)) ON CONFLICT (device, sample_id) "
                "DO NOTHING")


def bench_frames(rows: int, run: str) -> tuple[list[PredictionBatch], list[SampleBatch]]:
    """Prediction and sample batches of the wine rows (a fifth missing), as the stages
    write them: 256 rows a frame, devices in turn, ids unique to ``run``."""
    data = tabular.bundled("wine", 0.2)
    gen = np.random.default_rng(len(run))
    now = time.time()
    predictions, samples = [], []
    for n, start in enumerate(range(0, rows, FRAME_ROWS)):
        size = min(FRAME_ROWS, rows - start)
        pick = gen.integers(len(data.x), size=size)
        features = data.x[pick].astype(np.float32)
        probs = np.sort(gen.dirichlet(np.ones(3), size).astype(np.float32), axis=1)[:, ::-1]
        top = np.argsort(-gen.random((size, 3)), axis=1).astype(np.int32)
        device = f"bench-{n % DEVICES}"
        ids = [f"{run}-{start + i}" for i in range(size)]
        stamps = now - 60 + gen.random(size)
        truth = data.y[pick].astype(np.int32)
        predictions.append(PredictionBatch(
            device=device, kind=TABULAR, model="tabular", model_version=1, ids=ids,
            timestamps=stamps, true_labels=truth, labels=top[:, 0].copy(),
            confidence=np.ascontiguousarray(probs[:, 0]), top_labels=top,
            top_probs=np.ascontiguousarray(probs), latency_ms=np.full(size, 5, np.float32),
            pixels=features, scored_at=now))
        samples.append(SampleBatch(device=device, kind=TABULAR, ids=ids, timestamps=stamps,
                                   labels=truth, pixels=features))
    return predictions, samples


async def count_rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def drain_rate(dsn: str, table: str, rows: int, timeout: float) -> float:
    """Rows/s from the first poll that finds rows in ``table`` to the one that finds all."""
    conn = await asyncpg.connect(dsn)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            except asyncpg.UndefinedTableError:
                found = 0
            now = time.monotonic()
            if found and first is None:
                first = (now, found)
            if found >= rows and first is not None:
                if now == first[0] or found == first[1]:
                    raise RuntimeError(f"{table}: every row arrived between two polls; "
                                       "raise ROWS")
                return (found - first[1]) / (now - first[0])
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await conn.close()
    raise RuntimeError(f"{table}: not all {rows} rows within {timeout:.0f} s")


async def writer_alone(dsn: str, table: str, batches: list[PredictionBatch],
                       max_rows: int) -> float:
    """The upsert alone, in transactions of ``max_rows``: rows/s."""
    sink = PostgresSink(dsn, predictions_table(table), "bench", first_delay=0.1,
                        longest_delay=1.0, timeout=60)
    per = max(1, max_rows // FRAME_ROWS)
    try:
        await sink.connect()
        started = time.perf_counter()
        for at in range(0, len(batches), per):
            await sink.write(prediction_params(batches[at:at + per])[1])
        seconds = time.perf_counter() - started
    finally:
        await sink.close()
    return sum(len(b) for b in batches) / seconds


async def naive_peer(bootstrap: str, topic: str, dsn: str, table: str, rows: int) -> float:
    """One INSERT per prediction, each its own transaction: rows/s over ``rows``."""
    sink = PostgresSink(dsn, predictions_table(table), "bench", first_delay=0.1,
                        longest_delay=1.0, timeout=60)
    (await sink.connect()).terminate()  # the same table, made the same way
    insert = NAIVE_INSERT.format(table=table)
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    done, started = 0, time.perf_counter()
    try:
        while done < rows:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    batch = decode_prediction_batch(record.value, 1 << 26)
                    for p in batch.predictions():
                        await conn.execute(
                            insert, p.device, p.id, batch.kind, p.model, p.model_version,
                            p.label, p.confidence, [t[0] for t in p.top_k],
                            [t[1] for t in p.top_k], p.true_label, p.latency_ms, p.timestamp,
                            batch.scored_at)
                        done += 1
    finally:
        await consumer.stop()
        await conn.close()
    return done / (time.perf_counter() - started)


def stage_rate(settings: Settings, stage: str, prefix: str, dsn: str, table: str, rows: int,
               work: Path) -> float:
    """``edgewise worker --stage <stage>`` draining its backlog into ``table``: rows/s."""
    variable = "EDGEWISE_SINK_PREDICTIONS_TABLE" if stage == "sink_predictions" else \
        "EDGEWISE_SINK_SAMPLES_TABLE"
    worker = start_stage_worker(settings, settings.broker, prefix, work / "models", "tabular",
                                work / f"{stage}.log", [stage],
                                extra_env={"EDGEWISE_SINK_DSN": dsn, variable: table})
    try:
        return asyncio.run(drain_rate(dsn, table, rows, timeout=300))
    finally:
        stop_process(worker, 20)


def bench_sink(settings: Settings, rows: int = ROWS) -> dict[str, float]:
    """Each figure of the module's docstring, on the broker ``settings`` point at."""
    bootstrap = bootstrap_of(settings.broker)
    run = os.urandom(3).hex()
    prefix = f"bench-sink-{run}"
    names = TopicNames(prefix)
    tables = {k: f"bench_{k}_{run}" for k in ("alone", "predictions", "samples", "naive")}
    predictions, samples = bench_frames(rows, run)
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dsn = settings.sink_dsn.get_secret_value()
        if not dsn:
            dsn = stack.enter_context(start_postgres(work / "postgres", settings=DURABLE)).dsn
        create_topics(bootstrap, topic_specs(settings.model_copy(update={"topic_prefix": prefix}),
                                             [f"{prefix}-{s}" for s in ("sink_predictions",
                                                                        "sink_samples")]))
        asyncio.run(fill_topic(bootstrap, settings, names.predictions, [
            (b.device.encode(), encode_prediction_batch(b)) for b in predictions]))
        asyncio.run(fill_topic(bootstrap, settings, names.samples, [
            (b.device.encode(), encode_sample_batch(b)) for b in samples]))
        try:
            results = {
                "writer": asyncio.run(writer_alone(dsn, tables["alone"], predictions,
                                                   settings.sink_max_rows)),
                "sink_predictions": stage_rate(settings, "sink_predictions", prefix, dsn,
                                               tables["predictions"], rows, work),
                "sink_samples": stage_rate(settings, "sink_samples", prefix, dsn,
                                           tables["samples"], rows, work),
                "naive": asyncio.run(naive_peer(bootstrap, names.predictions, dsn,
                                                tables["naive"], min(rows, NAIVE_ROWS))),
            }
        finally:
            if settings.sink_dsn.get_secret_value():
                asyncio.run(drop_tables(dsn, list(tables.values())))
    return results


async def drop_tables(dsn: str, tables: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table in tables:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


def print_sink(runs: list[tuple[str, dict[str, Any]]], rows: int = ROWS) -> None:
    """One table: each figure per broker, beside the bar."""
    print(f"\nrows/s into PostgreSQL (fsync on), draining a backlog of {rows:,} rows "
          f"(frames of {FRAME_ROWS}); upserts by (device, sample id)")
    cell = 22
    print(f"{'':34}" + "".join(f"{label:>{cell}}" for label, _ in runs) + f"{'bar':>10}")
    lines = (("writer alone (no broker)", "writer"), ("sink_predictions", "sink_predictions"),
             ("sink_samples", "sink_samples"),
             (f"naive: one INSERT per row ({NAIVE_ROWS:,})", "naive"))
    for title, key in lines:
        bar = f"{BAR_ROWS_PER_S:,}" if key.startswith("sink_") else "-"
        print(f"{title:34}" + "".join(f"{r[key]:>{cell},.0f}" for _, r in runs) + f"{bar:>10}")
