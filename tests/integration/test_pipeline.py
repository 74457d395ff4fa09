"""The digits pipeline on Tansu and on Apache Kafka, with edgewise worker processes."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.frames import KIND_SAMPLES, encode_frame
from edgewise.app.core.records import PredictionBatch, SampleBatch
from edgewise.app.core.review_groups import parse_review_group, review_partition
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.models.review_rule import route_low_confidence
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.kafka import consume_until, env_for, produce, start_worker

pytestmark = pytest.mark.integration

STAGES = ["score", "route", "review", "aggregate"]
LOW, MARGIN = 0.6, 0.15


def make_batches(devices: int, total: int, batch: int, seed: int) -> list[SampleBatch]:
    sim = DigitSimulator(devices, batch, hard_share=0.3, seed=seed)
    out, sent = [], 0
    while sent < total:
        b = sim.next_batch(min(batch, total - sent))
        out.append(b)
        sent += len(b)
    return out


def malformed_messages(good: SampleBatch) -> list[tuple[str, bytes]]:
    """(expected reason, bytes) for at least ten kinds of bad input."""
    frame = encode_sample_batch(good)
    n = len(good)
    kinds: list[tuple[str, bytes]] = [
        ("bad_json", b"{not json"),
        ("bad_json", b"\xff\xfe garbage"),
        ("unknown_schema_version", orjson.dumps({"schema": 99, "device": "x", "samples": []})),
        ("unknown_schema_version", b"EW\x07" + frame[3:]),
        ("truncated", frame[: len(frame) // 2]),
        ("trailing_bytes", frame + b"extra"),
        ("wrong_shape", orjson.dumps({"device": "x", "samples": [
            {"id": "a", "ts": 1.0, "pixels": [1] * 63}]})),
        ("nan", encode_frame(KIND_SAMPLES, {"device": "x", "kind": "digits", "ids": ["a"]}, {
            "timestamps": np.array([1.0]), "labels": np.array([1], np.int32),
            "pixels": np.full((1, 8, 8), np.nan, np.float32)})),
        ("out_of_range", orjson.dumps({"device": "x", "samples": [
            {"id": "a", "ts": 1.0, "pixels": [200] * 64}]})),
        ("oversize", b"{" + b" " * 300_000 + b"}"),
        ("missing_field", orjson.dumps({"samples": [{"id": "a", "ts": 1.0, "pixels": [0] * 64}]})),
        ("empty", b""),
        ("duplicate_ids", encode_frame(KIND_SAMPLES, {"device": "x", "kind": "digits",
                                                      "ids": ["a"] * n}, {
            "timestamps": good.timestamps, "labels": good.labels, "pixels": good.pixels})),
        ("bad_label", orjson.dumps({"device": "x", "samples": [
            {"id": "a", "ts": 1.0, "pixels": [0] * 64, "label": "seven"}]})),
    ]
    return kinds


class PipelineRun:
    """What one worker produced from good batches and malformed messages."""

    def __init__(self) -> None:
        self.good: list[SampleBatch] = []
        self.bad_reasons: list[str] = []
        self.predictions: list[PredictionBatch] = []
        self.dead: list[dict[str, Any]] = []
        self.windows: dict[str, dict[str, Any]] = {}
        self.review: dict[str, Any] = {}
        self.review_records: list[Any] = []
        self.corrections_partition: dict[str, int] = {}
        self.partitions = 0
        self.metrics = ""


@pytest.fixture(scope="module")
def pipeline(
    broker: BrokerUnderTest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> PipelineRun:
    tmp = tmp_path_factory.mktemp("pipeline")
    prefix = "pipe"
    settings = Settings(models_dir=models_dir, data_dir=tmp, topic_prefix=prefix, app_id=prefix)
    app_id = f"{prefix}-aggregate-review-route-score"
    create_topics(broker.bootstrap, topic_specs(settings, [app_id]))
    env = env_for(settings, broker.url, prefix, low_confidence=LOW, min_margin=MARGIN,
                  tumbling_seconds=60, windows_kept=10,
                  max_message_bytes=200_000)
    worker = start_worker(env, STAGES, tmp / "worker.log")
    run = PipelineRun()
    names = TopicNames(prefix)
    try:
        run.good = make_batches(devices=5, total=2000, batch=25, seed=1)
        extra = make_batches(devices=2, total=300, batch=20, seed=2)
        messages: list[tuple[bytes, bytes]] = [
            (b.device.encode(), encode_sample_batch(b)) for b in run.good]
        bad = malformed_messages(extra[0])
        for i in range(200):  # 200 malformed, interleaved with good batches
            reason, value = bad[i % len(bad)]
            run.bad_reasons.append(reason)
            messages.append((b"bad-device", value))
            if i % 13 == 0 and extra:
                b = extra.pop()
                run.good.append(b)
                messages.append((b.device.encode(), encode_sample_batch(b)))
        run.good += extra
        messages += [(b.device.encode(), encode_sample_batch(b)) for b in extra]
        total = sum(len(b) for b in run.good)
        asyncio.run(produce(broker.bootstrap, names.samples, messages))

        def all_scored(records: list[Any]) -> bool:
            return sum(len(orjson.loads(r.value[8:8 + int.from_bytes(r.value[4:8], "big")])
                           ["ids"]) for r in records) >= total

        records = asyncio.run(consume_until(broker.bootstrap, names.predictions,
                                            all_scored, timeout=90))
        run.predictions = [decode_prediction_batch(r.value, 10_000_000) for r in records]
        dead = asyncio.run(consume_until(broker.bootstrap, names.dead_letters,
                                         lambda recs: len(recs) >= 200, timeout=60))
        run.dead = [orjson.loads(r.value) for r in dead]
        expected_review = sum(int(route_low_confidence(
            p.confidence, p.margins(), LOW, MARGIN).sum()) for p in run.predictions)
        run.review = _poll(lambda: worker.get("/api/review?limit=1000"),
                           lambda r: r["queued"] >= expected_review)
        run.review_records = asyncio.run(consume_until(
            broker.bootstrap, names.review,
            lambda recs: sum(len(orjson.loads(r.value)["items"]) for r in recs)
            >= expected_review, timeout=30))
        queued = [item["id"] for item in run.review["items"]][:40]
        run.corrections_partition = asyncio.run(_partitions_of(
            broker.bootstrap, names.corrections, queued))
        run.partitions = settings.partitions
        devices = sorted({b.device for b in run.good})
        for device in devices:
            run.windows[device] = _poll(
                lambda d=device: worker.get(f"/api/devices/{d}/windows?kind=tumbling"),
                lambda w, d=device: _window_total(w) >= sum(
                    len(b) for b in run.good if b.device == d))
        run.metrics = worker.get("/metrics")
    finally:
        worker.stop()
    return run


def _window_total(view: dict[str, Any]) -> int:
    windows = view["current"] + view["closed"]
    return sum(w["total"]["count"] for w in windows)


def _poll(fetch: Any, ok: Any, timeout: float = 30.0) -> Any:
    import time
    import urllib.error

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = fetch()
            if ok(value):
                return value
        except urllib.error.HTTPError:
            pass
        time.sleep(0.3)
    return value


def test_every_sample_scored_exactly_once(pipeline: PipelineRun) -> None:
    sent = [i for b in pipeline.good for i in b.ids]
    scored = [i for p in pipeline.predictions for i in p.ids]
    assert len(sent) == 2300
    assert collections.Counter(scored) == collections.Counter(sent)


def test_aggregates_equal_independent_counts(pipeline: PipelineRun) -> None:
    truth = {i: int(b.labels[k]) for b in pipeline.good for k, i in enumerate(b.ids)}
    for device, view in pipeline.windows.items():
        preds = [p for p in pipeline.predictions if p.device == device]
        labels = np.concatenate([p.labels for p in preds])
        expected_labels = collections.Counter(str(x) for x in labels.tolist())
        windows = view["current"] + view["closed"]
        got_labels: collections.Counter[str] = collections.Counter()
        for w in windows:
            got_labels.update(w["total"]["labels"])
        assert got_labels == expected_labels, device
        correct = sum(int(p.labels[k] == truth[i]) for p in preds for k, i in enumerate(p.ids))
        assert sum(w["total"]["labelled"] for w in windows) == len(labels)
        got_correct = sum(round(w["total"]["accuracy"] * w["total"]["labelled"]) for w in windows)
        assert got_correct == correct
        low = sum(int(route_low_confidence(p.confidence, p.margins(), LOW, MARGIN).sum())
                  for p in preds)
        assert sum(w["total"]["low_confidence"] for w in windows) == low
        assert view["replayed"] == 0 and view["late"] == 0


def test_review_queue_holds_exactly_the_rule_selection(pipeline: PipelineRun) -> None:
    expected = set()
    for p in pipeline.predictions:
        mask = route_low_confidence(p.confidence, p.margins(), LOW, MARGIN)
        expected |= {p.ids[k] for k in np.flatnonzero(mask)}
    assert expected, "the simulated hard samples should produce low-confidence predictions"
    assert {item["id"] for item in pipeline.review["items"]} == expected
    assert pipeline.review["queued"] == len(expected)


def test_review_groups_sit_on_the_partition_of_their_ids(pipeline: PipelineRun) -> None:
    """One record per (frame, partition); every item on its id's partition, which is also
    where the broker's client puts a correction keyed by that id."""
    seen: list[str] = []
    for record in pipeline.review_records:
        group = parse_review_group(record.value, 10**8, future_skew=3600)
        assert not group.refused
        assert {review_partition(i["id"], pipeline.partitions)
                for i in group.items} == {record.partition}
        assert record.key == group.items[0]["id"].encode()
        seen += [i["id"] for i in group.items]
    assert sorted(seen) == sorted(i["id"] for i in pipeline.review["items"])  # each once
    assert len(pipeline.review_records) < len(seen)  # groups, not a record per item
    assert pipeline.corrections_partition
    for item_id, partition in pipeline.corrections_partition.items():
        assert partition == review_partition(item_id, pipeline.partitions), item_id


def test_malformed_messages_dead_lettered_with_reasons(pipeline: PipelineRun) -> None:
    assert len(pipeline.dead) == 200
    assert len(set(pipeline.bad_reasons)) >= 10
    assert collections.Counter(d["reason"] for d in pipeline.dead) == collections.Counter(
        pipeline.bad_reasons)
    assert all(d["stage"] == "score" for d in pipeline.dead)
    assert 'edgewise_dead_letters_total{reason="truncated",stage="score"}' in pipeline.metrics


async def _partitions_of(bootstrap: str, topic: str, keys: list[str]) -> dict[str, int]:
    """The partition the broker's client (default partitioner) gives each key on ``topic``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1)
    await producer.start()
    try:
        return {key: (await producer.send_and_wait(topic, b"{}", key=key.encode())).partition
                for key in keys}
    finally:
        await producer.stop()
