"""Hostile input at every hub stage: each message is dead-lettered with its reason, the
stage keeps running, and every good message sent between the hostile ones is counted.

Each stage is the real agent under Faust's ``test_context()`` (``tests.fixtures.stages``),
fed ``HOSTILE_PER_STAGE`` generated hostile messages (``tests.fixtures.hostile``) with a
good one after every few. A stage shows it survived a message by dead-lettering the next.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edgewise.agents import aggregate, evaluate, review, route, score
from edgewise.agents.cdc import transform
from edgewise.agents.edge import metrics as edge_metrics
from edgewise.app.adapters.mqtt_payloads import encode_metrics
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from edgewise.tables.review_queue import record_items
from tests.fixtures import hostile
from tests.fixtures.stages import StageRun, build_stage, drive, next_value

HOSTILE_PER_STAGE = 1000
GOOD_EVERY = 10


def mixed(rng: random.Random, bad: Any, good: Any) -> tuple[list[tuple[bytes, str | None]],
                                                          list[Any]]:
    """HOSTILE_PER_STAGE hostile messages with a good one after every GOOD_EVERY."""
    messages: list[tuple[bytes, str | None]] = []
    goods = []
    for i in range(HOSTILE_PER_STAGE):
        messages.append(bad(rng))
        if i % GOOD_EVERY == 0:
            value, data = good(rng)
            goods.append(value)
            messages.append((data, None))
    messages.append(bad(rng))  # its dead letter says the last good one was handled
    return messages, goods


def every_reason_seen(run: StageRun, at_least: int) -> None:
    assert sum(run.reasons.values()) == HOSTILE_PER_STAGE + 1
    assert len(run.reasons) >= at_least, run.reasons


def good_predictions(rng: random.Random) -> tuple[Any, bytes]:
    batch = hostile.good_prediction_batch(rng, device=f"cam-{rng.randrange(3)}")
    return batch, encode_prediction_batch(batch)


async def test_score_survives_hostile_samples(models_dir: Path, tmp_path: Path) -> None:
    run = build_stage(score.register, "edgewise.score", tmp_path, ["unit-predictions"],
                      models_dir=models_dir, score_take_within=0.001)
    rng = random.Random(11)

    def good(rng: random.Random) -> tuple[Any, bytes]:
        batch = hostile.good_sample_batch(rng)
        return batch, encode_sample_batch(batch)

    messages, goods = mixed(rng, hostile.hostile_sample, good)
    expected = iter(goods)

    async def predicted(_: bytes) -> None:
        scored = run.ctx.boundary.predictions(await next_value(run.outputs["unit-predictions"]))
        assert scored.ids == next(expected).ids

    async with run.agent.test_context() as agent:
        await drive(run, agent, "score", messages, predicted)
    every_reason_seen(run, 15)


async def test_route_survives_hostile_predictions(tmp_path: Path) -> None:
    run = build_stage(route.register, "edgewise.route", tmp_path, ["unit-review"])
    messages, goods = mixed(random.Random(12), hostile.hostile_prediction, good_predictions)
    async with run.agent.test_context() as agent:
        await drive(run, agent, "route", messages)
    every_reason_seen(run, 20)
    assert run.samples_counted("route") == sum(len(b) for b in goods)


async def test_aggregate_survives_hostile_predictions(tmp_path: Path) -> None:
    run = build_stage(aggregate.register, "edgewise.aggregate", tmp_path)
    messages, goods = mixed(random.Random(13), hostile.hostile_prediction, good_predictions)
    async with run.agent.test_context() as agent:
        await drive(run, agent, "aggregate", messages)
    every_reason_seen(run, 20)
    assert run.samples_counted("aggregate") == sum(len(b) for b in goods)
    for state in run.ctx.app.tables["device_windows"].values():
        json.dumps(state, allow_nan=False)  # no NaN or infinity reached the windows


async def test_evaluate_survives_hostile_predictions(tmp_path: Path) -> None:
    run = build_stage(evaluate.register, "edgewise.evaluate", tmp_path)
    messages, goods = mixed(random.Random(14), hostile.hostile_prediction, good_predictions)
    async with run.agent.test_context() as agent:
        await drive(run, agent, "evaluate", messages)
    every_reason_seen(run, 20)
    labelled = sum(int((b.true_labels >= 0).sum()) for b in goods)
    assert labelled and run.samples_counted("evaluate") == labelled
    for state in run.ctx.app.tables["evaluation"].values():
        json.dumps(state, allow_nan=False)  # log-loss stays a number


async def test_review_survives_hostile_items(tmp_path: Path) -> None:
    # one partition: every item read here is on the partition of its id (see test_review)
    run = build_stage(review.register, "edgewise.review", tmp_path, partitions=1)

    def good(rng: random.Random) -> tuple[Any, bytes]:
        item = hostile.good_review_item(rng)
        return item, orjson.dumps(item)

    messages, goods = mixed(random.Random(15), hostile.hostile_review_item, good)
    async with run.agent.test_context() as agent:
        await drive(run, agent, "review", messages)
    every_reason_seen(run, 12)
    table = run.ctx.app.tables["review_queue"]
    assert sorted(i for v in table.values() for i in record_items(v)) == sorted(
        g["id"] for g in goods)


async def test_edge_metrics_survives_hostile_windows(tmp_path: Path) -> None:
    run = build_stage(edge_metrics.register, "edgewise.edge_metrics", tmp_path)

    def good(rng: random.Random) -> tuple[Any, bytes]:
        doc = hostile.good_metrics(rng, device=f"cam-{rng.randrange(4)}")
        return doc, encode_metrics(doc)

    messages, goods = mixed(random.Random(16), hostile.hostile_metrics, good)
    async with run.agent.test_context() as agent:
        await drive(run, agent, "edge_metrics", messages)
    every_reason_seen(run, 4)
    assert run.samples_counted("edge_metrics") == sum(g["count"] for g in goods)
    state = run.ctx.app.tables["site_metrics"]["s1"]
    assert sorted(state["devices"]) == [f"cam-{i}" for i in range(4)]  # nobody evicted
    assert state["newest"] <= hostile.now() + hostile.SKEW


async def test_cdc_transform_survives_hostile_rows(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform, "create_topics", lambda *args: [])  # no broker here
    run = build_stage(transform.register, "edgewise.cdc_transform", tmp_path,
                      ["unit-samples"], cdc_pack_rows=1)

    def good(rng: random.Random) -> tuple[Any, bytes]:
        doc = hostile.good_change(rng)
        return doc, orjson.dumps(doc)

    messages, goods = mixed(random.Random(17), hostile.hostile_change, good)
    expected = iter(goods)

    async def packed(_: bytes) -> None:
        batch = run.ctx.boundary.samples(await next_value(run.outputs["unit-samples"]))
        row = next(expected)["payload"]["after"]
        assert batch.ids == [f"digits_test-{row['id']}"]
        assert batch.labels.tolist() == [row["label"]]

    async with run.agent.test_context() as agent:
        await drive(run, agent, "cdc_transform", messages, packed)
    every_reason_seen(run, 8)
    assert np.isclose(run.samples_counted("cdc_transform"), len(goods))
