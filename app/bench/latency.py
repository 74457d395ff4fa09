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
from edgewise.app.core.topics import TopicNames, bootstrap_of, create_topics, topic_specs
from edgewise.app.services.processes import stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

EDGE_BATCH = 10
WARMUP_SECONDS = 1.0
SETTLE_SECONDS = 5.0
FAUST_DEFAULT_WAIT_MS = 1500


def _measure(settings: Settings, models: Path, work: Path, rate: float, seconds: float,
             wait_ms: int) -> dict[str, Any]:
    prefix = f"lat-{wait_ms}-{os.urandom(2).hex()}"
    bootstrap = bootstrap_of(settings.broker)
    create_topics(bootstrap, topic_specs(settings.model_copy(
        update={"topic_prefix": prefix}), [f"{prefix}-score"]))
    proc = start_score_worker(settings, settings.broker, prefix, models, "digits",
                              work / f"{prefix}.log", {"EDGEWISE_FETCH_WAIT_MS": str(wait_ms)})
    names = TopicNames(prefix)
    try:
        time.sleep(SETTLE_SECONDS)  # the consumer group forms before we start the clock

        async def both() -> tuple[int, list[Any]]:
            collect = asyncio.create_task(collect_predictions(
                bootstrap, names.predictions, int(rate * seconds) - EDGE_BATCH,
                seconds + 30))
            sent = await send_paced(bootstrap, settings, names.samples, rate, seconds,
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
    """Latency at ``rate`` samples/s for edgewise's fetch wait and Faust's default, on the
    broker ``settings`` point at (running)."""
    with tempfile.TemporaryDirectory(prefix="edgewise-lat-") as tmp:
        work = Path(tmp)
        trained = train_digits("linear")
        ModelRegistry(work / "models").register("digits", trained.model, algorithm="linear")
        ours = settings.fetch_wait_ms if settings.fetch_wait_ms >= 0 else 20
        return [_measure(settings, work / "models", work, rate, seconds, wait)
                for wait in (ours, FAUST_DEFAULT_WAIT_MS)]


def print_latency(runs: list[tuple[str, list[dict[str, Any]]]], rate: float) -> None:
    """One table, the brokers side by side."""
    print(f"latency at {rate:,.0f} samples/s, edge timestamp to prediction (ms); "
          "sc = scored by the score stage, rc = received by a consumer")
    width = 36
    print(f"{'':28}" + "".join(f"{label:>{width}}" for label, _ in runs))
    print(f"{'config':28}" + "".join(
        f"{'samples':>8}{'sc.p50':>7}{'sc.p99':>7}{'rc.p50':>7}{'rc.p99':>7}" for _ in runs))
    labels = ["edgewise (fetch wait {} ms)", "Faust default ({} ms wait)"]
    for i, label in enumerate(labels):
        line = f"{label.format(runs[0][1][i]['fetch_wait_ms']):28}"
        for _, rows in runs:
            r = rows[i]
            line += (f"{r['measured']:8}{r['scored_p50']:7.1f}{r['scored_p99']:7.1f}"
                     f"{r['received_p50']:7.1f}{r['received_p99']:7.1f}")
        print(line)
