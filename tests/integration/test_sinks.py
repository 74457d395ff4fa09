"""The PostgreSQL sinks on a throwaway cluster (initdb): the tables are made when missing,
with their key and their time index, and a replay changes nothing; the real sink agents
(in process) dead-letter hostile frames and what the database refuses, and write the rest;
and on real workers (ingest_http and score; sink_predictions and sink_samples) on the
embedded broker, 1,000 rows POSTed with a fifth of their values missing end as exactly
1,000 predictions and 1,000 archived samples, although the sink worker is SIGKILLed and
restarted and PostgreSQL is restarted while the rows flow. The database restart is last."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest

from edgewise.agents.sinks import predictions as sink_predictions
from edgewise.agents.sinks import samples as sink_samples
from edgewise.agents.sinks.columns import prediction_params, sample_params
from edgewise.agents.sinks.tables import predictions_table, samples_table
from edgewise.agents.sinks.writer import PostgresSink
from edgewise.app.cli.generate import encode_rows, row_source
from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.records import TABULAR, SampleBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import create_topics, topic_specs
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models import tabular
from edgewise.models.registry import ModelRegistry, PromotionLog
from tests.fixtures import hostile
from tests.fixtures.kafka import WorkerProcess, env_for, start_worker, wait_until
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.stages import build_stage, drive, next_value
from tests.integration.test_refs import stop_together

pytestmark = pytest.mark.integration

ROWS = 1000
ROWS_PER_REQUEST = 20
ROWS_PER_SECOND = 120
HOSTILE_PER_SINK = 300
INGEST = ["ingest_http", "score"]
SINKS = ["sink_predictions", "sink_samples"]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return run(query(dsn, sql, *args))


def count(dsn: str, table: str) -> int:
    """Rows of ``table``, 0 while it does not exist or the server is away."""
    try:
        return fetch(dsn, f"SELECT count(*) FROM {table}")[0][0]
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0


def writer(dsn: str, table: Any) -> PostgresSink:
    return PostgresSink(dsn, table, "test", first_delay=0.05, longest_delay=0.2, timeout=10)


# -- the tables and the writer ------------------------------------------------------------


def test_a_table_is_made_with_its_key_and_time_index_and_a_replay_changes_nothing(
        postgres_module: PostgresServer) -> None:
    dsn = postgres_module.dsn
    rng = random.Random(3)
    batches = [hostile.good_prediction_batch(rng, device=f"cam-{i % 2}", n=50)
               for i in range(4)]
    newer = dataclasses.replace(batches[0], scored_at=batches[0].scored_at + 1.0,
                                model_version=2)

    async def scenario() -> list[int]:
        sink = writer(dsn, predictions_table("writer_test.predictions"))
        try:
            written = [await sink.write(prediction_params(batches)[1])]
            written.append(await sink.write(prediction_params(batches)[1]))  # a replay
            written.append(await sink.write(prediction_params([batches[0], newer])[1]))
            written.append(await sink.write(prediction_params([batches[0]])[1]))  # older
            return written
        finally:
            await sink.close()

    assert run(scenario()) == [200, 0, 50, 0]
    rows = fetch(dsn, "SELECT device, sample_id, model_version, label, top_labels, top_probs, "
                      "true_label, extract(epoch FROM sample_time) AS t "
                      "FROM writer_test.predictions")
    assert len(rows) == 200
    by_key = {(r["device"], r["sample_id"]): r for r in rows}
    for batch in batches:
        for i, sample_id in enumerate(batch.ids):
            row = by_key[(batch.device, sample_id)]
            assert row["model_version"] == (2 if batch is batches[0] else 1)
            assert row["label"] == batch.labels[i] == row["top_labels"][0]
            assert row["top_labels"] == batch.top_labels[i].tolist()
            assert np.allclose(row["top_probs"], batch.top_probs[i])
            truth = int(batch.true_labels[i])
            assert row["true_label"] == (None if truth < 0 else truth)
            assert abs(float(row["t"]) - batch.timestamps[i]) < 1e-3
    indexes = {r["indexdef"] for r in fetch(
        dsn, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'writer_test'")}
    assert any("UNIQUE INDEX" in d and "(device, sample_id)" in d for d in indexes), indexes
    assert any("USING brin (sample_time)" in d for d in indexes), indexes


def test_samples_are_archived_as_they_came_with_null_where_a_value_is_missing(
        postgres_module: PostgresServer) -> None:
    dsn = postgres_module.dsn
    gen = np.random.default_rng(4)
    rows = gen.normal(size=(30, 5)).astype(np.float32)
    rows[gen.random(rows.shape) < 0.2] = np.nan
    table = SampleBatch(device="http", kind=TABULAR, ids=[f"t{i}" for i in range(30)],
                        timestamps=np.full(30, time.time()),
                        labels=gen.integers(-1, 3, 30).astype(np.int32), pixels=rows)
    images = hostile.good_sample_batch(random.Random(5), device="cam-9", n=8)

    async def scenario() -> list[int]:
        sink = writer(dsn, samples_table("writer_test.samples"))
        try:
            return [await sink.write(sample_params([table, images])[1]),
                    await sink.write(sample_params([images, table])[1])]
        finally:
            await sink.close()

    assert run(scenario()) == [38, 0]
    stored = {r["sample_id"]: r for r in fetch(
        dsn, "SELECT sample_id, kind, shape, pixels, features, label "
             "FROM writer_test.samples")}
    for i, sample_id in enumerate(table.ids):
        row = stored[sample_id]
        assert row["kind"] == TABULAR and row["shape"] == [5] and row["pixels"] is None
        assert [v is None for v in row["features"]] == np.isnan(rows[i]).tolist()
        kept = ~np.isnan(rows[i])
        assert np.array_equal(np.array(row["features"], dtype=object)[kept].astype(np.float32),
                              rows[i][kept])
    for i, sample_id in enumerate(images.ids):
        row = stored[sample_id]
        assert row["shape"] == [8, 8] and row["features"] is None
        assert row["pixels"] == images.pixels[i].tobytes()


# -- the agents, in process, on the real database -----------------------------------------


async def test_the_sinks_dead_letter_hostile_frames_and_what_the_database_refuses(
        postgres_module: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_module.dsn
    table = "agents_test.predictions"
    sink = writer(dsn, predictions_table(table))  # made as the stage makes it, then given
    (await sink.connect()).terminate()  # a rule of someone else's, which it must respect
    await query(dsn, f"ALTER TABLE {table} ADD CHECK (device <> 'refused')")
    options = dict(sink_dsn=dsn, sink_predictions_table=table,
                   sink_samples_table="agents_test.samples", sink_take_within=0.002,
                   reconnect_min_seconds=0.05, reconnect_max_seconds=0.2)
    rng = random.Random(6)
    sent: dict[str, int] = {}
    for register, name, stage, bad, good, encode in (
            (sink_predictions.register, "edgewise.sink_predictions", "sink_predictions",
             hostile.hostile_prediction, hostile.good_prediction_batch,
             encode_prediction_batch),
            (sink_samples.register, "edgewise.sink_samples", "sink_samples",
             hostile.hostile_sample, hostile.good_sample_batch, encode_sample_batch)):
        stage_run = build_stage(register, name, tmp_path / stage, **options)
        messages: list[tuple[bytes, str | None]] = []
        sent[stage] = 0
        for i in range(HOSTILE_PER_SINK):
            messages.append(bad(rng))
            if i % 10 == 0:
                batch = good(rng)
                sent[stage] += len(batch)
                messages.append((encode(batch), None))
        messages.append(bad(rng))  # its dead letter: the good one before it was handled
        async with stage_run.agent.test_context() as agent:
            await drive(stage_run, agent, stage, messages)
            if stage == "sink_predictions":
                refused = hostile.good_prediction_batch(rng, device="refused", n=4)
                fine = hostile.good_prediction_batch(rng, device="fine", n=4)
                await agent.put(encode_prediction_batch(refused))
                await agent.put(encode_prediction_batch(fine))
                letter = orjson.loads(await next_value(stage_run.dead))
                assert (letter["stage"], letter["reason"]) == (stage, "database_refused")
                assert "CheckViolation" in letter["detail"], letter["detail"]
                assert letter["original_b64"] == base64.b64encode(
                    encode_prediction_batch(refused)).decode()
                wait = time.monotonic() + 10
                while stage_run.samples_counted(stage) < sent[stage] + 4:
                    assert time.monotonic() < wait, "the good frame after it was not written"
                    await asyncio.sleep(0.02)
        assert sum(stage_run.reasons.values()) == HOSTILE_PER_SINK + 1
        assert len(stage_run.reasons) >= 10, stage_run.reasons
    devices = {r["device"]: r["n"] for r in await query(
        dsn, f"SELECT device, count(*) AS n FROM {table} GROUP BY device")}
    assert "refused" not in devices and devices.pop("fine") == 4
    assert sum(devices.values()) == sent["sink_predictions"]
    samples = await query(dsn, "SELECT count(*) AS n FROM agents_test.samples")
    assert samples[0]["n"] == sent["sink_samples"]


# -- real workers: SIGKILL the sink, restart PostgreSQL -----------------------------------


@dataclass
class Workers:
    broker: EmbeddedBroker
    ingest: WorkerProcess
    sinks: WorkerProcess
    env: dict[str, str]
    work: Path
    schema: InputSchema
    dsn: str


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, embedded_broker: EmbeddedBroker,
            postgres_module: PostgresServer) -> Iterator[Workers]:
    work = tmp_path_factory.mktemp("sinks")
    registry = ModelRegistry(work / "models")
    trained = tabular.train_tabular(tabular.bundled("wine", 0.2), trees=20)
    registry.register("tabular", trained.model, training_data=trained.training_data,
                      kind=TABULAR, input_schema=trained.schema)
    PromotionLog(registry, "tabular").pin()
    prefix = f"ts{uuid.uuid4().hex[:8]}"
    settings = Settings(models_dir=registry.root, data_dir=work / "data", topic_prefix=prefix,
                        app_id=prefix, partitions=4)
    create_topics(embedded_broker.bootstrap, topic_specs(settings, [
        f"{prefix}-{'-'.join(sorted(INGEST))}", f"{prefix}-{'-'.join(sorted(SINKS))}"]))
    dsn = postgres_module.dsn
    env = env_for(settings, embedded_broker.url, prefix, model_name="tabular", sink_dsn=dsn,
                  shutdown_seconds=4, reconnect_min_seconds=0.1, reconnect_max_seconds=0.5)
    ingest = start_worker(env, INGEST, work / "ingest.log")
    state = Workers(embedded_broker, ingest, ingest, env, work, trained.schema, dsn)
    try:
        state.sinks = start_worker(env, SINKS, work / "sinks.log")
        wait_until("the ingest producer connected",
                   lambda: ingest.get("/api/ingest")["connected"], timeout=30)
        yield state
    finally:  # the sink worker running then: the test replaces the one it kills
        stop_together([ingest, state.sinks])


class Poster(threading.Thread):
    """POSTs rows at a steady rate, in requests of ROWS_PER_REQUEST, every one accepted."""

    def __init__(self, port: int, rows: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.port, self.rows = port, rows
        self.ids: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.monotonic()
            for start in range(0, len(self.rows), ROWS_PER_REQUEST):
                body, content_type = encode_rows(self.rows[start:start + ROWS_PER_REQUEST],
                                                 "json")
                connection.request("POST", "/api/ingest", body=body,
                                   headers={"Content-Type": content_type})
                response = connection.getresponse()
                answer = orjson.loads(response.read())
                assert response.status == 202, answer
                self.ids += answer["ids"]
                pause = started + (start + ROWS_PER_REQUEST) / ROWS_PER_SECOND - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        except BaseException as exc:  # handed to the test's thread by finish()
            self.error = exc

    def finish(self) -> list[str]:
        self.join(60)
        if self.error is not None:
            raise self.error
        assert not self.is_alive(), "the poster did not finish"
        return self.ids


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels in the worker's /metrics."""
    total = 0.0
    for line in worker.get("/metrics").splitlines():
        match = re.match(rf"{name}\{{([^}}]*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_1000_rows_reach_postgresql_once_through_a_sink_kill_and_a_database_restart(
        workers: Workers, postgres_module: PostgresServer) -> None:
    dsn = workers.dsn
    rows = [row for _, row in zip(range(ROWS), row_source(
        workers.schema, tabular.bundled("wine", 0.0), 0.2, seed=7, run="sink", devices=4),
        strict=False)]
    predictions = lambda: count(dsn, "edgewise_predictions")  # noqa: E731
    split = 2 * ROWS // 5
    first = Poster(workers.ingest.port, rows[:split])
    first.start()
    wait_until("the sink writing", lambda: predictions() >= 100, timeout=60, interval=0.05)
    workers.sinks.stop(sig=9)  # SIGKILL, while rows flow and before they are committed
    restarted = workers.sinks = start_worker(workers.env, SINKS, workers.work / "sinks-2.log")
    ids = first.finish()
    wait_until("the restarted sink caught up", lambda: predictions() >= split, timeout=60)
    second = Poster(workers.ingest.port, rows[split:])
    second.start()
    # the restarted sink holds a connection (it wrote rows of the second part) when the
    # database goes: a sink that joined late would otherwise connect only after the restart
    wait_until("rows flowing again", lambda: predictions() >= split + 50, timeout=30,
               interval=0.05)
    assert second.is_alive(), "the rows should still be coming when the database goes"
    postgres_module.restart()  # fast shutdown: the sink's connection is cut mid-stream, and
    ids += second.finish()  # the rest of the rows come while it is down and after
    assert len(set(ids)) == ROWS and ids == [r["id"] for r in rows]
    wait_until("every prediction in PostgreSQL", lambda: predictions() >= ROWS, timeout=60)
    wait_until("every sample archived", lambda: count(dsn, "edgewise_samples") >= ROWS,
               timeout=30)

    stored = fetch(dsn, "SELECT sample_id, kind, model, model_version, label, confidence, "
                        "top_labels, top_probs, true_label FROM edgewise_predictions")
    assert len(stored) == ROWS and {r["sample_id"] for r in stored} == set(ids), "once each"
    truth = {r["id"]: r["label"] for r in rows}
    for row in stored:
        assert (row["kind"], row["model"], row["model_version"]) == (TABULAR, "tabular", 1)
        assert len(row["top_labels"]) == 3 and row["label"] == row["top_labels"][0]
        assert 0 <= row["confidence"] <= 1 and row["confidence"] == row["top_probs"][0]
        assert row["true_label"] == truth[row["sample_id"]]
    accuracy = np.mean([r["label"] == truth[r["sample_id"]] for r in stored])
    assert accuracy > 0.7

    archived = fetch(dsn, "SELECT sample_id, features, label FROM edgewise_samples")
    assert len(archived) == ROWS and {r["sample_id"] for r in archived} == set(ids)
    sent = {r["id"]: r for r in rows}
    names = workers.schema.names
    nulls = 0
    for row in archived:
        posted = sent[row["sample_id"]]
        assert [v is None for v in row["features"]] == [posted[n] is None for n in names]
        nulls += sum(v is None for v in row["features"])
        assert row["label"] == posted["label"]
    assert 0.15 < nulls / (ROWS * len(names)) < 0.25

    # the restarted sink saw the database go away and came back by itself
    assert metric(restarted, "edgewise_retries_total", stage="sink_predictions") > 0
    assert restarted.process.poll() is None
