"""A gathering's batches as the upsert's array parameters: every column one list, the
variable-width values flat with each row's offset and length, each sample once (the newest
scoring of a prediction, the first copy of a sample)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from edgewise.agents.sinks.columns import (
    flat_with_offsets,
    kept_rows,
    newest_scoring,
    prediction_params,
    sample_params,
)
from edgewise.app.core.records import TABULAR, SampleBatch
from tests.fixtures import hostile


def rows_of(params: list, n: int) -> list[tuple]:
    """The per-row columns (those of length n), zipped: what unnest makes of them."""
    columns = [p for p in params if isinstance(p, list) and len(p) == n]
    return list(zip(*columns, strict=True))


def test_predictions_become_one_list_per_column_with_their_top_k_cut_by_offsets() -> None:
    rng = random.Random(1)
    three = hostile.good_prediction_batch(rng, device="a", n=4, k=3)
    one = hostile.good_prediction_batch(rng, device="b", n=2, k=1)
    n, params = prediction_params([three, one])
    assert n == 6 and len(params) == 15
    (devices, ids, kinds, models, versions, labels, confidence, top_labels, top_probs,
     top_at, top_k, true_labels, latency, times, scored) = params
    assert devices == ["a"] * 4 + ["b"] * 2 and ids == three.ids + one.ids
    assert kinds == ["digits"] * 6 and models == ["digits"] * 6 and versions == [1] * 6
    assert top_k == [3, 3, 3, 3, 1, 1] and top_at == [0, 3, 6, 9, 12, 13]
    assert len(top_labels) == len(top_probs) == 14
    for row, (batch, i) in enumerate([(three, j) for j in range(4)] + [(one, 0), (one, 1)]):
        cut = slice(top_at[row], top_at[row] + top_k[row])
        assert top_labels[cut] == batch.top_labels[i].tolist()
        assert top_probs[cut] == batch.top_probs[i].tolist()
        assert labels[row] == batch.labels[i] and confidence[row] == batch.confidence[i]
        assert true_labels[row] == batch.true_labels[i] and latency[row] == batch.latency_ms[i]
        assert times[row] == batch.timestamps[i] and scored[row] == batch.scored_at
    assert all(isinstance(v, int) for v in labels + top_labels + top_at + top_k)
    assert all(isinstance(v, float) for v in confidence + top_probs + latency + times)


def test_a_sample_twice_in_a_gathering_is_sent_once_as_its_newest_scoring() -> None:
    rng = random.Random(2)
    first = hostile.good_prediction_batch(rng, device="a", n=3)
    newer = dataclasses.replace(first, scored_at=first.scored_at + 1, model_version=2,
                                labels=first.labels + 1)
    other_device = dataclasses.replace(first, device="b")  # the same ids on another device
    n, params = prediction_params([first, newer, first, other_device])
    assert n == 6
    rows = rows_of(params, n)
    assert sorted((r[0], r[1], r[4]) for r in rows) == sorted(
        [("a", i, 2) for i in first.ids] + [("b", i, 1) for i in first.ids])
    assert [r[5] for r in rows if r[0] == "a"] == (first.labels + 1).tolist()


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
    assert n == 5 and len(params) == 14
    (devices, ids, kinds, times, labels, shape, shape_at, shape_len, blob, pixels_at,
     pixels_len, features, features_at, features_len) = params
    assert kinds == ["digits"] * 3 + [TABULAR] * 2 and labels[3:] == [2, -1]
    assert shape == [8, 8] * 3 + [2, 2] and shape_at == [0, 2, 4, 6, 7]
    assert shape_len == [2, 2, 2, 1, 1]
    assert pixels_len == [64, 64, 64, 0, 0] and pixels_at == [0, 64, 128, 192, 192]
    assert isinstance(blob, bytes) and len(blob) == 192
    for i in range(3):
        assert blob[64 * i:64 * (i + 1)] == images.pixels[i].tobytes()
    assert features_len == [0, 0, 0, 2, 2] and features_at == [0, 0, 0, 0, 2]
    assert np.array_equal(np.array(features, dtype=np.float32), rows.ravel(), equal_nan=True)


def test_flat_with_offsets_keeps_rows_of_every_width_apart() -> None:
    flat, at, length = flat_with_offsets([np.arange(6).reshape(2, 3), np.zeros((2, 0)),
                                          np.arange(2).reshape(2, 1)])
    assert flat == [0, 1, 2, 3, 4, 5, 0, 1]
    assert at == [0, 3, 6, 6, 6, 7] and length == [3, 3, 0, 0, 1, 1]
