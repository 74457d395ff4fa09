"""Database change streams end to end: digits rows in PostgreSQL, captured, trained from, scored.

``edgewise db load digits`` fills the train and test tables; one worker runs the cdc,
cdc_transform, score and evaluate stages; ``edgewise train digits --from-topic`` trains v2
from the train table's change stream; rows then inserted into the test table are scored by
v2 and show up in ``/api/evaluation`` within seconds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from edgewise.agents.cdc.db_load import split_digits
from edgewise.app.core.settings import Settings
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models.registry import ModelRegistry
from tests.fixtures.cdc import (
    new_database,
    run_cli,
    slot_name,
)
from tests.fixtures.kafka import WorkerProcess, env_for, start_worker
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

STAGES = ["cdc", "cdc_transform", "score", "evaluate"]


def poll(worker: WorkerProcess, path: str, ok: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = worker.get(path)
        if ok(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{path} not as expected after {timeout}s: {value}\n"
                         f"{worker.log.read_text()[-3000:]}")


def model_count(view: dict[str, Any], model: str) -> int:
    figures = view["models"].get(model)
    return figures["cumulative"]["count"] if figures else 0


async def insert_test_rows(dsn: str, count: int) -> float:
    """New labelled rows in the test table (ids from 100001); returns the commit time."""
    images, labels = split_digits()["test"]
    rows = [(100_000 + i, int(labels[i]), images[i].astype("uint8").tobytes(), "test")
            for i in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany("INSERT INTO public.digits_test VALUES ($1, $2, $3, $4)", rows)
        committed = time.monotonic()
        await conn.execute("UPDATE public.digits_test SET label = label WHERE id = 100001")
        await conn.execute("DELETE FROM public.digits_test WHERE id = 1")
        return committed
    finally:
        await conn.close()


def test_rows_inserted_into_the_test_table_are_scored_and_evaluated(
    postgres_module: PostgresServer, embedded_broker: EmbeddedBroker,
    tmp_path: Path, unique_prefix: str,
) -> None:
    dsn = new_database(postgres_module)
    loaded = run_cli(["db", "load", "digits", "--dsn", dsn])
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines() == ["loaded 1347 rows into public.digits_train",
                                          "loaded 450 rows into public.digits_test"]
    assert "COPY public.digits_train" in loaded.stderr  # the progress bar

    models = tmp_path / "models"
    settings = Settings(models_dir=models, data_dir=tmp_path / "data",
                        topic_prefix=unique_prefix, app_id=unique_prefix)
    env = env_for(settings, embedded_broker.url, unique_prefix, cdc_dsn=dsn,
                  cdc_tables="public.digits_train,public.digits_test",
                  cdc_topic_prefix=unique_prefix, cdc_slot=slot_name(unique_prefix),
                  cdc_partitions=4, cdc_poll_seconds=0.02, evaluation_window_seconds=5)
    worker = start_worker(env, STAGES, tmp_path / "worker.log")
    try:
        first = poll(worker, "/api/evaluation", lambda v: model_count(v, "digits:1") >= 450,
                     timeout=60)
        assert model_count(first, "digits:1") == 450  # the snapshot of the test table
        assert first["replayed"] == 0

        trained = run_cli(["train", "digits", "--from-topic",
                           f"{unique_prefix}.public.digits_train", "--broker",
                           embedded_broker.url], env=env)
        assert trained.returncode == 0, trained.stderr
        assert "1347 change events -> 1347 labelled rows" in trained.stdout
        meta = ModelRegistry(models).meta("digits", 2)
        assert meta.training_data["topic"] == f"{unique_prefix}.public.digits_train"
        assert meta.training_data["rows"] == 1347 and meta.metrics["accuracy"] > 0.9
        poll(worker, "/api/models", lambda v: any(
            m["version"] == 2 and m["serving"] for m in v["models"]), timeout=20)

        committed = asyncio.run(insert_test_rows(dsn, 200))
        view = poll(worker, "/api/evaluation?device=cdc:",
                    lambda v: model_count(v, "digits:2") >= 200, timeout=20)
        elapsed = time.monotonic() - committed
        figures = view["models"]["digits:2"]
        assert figures["cumulative"]["count"] == 200, figures  # the update is a replay
        assert figures["cumulative"]["accuracy"] > 0.85
        assert 0 < figures["cumulative"]["log_loss"] < 2
        assert sum(w["count"] for w in figures["windows"]) == 200
        assert view["replayed"] >= 1 and view["devices"] == 1
        print(f"\n200 rows inserted -> scored by v2 and in /api/evaluation in {elapsed:.1f}s")
        assert elapsed < 15
        metrics = worker.get("/metrics")
        assert 'edgewise_dead_letters_total{reason' not in metrics  # deletes are skipped
        assert 'edgewise_events_out_total{stage="cdc"}' in metrics
    finally:
        worker.stop()
