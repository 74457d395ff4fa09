"""score_rows: label, confidence and top-k of a whole batch, checked against a full sort.

score_rows takes a shortcut (``argpartition`` then a sort of k columns); these tests hold
it to what a plain ``argsort`` of every probability row says.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from edgewise.models.scoring import score_rows

CLASSES = np.array([2, 3, 5, 7, 11, 13])  # not 0..n-1: labels must come from classes_


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, np.ndarray]:
    """A tiny model on six noisy blobs, and rows it is unsure about."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(len(CLASSES), 5))
    y = np.repeat(CLASSES, 30)
    x = centres[np.repeat(np.arange(len(CLASSES)), 30)] + rng.normal(0, 2.0, size=(len(y), 5))
    model = LogisticRegression(max_iter=500).fit(x, y)
    rows = rng.normal(0, 3, size=(40, 5))
    return model, rows


def brute_force_top(model: LogisticRegression, rows: np.ndarray, k: int):
    probs = model.predict_proba(rows).astype(np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return model.classes_[order], np.take_along_axis(probs, order, axis=1)


def test_rows_have_no_tied_probabilities(fitted) -> None:
    """The comparison below is only exact when no row has two equal probabilities."""
    model, rows = fitted
    probs = model.predict_proba(rows).astype(np.float32)
    assert all(len(set(row.tolist())) == len(CLASSES) for row in probs)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_top_k_matches_a_full_argsort(fitted, k: int) -> None:
    model, rows = fitted
    scores = score_rows(model, rows, k)
    labels, probs = brute_force_top(model, rows, k)
    np.testing.assert_array_equal(scores.top_labels, labels)
    np.testing.assert_allclose(scores.top_probs, probs, rtol=1e-6)
    assert scores.top_labels.shape == scores.top_probs.shape == (len(rows), k)


def test_label_and_confidence_are_the_first_of_the_top_k(fitted) -> None:
    model, rows = fitted
    scores = score_rows(model, rows, 3)
    np.testing.assert_array_equal(scores.labels, model.predict(rows))
    np.testing.assert_array_equal(scores.labels, scores.top_labels[:, 0])
    np.testing.assert_array_equal(scores.confidence, scores.top_probs[:, 0])
    np.testing.assert_allclose(scores.confidence, model.predict_proba(rows).max(axis=1),
                               rtol=1e-6)


def test_top_probabilities_are_descending_and_labels_distinct(fitted) -> None:
    model, rows = fitted
    scores = score_rows(model, rows, 4)
    assert np.all(np.diff(scores.top_probs, axis=1) <= 0)
    assert all(len(set(row)) == 4 for row in scores.top_labels.tolist())
    assert set(np.unique(scores.top_labels)) <= set(CLASSES.tolist())


def test_k_larger_than_the_classes_keeps_every_class(fitted) -> None:
    model, rows = fitted
    scores = score_rows(model, rows, 100)
    assert scores.top_labels.shape == (len(rows), len(CLASSES))
    for row in scores.top_labels:
        assert sorted(row.tolist()) == CLASSES.tolist()
    np.testing.assert_allclose(scores.top_probs.sum(axis=1), 1.0, rtol=1e-5)
    labels, probs = brute_force_top(model, rows, len(CLASSES))
    np.testing.assert_array_equal(scores.top_labels, labels)


def test_result_columns_have_wire_dtypes(fitted) -> None:
    model, rows = fitted
    scores = score_rows(model, rows, 3)
    assert scores.labels.dtype == np.int32 and scores.top_labels.dtype == np.int32
    assert scores.confidence.dtype == np.float32 and scores.top_probs.dtype == np.float32
    assert scores.top_labels.flags.c_contiguous and scores.top_probs.flags.c_contiguous
    assert scores.labels.shape == scores.confidence.shape == (len(rows),)


def test_a_single_row_and_a_two_class_model() -> None:
    x = np.array([[0.0], [0.2], [0.9], [1.0]])
    model = LogisticRegression().fit(x, [4, 4, 9, 9])
    scores = score_rows(model, np.array([[0.95]]), 3)
    assert scores.top_labels.tolist() == [[9, 4]]
    assert scores.labels.tolist() == [9]
    assert scores.top_probs[0, 0] > 0.5 > scores.top_probs[0, 1]
