"""Shipping a model version to an edge: the same checks apply there as at the hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgewise.models.model_sync import export_version, install_version
from edgewise.models.registry import ModelRegistry, RegistryError


@pytest.fixture
def hub(models_dir: Path, tmp_path: Path) -> ModelRegistry:
    shutil.copytree(models_dir, tmp_path / "hub")
    return ModelRegistry(tmp_path / "hub")


def test_a_shipped_version_installs_and_loads(hub: ModelRegistry, tmp_path: Path) -> None:
    meta, artifact = export_version(hub, "digits")
    edge = ModelRegistry(tmp_path / "edge")
    assert install_version(edge, meta.to_dict(), artifact) is True
    assert install_version(edge, meta.to_dict(), artifact) is False  # idempotent
    model, loaded = edge.load("digits")
    assert loaded == meta and hasattr(model, "predict_proba")
    assert not list((tmp_path / "edge" / "digits").glob(".incoming-*"))


def test_tampered_or_conflicting_versions_are_refused(hub: ModelRegistry, tmp_path: Path) -> None:
    meta, artifact = export_version(hub, "digits")
    edge = ModelRegistry(tmp_path / "edge")
    with pytest.raises(RegistryError, match="sha256"):
        install_version(edge, meta.to_dict(), artifact + b"x")
    assert edge.latest("digits") is None
    install_version(edge, meta.to_dict(), artifact)
    other = {**meta.to_dict(), "sha256": "0" * 64}
    with pytest.raises(RegistryError):
        install_version(edge, other, artifact)


def test_unknown_meta_fields_are_ignored(hub: ModelRegistry, tmp_path: Path) -> None:
    meta, artifact = export_version(hub, "digits", 1)
    edge = ModelRegistry(tmp_path / "edge")
    assert install_version(edge, {**meta.to_dict(), "from_the_future": 1}, artifact)
    assert edge.meta("digits", 1).sha256 == meta.sha256
