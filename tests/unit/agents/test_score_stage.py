"""The score stage: one model call for many batches, split back per batch; and the agent.

The agent tests use Faust's ``test_context()`` with no broker: the stage is registered on
a fresh app whose output topics are in-memory channels, so what the agent sends can be read
back directly.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson
import pytest

from edgewise.agents import score
from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.context import StageContext
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.settings import Settings, load_settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.models.digits import digit_images
from edgewise.models.registry import ModelRegistry, RegistryError
from edgewise.models.scoring import ModelHolder, predict_batches, score_rows

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def served(models_dir: Path) -> tuple[Any, Any]:
    """The digits model of the session registry, and its metadata."""
    return ModelRegistry(models_dir).load("digits")


def digit_batch(device: str, n: int, first: int, stamp: float = T0) -> SampleBatch:
    images, labels = digit_images()
    pick = slice(first, first + n)
    return SampleBatch(
        device=device, kind="digits", ids=[f"{device}-{i}" for i in range(first, first + n)],
        timestamps=stamp + np.arange(n, dtype=np.float64) / 100,
        labels=labels[pick].copy(), pixels=images[pick].copy(),
    )


# -- predict_batches --------------------------------------------------------------------


def test_results_come_back_per_batch_in_order(served) -> None:
    model, meta = served
    batches = [digit_batch("cam-a", 2, 0), digit_batch("cam-b", 3, 10),
               digit_batch("cam-a", 1, 20)]
    results = predict_batches(model, meta, batches, top_k=3, now=T0 + 1)
    assert [r.device for r in results] == ["cam-a", "cam-b", "cam-a"]
    assert [r.ids for r in results] == [b.ids for b in batches]
    for batch, result in zip(batches, results, strict=True):
        alone = score_rows(model, batch.features(), 3)
        np.testing.assert_array_equal(result.labels, alone.labels)
        np.testing.assert_allclose(result.top_probs, alone.top_probs, rtol=1e-6)
        np.testing.assert_array_equal(result.top_labels, alone.top_labels)
        np.testing.assert_array_equal(result.true_labels, batch.labels)
        np.testing.assert_array_equal(result.pixels, batch.pixels)
        np.testing.assert_array_equal(result.timestamps, batch.timestamps)
        assert (result.model, result.model_version) == (meta.name, meta.version)
        assert result.kind == "digits"


def test_latency_is_scoring_time_minus_edge_time(served) -> None:
    model, meta = served
    batch = digit_batch("cam-a", 3, 0, stamp=T0)  # samples at T0, T0+0.01, T0+0.02
    [result] = predict_batches(model, meta, [batch], top_k=2, now=T0 + 2.5)
    assert result.scored_at == T0 + 2.5
    np.testing.assert_allclose(result.latency_ms, [2500.0, 2490.0, 2480.0], atol=0.01)
    assert result.latency_ms.dtype == np.float32


def test_scoring_time_defaults_to_now(served) -> None:
    model, meta = served
    before = time.time()
    [result] = predict_batches(model, meta, [digit_batch("cam-a", 1, 0, stamp=before)], 3)
    assert before <= result.scored_at <= time.time()
    assert 0 <= result.latency_ms[0] < 60_000


def test_the_model_gets_the_digits_right(served) -> None:
    model, meta = served
    batch = digit_batch("cam-a", 200, 0)
    [result] = predict_batches(model, meta, [batch], top_k=3, now=T0)
    assert (result.labels == result.true_labels).mean() > 0.9


# -- the model holder -------------------------------------------------------------------


def small_model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    images, labels = digit_images()
    return LogisticRegression(C=c, max_iter=300).fit(images[:400].reshape(400, -1), labels[:400])


def test_holder_swaps_only_when_a_newer_version_exists(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    holder = ModelHolder(registry, "digits")
    assert holder.refresh() is False and holder.model is None  # nothing registered yet
    registry.register("digits", small_model(1.0))
    assert holder.refresh() is True and holder.meta.version == 1
    assert holder.refresh() is False
    registry.register("digits", small_model(0.01))
    assert holder.refresh() is True and holder.meta.version == 2


def test_holder_refuses_a_tampered_newer_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("digits", small_model(1.0))
    holder = ModelHolder(registry, "digits")
    holder.refresh()
    registry.register("digits", small_model(0.01))
    path = tmp_path / "digits" / "2" / "model.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="tampered"):
        holder.refresh()
    assert holder.meta.version == 1  # still serving the last good model
    score._safe_refresh(holder)  # what the timer calls: logs, does not raise
    assert holder.meta.version == 1


# -- the agent, under Faust's test_context ----------------------------------------------


@dataclass
class ScoreStage:
    agent: Any
    settings: Settings
    predictions: Any  # subscriptions to in-memory channels
    dead_letters: Any


@pytest.fixture
def score_stage(models_dir: Path, tmp_path: Path) -> Callable[[], ScoreStage]:
    def build() -> ScoreStage:
        settings = load_settings(broker="kafka://127.0.0.1:1", models_dir=models_dir,
                                 data_dir=tmp_path / "data", top_k=3)
        app = faust.App(f"score-test-{tmp_path.name}", broker=settings.broker,
                        store="memory://", autodiscover=False)
        names = TopicNames("unit")
        ctx = StageContext(app=app, settings=settings, names=names)
        channels = {name: app.channel() for name in (names.predictions, names.dead_letters)}
        ctx.topics.update(channels)
        subscriptions = {name: channel.__aiter__() for name, channel in channels.items()}
        score.register(ctx)
        return ScoreStage(app.agents["edgewise.score"], settings,
                          subscriptions[names.predictions], subscriptions[names.dead_letters])

    return build


@pytest.fixture
async def running(score_stage) -> AsyncIterator[tuple[Any, ScoreStage]]:
    stage = score_stage()
    async with stage.agent.test_context() as agent:
        yield agent, stage


async def next_value(subscription: Any) -> tuple[bytes, bytes]:
    event = await asyncio.wait_for(subscription.get(), timeout=5)
    return event.key, event.value


async def test_agent_sends_one_prediction_frame_per_batch(running) -> None:
    agent, stage = running
    simulator = DigitSimulator(devices=2, batch_size=4, hard_share=0.0, seed=3)
    batches = [simulator.next_batch(now=T0), simulator.next_batch(size=2, now=T0)]
    for batch in batches:
        await agent.put(encode_sample_batch(batch))
    for batch in batches:
        key, value = await next_value(stage.predictions)
        result = decode_prediction_batch(value, stage.settings.max_message_bytes)
        assert key == batch.device.encode()
        assert result.ids == batch.ids
        assert result.top_probs.shape == (len(batch), 3)
        np.testing.assert_array_equal(result.true_labels, batch.labels)


async def test_agent_dead_letters_garbage_and_carries_on(running) -> None:
    agent, stage = running
    await agent.put(b"\x00 not a sample batch")
    key, value = await next_value(stage.dead_letters)
    letter = orjson.loads(value)
    assert key == b"score"
    assert (letter["stage"], letter["reason"]) == ("score", "bad_json")
    assert base64.b64decode(letter["original_b64"]) == b"\x00 not a sample batch"
    assert letter["topic"] == "unit-samples"
    batch = DigitSimulator(devices=1, batch_size=2, hard_share=0.0, seed=1).next_batch()
    await agent.put(encode_sample_batch(batch))
    _, value = await next_value(stage.predictions)
    assert decode_prediction_batch(value, stage.settings.max_message_bytes).ids == batch.ids


async def test_agent_dead_letters_a_frame_with_an_overflowing_shape(running) -> None:
    """A header whose array shape multiplies past 2**64 must be dead-lettered, not crash."""
    agent, stage = running
    header = orjson.dumps({"device": "cam", "ids": ["a"],
                           "arrays": [["pixels", "uint8", [2**32, 2**32]]]})
    hostile = b"EW\x01\x01" + len(header).to_bytes(4, "big") + header
    await agent.put(hostile)
    try:
        _, value = await next_value(stage.dead_letters)
    except TimeoutError:
        crash = getattr(agent, "_crash_reason", None)
        pytest.fail(f"no dead letter; the score agent stopped with {crash!r}")
    assert base64.b64decode(orjson.loads(value)["original_b64"]) == hostile


async def test_a_candidate_in_shadow_is_tallied_not_sent(models_dir: Path, tmp_path: Path
                                                         ) -> None:
    import shutil

    from edgewise.app.core.shadow import parse_tally
    from edgewise.models.registry import PromotionLog

    shutil.copytree(models_dir, tmp_path / "models")
    registry = ModelRegistry(tmp_path / "models")
    promotions = PromotionLog(registry, "digits")
    promotions.pin()
    weak = registry.register("digits", small_model(0.0001))
    promotions.start_shadow(weak.version, 100)
    settings = load_settings(broker="kafka://127.0.0.1:1", models_dir=registry.root,
                             data_dir=tmp_path / "data", top_k=3)
    app = faust.App(f"score-shadow-{tmp_path.name}", broker=settings.broker,
                    store="memory://", autodiscover=False)
    names = TopicNames("unit")
    ctx = StageContext(app=app, settings=settings, names=names)
    channels = {name: app.channel() for name in (names.predictions, names.dead_letters,
                                                 names.shadow)}
    ctx.topics.update(channels)
    predictions, shadow = (channels[n].__aiter__() for n in (names.predictions, names.shadow))
    score.register(ctx)
    batch = digit_batch("cam-a", 60, 0)
    async with app.agents["edgewise.score"].test_context() as agent:
        await agent.put(encode_sample_batch(batch))
        _, value = await next_value(predictions)
        key, tallied = await next_value(shadow)
    frame = decode_prediction_batch(value, settings.max_message_bytes)
    assert frame.model_version == 1 and frame.ids == batch.ids  # the served model's
    one = parse_tally(tallied)
    assert key == b"digits" and (one.version, one.against) == (weak.version, 1)
    assert (one.samples, one.labelled) == (60, 60)
    assert one.served_correct == int((frame.labels == batch.labels).sum())
    candidate = registry.load("digits", weak.version)[0]
    theirs = candidate.predict(batch.features())
    assert one.correct == int((theirs == batch.labels).sum())
    assert one.agree == int((theirs == frame.labels).sum())
