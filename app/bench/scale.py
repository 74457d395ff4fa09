"""``edgewise bench scale``: the score stage alone and the whole hub pipeline with 1, 2 and 3
replicas on one broker, side by side per broker.

Each run starts its replicas on empty topics of their own, waits until the consumer group
has them all (so no rebalance falls inside the measurement), fills the samples topic with
a backlog as fast as the broker takes it while the replicas read it, and times from the
first record written until the replicas together counted every sample (score alone; or
route, aggregate and evaluate every sample and review every routed item, as in ``bench
pipeline``). The backlog's fill rate is printed
beside as the ceiling the input allowed (a stage faster than it shows the fill rate), and
``n ×`` the one-replica figure as linear scaling. On a
machine with fewer cores than replicas the replicas share the cores: the per-replica
figure then falls, and that is what the table shows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.bench.harness import fill_topic, start_stage_worker
from edgewise.app.bench.pipeline import PIPELINE, drain, scrape, stage_counts
from edgewise.app.core.consumer_lag import read_groups
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.processes import free_port, stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

REPLICAS = (1, 2, 3)
BATCH = 256
DEVICES = 16
PARTITIONS = 6  # 1, 2 and 3 replicas each get an even share
SAMPLES = {"score": 300_000, "pipeline": 120_000}


def backlog(bootstrap: str, settings: Settings, topic: str, total: int) -> float:
    """Fill ``topic`` with ``total`` samples; the samples/s the broker took them at."""
    sim = DigitSimulator(devices=DEVICES, batch_size=BATCH, hard_share=0.2, seed=17)
    now = time.time()
    batches = [sim.next_batch(now=now) for _ in range(total // BATCH)]
    messages = [(b.device.encode(), encode_sample_batch(b)) for b in batches]
    started = time.monotonic()
    asyncio.run(fill_topic(bootstrap, settings, topic, messages))
    return len(batches) * BATCH / (time.monotonic() - started)


def wait_for_members(bootstrap: str, group: str, n: int, timeout: float = 90.0,
                     interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = asyncio.run(read_groups(bootstrap, [group]))
        except Exception:  # the group is not there yet
            found = []
        if any(g.group == group and g.members == n and g.state == "Stable" for g in found):
            return
        time.sleep(interval)
    raise RuntimeError(f"group {group} did not reach {n} stable members in {timeout:.0f}s")


def measure(settings: Settings, url: str, bootstrap: str, models: Path, work: Path,
            what: str, replicas: int) -> dict[str, float]:
    """Samples/s of ``replicas`` workers of ``what`` (score, or the whole pipeline)."""
    stages = ["score"] if what == "score" else PIPELINE
    prefix = f"scale-{what}-{replicas}-{os.urandom(2).hex()}"
    group = f"{prefix}-{'-'.join(sorted(stages))}"
    local = settings.model_copy(update={"topic_prefix": prefix, "partitions": PARTITIONS})
    create_topics(bootstrap, topic_specs(local, [group]))
    env = {"EDGEWISE_PARTITIONS": str(PARTITIONS), "EDGEWISE_LOG_LEVEL": "warning",
           "EDGEWISE_BROKER_PROFILE": settings.broker_profile}
    ports = [free_port() for _ in range(replicas)]
    procs = []
    try:
        for i, port in enumerate(ports):
            log = work / f"{prefix}-{i}.log"
            procs.append(start_stage_worker(settings, url, prefix, models, "digits", log,
                                            stages, port, env))
        wait_for_members(bootstrap, group, replicas)
        total = SAMPLES[what] // BATCH * BATCH
        started = time.monotonic()  # the replicas read while the backlog is written
        fill = backlog(bootstrap, local, TopicNames(prefix).samples, total)
        counting = ["score"] if what == "score" else ["route", "review", "aggregate",
                                                       "evaluate"]

        def together(_: int) -> dict[str, float]:
            sums: dict[str, float] = {}
            routed = 0.0
            for port in ports:
                scraped = scrape(port)
                routed += scraped["routed"]
                for stage, n in scraped["samples"].items():
                    sums[stage] = sums.get(stage, 0.0) + n
            return stage_counts({"samples": sums, "routed": routed})

        drain(ports[0], counting, total, counts=together)
        rate = total / (time.monotonic() - started)  # never above the fill: the ceiling
        return {"rate": rate, "per_replica": rate / replicas, "fill": fill}
    finally:
        for proc in procs:
            stop_process(proc, 20)


def bench_scale(settings: Settings) -> dict[str, dict[int, dict[str, float]]]:
    """Every figure of the table on ``settings.broker`` (a running broker's URL)."""
    url = settings.broker
    bootstrap = url.split("://", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="edgewise-scale-") as tmp:
        work = Path(tmp)
        models = work / "models"
        trained = train_digits("linear")
        ModelRegistry(models).register("digits", trained.model,
                                       training_data=trained.training_data,
                                       metrics={"accuracy": trained.accuracy}, algorithm="linear")
        return {what: {n: measure(settings, url, bootstrap, models, work, what, n)
                       for n in REPLICAS}
                for what in ("score", "pipeline")}


def print_scale(runs: list[tuple[str, dict[str, dict[int, dict[str, float]]]]]) -> None:
    """Samples/s per replica count, the brokers side by side."""
    cores = os.cpu_count() or 1
    width = max(16, *(len(label) + 2 for label, _ in runs))
    print(f"scale: replicas of the score stage and of the whole pipeline ({', '.join(PIPELINE)})"
          f", batches of {BATCH}, {PARTITIONS} partitions; this machine has {cores} cores, "
          "which the replicas share")
    print(f"{'':34}" + "".join(f"{label:>{width}}" for label, _ in runs))
    for what in ("score", "pipeline"):
        one = {label: r[what][1]["rate"] for label, r in runs}
        for n in REPLICAS:
            print(f"{what + f' x{n} samples/s':34}" + "".join(
                f"{r[what][n]['rate']:>{width},.0f}" for _, r in runs))
            print(f"{'  per replica':34}" + "".join(
                f"{r[what][n]['per_replica']:>{width},.0f}" for _, r in runs))
            if n > 1:
                print(f"{f'  linear ({n} x one)':34}" + "".join(
                    f"{n * one[label]:>{width},.0f}" for label, _ in runs))
        print(f"{'  backlog filled at (ceiling)':34}" + "".join(
            f"{min(r[what][n]['fill'] for n in REPLICAS):>{width},.0f}" for _, r in runs))
