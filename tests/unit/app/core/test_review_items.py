"""Review items are checked field by field before the review stage or the image sink
trusts them: every hostile item is a BadInput with its reason, and good items pass."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.frames import BadInput
from edgewise.app.core.review_groups import parse_review_group
from edgewise.app.core.review_items import parse_review_item
from tests.fixtures import hostile


def parse(data: bytes) -> dict[str, object]:
    return parse_review_item(data, hostile.MAX_BYTES, future_skew=hostile.SKEW)


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hostile_review_items_are_refused_with_their_reason(rng: random.Random) -> None:
    data, reason = hostile.hostile_review_item(rng)  # a record of the review topic
    with pytest.raises(BadInput) as caught:
        parse_review_group(data, hostile.MAX_BYTES, future_skew=hostile.SKEW)
    assert caught.value.reason == reason


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False))
def test_good_review_items_pass(rng: random.Random) -> None:
    item = hostile.good_review_item(rng)
    assert parse(orjson.dumps(item))["id"] == item["id"]


def test_a_face_item_keeps_its_negative_margin() -> None:
    face = {**hostile.good_review_item(random.Random(1)), "margin": -0.4, "kind": "face",
            "image_b64": "", "shape": [40, 30, 3], "image_url": "s3://b/k.png"}
    assert parse(orjson.dumps(face))["margin"] == -0.4
