"""Corrections as the station sends them and as the topic carries them: every field checked,
every refusal a reason."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.corrections import (
    MAX_REQUEST_BYTES,
    CorrectionRequest,
    model_key,
    new_correction,
    parse_correction,
    parse_correction_request,
)
from edgewise.app.core.frames import BadInput
from tests.fixtures.hostile import hostile_correction_request

NOW = 1_800_000_000.0


def review_item(sid: str = "dev-1-7", **more: Any) -> dict[str, Any]:
    return {"schema": 1, "id": sid, "device": "dev-1", "model": "digits", "model_version": 2,
            "label": 8, "true_label": None, "confidence": 0.41, "margin": 0.05,
            "top_k": [[8, 0.41], [3, 0.36]], "timestamp": NOW - 30, "reason": "low",
            "image_b64": base64.b64encode(bytes(64)).decode(), "shape": [8, 8],
            "kind": "digits", "image_url": "", "queued_at": NOW - 20, "partition": 3, **more}


def test_a_request_is_an_id_and_a_label_or_null() -> None:
    assert parse_correction_request(b'{"id": "s-1", "label": 3}') == CorrectionRequest("s-1", 3)
    assert parse_correction_request(b'{"id": "s-1", "label": null}').label is None


@pytest.mark.parametrize("body,reason", [
    (b"", "empty"),
    (b"x" * (MAX_REQUEST_BYTES + 1), "oversize"),
    (b"{not json", "bad_json"),
    (b"[1, 2]", "bad_json"),
    (b'{"id": "s"}', "missing_field"),
    (b'{"label": 1}', "missing_field"),
    (b'{"id": "s", "label": 1, "admin": true}', "unknown_field"),
    (b'{"id": 7, "label": 1}', "bad_id"),
    (b'{"id": "", "label": 1}', "bad_id"),
    (b'{"id": "a\\u0000b", "label": 1}', "bad_id"),
    (orjson.dumps({"id": "x" * 201, "label": 1}), "bad_id"),
    (b'{"id": "s", "label": true}', "bad_label"),
    (b'{"id": "s", "label": 1.5}', "bad_label"),
    (b'{"id": "s", "label": "3"}', "bad_label"),
    (b'{"id": "s", "label": -1}', "bad_label"),
    (b'{"id": "s", "label": 10000000}', "bad_label"),
    (b'{"id": "s", "label": [3]}', "bad_label"),
])
def test_a_bad_request_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_correction_request(body)
    assert caught.value.reason == reason


def test_the_record_says_what_the_model_said_and_keeps_the_item_without_queue_fields() -> None:
    record = new_correction(CorrectionRequest("dev-1-7", 3), review_item(), now=NOW)
    assert (record["label"], record["predicted"], record["model_version"]) == (3, 8, 2)
    assert record["device"] == "dev-1" and record["corrected_at"] == NOW
    assert "queued_at" not in record["item"] and "partition" not in record["item"]
    assert model_key(record) == "digits:2"
    assert parse_correction(orjson.dumps(record), 10**6, now=NOW) == record


def test_a_second_correction_takes_what_the_model_said_from_the_first() -> None:
    first = new_correction(CorrectionRequest("dev-1-7", 3), review_item(), now=NOW)
    again = new_correction(CorrectionRequest("dev-1-7", 5), {**first, "partition": 3},
                           now=NOW + 1)
    assert (again["label"], again["predicted"], again["item"]) == (5, 8, first["item"])


def good_record(**change: Any) -> dict[str, Any]:
    return {**new_correction(CorrectionRequest("dev-1-7", 3), review_item(), now=NOW), **change}


@pytest.mark.parametrize("change,reason", [
    ({"schema": 2}, "unknown_schema_version"),
    ({"extra": 1}, "unknown_field"),
    ({"label": "3"}, "bad_label"),
    ({"predicted": None}, "bad_label"),
    ({"device": ""}, "missing_field"),
    ({"model": "../etc"}, "bad_model"),
    ({"model_version": 0}, "bad_model"),
    ({"confidence": 1.5}, "out_of_range"),
    ({"corrected_at": NOW + 3600}, "future_timestamp"),
    ({"item": "pixels"}, "bad_field"),
    ({"item": {**review_item("other-id")}}, "bad_field"),
    ({"item": {**review_item(), "confidence": 7}}, "out_of_range"),
])
def test_a_bad_record_on_the_topic_is_refused_with_its_reason(change: dict[str, Any],
                                                              reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_correction(orjson.dumps(good_record(**change)), 10**6, now=NOW)
    assert caught.value.reason == reason


def test_a_non_finite_number_is_not_json() -> None:
    raw = orjson.dumps(good_record()).replace(b'"confidence":0.41', b'"confidence":NaN', 1)
    with pytest.raises(BadInput) as caught:
        parse_correction(raw, 10**6, now=NOW)
    assert caught.value.reason == "bad_json"


def test_a_record_missing_a_field_is_refused() -> None:
    record = good_record()
    del record["predicted"]
    with pytest.raises(BadInput, match="predicted"):
        parse_correction(orjson.dumps(record), 10**6, now=time.time())


@settings(max_examples=400, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_requests_are_refused_with_the_reason_they_were_made_for(
        rng: random.Random) -> None:
    body, reason = hostile_correction_request(rng)
    with pytest.raises(BadInput) as caught:
        parse_correction_request(body)
    assert caught.value.reason == reason, (body[:200], caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_bad_input_never_a_crash(body: bytes) -> None:
    try:
        parse_correction_request(body)
    except BadInput:
        pass
