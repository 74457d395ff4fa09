"""Prediction frames are checked column by column: every hostile frame is a BadInput with
its reason, every frame the score stage makes passes, whatever the numbers in it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.frames import KIND_PREDICTIONS, BadInput, encode_frame
from edgewise.app.core.prediction_wire import decode_prediction_batch, encode_prediction_batch
from tests.fixtures import hostile

LIMITS = {"max_bytes": hostile.MAX_BYTES, "max_samples": hostile.MAX_SAMPLES,
          "future_skew": hostile.SKEW}


def reason_of(data: bytes, **limits: float) -> str:
    with pytest.raises(BadInput) as caught:
        decode_prediction_batch(data, **{**LIMITS, **limits})
    return caught.value.reason


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_prediction_frames_are_refused_with_their_reason(rng: random.Random) -> None:
    data, reason = hostile.hostile_prediction(rng)
    assert reason_of(data) == reason


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, hostile.MAX_SAMPLES),
       st.integers(1, 10))
def test_what_the_score_stage_makes_passes(rng: random.Random, n: int, k: int) -> None:
    batch = hostile.good_prediction_batch(rng, n=n, k=k)
    back = decode_prediction_batch(encode_prediction_batch(batch), **LIMITS)
    assert back.ids == batch.ids and back.top_probs.shape == (n, k)
    np.testing.assert_array_equal(back.confidence, batch.confidence)


def frame_with(**columns: np.ndarray) -> bytes:
    meta, cols = hostile.prediction_parts(hostile.good_prediction_batch(random.Random(1), n=3))
    return encode_frame(KIND_PREDICTIONS, meta, {**cols, **columns})


def test_nan_labels_are_refused_before_route_converts_them() -> None:
    assert reason_of(frame_with(labels=np.array([1.0, np.nan, 2.0]))) == "bad_dtype"


def test_an_infinite_timestamp_never_reaches_the_windows() -> None:
    meta, cols = hostile.prediction_parts(hostile.good_prediction_batch(random.Random(2), n=3))
    cols["timestamps"][1] = np.inf
    assert reason_of(encode_frame(KIND_PREDICTIONS, meta, cols)) == "bad_timestamp"


def test_nan_top_k_probabilities_never_reach_log_loss() -> None:
    meta, cols = hostile.prediction_parts(hostile.good_prediction_batch(random.Random(3), n=3))
    cols["top_probs"][2, 1] = np.nan
    assert reason_of(encode_frame(KIND_PREDICTIONS, meta, cols)) == "nan"


def test_a_50000_row_frame_is_held_to_max_batch_samples() -> None:
    batch = hostile.good_prediction_batch(random.Random(4), n=50_000)
    data = encode_prediction_batch(batch)
    assert reason_of(data, max_bytes=len(data), max_samples=4096) == "too_many_samples"
    assert len(decode_prediction_batch(data, len(data), 50_000)) == 50_000


def test_future_skew_is_the_bound_given() -> None:
    batch = hostile.good_prediction_batch(random.Random(5), n=2)
    data = encode_prediction_batch(batch)
    ahead = batch.scored_at - 100  # as if this host's clock were 100 s behind the edge's
    assert reason_of(data, now=ahead, future_skew=30) == "future_timestamp"
    assert len(decode_prediction_batch(data, hostile.MAX_BYTES, now=ahead,
                                       future_skew=200)) == 2
