"""The digits model: scikit-learn's bundled 8x8 hand-written digits, trained two ways.

``linear`` is a scaled logistic regression (fast, ~97% held out); ``forest`` is a 100-tree
random forest (the slow model the benchmark also measures). Training reports progress step
by step (warm starts), so the progress bar shows real work, not a spinner.

scikit-learn and SciPy are imported by the functions that use them, not with the module:
they take seconds to import on a small machine, and the stages that only read a batch's
labels (route, aggregate, evaluate, review, the sinks) start without them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ALGORITHMS = ("linear", "forest")
TRAIN_STEPS = 10


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model with what the registry records about it."""

    model: Any
    algorithm: str
    accuracy: float
    training_data: dict[str, Any]


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 bundled digits as uint8 images (n, 8, 8) in 0..16, and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.uint8), data.target.astype(np.int32)


def make_harder(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, a rotation or an occluding bar on each image, so the model is unsure."""
    from scipy import ndimage

    out = images.astype(np.float32).copy()
    for i in range(len(out)):
        choice = rng.integers(3)
        if choice == 0:
            out[i] += rng.normal(0, 5.0, out[i].shape)
        elif choice == 1:
            out[i] = ndimage.rotate(out[i], rng.uniform(-50, 50), reshape=False, order=1)
        else:
            row = rng.integers(1, 6)
            out[i, row : row + 3, :] = 0
    return np.clip(np.rint(out), 0, 16).astype(np.uint8)


def new_estimator(algorithm: str) -> Any:
    """An untrained estimator set for warm-start training in TRAIN_STEPS steps."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if algorithm == "linear":
        return Pipeline([
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=20, warm_start=True, C=0.5)),
        ])
    if algorithm == "forest":
        return RandomForestClassifier(n_estimators=0, warm_start=True, n_jobs=1, random_state=0)
    raise ValueError(f"unknown algorithm '{algorithm}', choose one of {', '.join(ALGORITHMS)}")


def fit_in_steps(
    algorithm: str, x: np.ndarray, y: np.ndarray, progress: Callable[[int], None] | None = None
) -> Any:
    """Fit in TRAIN_STEPS warm-started steps, calling ``progress(1)`` after each."""
    from sklearn.exceptions import ConvergenceWarning

    model = new_estimator(algorithm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for step in range(TRAIN_STEPS):
            if algorithm == "forest":
                model.set_params(n_estimators=(step + 1) * 10)
            model.fit(x, y)
            if progress:
                progress(1)
    return model


def train_digits(
    algorithm: str = "linear",
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    source: str = "sklearn.datasets.load_digits",
    seed: int = 0,
) -> TrainedModel:
    """Train on the digits (or the given rows), hold out 25%, report held-out accuracy."""
    from sklearn.model_selection import train_test_split

    if x is None or y is None:
        images, y = digit_images()
        x = images.reshape(len(images), -1)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    model = fit_in_steps(algorithm, x_train, y_train, progress)
    accuracy = float((model.predict(x_test) == y_test).mean())
    summary = {
        "source": source, "rows": int(len(x)), "train_rows": int(len(x_train)),
        "test_rows": int(len(x_test)), "features": int(x.shape[1]),
        "classes": sorted(int(c) for c in np.unique(y)),
    }
    return TrainedModel(model, algorithm, accuracy, summary)
