"""A broker of a three-node Apache Kafka cluster SIGKILLed in the middle of a run, then
restarted: topics are replicated three times with two replicas in sync for a write, and every
producer waits for ``acks=all`` and is idempotent, so nothing is lost and nobody stops.

10,000 samples go in while one broker dies and comes back; every sample is predicted, the
windowed aggregates equal the ground truth exactly (they count each sample id once, so
replays after the failover change nothing), and both workers are still alive and healthy.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core import broker_profile
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.app.services.apache_kafka import KafkaCluster
from tests.fixtures.kafka import WorkerProcess, consume_until, env_for, start_worker

pytestmark = pytest.mark.integration

TOTAL = 10_000
DEVICES = 8
BATCH = 50
KILLED = 1  # index of the node SIGKILLed


def window_total(view: dict[str, Any]) -> int:
    return sum(w["total"]["count"] for w in view["current"] + view["closed"])


async def topic_replicas(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(replicas, in sync) of each partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return [(len(p["replicas"]), len(p["isr"])) for p in described[0]["partitions"]]
    finally:
        await admin.close()


async def produce_through_failover(cluster: KafkaCluster, settings: Settings, topic: str,
                                   batches: list[SampleBatch]) -> dict[str, float]:
    """Send the batches at a steady pace; kill a broker after 30% of them, restart it after
    60%. The producer is the Kafka profile's (idempotent, acks=all) and must ride it out."""
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap,
                                **broker_profile.producer_options(settings))
    await producer.start()
    timings: dict[str, float] = {}
    try:
        pending = []
        started = time.monotonic()
        for i, batch in enumerate(batches):
            if i == int(len(batches) * 0.3):
                await asyncio.to_thread(cluster.kill_node, KILLED)
                timings["killed_at"] = time.monotonic() - started
            if i == int(len(batches) * 0.6):
                began = time.monotonic()
                await asyncio.to_thread(cluster.restart_node, KILLED)
                timings["restart_seconds"] = time.monotonic() - began
            pending.append(await producer.send(topic, encode_sample_batch(batch),
                                               key=batch.device.encode()))
            await asyncio.sleep(0.04)
        await asyncio.gather(*pending)
        timings["produced_in"] = time.monotonic() - started
    finally:
        await producer.stop()
    return timings


def wait_for_windows(worker: WorkerProcess, device: str, count: int,
                     timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {"current": [], "closed": []}
    while time.monotonic() < deadline:
        try:
            view = worker.get(f"/api/devices/{device}/windows?kind=tumbling")
            if window_total(view) >= count:
                return view
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return view


def test_a_broker_killed_mid_run_loses_nothing_and_stops_no_worker(
    kafka_cluster: KafkaCluster, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    settings = Settings(broker=kafka_cluster.url, broker_profile="kafka", models_dir=models_dir,
                        data_dir=tmp_path, topic_prefix=unique_prefix, app_id=unique_prefix,
                        partitions=4)
    names = TopicNames(unique_prefix)
    create_topics(kafka_cluster.bootstrap, topic_specs(
        settings, [f"{unique_prefix}-score", f"{unique_prefix}-aggregate"]))
    assert set(asyncio.run(topic_replicas(kafka_cluster.bootstrap, names.samples))) == {(3, 3)}
    env = env_for(settings, kafka_cluster.url, unique_prefix, tumbling_seconds=3600,
                  windows_kept=10)
    scorer = start_worker(env, ["score"], tmp_path / "score.log")
    aggregator = start_worker(env, ["aggregate"], tmp_path / "aggregate.log")
    try:
        sim = DigitSimulator(DEVICES, BATCH, hard_share=0.2, seed=11)
        batches = [sim.next_batch() for _ in range(TOTAL // BATCH)]
        sent = [i for b in batches for i in b.ids]
        assert len(set(sent)) == TOTAL
        timings = asyncio.run(produce_through_failover(kafka_cluster, settings, names.samples,
                                                       batches))
        records = asyncio.run(consume_until(
            kafka_cluster.bootstrap, names.predictions,
            lambda recs: len({i for r in recs for i in decode_prediction_batch(
                r.value, 10**7).ids}) >= TOTAL, timeout=120))
        scored = collections.Counter(
            i for r in records for i in decode_prediction_batch(r.value, 10**7).ids)
        assert set(scored) == set(sent), f"{len(set(sent) - set(scored))} samples lost"
        truth = collections.Counter(b.device for b in batches for _ in b.ids)
        for device, count in truth.items():
            view = wait_for_windows(aggregator, device, count)
            assert window_total(view) == count, (device, view.get("replayed"))
        for worker in (scorer, aggregator):
            assert worker.process.poll() is None, worker.log.read_text()[-3000:]
            assert worker.get("/healthz") is not None
        print(f"failover run: {timings}, duplicates {sum(scored.values()) - TOTAL}")
    finally:
        scorer.stop()
        aggregator.stop()
    assert all(n.is_running for n in kafka_cluster.nodes), "the restarted node should be up"
