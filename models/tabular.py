"""The tabular model: a median imputer and a random forest, on rows with missing values.

Rows come from a CSV file (a header row, one column the label, the rest features; empty,
``NA``, ``NaN`` or ``null`` cells are missing) or from a dataset bundled with
scikit-learn (wine by default), with a share of values blanked at random, as a collector
of sensor rows sees them. The imputer fills each missing value with its feature's median
from training, so the forest always sees a full row; its input schema (the feature names
in order, each a number that may be missing unless named required) goes into the registry
with the model, where the ingest endpoint and the score stage read it. scikit-learn is
imported by the functions that train or load data, not with the module (it takes seconds).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.app.core.bounds import MAX_FEATURES, MAX_LABEL
from edgewise.app.core.input_schema import RESERVED_NAMES, Feature, InputSchema

DATASETS = ("wine", "breast_cancer")  # scikit-learn's, loaded by ``load_<name>``
DEFAULT_DATASET = "wine"
DEFAULT_MISSING = 0.2
DEFAULT_TREES = 100
TRAIN_STEPS = 10
MISSING_CELLS = frozenset({"", "na", "nan", "null", "none"})


@dataclass(frozen=True)
class TabularData:
    """Feature rows (float64, NaN where missing), their labels, the features' names."""

    x: np.ndarray
    y: np.ndarray
    names: list[str]
    source: str
    dataset: str = ""
    label_names: list[str] | None = None  # a CSV's text labels, by class number
    ignored: tuple[str, ...] = ()  # CSV columns with a reserved name (id, device, ...)


@dataclass(frozen=True)
class TrainedTabular:
    """A fitted pipeline, its schema, held-out accuracy and the held-out rows."""

    model: Any  # a scikit-learn Pipeline
    schema: InputSchema
    accuracy: float
    training_data: dict[str, Any]
    x_test: np.ndarray
    y_test: np.ndarray


def blank_at_random(x: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``x`` with about ``share`` of its values made missing (NaN)."""
    if not 0 <= share < 1:
        raise ValueError(f"the missing share must lie in [0, 1), not {share}")
    out = np.array(x, dtype=np.float64)
    out[np.random.default_rng(seed).random(out.shape) < share] = np.nan
    return out


def bundled(name: str = DEFAULT_DATASET, missing: float = DEFAULT_MISSING,
            seed: int = 0) -> TabularData:
    """A dataset bundled with scikit-learn, with ``missing`` of its values blanked."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; bundled: {', '.join(DATASETS)}")
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    return TabularData(blank_at_random(data.data, missing, seed),
                       np.asarray(data.target, dtype=np.int32), list(data.feature_names),
                       f"sklearn.datasets.load_{name}", dataset=name)


def read_csv(path: str | Path, label: str, missing: float = 0.0, seed: int = 0
             ) -> TabularData:
    """Rows of a CSV file with a header; ``label`` names the label column (whole numbers
    0..1,000,000, or text, numbered in sorted order). ValueError naming the row and column
    of anything that is not a number."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path} is empty") from None
        if label not in header:
            raise ValueError(f"{path} has no column {label!r} (columns: {', '.join(header)})")
        if len(set(header)) != len(header):
            raise ValueError(f"{path} names a column twice")
        at = header.index(label)
        ignored = tuple(h for h in header if h in RESERVED_NAMES and h != label)
        keep = [i for i, h in enumerate(header) if i != at and h not in RESERVED_NAMES]
        rows, labels = [], []
        for line, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise ValueError(f"{path}:{line}: {len(cells)} cells, the header has "
                                 f"{len(header)}")
            rows.append([_cell(cells[i], path, line, header[i]) for i in keep])
            labels.append(cells[at].strip())
    if len(rows) < 8:
        raise ValueError(f"{path}: {len(rows)} rows are too few to train and hold out")
    y, label_names = _labels(labels, path)
    x = blank_at_random(np.array(rows, dtype=np.float64), missing, seed) if missing else \
        np.array(rows, dtype=np.float64)
    return TabularData(x, y, [header[i] for i in keep], f"csv:{Path(path).name}",
                       label_names=label_names, ignored=ignored)


def _cell(text: str, path: str | Path, line: int, column: str) -> float:
    text = text.strip()
    if text.lower() in MISSING_CELLS:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: column {column!r} holds {text[:40]!r}, not a "
                         "number") from None
    if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise ValueError(f"{path}:{line}: column {column!r} holds {text[:40]!r}, beyond a "
                         "float32")
    return value


def _labels(labels: list[str], path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Whole-number labels as they are; text labels numbered in sorted order."""
    try:
        numbers = [int(v) for v in labels]
    except ValueError:
        names = sorted(set(labels))
        if "" in names:
            raise ValueError(f"{path}: a row has no label") from None
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[v] for v in labels], dtype=np.int32), names
    if min(numbers) < 0 or max(numbers) > MAX_LABEL:
        raise ValueError(f"{path}: labels must lie in 0..{MAX_LABEL}")
    return np.array(numbers, dtype=np.int32), None


def schema_for(names: list[str], required: tuple[str, ...] = ()) -> InputSchema:
    """Every feature a number, missing allowed except those ``required``."""
    unknown = sorted(set(required) - set(names))
    if unknown:
        raise ValueError(f"required feature(s) {', '.join(unknown)} not among the features")
    if len(names) > MAX_FEATURES:
        raise ValueError(f"{len(names)} features; at most {MAX_FEATURES}")
    return InputSchema(tuple(Feature(n, "number", n not in required) for n in names))


def new_pipeline(seed: int = 0) -> Any:
    """The imputer and a forest grown by warm starts (trees added each step)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("forest", RandomForestClassifier(n_estimators=0, warm_start=True, n_jobs=1,
                                          random_state=seed)),
    ])


def train_tabular(data: TabularData, trees: int = DEFAULT_TREES,
                  required: tuple[str, ...] = (), seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> TrainedTabular:
    """Fit on 75% (stratified), hold out 25%, in TRAIN_STEPS steps of trees."""
    schema = schema_for(data.names, required)
    if required:
        keep = ~np.isnan(data.x[:, [data.names.index(r) for r in required]]).any(axis=1)
        data = TabularData(data.x[keep], data.y[keep], data.names, data.source,
                           data.dataset, data.label_names, data.ignored)
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=0.25, random_state=seed, stratify=data.y)
    model = new_pipeline(seed)
    for step in range(TRAIN_STEPS):
        model.set_params(forest__n_estimators=max(1, round(trees * (step + 1) / TRAIN_STEPS)))
        model.fit(x_train, y_train)
        if progress:
            progress(1)
    accuracy = float((model.predict(x_test) == y_test).mean())
    summary: dict[str, Any] = {
        "source": data.source, "dataset": data.dataset, "rows": int(len(data.x)),
        "train_rows": int(len(x_train)), "test_rows": int(len(x_test)),
        "features": len(data.names), "missing_share": round(float(np.isnan(data.x).mean()), 4),
        "classes": sorted(int(c) for c in np.unique(data.y)), "trees": trees,
    }
    if data.label_names:
        summary["label_names"] = data.label_names
    return TrainedTabular(model, schema, accuracy, summary, x_test, y_test)
