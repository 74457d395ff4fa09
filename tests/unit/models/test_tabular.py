"""The tabular model: imputer and forest on rows with missing values, from a bundled
dataset or a CSV; its input schema; and its ONNX export, which must give the same labels
as the scikit-learn pipeline on the held-out rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.app.core.records import TABULAR
from edgewise.models import tabular
from edgewise.models.errors import RegistryError
from edgewise.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def trained() -> tabular.TrainedTabular:
    return tabular.train_tabular(tabular.bundled("wine", 0.2), trees=30)


def test_the_bundled_rows_miss_a_fifth_of_their_values_and_still_score_well(
        trained: tabular.TrainedTabular) -> None:
    assert 0.17 < trained.training_data["missing_share"] < 0.23
    assert np.isnan(trained.x_test).any()
    assert trained.accuracy > 0.85
    assert trained.schema.names[0] == "alcohol" and len(trained.schema) == 13
    assert all(f.missing and f.type == "number" for f in trained.schema.features)
    probs = trained.model.predict_proba(np.full((2, 13), np.nan, dtype=np.float32))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1)


def test_the_onnx_export_gives_the_same_labels_on_the_test_rows(
        trained: tabular.TrainedTabular, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    skops = registry.register("tabular", trained.model, kind=TABULAR,
                              input_schema=trained.schema)
    onnx = registry.register("tabular", trained.model, kind=TABULAR,
                             input_schema=trained.schema, adapter="onnx")
    assert (skops.adapter, skops.artifact) == ("skops", "model.skops")
    assert (onnx.adapter, onnx.artifact, onnx.classes) == ("onnx", "model.onnx", [0, 1, 2])
    served, meta = registry.load("tabular", onnx.version)
    assert meta.schema() == trained.schema and list(served.classes_) == [0, 1, 2]
    rows = trained.x_test.astype(np.float32)
    theirs = served.predict_proba(rows)
    ours = registry.load("tabular", skops.version)[0].predict_proba(rows)
    assert np.array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))
    assert np.abs(theirs - ours).max() < 1e-5


def test_a_tampered_onnx_artifact_is_refused(trained: tabular.TrainedTabular,
                                             tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    meta = registry.register("tabular", trained.model, kind=TABULAR,
                             input_schema=trained.schema, adapter="onnx")
    path = registry.artifact_path(meta)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="tampered"):
        registry.load("tabular", meta.version)


def test_registration_refuses_what_it_could_not_serve(trained: tabular.TrainedTabular,
                                                      tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="input schema"):
        registry.register("tabular", trained.model, kind=TABULAR)
    with pytest.raises(RegistryError, match="no model adapter 'pickle'"):
        registry.register("tabular", trained.model, kind=TABULAR,
                          input_schema=trained.schema, adapter="pickle")
    with pytest.raises(RegistryError, match="unknown sample kind"):
        registry.register("tabular", trained.model, kind="audio")
    assert registry.versions("tabular") == []


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_rows_with_text_labels_missing_cells_and_a_reserved_column(tmp_path: Path) -> None:
    lines = ["id,temp,humidity,state"]
    rng = np.random.default_rng(1)
    for i in range(40):
        hot = i % 2
        temp = "" if i % 7 == 0 else f"{20 + 15 * hot + rng.normal():.2f}"
        lines.append(f"r{i},{temp},{rng.uniform(30, 60):.1f},{'hot' if hot else 'cold'}")
    data = tabular.read_csv(write_csv(tmp_path / "rows.csv", lines), "state")
    assert data.names == ["temp", "humidity"] and data.ignored == ("id",)
    assert data.label_names == ["cold", "hot"] and np.isnan(data.x[0, 0])
    model = tabular.train_tabular(data, trees=10, required=("humidity",))
    assert [f.missing for f in model.schema.features] == [True, False]
    assert model.training_data["label_names"] == ["cold", "hot"] and model.accuracy > 0.8


@pytest.mark.parametrize("lines,message", [
    (["a,b", "1,2"], "no column 'label'"),
    (["a,label"] + ["x,1"] * 10, "not a number"),
    (["a,label"] + ["1e39,1"] * 10, "beyond a float32"),
    (["a,label"] + ["1,2,3"] * 10, "3 cells"),
    (["a,label"] + ["1,-4"] * 10, "labels must lie"),
    (["a,label", "1,1"], "too few"),
])
def test_csv_files_that_cannot_train_say_why(tmp_path: Path, lines: list[str],
                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tabular.read_csv(write_csv(tmp_path / "bad.csv", lines), "label")
