"""``edgewise bench score``: figures side by side, per broker (``--broker``), in one run.

For the linear digits model and a 100-tree random forest, samples/s of
  (1) the ceiling, batched ``predict_proba`` with no broker at all;
  (2) the naive loop people write first: an aiokafka consumer that decodes one JSON
      message, predicts one row and produces one result (fire-and-forget, orjson);
  (3) edgewise's score stage (an ``edgewise worker --stage score`` process) fed with the
      simulator's batches.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.bench.harness import (
    collect_predictions,
    fill_topic,
    start_score_worker,
    tuned_producer,
)
from edgewise.app.core import broker_profile
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.processes import stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

CEILING_BATCH = 512
STAGE_BATCH = 256
BIG_BATCH = 16_384  # what the score stage hands the model when 64 batches of 256 queue up


def ceiling(model: Any, features: np.ndarray, batch: int = CEILING_BATCH) -> float:
    """Rows/s of batched predict_proba, no broker."""
    start = time.perf_counter()
    for i in range(0, len(features), batch):
        model.predict_proba(features[i : i + batch])
    return len(features) / (time.perf_counter() - start)


async def naive_loop(bootstrap: str, settings: Settings, model: Any, topic: str,
                     out_topic: str, count: int) -> float:
    """Rows/s of the one-message, one-row, one-send loop."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                **broker_profile.consumer_options(settings))
    producer = tuned_producer(bootstrap, settings)
    await consumer.start()
    await producer.start()
    seen, start = 0, 0.0
    try:
        async for msg in consumer:
            if not seen:
                start = time.perf_counter()
            doc = orjson.loads(msg.value)
            row = np.asarray(doc["pixels"], dtype=np.float64).reshape(1, -1)
            probs = model.predict_proba(row)[0]
            label = int(np.argmax(probs))
            await producer.send(out_topic, orjson.dumps(
                {"id": doc["id"], "label": label, "confidence": float(probs[label])}))
            seen += 1
            if seen >= count:
                break
        await producer.flush()
        return (count - 1) / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


def score_stage(settings: Settings, bootstrap: str, url: str, models: Path, name: str,
                samples: int, work: Path) -> float:
    """Samples/s of edgewise's score stage draining a backlog of simulator batches."""
    prefix = f"bench-{name}-{os.urandom(2).hex()}"
    app_id = f"{prefix}-score"
    create_topics(bootstrap, topic_specs(settings.model_copy(
        update={"topic_prefix": prefix}), [app_id]))
    sim = DigitSimulator(devices=8, batch_size=STAGE_BATCH, hard_share=0.2, seed=5)
    batches = [sim.next_batch() for _ in range(samples // STAGE_BATCH)]
    asyncio.run(fill_topic(bootstrap, settings, TopicNames(prefix).samples,
                      [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
    proc = start_score_worker(settings, url, prefix, models, name, work / f"{prefix}.log")
    try:
        found = asyncio.run(collect_predictions(
            bootstrap, TopicNames(prefix).predictions, len(batches) * STAGE_BATCH, 180))
    finally:
        stop_process(proc, 20)
    stamps = sorted(b.scored_at for b, _ in found)
    total = sum(len(b) for b, _ in found)
    first_call = sum(len(b) for b, _ in found if b.scored_at == stamps[0])
    return (total - first_call) / max(stamps[-1] - stamps[0], 1e-9)


def bench_score(settings: Settings, samples: int) -> list[dict[str, Any]]:
    """The three figures for both models on the broker ``settings`` point at (running)."""
    rows = []
    bootstrap = bootstrap_of(settings.broker)
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as tmp:
        work = Path(tmp)
        registry = ModelRegistry(work / "models")
        sim = DigitSimulator(devices=1, batch_size=1, hard_share=0.2, seed=4)
        features = np.concatenate([sim.next_batch(4096).features() for _ in range(25)])
        for algorithm, naive_n in (("linear", 5000), ("forest", 600)):
            trained = train_digits(algorithm)
            name = f"digits-{algorithm}"
            registry.register(name, trained.model, algorithm=algorithm)
            ceil = ceiling(trained.model, features.astype(np.float64))
            ceil_big = ceiling(trained.model, features.astype(np.float64), BIG_BATCH)
            topic = f"naive-{algorithm}-{os.urandom(2).hex()}"
            samples_spec = next(t for t in topic_specs(settings.model_copy(
                update={"topic_prefix": topic}), []) if t.name.endswith("samples"))
            # Apache Kafka creates no topic on first use: the naive loop's output too
            create_topics(bootstrap, [samples_spec,
                                      replace(samples_spec, name=f"{topic}-out")])
            raw = [(None, orjson.dumps({"id": f"n{i}", "pixels": row.tolist()}))
                   for i, row in enumerate(features[:naive_n].astype(int))]
            asyncio.run(fill_topic(bootstrap, settings, f"{topic}-samples", raw))
            naive = asyncio.run(naive_loop(bootstrap, settings, trained.model,
                                           f"{topic}-samples", f"{topic}-out", naive_n))
            n = samples or (300_000 if algorithm == "linear" else 150_000)
            ours = score_stage(settings, bootstrap, settings.broker, work / "models", name, n,
                               work)
            rows.append({"model": algorithm, "ceiling": ceil, "ceiling_big": ceil_big,
                         "naive": naive, "edgewise": ours})
    return rows


def print_score(runs: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """One table, the brokers side by side (the ceiling is the first run's: no broker)."""
    print("samples/s; ceiling = predict_proba alone in batches of 512 and of 16,384 rows")
    width = 32
    print(f"{'':34}" + "".join(f"{label:>{width}}" for label, _ in runs))
    print(f"{'model':8} {'ceiling@512':>12} {'ceiling@16k':>12}" + "".join(
        f"{'naive loop':>11} {'edgewise':>10} {'vs naive':>9}" for _ in runs))
    for i, first in enumerate(runs[0][1]):
        line = f"{first['model']:8} {first['ceiling']:12,.0f} {first['ceiling_big']:12,.0f}"
        for _, rows in runs:
            r = rows[i]
            line += f"{r['naive']:11,.0f} {r['edgewise']:10,.0f} {r['edgewise'] / r['naive']:8.0f}x"
        print(line)
