"""Object keys, the local image store, review images and keeping an item's image URL."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from edgewise.agents.edge.image_sink import face_review_item, review_metadata
from edgewise.app.adapters.mqtt_payloads import FaceMessage
from edgewise.app.adapters.object_store import (
    LocalImageStore,
    ObjectNotFound,
    S3ImageStore,
    is_permanent,
    key_segment,
    object_key,
    store_for,
)
from edgewise.app.adapters.review_images import pixels_png, review_png
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings
from edgewise.tables.review_queue import keep_image_url

TS = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def test_object_key_layout_uses_the_utc_date() -> None:
    assert object_key("face", "cam-1", TS, "cam-1-r-7") == "face/cam-1/2023-11-14/cam-1-r-7.png"
    assert object_key("digits", "d", 86_399.0, "x") == "digits/d/1970-01-01/x.png"


def test_key_segments_cannot_escape() -> None:
    assert key_segment("../../etc/passwd") == ".._.._etc_passwd"
    assert key_segment("..") == "_" and key_segment("") == "_"
    parts = object_key("face", "a/b", TS, "../x").split("/")
    assert parts == ["face", "a_b", "2023-11-14", ".._x.png"]


async def test_local_store_round_trip_and_refuses_foreign_urls(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    url = await store.put("face/cam/2023-11-14/a.png", b"png-bytes", {"confidence": "0.9"})
    assert url.startswith("file://") and url.endswith("/face/cam/2023-11-14/a.png")
    assert await store.get(url) == (b"png-bytes", {"confidence": "0.9"})
    (tmp_path / "secret.png").write_bytes(b"no")
    for foreign in ((tmp_path / "secret.png").as_uri(), url.replace("a.png", "../../../b.png"),
                    "s3://bucket/face/a.png", url.replace("a.png", "missing.png")):
        with pytest.raises(ObjectNotFound):
            await store.get(foreign)


def test_store_choice() -> None:
    assert isinstance(store_for(Settings(image_store="s3")), S3ImageStore)
    assert isinstance(store_for(Settings()), LocalImageStore)
    s3 = S3ImageStore(Settings(image_store="s3", s3_endpoint="http://h:1",
                               s3_access_key_id="k", s3_secret_access_key="s"))
    assert s3.client_kwargs() == {"region_name": "us-east-1", "endpoint_url": "http://h:1",
                                  "aws_access_key_id": "k", "aws_secret_access_key": "s"}


def test_digit_png_keeps_size_and_stretches_values() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 17
    image = cv2.imdecode(np.frombuffer(pixels_png(pixels, "digits"), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert image.shape == (8, 8)
    assert image.max() == 255 and image.min() == 0
    assert np.array_equal(image, (pixels.astype(int) * 255 // 16).astype(np.uint8))


def test_review_png_from_inline_pixels() -> None:
    pixels = np.full((8, 8), 16, np.uint8)
    item = {"image_b64": base64.b64encode(pixels.tobytes()).decode(), "shape": [8, 8]}
    image = cv2.imdecode(np.frombuffer(review_png(item), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (8, 8) and int(image.min()) == 255
    for bad in ({"image_b64": "", "shape": [8, 8]}, {"image_b64": "!!", "shape": [8, 8]},
                {"image_b64": base64.b64encode(b"x" * 10).decode(), "shape": [8, 8]}):
        with pytest.raises(BadInput):
            review_png(bad)


def test_a_replay_without_the_url_keeps_it() -> None:
    stored = {"id": "a", "image_url": "s3://b/k.png", "confidence": 0.3}
    replay = {"id": "a", "image_url": "", "confidence": 0.3}
    assert keep_image_url(stored, replay)["image_url"] == "s3://b/k.png"
    assert keep_image_url(None, replay) == replay
    newer = {"id": "a", "image_url": "s3://b/new.png", "confidence": 0.3}
    assert keep_image_url(stored, newer) == newer


def test_doubtful_faces_become_review_items_pointing_at_their_crop() -> None:
    message = FaceMessage(id="f", site="s", device="cam", timestamp=TS, confidence=0.55,
                          box=(1, 2, 30, 40), frame_size=(100, 100), png=b"")
    item = face_review_item(message, "s3://b/face/cam/x/f.png", low=0.6, min_margin=0.15)
    assert item is not None
    assert (item.kind, item.label, item.image_url, item.shape) == (
        "face", 1, "s3://b/face/cam/x/f.png", [40, 30, 3])
    assert item.top_k == [(1, 0.55), (0, 0.45)] and "confidence" in item.reason
    sure = FaceMessage(**{**message.__dict__, "confidence": 0.95})
    assert face_review_item(sure, "u", low=0.6, min_margin=0.15) is None
    meta = review_metadata(item.asdict())
    assert meta["kind"] == "face" and meta["model"] == "haar-frontalface:1"


def test_review_image_jobs_skip_stored_and_bad_items() -> None:
    from edgewise.agents.edge.image_sink import review_image_jobs
    from edgewise.app.core.review_groups import encode_review_groups

    pixels = np.zeros((8, 8), np.uint8)
    item = {"id": "d-r-1", "device": "d", "model": "digits", "model_version": 1, "label": 3,
            "confidence": 0.4, "margin": 0.1, "top_k": [[3, 0.4]], "timestamp": TS,
            "image_b64": base64.b64encode(pixels.tobytes()).decode(), "shape": [8, 8]}
    [job] = review_image_jobs(orjson.dumps(item))
    assert job[1] == "digits/d/2023-11-14/d-r-1.png"
    assert job[2].startswith(b"\x89PNG")
    assert review_image_jobs(orjson.dumps({**item, "image_url": "s3://b/k.png"})) == []
    assert review_image_jobs(b"{not json") == []
    assert review_image_jobs(orjson.dumps({**item, "shape": [9, 9]})) == []
    # a group: the stored item and the bad one are skipped, the other two get a job
    group = [item, {**item, "id": "d-r-2", "image_url": "s3://b/k.png"},
             {**item, "id": "d-r-3", "shape": [9, 9]}, {**item, "id": "d-r-4"}]
    [record] = encode_review_groups(group, partitions=1)
    assert [job[0]["id"] for job in review_image_jobs(record.value)] == ["d-r-1", "d-r-4"]


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_permanent_and_transient_failures() -> None:
    assert is_permanent(client_error("AccessDenied", 403))
    assert is_permanent(client_error("NoSuchBucket", 404))
    assert is_permanent(ParamValidationError(report="bad metadata"))
    assert is_permanent(UnicodeEncodeError("ascii", "é", 0, 1, "no"))
    assert not is_permanent(client_error("SlowDown", 503))
    assert not is_permanent(client_error("RequestTimeout", 400))
    assert not is_permanent(client_error("InternalError", 500))
    assert not is_permanent(OSError("disk full"))
    assert not is_permanent(ConnectionError("refused"))
