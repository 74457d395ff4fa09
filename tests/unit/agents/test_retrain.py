"""retrain_once: a candidate trained on base + corrections, gated against the served model,
its decision recorded; only what was promoted is served, and rollback goes back, without a
restart of the holder that serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.agents.retrain import NothingToLearn, RetrainStatus, due, retrain_once
from edgewise.app.core.settings import load_settings
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
    settings = load_settings(models_dir=registry.root, retrain_margin=0.02)
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
