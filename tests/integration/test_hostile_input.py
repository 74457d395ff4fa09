"""Hostile input on the real embedded broker, through a real ``edgewise worker``: a mix of
over 1,000 hostile and good frames on the samples and predictions topics. The worker stays
up, every hostile frame is in the dead-letter topic with its reason (once per stage that
reads its topic), and every good sample is predicted and aggregated."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import (
    decode_prediction_batch,
    encode_prediction_batch,
    encode_sample_batch,
)
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures import hostile
from tests.fixtures.kafka import consume_until, env_for, produce, start_worker

pytestmark = pytest.mark.integration

STAGES = ["score", "route", "review", "aggregate"]
HOSTILE_SAMPLES = 600
HOSTILE_PREDICTIONS = 500
READERS = {"samples": ("score",), "predictions": ("route", "aggregate")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hostile_frames_are_dead_lettered_and_good_ones_processed(
    embedded_broker: EmbeddedBroker, models_dir: Path, tmp_path: Path, unique_prefix: str,
) -> None:
    prefix = unique_prefix
    settings = Settings(models_dir=models_dir, data_dir=tmp_path, topic_prefix=prefix,
                        app_id=prefix)
    create_topics(embedded_broker.bootstrap,
                  topic_specs(settings, [f"{prefix}-aggregate-review-route-score"]))
    env = env_for(settings, embedded_broker.url, prefix, max_message_bytes=hostile.MAX_BYTES,
                  max_batch_samples=hostile.MAX_SAMPLES,
                  max_future_skew_seconds=hostile.SKEW, tumbling_seconds=60, windows_kept=10)
    names = TopicNames(prefix)
    rng = random.Random(31)
    expected: collections.Counter[tuple[str, str, str]] = collections.Counter()
    samples: list[tuple[bytes, bytes]] = []
    good_ids: dict[str, set[str]] = collections.defaultdict(set)
    for i in range(HOSTILE_SAMPLES):
        data, reason = hostile.hostile_sample(rng)
        samples.append((b"hostile", data))
        expected[("score", reason, sha(data))] += 1
        if i % 10 == 0:
            batch = hostile.good_sample_batch(rng, device=f"cam-{i % 3}")
            samples.append((batch.device.encode(), encode_sample_batch(batch)))
            good_ids[batch.device] |= set(batch.ids)
    predictions: list[tuple[bytes, bytes]] = []
    for i in range(HOSTILE_PREDICTIONS):
        data, reason = hostile.hostile_prediction(rng)
        predictions.append((b"hostile", data))
        for stage in READERS["predictions"]:
            expected[(stage, reason, sha(data))] += 1
        if i % 10 == 0:
            scored = hostile.good_prediction_batch(rng, device=f"edge-{i % 2}")
            predictions.append((scored.device.encode(), encode_prediction_batch(scored)))
            good_ids[scored.device] |= set(scored.ids)

    worker = start_worker(env, STAGES, tmp_path / "worker.log")
    try:
        asyncio.run(produce(embedded_broker.bootstrap, names.samples, samples))
        asyncio.run(produce(embedded_broker.bootstrap, names.predictions, predictions))
        letters = asyncio.run(consume_until(
            embedded_broker.bootstrap, names.dead_letters,
            lambda records: len(records) >= sum(expected.values()), timeout=120))
        scored = asyncio.run(consume_until(
            embedded_broker.bootstrap, names.predictions,
            lambda records: all(_ids_in(records).get(d, set()) >= ids
                                for d, ids in good_ids.items()),
            timeout=60))
        windows = {device: _poll_count(worker, device, len(ids))
                   for device, ids in good_ids.items()}
        assert worker.process.poll() is None, "the worker died"
        assert worker.get("/healthz") is not None
    finally:
        worker.stop()

    got = collections.Counter()
    for record in letters:
        letter = orjson.loads(record.value)
        got[(letter["stage"], letter["reason"], letter["original_sha256"])] += 1
    assert got == expected
    assert len({reason for _, reason, _ in expected}) >= 20
    for device, ids in good_ids.items():
        assert _ids_in(scored)[device] >= ids, device
        assert windows[device] == len(ids), device


def _ids_in(records: list[Any]) -> dict[str, set[str]]:
    """Sample ids per device of the decodable prediction frames among ``records``."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for record in records:
        try:
            batch = decode_prediction_batch(record.value, hostile.MAX_BYTES,
                                            hostile.MAX_SAMPLES, future_skew=hostile.SKEW)
        except ValueError:
            continue  # one of the hostile frames sent straight to the topic
        out[batch.device] |= set(batch.ids)
    return out


def _poll_count(worker: Any, device: str, want: int, timeout: float = 30.0) -> int:
    """Samples counted in the device's windows once they reach ``want`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            view = worker.get(f"/api/devices/{device}/windows?kind=tumbling")
            count = sum(w["total"]["count"] for w in view["current"] + view["closed"])
        except OSError:
            pass
        if count >= want:
            break
        time.sleep(0.3)
    return count
