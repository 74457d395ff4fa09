"""retrain_once: a candidate trained on base + corrections, gated against the served model,
its decision recorded; only what was promoted is served, and rollback goes back, without a
restart of the holder that serves it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.agents.retrain import (
    NothingToLearn,
    RetrainStatus,
    Shadowing,
    decide_shadow,
    due,
    retrain_once,
)
from edgewise.app.core.settings import load_settings
from edgewise.app.core.shadow import ShadowTally
from edgewise.models import tabular
from edgewise.models.digits import digit_images, train_digits
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError, read_decision
from edgewise.models.scoring import ModelHolder
from tests.unit.models.test_retrain import correction


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    trained = train_digits("linear")
    registry.register("digits", trained.model, training_data=trained.training_data,
                      metrics={"accuracy": trained.accuracy}, algorithm="linear")
    return registry


def hard_corrections(n: int, wrong: bool = False) -> list[dict[str, Any]]:
    images, labels = digit_images()
    rng = np.random.default_rng(4)
    picks = rng.choice(len(images), n, replace=False)
    out = []
    for k, i in enumerate(picks):
        noisy = np.clip(images[i] + rng.normal(0, 4, (8, 8)), 0, 16)
        label = int((labels[i] + 1 + rng.integers(8)) % 10) if wrong else int(labels[i])
        out.append(correction(f"hard-{k}", label, noisy))
    return out


def test_a_candidate_that_is_not_worse_is_promoted_and_served(registry: ModelRegistry,
                                                              tmp_path: Path) -> None:
    settings = load_settings(models_dir=registry.root, retrain_margin=0.02, shadow_samples=0)
    holder = ModelHolder(registry, "digits")
    holder.refresh()
    result = retrain_once(settings, hard_corrections(120))
    assert (result.version, result.decision, result.against) == (2, "promoted", 1)
    assert result.data["corrections"] == 120 and result.data["base_train_rows"] == 1347
    decision = read_decision(registry, "digits", 2)
    assert decision["decision"] == "promoted" and decision["metrics"]["accuracy"] > 0.9
    assert PromotionLog(registry, "digits").served() == 2
    assert holder.refresh() and holder.meta.version == 2
    assert PromotionLog(registry, "digits").rollback() == 1
    assert holder.refresh() and holder.meta.version == 1  # back without a restart


def test_a_worse_candidate_is_kept_as_rejected_and_not_served(registry: ModelRegistry) -> None:
    settings = load_settings(models_dir=registry.root, retrain_margin=0.0)
    result = retrain_once(settings, hard_corrections(900, wrong=True))
    assert result.decision == "rejected" and "worse" in result.reason
    assert PromotionLog(registry, "digits").served() == 1  # pinned before the candidate
    assert registry.latest("digits") == 2
    assert read_decision(registry, "digits", 2)["decision"] == "rejected"
    holder = ModelHolder(registry, "digits")
    holder.refresh()
    assert holder.meta.version == 1


def test_nothing_to_learn_and_nothing_to_roll_back_are_said(registry: ModelRegistry) -> None:
    settings = load_settings(models_dir=registry.root)
    with pytest.raises(NothingToLearn):
        retrain_once(settings, [])
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        PromotionLog(registry, "digits").rollback()
    with pytest.raises(RegistryError):
        PromotionLog(registry, "digits").promote(7, "no such version")


def test_training_is_due_after_enough_corrections_and_the_interval() -> None:
    status = RetrainStatus(since_last=49, last_started=100.0)
    assert not due(status, 50, 60, 1000.0)
    status.since_last = 50
    assert due(status, 50, 60, 1000.0) and not due(status, 50, 60, 150.0)
    status.state = "training"
    assert not due(status, 50, 60, 1000.0)


# -- shadow -----------------------------------------------------------------------------


def in_shadow(registry: ModelRegistry, samples: int = 400) -> tuple[Any, Any]:
    settings = load_settings(models_dir=registry.root, retrain_margin=0.02,
                             shadow_samples=samples)
    result = retrain_once(settings, hard_corrections(120))
    assert (result.version, result.decision) == (2, "shadow"), result
    assert "in shadow for 400 live samples" in result.reason
    return settings, result


def test_a_candidate_that_passes_the_held_out_sets_is_shadowed_not_served(
        registry: ModelRegistry) -> None:
    in_shadow(registry)
    promotions = PromotionLog(registry, "digits")
    entry = promotions.shadow()
    assert (entry["version"], entry["against"], entry["samples"]) == (2, 1, 400)
    assert promotions.served() == 1
    assert read_decision(registry, "digits", 2)["decision"] == "shadow"
    holder = ModelHolder(registry, "digits")
    holder.refresh()
    assert holder.meta.version == 1 and holder.shadow_meta.version == 2
    holder.refuse_shadow()  # it failed on live samples: not loaded again
    holder.refresh()
    assert holder.shadow_meta is None and holder.meta.version == 1


@pytest.mark.parametrize(("correct", "served_correct", "decision"), [
    (290, 280, "promoted"), (275, 280, "promoted"), (250, 280, "rejected")])
def test_the_stream_decides_after_the_shadow(registry: ModelRegistry, correct: int,
                                             served_correct: int, decision: str) -> None:
    settings, _ = in_shadow(registry)
    shadowing = Shadowing(settings)
    shadowing.reload()
    assert not shadowing.add(ShadowTally("digits", 3, 1, samples=1000))  # not the candidate
    assert not shadowing.add(ShadowTally("digits", 2, 7, samples=1000))  # against another
    assert not shadowing.add(ShadowTally("digits", 2, 1, 100, 100, correct // 3,
                                         served_correct // 3, 90))
    assert shadowing.add(ShadowTally("digits", 2, 1, 300, 200, correct - correct // 3,
                                     served_correct - served_correct // 3, 280))
    assert shadowing.summary()["samples"] == 400
    result = decide_shadow(settings, shadowing.entry, shadowing.total)
    assert result.decision == decision, result.reason
    assert result.metrics["stream_accuracy"] == pytest.approx(correct / 300)
    assert result.metrics["accuracy"] > 0.9  # the held-out figures stay beside
    recorded = read_decision(registry, "digits", 2)
    assert recorded["decision"] == decision and recorded["shadow"]["labelled"] == 300
    promotions = PromotionLog(registry, "digits")
    assert promotions.shadow() is None
    assert promotions.served() == (2 if decision == "promoted" else 1)
    holder = ModelHolder(registry, "digits")
    holder.refresh()
    assert holder.shadow_meta is None


def test_a_shadow_that_sees_too_little_times_out_rejected(registry: ModelRegistry) -> None:
    settings, _ = in_shadow(registry)
    settings = settings.model_copy(update={"shadow_timeout_seconds": 0.01})
    shadowing = Shadowing(settings)
    shadowing.reload()
    shadowing.add(ShadowTally("digits", 2, 1, samples=50))
    time.sleep(0.02)
    assert shadowing.timed_out(time.time())
    result = decide_shadow(settings, shadowing.entry, shadowing.total, timed_out=True)
    assert result.decision == "rejected" and "saw 50 of 400 samples" in result.reason
    assert PromotionLog(registry, "digits").served() == 1


def test_no_training_while_a_candidate_is_in_shadow() -> None:
    status = RetrainStatus(since_last=80, state="shadow")
    assert not due(status, 50, 0, 1000.0)


def test_a_tabular_model_is_not_retrained_as_digits(tmp_path: Path) -> None:
    trained = tabular.train_tabular(tabular.bundled("wine", 0.2), trees=5)
    registry = ModelRegistry(tmp_path)
    registry.register("tabular", trained.model, kind="tabular", input_schema=trained.schema)
    settings = load_settings(models_dir=tmp_path, model_name="tabular")
    with pytest.raises(RegistryError, match="is a tabular model"):
        retrain_once(settings, hard_corrections(10))
    assert registry.versions("tabular") == [1]
