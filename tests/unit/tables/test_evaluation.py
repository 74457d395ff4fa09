"""Online evaluation maths: accuracy, top-k log-loss with its floor, windows, replays."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgewise.agents.evaluate import evaluate_batch
from edgewise.app.core.records import Origin, PredictionBatch
from edgewise.tables.evaluation import (
    EvaluationSpec,
    evaluation_view,
    fold_device_evaluation,
    true_class_probability,
)
from edgewise.tables.seen_ids import SeenIds

SPEC = EvaluationSpec(window=10.0, kept=3, floor=1e-6)
TOP_LABELS = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]], dtype=np.int32)
TOP_PROBS = np.array([[0.8, 0.1, 0.05], [0.5, 0.3, 0.1], [0.6, 0.2, 0.1], [0.9, 0.05, 0.02]],
                     dtype=np.float32)


class Device:
    """One device's evaluation records in a dict standing in for the table."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.seen = SeenIds(600.0, 100_000)


def fold(dev: Device | dict[str, Any] | None, ids: list[str], truth: list[int], at: float,
         model: str = "digits:1") -> tuple[Device, int]:
    """Fold into ``dev`` (a new device when None); returns the device and the count."""
    dev = dev if isinstance(dev, Device) else Device()
    n = len(ids)
    counted = fold_device_evaluation(
        dev.table, dev.seen, "dev", SPEC, model, ids, at, np.array(truth, dtype=np.int32),
        TOP_LABELS[:n, 0], TOP_LABELS[:n], TOP_PROBS[:n])
    return dev, counted


def state_of(dev: Device) -> dict[str, Any]:
    return dev.table.get("dev") or {"models": {}}


def test_true_class_probability_uses_the_floor_outside_the_top_k() -> None:
    probs, found = true_class_probability(np.array([1, 5, 3]), TOP_LABELS[:3], TOP_PROBS[:3],
                                          1e-6)
    assert probs == pytest.approx([0.8, 0.3, 1e-6])
    assert found.tolist() == [True, True, False]


def test_cumulative_accuracy_and_log_loss() -> None:
    state, counted = fold(None, ["a", "b", "c", "d"], [1, 5, 3, 0], at=105.0)
    assert counted == 4
    view = evaluation_view([state_of(state)], SPEC.window)["models"]["digits:1"]
    expected_loss = -(math.log(0.8) + math.log(0.3) + math.log(1e-6) + math.log(0.9)) / 4
    assert view["cumulative"] == {"count": 4, "correct": 2, "accuracy": 0.5,
                                  "log_loss": round(expected_loss, 4), "outside_top_k": 1}
    assert view["windows"][0]["start"] == 100.0 and view["windows"][0]["end"] == 110.0


def test_unlabelled_predictions_do_not_count() -> None:
    state, counted = fold(None, ["a", "b"], [-1, -1], at=5.0)
    assert counted == 0 and state_of(state)["models"] == {}
    state, counted = fold(state, ["c", "d"], [-1, 4], at=5.0)
    assert counted == 1


def test_replays_within_the_kept_windows_are_not_counted_twice() -> None:
    state, _ = fold(None, ["a", "b"], [1, 4], at=5.0)
    state, counted = fold(state, ["a", "b", "c"], [1, 4, 7], at=15.0)  # a, b again
    assert counted == 1 and state_of(state)["replayed"] == 2
    state, counted = fold(state, ["d", "d"], [1, 1], at=15.0)  # twice in one batch
    assert counted == 1 and state_of(state)["replayed"] == 3
    figures = evaluation_view([state_of(state)], 10.0)["models"]["digits:1"]["cumulative"]
    assert figures["count"] == 4


def test_a_sample_rescored_after_a_model_swap_counts_once() -> None:
    """Evaluated by the first model that scored it; a re-score is a repeat, not news."""
    state, _ = fold(None, ["a"], [1], at=5.0, model="digits:1")
    state, counted = fold(state, ["a"], [1], at=16.0, model="digits:2")
    assert counted == 0
    assert list(evaluation_view([state_of(state)], 10.0)["models"]) == ["digits:1"]


def test_windows_expire_and_old_batches_are_late() -> None:
    state, _ = fold(None, ["a"], [1], at=5.0)
    state, _ = fold(state, ["b"], [1], at=35.0)  # keeps windows 10, 20, 30
    model = state_of(state)["models"]["digits:1"]
    assert sorted(model["windows"]) == ["30.0"]
    assert model["total"]["count"] == 2  # cumulative keeps everything
    state, counted = fold(state, ["c"], [1], at=9.0)
    assert counted == 0 and state_of(state)["late"] == 1


def test_view_adds_devices_up_and_orders_versions_numerically() -> None:
    first, _ = fold(None, ["a", "b"], [1, 4], at=5.0, model="digits:10")
    second, _ = fold(None, ["c"], [7], at=5.0, model="digits:10")
    third, _ = fold(None, ["d"], [0], at=5.0, model="digits:9")
    view = evaluation_view([state_of(d) for d in (first, second, third)], 10.0)
    assert list(view["models"]) == ["digits:9", "digits:10"]
    assert view["models"]["digits:10"]["cumulative"]["count"] == 3
    assert view["models"]["digits:10"]["windows"][0]["count"] == 3
    assert evaluation_view([], 10.0)["models"] == {}


def test_evaluate_batch_reads_a_prediction_batch() -> None:
    n = 2
    batch = PredictionBatch(
        device="cdc:public.digits_test", kind="digits", model="digits", model_version=3,
        ids=["x", "y"], timestamps=np.full(n, 1.0), true_labels=np.array([1, 6], np.int32),
        labels=np.array([1, 4], np.int32), confidence=np.array([0.8, 0.5], np.float32),
        top_labels=TOP_LABELS[:n], top_probs=TOP_PROBS[:n],
        latency_ms=np.zeros(n, np.float32), pixels=np.zeros((n, 8, 8), np.uint8),
        scored_at=42.0)
    dev = Device()
    counted = evaluate_batch(dev.table, dev.seen, batch, SPEC)
    figures = evaluation_view([dev.table[batch.device]], 10.0)["models"]["digits:3"][
        "cumulative"]
    assert counted == 2 and figures["correct"] == 1
    assert figures["log_loss"] == round(-(math.log(0.8) + math.log(0.1)) / 2, 4)


def test_a_replayed_input_is_skipped_by_its_offset() -> None:
    dev = Device()
    for _ in range(2):
        counted = fold_device_evaluation(
            dev.table, dev.seen, "dev", SPEC, "digits:1", ["a", "b"], 5.0,
            np.array([1, 4], np.int32), TOP_LABELS[:2, 0], TOP_LABELS[:2], TOP_PROBS[:2],
            Origin(3, 41))
    assert counted == 0 and dev.table["dev"]["replayed"] == 2
    assert dev.table["dev"]["models"]["digits:1"]["total"]["count"] == 2


def test_model_versions_per_device_are_bounded() -> None:
    spec = EvaluationSpec(window=10.0, kept=3, floor=1e-6, max_models=3)
    dev = Device()
    for version in range(6):
        fold_device_evaluation(
            dev.table, dev.seen, "dev", spec, f"digits:{version}", [f"s{version}"],
            5.0 + version, np.array([1], np.int32), TOP_LABELS[:1, 0], TOP_LABELS[:1],
            TOP_PROBS[:1])
    state = dev.table["dev"]
    assert sorted(state["models"]) == ["digits:3", "digits:4", "digits:5"]
    assert state["evicted_models"] == 3
