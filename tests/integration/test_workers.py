"""Stages as their own processes: two workers share the partitions."""

from __future__ import annotations

import asyncio
import collections
import re
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.kafka import consume_until, env_for, produce, start_worker

pytestmark = pytest.mark.integration


def scored_samples(metrics: str) -> float:
    match = re.search(r'^edgewise_samples_total\{stage="score"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_two_workers_share_partitions_score_everything_and_answer_for_each_device(
    broker: BrokerUnderTest, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    """Both score (each its share, every sample once or more), and each device's window
    view is answered by either worker: the owner itself, the other forwarding to it."""
    settings = Settings(models_dir=models_dir, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    app_id = f"{unique_prefix}-aggregate-score"
    create_topics(broker.bootstrap, topic_specs(settings, [app_id]))
    env = env_for(settings, broker.url, unique_prefix, tumbling_seconds=60)
    workers = [start_worker(env, ["score", "aggregate"], tmp_path / f"w{i}.log")
               for i in range(2)]
    names = TopicNames(unique_prefix)
    try:
        time.sleep(8)  # let the group settle with both members (Tansu joins in ~3 s)
        sim = DigitSimulator(devices=16, batch_size=50, hard_share=0.2, seed=3)
        batches = [sim.next_batch() for _ in range(40)]
        sent = [i for b in batches for i in b.ids]
        asyncio.run(produce(broker.bootstrap, names.samples,
                            [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
        records = asyncio.run(consume_until(
            broker.bootstrap, names.predictions,
            lambda recs: len({i for r in recs for i in decode_prediction_batch(
                r.value, 10**7).ids}) >= len(sent), timeout=90))
        scored = collections.Counter(
            i for r in records for i in decode_prediction_batch(r.value, 10**7).ids)
        assert set(scored) == set(sent)
        duplicates = sum(c - 1 for c in scored.values())
        shares = [scored_samples(w.get("/metrics")) for w in workers]
        assert all(share > 0 for share in shares), shares
        assert sum(shares) == len(sent) + duplicates

        expected = collections.Counter()
        for b in batches:
            expected[b.device] += len(b)
        for device, count in expected.items():
            for worker in workers:
                view = _wait_for_count(worker, device, count)
                assert "error" not in view, (device, view)
                windows = view["current"] + view["closed"]
                # a sample scored twice (a rebalance replays) is still counted once
                assert sum(w["total"]["count"] for w in windows) == count
        local = [{d["device"] for d in w.get("/api/devices")["devices"]} for w in workers]
        assert local[0] and local[1] and not local[0] & local[1], local
    finally:
        for worker in workers:
            worker.stop()


def _wait_for_count(worker: Any, device: str, count: int, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    view: Any = None
    while time.monotonic() < deadline:
        try:
            view = worker.get(f"/api/devices/{device}/windows?kind=tumbling")
            if sum(w["total"]["count"] for w in view["current"] + view["closed"]) >= count:
                return view
        except urllib.error.HTTPError as exc:
            view = {"error": exc.code, "body": exc.read()[:300], "port": worker.port}
        time.sleep(0.3)
    return view
