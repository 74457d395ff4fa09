"""Shared fixtures: one embedded broker and one trained model registry per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.app.core.settings import Settings, load_settings
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Tansu broker on a free port, stopped by PID at the end of the session."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding digits v1 (linear), trained once."""
    root = tmp_path_factory.mktemp("models")
    trained = train_digits("linear")
    ModelRegistry(root).register("digits", trained.model, training_data=trained.training_data,
                                 metrics={"accuracy": trained.accuracy}, algorithm="linear")
    return root


@pytest.fixture
def base_settings(models_dir: Path, tmp_path: Path) -> Settings:
    return load_settings(models_dir=models_dir, data_dir=tmp_path / "data")


@pytest.fixture
def unique_prefix() -> str:
    """Topic prefix and app id of one test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}"
