"""A gathering's batches as the insert's array parameters: what a batch holds once sent
once, each row its own values and its batch, the variable-width values flat with each
batch's start and width, each sample once (the newest scoring of a prediction, the first
copy of a sample)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from edgewise.agents.sinks.columns import (
    flat,
    kept_rows,
    newest_scoring,
    prediction_params,
    sample_params,
)
from edgewise.app.core.records import TABULAR, SampleBatch
from tests.fixtures import hostile


def test_predictions_go_as_batch_columns_row_columns_and_a_flat_top_k() -> None:
    rng = random.Random(1)
    three = hostile.good_prediction_batch(rng, device="a", n=4, k=3)
    one = dataclasses.replace(hostile.good_prediction_batch(rng, device="b", n=2, k=1),
                              model_version=7)
    n, params = prediction_params([three, one])
    assert n == 6 and len(params) == 18
    (devices, kinds, models, versions, scored, first, top_k, top_at, top_labels, top_probs,
     ids, batch_of, labels, confidence, true_labels, latency, times, count) = params
    assert devices == ["a", "b"] and kinds == ["digits"] * 2 and models == ["digits"] * 2
    assert versions == [1, 7] and scored == [three.scored_at, one.scored_at]
    assert first == [0, 4] and top_k == [3, 1] and top_at == [0, 12] and count == 6
    assert ids == three.ids + one.ids and batch_of == [1, 1, 1, 1, 2, 2]
    rows = [(three, i) for i in range(4)] + [(one, 0), (one, 1)]
    for row, (batch, i) in enumerate(rows):
        b = batch_of[row] - 1
        start = top_at[b] + (row - first[b]) * top_k[b]  # as the server cuts it
        assert top_labels[start:start + top_k[b]] == batch.top_labels[i].tolist()
        assert top_probs[start:start + top_k[b]] == batch.top_probs[i].tolist()
        assert labels[row] == batch.labels[i] and confidence[row] == batch.confidence[i]
        assert true_labels[row] == batch.true_labels[i] and latency[row] == batch.latency_ms[i]
        assert times[row] == batch.timestamps[i]
    assert all(isinstance(v, int) for v in labels + top_labels + top_at + top_k + first)
    assert all(isinstance(v, float) for v in confidence + top_probs + latency + times)


def test_a_sample_twice_in_a_gathering_is_sent_once_as_its_newest_scoring() -> None:
    rng = random.Random(2)
    first = hostile.good_prediction_batch(rng, device="a", n=3)
    newer = dataclasses.replace(first, scored_at=first.scored_at + 1, model_version=2,
                                labels=first.labels + 1)
    other_device = dataclasses.replace(first, device="b")  # the same ids on another device
    n, params = prediction_params([first, newer, first, other_device])
    assert n == 6
    ids, batch_of, labels = params[10], params[11], params[12]
    kept = sorted((params[0][b - 1], i, params[3][b - 1]) for i, b in zip(ids, batch_of,
                                                                          strict=True))
    assert kept == sorted([("a", i, 2) for i in first.ids] + [("b", i, 1) for i in first.ids])
    assert [label for label, b in zip(labels, batch_of, strict=True) if b == 2] == \
        (first.labels + 1).tolist()
    assert params[5] == [0, 0, 3, 3]  # each batch's first row among those kept


def test_kept_rows_masks_only_what_repeats() -> None:
    rng = random.Random(3)
    a = hostile.good_prediction_batch(rng, n=3)
    b = hostile.good_prediction_batch(rng, n=2)
    assert kept_rows([a, b], newest_scoring) == [None, None]
    again = dataclasses.replace(a, ids=[a.ids[0], "new-1", "new-2"], scored_at=a.scored_at - 1)
    masks = kept_rows([a, again], newest_scoring)
    assert masks[0] is None and masks[1].tolist() == [False, True, True]  # older: dropped
    masks = kept_rows([again, a], None)  # no rank: the first copy stays
    assert masks[0] is None and masks[1].tolist() == [False, True, True]


def test_samples_carry_pixels_as_one_blob_and_tabular_rows_as_one_flat_array() -> None:
    images = hostile.good_sample_batch(random.Random(4), device="cam", n=3)
    rows = np.array([[1.5, np.nan], [np.nan, 2.0]], dtype=np.float32)
    table = SampleBatch(device="http", kind=TABULAR, ids=["t0", "t1"],
                        timestamps=np.array([1.7e9, 1.7e9 + 1]),
                        labels=np.array([2, -1], dtype=np.int32), pixels=rows)
    n, params = sample_params([images, table])
    assert n == 5 and len(params) == 17
    (devices, kinds, first, shape, shape_at, shape_len, pixels_at, pixels_width, features_at,
     features_width, blob, features, ids, batch_of, times, labels, count) = params
    assert devices == ["cam", "http"] and kinds == ["digits", TABULAR] and first == [0, 3]
    assert shape == [8, 8, 2] and shape_at == [0, 2] and shape_len == [2, 1]
    assert pixels_at == [0, 192] and pixels_width == [64, 0] and isinstance(blob, bytes)
    assert features_at == [0, 0] and features_width == [0, 2] and count == 5
    assert ids == images.ids + ["t0", "t1"] and batch_of == [1, 1, 1, 2, 2]
    for i in range(3):
        assert blob[64 * i:64 * (i + 1)] == images.pixels[i].tobytes()
    assert np.array_equal(np.array(features, dtype=np.float32), rows.ravel(), equal_nan=True)
    assert labels[3:] == [2, -1] and times[3:] == [1.7e9, 1.7e9 + 1]


def test_flat_keeps_each_part_s_start_and_width() -> None:
    values, starts, widths = flat([np.arange(6).reshape(2, 3), np.zeros((2, 0)),
                                   np.arange(2).reshape(2, 1)])
    assert values == [0, 1, 2, 3, 4, 5, 0, 1]
    assert starts == [0, 6, 6] and widths == [3, 0, 1]
