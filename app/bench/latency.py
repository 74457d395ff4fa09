"""``edgewise bench latency``: edge timestamp to prediction, at a fixed rate.

Each sample's timestamp is its capture time (spread over the batching interval, so the
edge's own batching wait is counted). Two figures per configuration: until the score stage
produced the prediction, and until a downstream consumer received it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.app.bench.harness import collect_predictions, send_paced, start_score_worker
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.app.services.processes import stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

EDGE_BATCH = 10
WARMUP_SECONDS = 1.0
SETTLE_SECONDS = 5.0
FAUST_DEFAULT_WAIT_MS = 1500


def _measure(settings: Settings, broker: EmbeddedBroker, models: Path, work: Path,
             rate: float, seconds: float, wait_ms: int) -> dict[str, Any]:
    prefix = f"lat-{wait_ms}-{os.urandom(2).hex()}"
    create_topics(broker.bootstrap, topic_specs(settings.model_copy(
        update={"topic_prefix": prefix}), [f"{prefix}-score"]))
    proc = start_score_worker(settings, broker.url, prefix, models, "digits",
                              work / f"{prefix}.log", {"EDGEWISE_FETCH_WAIT_MS": str(wait_ms)})
    names = TopicNames(prefix)
    try:
        time.sleep(SETTLE_SECONDS)  # the consumer group forms before we start the clock

        async def both() -> tuple[int, list[Any]]:
            collect = asyncio.create_task(collect_predictions(
                broker.bootstrap, names.predictions, int(rate * seconds) - EDGE_BATCH,
                seconds + 30))
            sent = await send_paced(broker.bootstrap, settings, names.samples, rate, seconds,
                                    EDGE_BATCH, devices=4, seed=6)
            return sent, await collect

        sent, found = asyncio.run(both())
    finally:
        stop_process(proc, 20)
    start = min(float(b.timestamps.min()) for b, _ in found) + WARMUP_SECONDS
    scored, received = [], []
    for batch, arrived in found:
        keep = batch.timestamps >= start
        scored.append(batch.latency_ms[keep])
        received.append((arrived - batch.timestamps[keep]) * 1000.0)
    s, r = np.concatenate(scored), np.concatenate(received)
    return {"fetch_wait_ms": wait_ms, "sent": sent, "measured": int(len(s)),
            "scored_p50": float(np.percentile(s, 50)), "scored_p99": float(np.percentile(s, 99)),
            "received_p50": float(np.percentile(r, 50)),
            "received_p99": float(np.percentile(r, 99))}


def bench_latency(settings: Settings, rate: float, seconds: float) -> list[dict[str, Any]]:
    """Latency at ``rate`` samples/s for edgewise's fetch wait and Faust's default."""
    with tempfile.TemporaryDirectory(prefix="edgewise-lat-") as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        bench = settings.model_copy(update={"broker": broker.url, "broker_profile": "embedded"})
        trained = train_digits("linear")
        ModelRegistry(work / "models").register("digits", trained.model, algorithm="linear")
        ours = settings.fetch_wait_ms if settings.fetch_wait_ms >= 0 else 20
        return [_measure(bench, broker, work / "models", work, rate, seconds, wait)
                for wait in (ours, FAUST_DEFAULT_WAIT_MS)]


def print_latency(rows: list[dict[str, Any]], rate: float) -> None:
    print(f"latency at {rate:,.0f} samples/s, edge timestamp to prediction (ms)")
    print(f"{'config':28} {'samples':>8} {'scored p50':>11} {'scored p99':>11} "
          f"{'received p50':>13} {'received p99':>13}")
    labels = ["edgewise (fetch wait {} ms)", "Faust default ({} ms wait)"]
    for label, r in zip(labels, rows, strict=False):
        print(f"{label.format(r['fetch_wait_ms']):28} {r['measured']:8} {r['scored_p50']:11.1f} "
              f"{r['scored_p99']:11.1f} {r['received_p50']:13.1f} {r['received_p99']:13.1f}")
