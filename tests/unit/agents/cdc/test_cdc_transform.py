"""Change events into samples: the column mapping, skipped ops, bad rows, packing."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.agents.cdc.rows import (
    RowMapping,
    RowSample,
    change_to_sample,
    mapping_from_settings,
    parse_shape,
)
from edgewise.agents.cdc.transform import pack_samples, transform_topics
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import validate_sample_batch
from tests.fixtures import hostile

MAPPING = RowMapping("id", "label", "pixels", (8, 8), "digits")
PIXELS = (np.arange(64) % 17).astype(np.uint8)


def envelope(op: str = "c", after: dict[str, Any] | None = None, **source: Any) -> bytes:
    row = {"id": 7, "label": 3, "pixels": base64.b64encode(PIXELS.tobytes()).decode(),
           "split": "test"} if after is None else after
    return orjson.dumps({"payload": {
        "before": None, "after": None if op in ("d", "t") else row,
        "source": {"schema": "public", "table": "digits_test", "ts_ms": 1_700_000_000_123,
                   **source},
        "op": op, "ts_ms": 1_700_000_000_500}})


def test_creates_updates_and_reads_become_samples() -> None:
    for op in ("c", "u", "r"):
        sample = change_to_sample(envelope(op), MAPPING)
        assert sample is not None
        assert (sample.device, sample.id, sample.label) == (
            "cdc:public.digits_test", "digits_test-7", 3)
        assert sample.timestamp == pytest.approx(1_700_000_000.123)
        assert sample.pixels.shape == (8, 8) and sample.pixels.dtype == np.uint8
        assert np.array_equal(sample.pixels.ravel(), PIXELS)


def test_deletes_truncates_and_tombstones_carry_nothing_to_score() -> None:
    assert change_to_sample(None, MAPPING) is None
    assert change_to_sample(envelope("d"), MAPPING) is None
    assert change_to_sample(envelope("t"), MAPPING) is None


def test_pixels_as_a_number_list_and_no_label() -> None:
    row = {"id": "a1", "label": None, "pixels": PIXELS.tolist()}
    sample = change_to_sample(envelope("c", row), MAPPING)
    assert sample is not None and sample.label == -1
    assert np.array_equal(sample.pixels.ravel(), PIXELS)


def test_device_column_and_unlabelled_mapping() -> None:
    mapping = RowMapping("id", "", "pixels", (8, 8), "digits", device_column="camera")
    row = {"id": 1, "label": 9, "camera": "cam-7", "pixels": PIXELS.tolist()}
    sample = change_to_sample(envelope("c", row), mapping)
    assert sample is not None and (sample.device, sample.label) == ("cam-7", -1)


@pytest.mark.parametrize(("data", "reason"), [
    (b"{nope", "bad_json"),
    (b"[1, 2]", "not_an_envelope"),
    (orjson.dumps({"payload": {"op": "x", "after": {}, "source": {}}}), "unknown_op"),
    (orjson.dumps({"payload": {"op": "c", "after": None, "source": {}}}), "not_an_envelope"),
    (envelope("c", {"label": 1, "pixels": PIXELS.tolist()}), "missing_field"),
    (envelope("c", {"id": 1, "label": 1}), "missing_field"),
    (envelope("c", {"id": 1, "label": 1, "pixels": "***"}), "bad_pixels"),
    (envelope("c", {"id": 1, "label": 1, "pixels": [1] * 63}), "wrong_shape"),
    (envelope("c", {"id": 1, "label": 1, "pixels": [17] * 64}), "out_of_range"),
    (envelope("c", {"id": 1, "label": 1, "pixels": [0.5] * 64}), "bad_pixels"),
    (envelope("c", {"id": 1, "label": "three", "pixels": [1] * 64}), "bad_label"),
    (envelope("c", {"id": 1, "label": -4, "pixels": [1] * 64}), "bad_label"),
    (envelope("c", {"id": 1, "label": True, "pixels": [1] * 64}), "bad_label"),
    (envelope("c", None, ts_ms="soon"), "bad_timestamp"),
    (envelope("c", {"id": "x" * 300, "label": 1, "pixels": [1] * 64}), "bad_id"),
])
def test_bad_rows_are_bad_input_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        change_to_sample(data, MAPPING)
    assert caught.value.reason == reason


def sample(device: str, sid: str, label: int = 1, value: int = 0) -> RowSample:
    return RowSample(device, sid, 1_700_000_000.0, label,
                     np.full((8, 8), value, dtype=np.uint8))


def test_pack_one_batch_per_device_last_version_wins() -> None:
    rows = [sample("a", "1", value=1), sample("b", "9"), sample("a", "2"),
            sample("a", "1", value=5)]
    batches = pack_samples(rows, "digits", max_samples=100)
    assert [(b.device, b.ids) for b in batches] == [("a", ["2", "1"]), ("b", ["9"])]
    assert int(batches[0].pixels[1].max()) == 5
    for batch in batches:
        validate_sample_batch(batch, 100)


def test_pack_splits_at_the_batch_limit() -> None:
    batches = pack_samples([sample("a", str(i)) for i in range(5)], "digits", max_samples=2)
    assert [b.ids for b in batches] == [["0", "1"], ["2", "3"], ["4"]]


def test_mapping_from_settings_checks_the_shape_against_the_kind() -> None:
    assert mapping_from_settings(Settings()).shape == (8, 8)
    with pytest.raises(ValueError, match="does not match kind digits"):
        mapping_from_settings(Settings(cdc_image_shape="28x28"))
    with pytest.raises(ValueError, match="unknown"):
        mapping_from_settings(Settings(cdc_sample_kind="faces"))
    assert parse_shape("8X8") == (8, 8)
    for bad in ("eight", "0x8", ""):
        with pytest.raises(ValueError):
            parse_shape(bad)


def test_transform_topics_default_to_the_digits_test_table() -> None:
    assert transform_topics(Settings(cdc_topic_prefix="shop")) == ["shop.public.digits_test"]
    assert transform_topics(Settings(cdc_transform_topics="a.b.c, d.e.f")) == [
        "a.b.c", "d.e.f"]


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_change_events_are_refused_with_their_reason(rng: random.Random) -> None:
    data, reason = hostile.hostile_change(rng)
    with pytest.raises(BadInput) as caught:
        change_to_sample(data, MAPPING, hostile.SKEW)
    assert caught.value.reason == reason


def test_a_commit_time_far_ahead_is_refused() -> None:
    with pytest.raises(BadInput) as caught:
        change_to_sample(envelope("c", None, ts_ms=(time.time() + 3600) * 1000), MAPPING)
    assert caught.value.reason == "future_timestamp"
