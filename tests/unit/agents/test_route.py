"""route: which predictions a person reviews, why, and the review item they see.

The rule (agents/route.py): confidence below ``low_confidence`` or a top-2 margin below
``min_margin``; both comparisons strict.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from edgewise.agents.route import review_items, review_reasons, route_low_confidence
from edgewise.app.core.records import PredictionBatch, ReviewItem
from edgewise.app.core.review_items import parse_review_item

LOW = 0.5
MARGIN = 0.25
T0 = 1_700_000_000.0


def predictions(top_probs: list[list[float]], true_labels: list[int] | None = None,
                device: str = "cam-3") -> PredictionBatch:
    """A prediction batch with the given top-k probabilities per row (k from the rows)."""
    probs = np.array(top_probs, dtype=np.float32)
    n, k = probs.shape
    rng = np.random.default_rng(n)
    top_labels = np.array([rng.permutation(10)[:k] for _ in range(n)], dtype=np.int32)
    truth = true_labels if true_labels is not None else [-1] * n
    return PredictionBatch(
        device=device, kind="digits", model="digits", model_version=2,
        ids=[f"{device}-{i}" for i in range(n)], timestamps=T0 + np.arange(n, dtype=np.float64),
        true_labels=np.array(truth, dtype=np.int32), labels=top_labels[:, 0].copy(),
        confidence=probs[:, 0].copy(), top_labels=top_labels, top_probs=probs,
        latency_ms=np.full(n, 3.0, dtype=np.float32),
        pixels=rng.integers(0, 17, size=(n, 8, 8)).astype(np.uint8), scored_at=T0 + 1,
    )


# -- the rule ---------------------------------------------------------------------------


def test_rule_routes_low_confidence_or_small_margin() -> None:
    confidence = np.array([0.9, 0.4, 0.9, 0.4], dtype=np.float32)
    margins = np.array([0.5, 0.5, 0.125, 0.125], dtype=np.float32)
    mask = route_low_confidence(confidence, margins, LOW, MARGIN)
    assert mask.tolist() == [False, True, True, True]


def test_rule_is_strict_at_both_thresholds() -> None:
    confidence = np.array([0.5, 0.5, 0.4999], dtype=np.float32)
    margins = np.array([0.25, 0.2499, 0.25], dtype=np.float32)
    assert route_low_confidence(confidence, margins, LOW, MARGIN).tolist() == [
        False, True, True]


def test_rule_with_zero_thresholds_routes_nothing() -> None:
    confidence = np.array([0.0, 0.3, 1.0], dtype=np.float32)
    margins = np.zeros(3, dtype=np.float32)
    assert not route_low_confidence(confidence, margins, 0.0, 0.0).any()


def test_reasons_name_each_broken_threshold() -> None:
    assert review_reasons(0.42, 0.5, LOW, MARGIN) == "confidence 0.42 < 0.50"
    assert review_reasons(0.9, 0.1, LOW, MARGIN) == "top-2 margin 0.10 < 0.25"
    assert review_reasons(0.42, 0.1, LOW, MARGIN) == (
        "confidence 0.42 < 0.50; top-2 margin 0.10 < 0.25")
    assert review_reasons(0.9, 0.5, LOW, MARGIN) == ""


# -- review items -----------------------------------------------------------------------


def test_items_are_exactly_the_rows_the_rule_selects() -> None:
    rng = np.random.default_rng(1)
    first = rng.uniform(0.2, 1.0, 60)
    second = first * rng.uniform(0.0, 1.0, 60)
    batch = predictions(np.stack([first, second, second / 2], axis=1).tolist())
    expected = [batch.ids[i] for i in range(len(batch))
                if batch.confidence[i] < LOW or batch.margins()[i] < MARGIN]
    items = review_items(batch, LOW, MARGIN)
    assert [item.id for item in items] == expected
    assert 0 < len(items) < len(batch)


def test_item_carries_the_prediction_and_why() -> None:
    batch = predictions([[0.9, 0.05, 0.05], [0.45, 0.40, 0.15], [0.8, 0.1, 0.1]],
                        true_labels=[1, 7, -1])
    [item] = review_items(batch, LOW, MARGIN)
    assert item.id == batch.ids[1] and item.device == "cam-3"
    assert (item.model, item.model_version) == ("digits", 2)
    assert item.label == int(batch.labels[1])
    assert item.confidence == pytest.approx(0.45)
    assert item.margin == pytest.approx(0.05, abs=1e-6)
    assert [label for label, _ in item.top_k] == batch.top_labels[1].tolist()
    assert [prob for _, prob in item.top_k] == pytest.approx(batch.top_probs[1].tolist())
    assert item.true_label == 7
    assert item.timestamp == T0 + 1
    assert item.reason == "confidence 0.45 < 0.50; top-2 margin 0.05 < 0.25"


def test_unknown_truth_is_none() -> None:
    [item] = review_items(predictions([[0.3, 0.2]], true_labels=[-1]), LOW, MARGIN)
    assert item.true_label is None


def test_image_bytes_round_trip() -> None:
    batch = predictions([[0.3, 0.2], [0.35, 0.3]])
    for i, item in enumerate(review_items(batch, LOW, MARGIN)):
        image = np.frombuffer(base64.b64decode(item.image_b64), dtype=np.uint8)
        assert item.shape == [8, 8]
        np.testing.assert_array_equal(image.reshape(item.shape), batch.pixels[i])


def test_with_top_1_only_the_margin_rule_never_fires() -> None:
    batch = predictions([[0.99], [0.45], [0.51]])
    items = review_items(batch, LOW, MARGIN)
    assert [item.id for item in items] == [batch.ids[1]]
    assert items[0].margin == 1.0
    assert items[0].reason == "confidence 0.45 < 0.50"


def test_confident_batch_gives_no_items() -> None:
    assert review_items(predictions([[0.95, 0.03], [0.8, 0.1]]), LOW, MARGIN) == []


def test_item_survives_the_review_topic() -> None:
    """What route sends (JSON) is what the review stage accepts and keeps."""
    [item] = review_items(predictions([[0.3, 0.2]], true_labels=[4]), LOW, MARGIN)
    doc = parse_review_item(item.dumps(serializer="json"))
    assert doc["id"] == item.id and doc["true_label"] == 4
    assert doc["image_b64"] == item.image_b64
    back = ReviewItem.loads(item.dumps(serializer="json"), serializer="json")
    assert back.reason == item.reason and back.margin == pytest.approx(item.margin)


def test_a_tabular_item_carries_its_row_not_an_image() -> None:
    batch = predictions([[0.4, 0.3], [0.9, 0.05]])
    rows = np.array([[1.2, np.nan, 7.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    tabular = dataclasses.replace(batch, kind="tabular", pixels=rows)
    [item] = review_items(tabular, LOW, MARGIN)
    assert item.row == [1.2, None, 7.0] and item.image_b64 == "" and item.shape == [3]
    assert parse_review_item(item.dumps(serializer="json"))["row"] == [1.2, None, 7.0]


async def test_route_sends_a_frame_as_one_group_per_partition(tmp_path: Path) -> None:
    from edgewise.agents import route
    from edgewise.app.core.review_groups import parse_review_group, review_partition
    from edgewise.app.core.wire import encode_prediction_batch
    from tests.fixtures.stages import build_stage

    run = build_stage(route.register, "edgewise.route", tmp_path, ["unit-review"],
                      low_confidence=1.0, min_margin=0.0, partitions=4)
    batch = predictions([[0.4, 0.3]] * 60)
    batch = dataclasses.replace(batch, timestamps=time.time() - 1.0 + 0 * batch.timestamps,
                                scored_at=time.time())
    async with run.agent.test_context() as agent:
        await agent.put(encode_prediction_batch(batch))
        events = [await asyncio.wait_for(run.outputs["unit-review"].get(), 5) for _ in range(4)]
    partitions, ids = [], []
    for event in events:
        group = parse_review_group(event.value)
        part = event.message.partition
        assert not group.refused and part is not None
        assert {review_partition(d["id"], 4) for d in group.items} == {part}
        assert event.key == group.items[0]["id"].encode()
        partitions.append(part)
        ids += [d["id"] for d in group.items]
    assert sorted(partitions) == [0, 1, 2, 3]
    assert sorted(ids) == sorted(batch.ids)  # every routed item once
