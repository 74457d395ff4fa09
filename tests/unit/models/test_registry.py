"""The model registry: versions, metadata, and what it refuses to load.

Promises (models/registry.py): versions count up from 1, ``load`` gives the newest or the
asked-for version, a changed artifact is refused as tampered, and skops may build only
types on the allow-list — never arbitrary code.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from edgewise.models.registry import ARTIFACT, META, ModelRegistry, RegistryError

X = np.random.default_rng(0).normal(size=(60, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0)  # classes 0..3


class HandMadeModel:
    """Not an sklearn type: skops lists it as untrusted."""

    def __init__(self) -> None:
        self.classes_ = [0, 1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 2), 0.5)


def fitted(c: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=200).fit(X, Y)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


@pytest.fixture
def two_versions(registry: ModelRegistry) -> ModelRegistry:
    registry.register("digits", fitted(0.01), metrics={"accuracy": 0.5}, algorithm="linear",
                      training_data={"rows": 60})
    registry.register("digits", fitted(100.0), metrics={"accuracy": 0.9})
    return registry


def artifact(registry: ModelRegistry, name: str, version: int) -> Path:
    return registry.root / name / str(version) / ARTIFACT


# -- versions ---------------------------------------------------------------------------


def test_empty_registry_has_nothing(registry: ModelRegistry) -> None:
    assert registry.names() == []
    assert registry.versions("digits") == []
    assert registry.latest("digits") is None


def test_versions_count_up_from_one(two_versions: ModelRegistry) -> None:
    assert two_versions.versions("digits") == [1, 2]
    assert two_versions.latest("digits") == 2
    assert two_versions.names() == ["digits"]


def test_load_gives_the_latest_version(two_versions: ModelRegistry) -> None:
    model, meta = two_versions.load("digits")
    assert meta.version == 2
    np.testing.assert_allclose(model.predict_proba(X), fitted(100.0).predict_proba(X))


def test_load_gives_a_specific_version(two_versions: ModelRegistry) -> None:
    model, meta = two_versions.load("digits", 1)
    assert meta.version == 1
    np.testing.assert_allclose(model.predict_proba(X), fitted(0.01).predict_proba(X))
    assert not np.allclose(model.predict_proba(X), fitted(100.0).predict_proba(X))


def test_models_are_kept_apart_by_name(two_versions: ModelRegistry) -> None:
    meta = two_versions.register("tabular", fitted())
    assert meta.version == 1
    assert two_versions.names() == ["digits", "tabular"]
    assert two_versions.latest("digits") == 2


def test_a_half_written_version_is_not_listed(two_versions: ModelRegistry) -> None:
    (two_versions.root / "digits" / "3").mkdir()  # no meta.json: registration died here
    (two_versions.root / "digits" / "notes").mkdir()
    assert two_versions.versions("digits") == [1, 2]
    assert two_versions.load("digits")[1].version == 2


def test_a_half_written_version_does_not_block_the_next_registration(
    two_versions: ModelRegistry,
) -> None:
    (two_versions.root / "digits" / "3").mkdir()  # a crash between mkdir and meta.json
    meta = two_versions.register("digits", fitted())
    assert meta.version >= 3
    assert two_versions.load("digits")[1].version == meta.version


# -- metadata ---------------------------------------------------------------------------


def test_metadata_fields(two_versions: ModelRegistry) -> None:
    meta = two_versions.meta("digits", 1)
    assert (meta.name, meta.version) == ("digits", 1)
    assert meta.sha256 == hashlib.sha256(artifact(two_versions, "digits", 1).read_bytes()
                                         ).hexdigest()
    assert time.time() - 60 < meta.created_at <= time.time()
    assert meta.algorithm == "linear"
    assert meta.training_data == {"rows": 60}
    assert meta.metrics == {"accuracy": 0.5}
    assert meta.classes == [0, 1, 2, 3]


def test_algorithm_defaults_to_the_type_name(two_versions: ModelRegistry) -> None:
    meta = two_versions.meta("digits")
    assert meta.version == 2
    assert meta.algorithm == "LogisticRegression"
    assert meta.training_data == {}


def test_metadata_file_is_what_meta_returns(two_versions: ModelRegistry) -> None:
    on_disk = json.loads((two_versions.root / "digits" / "2" / META).read_text())
    assert on_disk == two_versions.meta("digits", 2).to_dict()
    assert not (two_versions.root / "digits" / "2" / (META + ".tmp")).exists()


def test_load_returns_the_same_metadata(two_versions: ModelRegistry) -> None:
    _, meta = two_versions.load("digits", 1)
    assert meta == two_versions.meta("digits", 1)


# -- refusals ---------------------------------------------------------------------------


def test_tampered_artifact_is_refused(two_versions: ModelRegistry) -> None:
    path = artifact(two_versions, "digits", 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="tampered"):
        two_versions.load("digits")
    assert two_versions.load("digits", 1)[1].version == 1  # the other version still loads


def test_missing_model_says_how_to_make_one(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError) as caught:
        registry.load("digits")
    message = str(caught.value)
    assert "no model named 'digits'" in message
    assert "edgewise train digits" in message


def test_missing_version_is_named(two_versions: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="version 7 does not exist"):
        two_versions.load("digits", 7)


def test_missing_artifact_is_named(two_versions: ModelRegistry) -> None:
    artifact(two_versions, "digits", 2).unlink()
    with pytest.raises(RegistryError, match="is missing"):
        two_versions.load("digits")


def test_unreadable_metadata_is_a_registry_error(two_versions: ModelRegistry) -> None:
    (two_versions.root / "digits" / "2" / META).write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable metadata"):
        two_versions.load("digits")


def test_corrupt_archive_with_matching_checksum_is_unreadable(
    two_versions: ModelRegistry,
) -> None:
    path = artifact(two_versions, "digits", 2)
    path.write_bytes(b"not a zip archive")
    meta_path = two_versions.root / "digits" / "2" / META
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(b"not a zip archive").hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="unreadable"):
        two_versions.load("digits")


def test_untrusted_type_is_refused(registry: ModelRegistry) -> None:
    registry.register("custom", HandMadeModel())
    with pytest.raises(RegistryError) as caught:
        registry.load("custom")
    assert "untrusted types" in str(caught.value)
    assert "HandMadeModel" in str(caught.value)


def test_a_pipeline_calling_eval_is_refused(registry: ModelRegistry) -> None:
    """skops lists ``builtins.eval`` as untrusted; the allow-list must not wave it through."""
    pipeline = Pipeline([("f", FunctionTransformer(func=builtins.eval)), ("c", fitted())])
    registry.register("evil", pipeline)
    with pytest.raises(RegistryError, match="untrusted"):
        registry.load("evil")
