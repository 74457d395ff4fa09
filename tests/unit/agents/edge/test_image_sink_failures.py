"""Bad review items and a store that refuses for good must never stop the image sink."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest
from botocore.exceptions import ClientError

from edgewise.agents.edge.image_sink import (
    StoreRefused,
    ascii_metadata,
    put_until_stored,
    review_image_jobs,
    review_metadata,
)
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.frames import BadInput
from edgewise.app.core.review_items import parse_review_item

TS = 1_700_000_000.0


def item(**changes: Any) -> dict[str, Any]:
    pixels = np.zeros((8, 8), np.uint8)
    doc = {"id": "d-r-1", "device": "d", "model": "digits", "model_version": 1, "label": 3,
           "confidence": 0.4, "margin": 0.1, "top_k": [[3, 0.4]], "timestamp": TS,
           "image_b64": base64.b64encode(pixels.tobytes()).decode(), "shape": [8, 8]}
    return {**doc, **changes}


BAD = [
    {"shape": ["x"]}, {"shape": 5}, {"shape": [-1, -64]}, {"shape": [0, 8]},
    {"shape": [True, 64]}, {"shape": [1, 1, 1, 1, 64]}, {"shape": [4, 4]},
    {"timestamp": "x"}, {"timestamp": None}, {"timestamp": 1e20}, {"timestamp": -5.0},
    {"timestamp": 0}, {"label": "3"}, {"model_version": 1.5}, {"device": 7},
    {"model": None}, {"image_b64": 12},
]


@pytest.mark.parametrize("changes", BAD)
def test_malformed_review_items_are_bad_input(changes: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        parse_review_item(orjson.dumps(item(**changes)))
    assert review_image_jobs(orjson.dumps(item(**changes))) == []  # never an exception


def test_faces_without_inline_pixels_keep_passing() -> None:
    face = item(image_b64="", shape=[40, 30, 3], image_url="s3://b/k.png", kind="face")
    assert parse_review_item(orjson.dumps(face))["shape"] == [40, 30, 3]
    assert len(review_image_jobs(orjson.dumps(item()))) == 1


def test_metadata_is_ascii() -> None:
    meta = review_metadata(item(device="caméra-№1", model="modèle"))
    assert all(v.isascii() for v in meta.values())
    assert meta["device"] == "cam%C3%A9ra-%E2%84%961"
    assert ascii_metadata({"a": "plain text"}) == {"a": "plain text"}


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


class FlakyStore:
    """Fails with the given errors in turn, then stores."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.puts = 0

    async def put(self, key: str, body: bytes, metadata: dict[str, str]) -> str:
        self.puts += 1
        if self.errors:
            raise self.errors.pop(0)
        return f"s3://b/{key}"

    async def get(self, url: str) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_transient_failures_are_retried_and_permanent_ones_raised() -> None:
    store = FlakyStore(client_error("SlowDown", 503), OSError("down"))
    assert await put_until_stored(store, "k.png", b"x", {}, Backoff(0.001, 0.001)) == "s3://b/k.png"
    assert store.puts == 3
    refusing = FlakyStore(client_error("AccessDenied", 403), client_error("AccessDenied", 403))
    with pytest.raises(StoreRefused):
        await put_until_stored(refusing, "k.png", b"x", {}, Backoff(0.001, 0.001))
    assert refusing.puts == 1
