"""A worker running the whole hub pipeline is SIGKILLed at random moments, three times, while
samples arrive at 5,000/s; restarted each time (on Tansu; the replicas of every stage are
killed on both brokers in ``test_chaos_replicas``). Afterwards the window and evaluation
tables equal the ground truth exactly: every sample counted once, however often it was
replayed."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models.registry import ModelRegistry
from edgewise.models.scoring import predict_batches
from edgewise.tables.windows import tumbling_starts
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.kafka import WorkerProcess, env_for, start_worker

pytestmark = pytest.mark.integration

STAGES = ["score", "route", "review", "aggregate", "evaluate"]
RATE = 5_000.0
SECONDS = 12.0
BATCH = 25
DEVICES = 8
KILLS = 3


async def send_at_rate(bootstrap: str, topic: str, batches: list, profile: str) -> None:
    options = {"max_batch_size": 1, "linger_ms": 0} if profile == "embedded" else {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await producer.start()
    try:
        start, sent, futures = time.monotonic(), 0, []
        for batch in batches:
            futures.append(await producer.send(topic, encode_sample_batch(batch),
                                               key=batch.device.encode()))
            sent += len(batch)
            delay = start + sent / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def window_totals(worker: WorkerProcess, device: str) -> dict[float, int]:
    view = worker.get(f"/api/devices/{device}/windows?kind=tumbling")
    return {w["start"]: w["total"]["count"] for w in view["current"] + view["closed"]}


def test_sigkilled_pipeline_worker_leaves_exact_counts(
    embedded_broker: EmbeddedBroker, models_dir: Path, tmp_path: Path, unique_prefix: str,
) -> None:
    broker = BrokerUnderTest("tansu", embedded_broker.url, embedded_broker.bootstrap)
    settings = Settings(models_dir=models_dir, data_dir=tmp_path / "data",
                        topic_prefix=unique_prefix, app_id=unique_prefix, partitions=4)
    app_id = f"{unique_prefix}-{'-'.join(sorted(STAGES))}"
    create_topics(broker.bootstrap, topic_specs(settings, [app_id]))
    env = env_for(settings, broker.url, unique_prefix, tumbling_seconds=10, windows_kept=60,
                  evaluation_window_seconds=600)
    sim = DigitSimulator(devices=DEVICES, batch_size=BATCH, hard_share=0.2, seed=21)
    now = time.time()
    batches = []
    for i in range(int(RATE * SECONDS) // BATCH):
        batch = sim.next_batch(now=now + i * BATCH / RATE)
        batches.append(batch)
    rng = random.Random(7)
    kill_at = sorted(rng.uniform(1.5, SECONDS - 1.0) for _ in range(KILLS))
    log = tmp_path / "worker.log"
    worker = start_worker(env, STAGES, log)
    time.sleep(8.0)  # the group forms before samples flow, so kills fall mid-stream
    restarts = 0

    async def run() -> None:
        nonlocal worker, restarts
        sending = asyncio.create_task(send_at_rate(broker.bootstrap,
                                                   TopicNames(unique_prefix).samples,
                                                   batches, broker.profile))
        started = time.monotonic()
        for moment in kill_at:
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(10)
            worker = await asyncio.to_thread(start_worker, env, STAGES, log)
            restarts += 1
        await sending

    try:
        asyncio.run(run())
    except BaseException:
        worker.stop()
        raise
    total = sum(len(b) for b in batches)
    # the truth: samples per device and tumbling window, and what the model says of each
    truth: dict[str, Counter[float]] = {}
    for b in batches:
        starts = tumbling_starts(b.timestamps, 10.0)
        truth.setdefault(b.device, Counter()).update(starts.tolist())
    model, meta = ModelRegistry(models_dir).load("digits")
    scored = predict_batches(model, meta, batches, 3)
    correct = sum(int((p.labels == p.true_labels).sum()) for p in scored)
    deadline = time.monotonic() + 180
    counts: dict[str, dict[float, int]] = {}
    evaluation: dict = {}
    replayed = 0
    try:
        while time.monotonic() < deadline:
            try:
                counts = {d: window_totals(worker, d) for d in truth}
                evaluation = worker.get("/api/evaluation")["models"].get(
                    f"digits:{meta.version}", {}).get("cumulative", {})
            except (OSError, KeyError):  # recovering its tables: 503, or not there yet
                time.sleep(1.0)
                continue
            if sum(sum(c.values()) for c in counts.values()) >= total and \
                    evaluation.get("count", 0) >= total:
                time.sleep(3.0)  # nothing more may arrive: a double count would show now
                counts = {d: window_totals(worker, d) for d in truth}
                evaluation = worker.get("/api/evaluation")["models"][
                    f"digits:{meta.version}"]["cumulative"]
                replayed = sum(d["replayed"] for d in worker.get("/api/devices")["devices"])
                break
            time.sleep(1.0)
    finally:
        worker.stop()
    print(f"\n{broker.name}: {total} samples, {KILLS} SIGKILLs, {replayed} replays "
          "recognised in the windows")
    assert restarts == KILLS
    assert replayed > 0, "the kills should have made the worker read inputs again"
    assert {d: dict(c) for d, c in truth.items()} == counts, log.read_text()[-3000:]
    assert evaluation["count"] == total and evaluation["correct"] == correct
