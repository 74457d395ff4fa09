"""The tabular kind on the wire: float32 rows where NaN marks a missing value, in sample
frames, JSON batches, prediction frames and review items; everything else refused with its
reason (a float64 row, infinity, too wide, ragged, a number beyond float32, a row on an
image item)."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from edgewise.app.core.bounds import MAX_FEATURES
from edgewise.app.core.frames import KIND_SAMPLES, BadInput, encode_frame
from edgewise.app.core.records import TABULAR, PredictionBatch, ReviewItem, SampleBatch
from edgewise.app.core.review_items import parse_review_item
from edgewise.app.core.wire import (
    decode_prediction_batch,
    decode_sample_batch,
    encode_prediction_batch,
    encode_sample_batch,
)

MAX_BYTES = 1_000_000
MAX_SAMPLES = 64


def rows(n: int = 3, width: int = 5) -> np.ndarray:
    values = np.arange(n * width, dtype=np.float32).reshape(n, width) / 4
    values[0, 1] = np.nan  # missing
    return values


def batch(values: np.ndarray | None = None) -> SampleBatch:
    values = rows() if values is None else values
    n = len(values)
    return SampleBatch("sensor-1", TABULAR, [f"r{i}" for i in range(n)],
                       np.full(n, time.time() - 1.0), np.array([1, -1, 2][:n] + [-1] * (n - 3),
                                                               dtype=np.int32), values)


def decode(data: bytes) -> SampleBatch:
    return decode_sample_batch(data, MAX_BYTES, MAX_SAMPLES)


def refused(data: bytes) -> str:
    with pytest.raises(BadInput) as caught:
        decode(data)
    return caught.value.reason


def test_tabular_frames_round_trip_with_missing_values() -> None:
    back = decode(encode_sample_batch(batch()))
    assert back.kind == TABULAR and back.pixels.dtype == np.float32
    assert np.array_equal(back.pixels, rows(), equal_nan=True)
    assert np.isnan(back.pixels[0, 1]) and back.features().shape == (3, 5)


def frame_with(values: np.ndarray) -> bytes:
    good = batch()
    meta = {"device": good.device, "kind": TABULAR, "ids": good.ids}
    return encode_frame(KIND_SAMPLES, meta, {"timestamps": good.timestamps,
                                             "labels": good.labels, "pixels": values})


def test_tabular_frames_refuse_what_is_not_a_row_of_floats() -> None:
    assert refused(frame_with(rows().astype(np.float64))) == "bad_dtype"
    assert refused(frame_with(rows().astype(np.uint8))) == "bad_dtype"
    infinite = rows()
    infinite[2, 3] = -np.inf
    assert refused(frame_with(infinite)) == "not_finite"
    assert refused(frame_with(np.zeros((3, 0), dtype=np.float32))) == "wrong_shape"
    assert refused(frame_with(np.zeros((3, MAX_FEATURES + 1), dtype=np.float32))) == \
        "wrong_shape"
    assert refused(frame_with(np.zeros((3, 2, 2), dtype=np.float32))) == "wrong_shape"
    assert refused(frame_with(np.zeros((2, 4), dtype=np.float32))) == "wrong_shape"


def json_batch(*features: object) -> bytes:
    return orjson.dumps({"device": "sensor-2", "kind": TABULAR, "samples": [
        {"id": f"j{i}", "ts": time.time(), "features": f} for i, f in enumerate(features)]})


def test_json_rows_take_null_for_missing_and_refuse_the_rest() -> None:
    back = decode(json_batch([1, None, 2.5], [0, 3, -1e30]))
    assert back.pixels.dtype == np.float32 and np.isnan(back.pixels[0, 1])
    assert back.pixels[1].tolist() == [0.0, 3.0, np.float32(-1e30)]
    assert refused(json_batch([1, 2], [1, 2, 3])) == "wrong_shape"
    assert refused(json_batch([1, True])) == "bad_features"
    assert refused(json_batch([1, "2"])) == "bad_features"
    assert refused(json_batch([1, [2]])) == "bad_features"
    assert refused(json_batch([1, 1e39])) == "out_of_range"  # beyond float32
    huge = json_batch([1, 7]).replace(b",7]", b",1" + b"0" * 60 + b"]")  # float64, > float32
    assert refused(huge) == "out_of_range"
    assert refused(json_batch([1, 7]).replace(b",7]", b",1e400]")) == "bad_json"  # infinity
    assert refused(json_batch([])) == "missing_field"
    assert refused(json_batch("1,2")) == "missing_field"
    assert refused(json_batch([0.0] * (MAX_FEATURES + 1))) == "missing_field"


def scored(values: np.ndarray) -> PredictionBatch:
    n = len(values)
    probs = np.tile(np.array([[0.7, 0.2]], dtype=np.float32), (n, 1))
    labels = np.tile(np.array([[2, 0]], dtype=np.int32), (n, 1))
    now = time.time()
    return PredictionBatch("sensor-1", TABULAR, "tabular", 1, [f"p{i}" for i in range(n)],
                           np.full(n, now - 1), np.full(n, -1, dtype=np.int32),
                           labels[:, 0].copy(), probs[:, 0].copy(), labels, probs,
                           np.full(n, 4.0, dtype=np.float32), values, now)


def test_tabular_prediction_frames_carry_the_rows() -> None:
    back = decode_prediction_batch(encode_prediction_batch(scored(rows())), MAX_BYTES)
    assert back.kind == TABULAR and np.array_equal(back.pixels, rows(), equal_nan=True)
    bad = rows()
    bad[1, 1] = np.inf
    with pytest.raises(BadInput) as caught:
        decode_prediction_batch(encode_prediction_batch(scored(bad)), MAX_BYTES)
    assert caught.value.reason == "not_finite"


def item(**changes: object) -> bytes:
    base = ReviewItem(id="r1", device="sensor-1", model="tabular", model_version=1, label=2,
                      confidence=0.4, margin=0.1, top_k=[(2, 0.4), (0, 0.3)], image_b64="",
                      shape=[3], timestamp=time.time(), kind=TABULAR, row=[1.5, None, 2.0])
    doc = orjson.loads(base.dumps(serializer="json"))
    doc.update(changes)
    return orjson.dumps(doc)


def test_review_items_of_tabular_samples_carry_their_row() -> None:
    assert parse_review_item(item())["row"] == [1.5, None, 2.0]
    for changes in ({"row": None}, {"row": [1.5, None]}, {"row": [1, "x", 2]},
                    {"row": [1, True, 2]}, {"image_b64": "AAAA"}, {"kind": "digits"},
                    {"row": [0.0] * (MAX_FEATURES + 1), "shape": [MAX_FEATURES + 1]}):
        with pytest.raises(BadInput):
            parse_review_item(item(**changes))
