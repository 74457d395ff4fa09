"""The wire between stages: frames round trip, and every bad input is a BadInput.

``decode_sample_batch`` is the one gate every sample passes (app/wire.py). Its promise is
that anything it cannot trust raises BadInput with a short ``reason`` — never another
exception, because the stages catch BadInput to dead-letter and carry on.
"""

from __future__ import annotations

import base64
import random
import struct
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.frames import (
    KIND_PREDICTIONS,
    KIND_SAMPLES,
    BadInput,
    encode_frame,
    is_frame,
)
from edgewise.app.core.records import PredictionBatch, SampleBatch
from edgewise.app.core.wire import (
    MAX_LABEL,
    decode_prediction_batch,
    decode_sample_batch,
    encode_prediction_batch,
    encode_sample_batch,
)
from tests.fixtures import hostile

MAX_BYTES = 1_000_000
MAX_SAMPLES = 64
T0 = 1_700_000_000.0
PREDICTION_COLUMNS = ("timestamps", "true_labels", "labels", "confidence", "top_labels",
                      "top_probs", "latency_ms", "pixels")


def sample_batch(n: int = 3, device: str = "cam-1") -> SampleBatch:
    rng = np.random.default_rng(n)
    return SampleBatch(
        device=device, kind="digits", ids=[f"{device}-{i}" for i in range(n)],
        timestamps=T0 + np.arange(n, dtype=np.float64) / 10,
        labels=np.array([(i % 10) if i % 4 else -1 for i in range(n)], dtype=np.int32),
        pixels=rng.integers(0, 17, size=(n, 8, 8)).astype(np.uint8),
    )


def prediction_batch(n: int = 3, k: int = 3) -> PredictionBatch:
    rng = np.random.default_rng(7)
    probs = np.sort(rng.dirichlet(np.ones(10), size=n).astype(np.float32), axis=1)[:, ::-1]
    top_labels = np.stack([np.roll(np.arange(k, dtype=np.int32), i) for i in range(n)])
    return PredictionBatch(
        device="cam-2", kind="digits", model="digits", model_version=4,
        ids=[f"s{i}" for i in range(n)], timestamps=T0 + np.arange(n, dtype=np.float64),
        true_labels=np.array([3, -1, 5][:n], dtype=np.int32),
        labels=top_labels[:, 0].copy(), confidence=probs[:, 0].copy(), top_labels=top_labels,
        top_probs=np.ascontiguousarray(probs[:, :k]),
        latency_ms=np.linspace(1, 9, n).astype(np.float32),
        pixels=rng.integers(0, 17, size=(n, 8, 8)).astype(np.uint8), scored_at=T0 + 5,
    )


def sample_arrays(n: int = 2, **replace: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "timestamps": np.full(n, T0), "labels": np.zeros(n, dtype=np.int32),
        "pixels": np.ones((n, 8, 8), dtype=np.uint8),
    }
    arrays.update(replace)
    return arrays


def sample_frame(meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> bytes:
    """A sample frame of 2 good samples, with the given metadata or arrays replaced."""
    header = {"device": "cam-1", "kind": "digits", "ids": ["a", "b"]}
    header.update(meta or {})
    return encode_frame(KIND_SAMPLES, header, sample_arrays(**arrays))


def raw_frame(header: dict[str, Any] | bytes, body: bytes = b"", version: int = 1,
              kind: int = KIND_SAMPLES) -> bytes:
    """A frame built by hand, so the header can say anything."""
    head = header if isinstance(header, bytes) else orjson.dumps(header)
    return struct.pack(">2sBBI", b"EW", version, kind, len(head)) + head + body


def one_array_frame(entry: list[Any], body: bytes = b"") -> bytes:
    return raw_frame({"device": "cam-1", "ids": ["a"], "arrays": [entry]}, body)


def json_sample(**replace: Any) -> dict[str, Any]:
    """A good JSON sample; a field given as ``...`` is left out."""
    sample = {"id": "s1", "ts": T0, "label": 4, "pixels": [0] * 64}
    sample.update(replace)
    return {k: v for k, v in sample.items() if v is not ...}


def json_batch(*samples: Any, **replace: Any) -> bytes:
    """A good JSON batch document; a field given as ``...`` is left out."""
    doc = {"schema": 1, "device": "cam-1", "kind": "digits",
           "samples": list(samples) or [json_sample()]}
    doc.update(replace)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def decode(data: bytes, max_samples: int = MAX_SAMPLES) -> SampleBatch:
    return decode_sample_batch(data, MAX_BYTES, max_samples)


def reason_of(data: bytes, max_samples: int = MAX_SAMPLES) -> str:
    with pytest.raises(BadInput) as caught:
        decode(data, max_samples)
    return caught.value.reason


# -- round trips ------------------------------------------------------------------------


def test_sample_batch_round_trips_through_a_frame() -> None:
    batch = sample_batch(5)
    data = encode_sample_batch(batch)
    assert is_frame(data)
    back = decode(data)
    assert (back.device, back.kind, back.ids) == (batch.device, batch.kind, batch.ids)
    np.testing.assert_array_equal(back.timestamps, batch.timestamps)
    np.testing.assert_array_equal(back.labels, batch.labels)
    np.testing.assert_array_equal(back.pixels, batch.pixels)
    assert back.labels.dtype == np.int32 and back.pixels.dtype == np.uint8
    assert back.features().shape == (5, 64)


def test_frame_carries_pixels_as_raw_bytes() -> None:
    batch = sample_batch(100)
    assert len(encode_sample_batch(batch)) < 100 * 64 + 100 * 12 + 2000


def test_prediction_batch_round_trips_through_a_frame() -> None:
    batch = prediction_batch()
    back = decode_prediction_batch(encode_prediction_batch(batch), MAX_BYTES)
    for name in ("device", "kind", "model", "model_version", "ids", "scored_at"):
        assert getattr(back, name) == getattr(batch, name), name
    for name in PREDICTION_COLUMNS:
        np.testing.assert_array_equal(getattr(back, name), getattr(batch, name), err_msg=name)
    np.testing.assert_allclose(back.margins(), batch.margins())
    assert [p.id for p in back.predictions()] == batch.ids
    assert back.predictions()[1].true_label is None


def test_json_batch_is_accepted() -> None:
    data = json_batch(json_sample(id="a", label=1), json_sample(id="b", label=None, ts=T0 + 1))
    batch = decode(data)
    assert batch.ids == ["a", "b"]
    assert batch.device == "cam-1"
    np.testing.assert_array_equal(batch.labels, [1, -1])
    np.testing.assert_array_equal(batch.timestamps, [T0, T0 + 1])
    assert batch.pixels.shape == (2, 8, 8) and batch.pixels.dtype == np.uint8


def test_json_single_sample_is_a_batch_of_one() -> None:
    pixels = list(range(16)) * 4
    doc = {"device": "sensor-9", "id": "only", "timestamp": T0, "pixels": pixels, "label": 2}
    batch = decode(orjson.dumps(doc))
    assert batch.ids == ["only"] and batch.device == "sensor-9" and batch.kind == "digits"
    np.testing.assert_array_equal(batch.pixels.ravel(), pixels)
    assert batch.labels.tolist() == [2]


def test_json_base64_pixels_are_accepted() -> None:
    image = (np.arange(64) % 17).astype(np.uint8)
    sample = json_sample(pixels=base64.b64encode(image.tobytes()).decode())
    batch = decode(json_batch(sample))
    np.testing.assert_array_equal(batch.pixels[0], image.reshape(8, 8))


def test_json_whole_float_pixels_are_accepted() -> None:
    batch = decode(json_batch(json_sample(pixels=[[2.0] * 8] * 8)))
    assert batch.pixels.dtype == np.uint8 and int(batch.pixels.sum()) == 128


def test_frame_at_the_size_limit_is_accepted_one_byte_less_is_not() -> None:
    data = encode_sample_batch(sample_batch())
    assert len(decode_sample_batch(data, len(data), MAX_SAMPLES)) == 3
    with pytest.raises(BadInput) as caught:
        decode_sample_batch(data, len(data) - 1, MAX_SAMPLES)
    assert caught.value.reason == "oversize"


def test_bad_input_keeps_reason_and_detail() -> None:
    error = BadInput("bad_label", "label must be an integer")
    assert (error.reason, error.detail) == ("bad_label", "label must be an integer")
    assert str(error) == "bad_label: label must be an integer"
    assert isinstance(error, ValueError)


# -- every bad input has its reason -----------------------------------------------------

GOOD_FRAME = encode_sample_batch(sample_batch(2))
HEADER_END = 8 + struct.unpack(">I", GOOD_FRAME[4:8])[0]
NAN_PIXELS = np.ones((2, 8, 8), dtype=np.float32)
NAN_PIXELS[1, 3, 3] = np.nan
INF_PIXELS = np.ones((2, 8, 8), dtype=np.float32)
INF_PIXELS[0, 0, 0] = np.inf

BAD_SAMPLES = [
    # size and framing
    ("empty", b"", "empty"),
    ("not json", b"this is not json", "bad_json"),
    ("json cut short", b'{"device": "cam-1", "sam', "bad_json"),
    ("json NaN literal", b'{"device": "d", "samples": [{"id": "a", "pixels": [NaN]}]}',
     "bad_json"),
    ("json array", b"[1, 2, 3]", "bad_json"),
    ("json string", b'"cam-1"', "bad_json"),
    ("json schema 2", json_batch(schema=2), "unknown_schema_version"),
    ("frame version 2", GOOD_FRAME[:2] + b"\x02" + GOOD_FRAME[3:], "unknown_schema_version"),
    ("frame shorter than prefix", GOOD_FRAME[:5], "truncated"),
    ("frame header cut", GOOD_FRAME[: HEADER_END - 3], "truncated"),
    ("frame body cut", GOOD_FRAME[:-1], "truncated"),
    ("frame trailing bytes", GOOD_FRAME + b"\x00", "trailing_bytes"),
    ("frame header garbage", raw_frame(b"{not json}"), "bad_header"),
    ("frame header array", raw_frame(b"[1, 2]"), "bad_header"),
    ("frame header without arrays", raw_frame({"device": "cam-1", "ids": ["a"]}),
     "bad_header"),
    ("frame array entry of two", one_array_frame(["pixels", "uint8"]), "bad_header"),
    ("frame array shape not numbers", one_array_frame(["pixels", "uint8", ["x"]]),
     "bad_header"),
    ("frame dtype object", one_array_frame(["pixels", "object", [1]]), "bad_dtype"),
    ("frame dtype complex", one_array_frame(["pixels", "complex128", [1]]), "bad_dtype"),
    ("frame array name not text", one_array_frame([7, "uint8", [1]], b"\x00"), "bad_dtype"),
    ("frame negative dimension", one_array_frame(["pixels", "uint8", [-1]]), "wrong_shape"),
    ("frame five dimensions", one_array_frame(["pixels", "uint8", [1, 1, 1, 1, 1]], b"\x00"),
     "wrong_shape"),
    ("prediction frame", encode_prediction_batch(prediction_batch()), "wrong_kind"),
    # shape and values
    ("frame pixels 4x4", sample_frame(pixels=np.ones((2, 4, 4), np.uint8)), "wrong_shape"),
    ("frame pixels flat", sample_frame(pixels=np.ones((2, 64), np.uint8)), "wrong_shape"),
    ("frame one timestamp short", sample_frame(timestamps=np.full(1, T0)), "wrong_shape"),
    ("frame labels 2-d", sample_frame(labels=np.zeros((2, 1), np.int32)), "wrong_shape"),
    ("json ten pixels", json_batch(json_sample(pixels=[1] * 10)), "wrong_shape"),
    ("json short base64", json_batch(json_sample(pixels="AAAA")), "wrong_shape"),
    ("frame NaN pixel", sample_frame(pixels=NAN_PIXELS), "nan"),
    ("frame infinite pixel", sample_frame(pixels=INF_PIXELS), "nan"),
    ("frame pixel 17", sample_frame(pixels=np.full((2, 8, 8), 17, np.uint8)), "out_of_range"),
    ("frame negative pixel", sample_frame(pixels=np.full((2, 8, 8), -1, np.int32)),
     "out_of_range"),
    ("json pixel 300", json_batch(json_sample(pixels=[300] + [0] * 63)), "out_of_range"),
    ("json pixel 17", json_batch(json_sample(pixels=[17] + [0] * 63)), "out_of_range"),
    ("json pixel negative", json_batch(json_sample(pixels=[-1] + [0] * 63)), "out_of_range"),
    ("json pixel fraction", json_batch(json_sample(pixels=[0.5] + [0] * 63)), "out_of_range"),
    ("json pixel 1e308", json_batch(json_sample(pixels=[1e308] + [0] * 63)), "out_of_range"),
    ("base64 pixel 200",
     json_batch(json_sample(pixels=base64.b64encode(bytes([200] * 64)).decode())),
     "out_of_range"),
    ("base64 invalid", json_batch(json_sample(pixels="!!not base64!!")), "bad_pixels"),
    ("json pixels of words", json_batch(json_sample(pixels=["a"] * 64)), "bad_pixels"),
    ("json pixels ragged", json_batch(json_sample(pixels=[[1, 2], [3]])), "bad_pixels"),
    # missing fields
    ("json no device", json_batch(device=...), "missing_field"),
    ("json empty device", json_batch(device=""), "missing_field"),
    ("json device not text", json_batch(device=12), "missing_field"),
    ("json device too long", json_batch(device="d" * 201), "missing_field"),
    ("json no samples, no id", orjson.dumps({"device": "cam-1"}), "missing_field"),
    ("json sample without id", json_batch(json_sample(id=...)), "missing_field"),
    ("json sample with empty id", json_batch(json_sample(id="")), "bad_id"),
    ("json sample not an object", json_batch(1), "missing_field"),
    ("json sample without pixels", json_batch(json_sample(pixels=None)), "missing_field"),
    ("frame no device", sample_frame({"device": None}), "missing_field"),
    ("frame no ids", sample_frame({"ids": None}), "missing_field"),
    ("frame ids not text", sample_frame({"ids": [1, 2]}), "missing_field"),
    ("frame no pixels array",
     encode_frame(KIND_SAMPLES, {"device": "d", "ids": ["a"]},
                  {"timestamps": np.full(1, T0), "labels": np.zeros(1, np.int32)}),
     "missing_field"),
    # counts and ids
    ("json no samples", json_batch(samples=[]), "empty_batch"),
    ("frame no samples",
     encode_frame(KIND_SAMPLES, {"device": "d", "ids": []},
                  sample_arrays(0, pixels=np.zeros((0, 8, 8), np.uint8))),
     "empty_batch"),
    ("json duplicate ids", json_batch(json_sample(id="x"), json_sample(id="x")),
     "duplicate_ids"),
    ("frame duplicate ids", sample_frame({"ids": ["a", "a"]}), "duplicate_ids"),
    ("json id too long", json_batch(json_sample(id="i" * 201)), "bad_id"),
    # labels and timestamps
    ("json label text", json_batch(json_sample(label="7")), "bad_label"),
    ("json label fraction", json_batch(json_sample(label=1.5)), "bad_label"),
    ("json label boolean", json_batch(json_sample(label=True)), "bad_label"),
    ("json label below -1", json_batch(json_sample(label=-2)), "bad_label"),
    ("json label above limit", json_batch(json_sample(label=MAX_LABEL + 1)), "bad_label"),
    ("frame label -2", sample_frame(labels=np.array([1, -2], np.int32)), "bad_label"),
    ("json ts text", json_batch(json_sample(ts="now")), "bad_timestamp"),
    ("json ts missing", json_batch(json_sample(ts=...)), "bad_timestamp"),
    ("json ts boolean", json_batch(json_sample(ts=True)), "bad_timestamp"),
    ("json ts zero", json_batch(json_sample(ts=0)), "bad_timestamp"),
    ("json ts negative", json_batch(json_sample(ts=-5.0)), "bad_timestamp"),
    ("frame ts NaN", sample_frame(timestamps=np.array([T0, np.nan])), "bad_timestamp"),
    # kinds
    ("json kind faces", json_batch(kind="faces"), "unknown_kind"),
    ("json kind number", json_batch(kind=5), "unknown_kind"),
    ("frame kind unknown", sample_frame({"kind": "audio"}), "unknown_kind"),
    ("frame kind number", sample_frame({"kind": 3}), "unknown_kind"),
]


@pytest.mark.parametrize(
    ("data", "reason"), [pytest.param(data, reason, id=name) for name, data, reason in BAD_SAMPLES]
)
def test_bad_sample_input_gives_its_reason(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


def test_oversize_is_refused_before_decoding() -> None:
    with pytest.raises(BadInput) as caught:
        decode_sample_batch(b"x" * 2000, 1999, MAX_SAMPLES)
    assert caught.value.reason == "oversize"
    assert "2000" in caught.value.detail


def test_too_many_samples() -> None:
    assert reason_of(encode_sample_batch(sample_batch(5)), max_samples=4) == "too_many_samples"
    assert len(decode(encode_sample_batch(sample_batch(4)), max_samples=4)) == 4


def test_json_nan_cannot_reach_the_pixels() -> None:
    """orjson refuses NaN and infinity literals, so JSON pixels are finite by construction."""
    assert reason_of(b'{"device": "d", "id": "a", "ts": 1, "pixels": [Infinity]}') == "bad_json"
    assert reason_of(b'{"device": "d", "id": "a", "ts": 1, "pixels": [1e999]}') == "bad_json"


# -- inputs that escape as other exceptions (each one would crash a stage) ---------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(json_batch(schema=[1]), id="json schema is a list"),
        pytest.param(json_batch(schema={"v": 1}), id="json schema is an object"),
        pytest.param(json_batch(json_sample(label=3_000_000_000)), id="json label beyond int32"),
        pytest.param(one_array_frame(["pixels", ["uint8"], [1, 8, 8]]), id="frame dtype is a list"),
        pytest.param(one_array_frame(["pixels", "uint8", [2**32, 2**32]]),
                     id="frame shape product wraps to 0"),
        pytest.param(one_array_frame(["pixels", "uint8", [2**62, 4]]),
                     id="frame shape product wraps past int64"),
        pytest.param(one_array_frame(["pixels", "uint8", [1e30]]),
                     id="frame shape beyond int64"),
    ],
)
def test_hostile_input_is_bad_input_not_a_crash(data: bytes) -> None:
    with pytest.raises(BadInput):
        decode(data)


def test_frame_labels_beyond_int32_are_refused_not_wrapped() -> None:
    wrapped = np.array([2**32 + 3, 1], dtype=np.int64)  # int32 of 2**32 + 3 is 3
    assert reason_of(sample_frame(labels=wrapped)) == "bad_label"


def test_frame_pixels_must_be_whole_numbers_as_in_json() -> None:
    halves = np.full((2, 8, 8), 1.5, dtype=np.float32)
    assert reason_of(sample_frame(pixels=halves)) == "out_of_range"


# -- prediction frames ------------------------------------------------------------------


def prediction_frame(meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> bytes:
    batch = prediction_batch()
    header = {"device": batch.device, "kind": batch.kind, "model": batch.model,
              "model_version": batch.model_version, "ids": batch.ids,
              "scored_at": batch.scored_at}
    header.update(meta or {})
    columns = {name: getattr(batch, name) for name in PREDICTION_COLUMNS}
    columns.update(arrays)
    return encode_frame(KIND_PREDICTIONS, header, columns)


def prediction_reason(data: bytes, max_bytes: int = MAX_BYTES) -> str:
    with pytest.raises(BadInput) as caught:
        decode_prediction_batch(data, max_bytes)
    return caught.value.reason


def test_bad_prediction_frames_give_their_reason() -> None:
    good = prediction_frame()
    assert prediction_reason(good, len(good) - 1) == "oversize"
    assert prediction_reason(b'{"device": "cam-2"}') == "not_a_frame"
    assert prediction_reason(encode_sample_batch(sample_batch())) == "wrong_kind"
    assert prediction_reason(good[:-2]) == "truncated"
    assert prediction_reason(prediction_frame({"model": None})) == "missing_field"
    assert prediction_reason(prediction_frame({"model_version": "4"})) == "missing_field"
    assert prediction_reason(prediction_frame({"device": ""})) == "missing_field"
    assert prediction_reason(prediction_frame(latency_ms=np.ones(2, np.float32))) == "wrong_shape"
    without = {"device": "d", "ids": ["a"], "model": "m", "model_version": 1}
    assert prediction_reason(encode_frame(KIND_PREDICTIONS, without,
                                          {"labels": np.zeros(1, np.int32)})) == "missing_field"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(prediction_frame({"scored_at": "soon"}), id="scored_at is text"),
        pytest.param(prediction_frame({"scored_at": None}), id="scored_at is null"),
        pytest.param(prediction_frame(top_probs=np.ones(3, np.float32)), id="top_probs 1-d"),
        pytest.param(raw_frame({"device": "d", "ids": ["a"], "model": "m", "model_version": 1,
                                "arrays": [[n, "float32", []] for n in PREDICTION_COLUMNS]},
                               b"\x00" * 4 * len(PREDICTION_COLUMNS), kind=KIND_PREDICTIONS),
                     id="0-d columns"),
    ],
)
def test_hostile_prediction_frame_is_bad_input_not_a_crash(data: bytes) -> None:
    with pytest.raises(BadInput):
        batch = decode_prediction_batch(data, MAX_BYTES)
        batch.margins()  # what route and aggregate do first with a decoded batch


def test_empty_prediction_batch_is_refused_like_an_empty_sample_batch() -> None:
    empty = {name: getattr(prediction_batch(), name)[:0] for name in PREDICTION_COLUMNS}
    data = prediction_frame({"ids": []}, **empty)
    assert prediction_reason(data) == "empty_batch"


# -- generated hostile sample frames and JSON batches -----------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_samples_are_refused_with_their_reason(rng: random.Random) -> None:
    data, reason = hostile.hostile_sample(rng)
    with pytest.raises(BadInput) as caught:
        decode_sample_batch(data, hostile.MAX_BYTES, hostile.MAX_SAMPLES,
                            future_skew=hostile.SKEW)
    assert caught.value.reason == reason


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, hostile.MAX_SAMPLES))
def test_good_frames_and_json_pass(rng: random.Random, n: int) -> None:
    batch = hostile.good_sample_batch(rng, n=n)
    for data in (encode_sample_batch(batch), orjson.dumps(hostile.json_doc(batch))):
        back = decode_sample_batch(data, hostile.MAX_BYTES * 10, hostile.MAX_SAMPLES)
        assert back.ids == batch.ids
        np.testing.assert_array_equal(back.labels, batch.labels)


def test_a_sample_from_an_unset_clock_or_far_ahead_is_refused() -> None:
    assert reason_of(json_batch(json_sample(ts=86_400.0))) == "bad_timestamp"  # 1970
    assert reason_of(json_batch(json_sample(ts=time.time() + 3600))) == "future_timestamp"
    assert len(decode(json_batch(json_sample(ts=time.time() + 10)))) == 1
