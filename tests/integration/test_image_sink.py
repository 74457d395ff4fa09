"""Images into S3 (a moto server): face crops from a real edge through MQTT and the bridge,
low-confidence digits from the route stage; review items point at the objects and the
review view serves their bytes. The camera's window metrics reach the site view too."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiobotocore.session import get_session

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.edge import spawn, start_bridge
from tests.fixtures.kafka import env_for, produce, start_worker
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.s3 import MotoS3Server

pytestmark = pytest.mark.integration
BUCKET = "edge-images"
FACE_FRAMES = 4  # the two sample portraits, twice: one face each


async def _objects(server: MotoS3Server) -> dict[str, tuple[bytes, dict[str, str]]]:
    async with get_session().create_client("s3", **server.client_kwargs()) as s3:
        listing = await s3.list_objects_v2(Bucket=BUCKET)
        out = {}
        for entry in listing.get("Contents", []):
            obj = await s3.get_object(Bucket=BUCKET, Key=entry["Key"])
            async with obj["Body"] as body:
                out[entry["Key"]] = (await body.read(), obj["Metadata"])
        return out


def _review(worker: Any, faces: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Review items, once every face is in and every item points at its stored image."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = worker.get("/api/review?limit=1000")["items"]
        kinds = [i["kind"] for i in items]
        if kinds.count("face") == faces and "digits" in kinds and all(
                i["image_url"] for i in items):
            return items
        time.sleep(0.5)
    return items


def test_images_land_in_s3_with_metadata_and_the_review_view_serves_them(
    embedded_broker: EmbeddedBroker, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    with MotoS3Server(tmp_path / "moto") as s3, MosquittoBroker(tmp_path / "mqtt") as mqtt:
        env = env_for(
            base_settings, embedded_broker.url, unique_prefix, image_store="s3",
            s3_bucket=BUCKET, s3_endpoint=s3.endpoint_url, s3_region=s3.region,
            s3_access_key_id=s3.access_key_id, s3_secret_access_key=s3.secret_access_key,
            low_confidence=0.999)  # every face is doubtful enough to review
        worker = start_worker(env, ["score", "route", "review", "image_sink", "edge_metrics"],
                              tmp_path / "worker.log")
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        try:
            edge = spawn(["edge", "--mqtt", mqtt.url, "--device-id", "cam-1", "--source",
                          "faces-sample", "--detect", "faces", "--count", str(FACE_FRAMES),
                          "--rate", "4", "--geo", "52.52,13.40"], env, tmp_path / "edge.log")
            digits = DigitSimulator(2, 10, hard_share=1.0, seed=5)
            batches = [digits.next_batch() for _ in range(3)]
            asyncio.run(produce(embedded_broker.bootstrap, TopicNames(unique_prefix).samples,
                                [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
            assert edge.process.wait(60) == 0, edge.log_text()[-3000:]
            items = _review(worker, faces=FACE_FRAMES)
            objects = asyncio.run(_objects(s3))
            served = {i["id"]: worker_bytes(worker, i["image"]) for i in items if i["image_url"]}
            site = _site_windows(worker, "site-1", frames=FACE_FRAMES)
        finally:
            bridge.stop()
            worker.stop()

    faces = [i for i in items if i["kind"] == "face"]
    digit_items = [i for i in items if i["kind"] == "digits"]
    assert len(faces) == FACE_FRAMES and digit_items, worker_log_tail(tmp_path)
    assert all(i["image_url"].startswith(f"s3://{BUCKET}/") for i in faces + digit_items)
    for item in faces:
        key = item["image_url"].removeprefix(f"s3://{BUCKET}/")
        day = dt.datetime.fromtimestamp(item["timestamp"], tz=dt.UTC).strftime("%Y-%m-%d")
        assert key == f"face/cam-1/{day}/{item['id']}.png"
        body, meta = objects[key]
        assert served[item["id"]] == body
        assert meta["device"] == "cam-1" and meta["model"] == "haar-frontalface:1"
        assert float(meta["confidence"]) == pytest.approx(item["confidence"], abs=1e-4)
        assert abs(float(meta["timestamp"]) - item["timestamp"]) < 0.01
        assert meta["geo"] == "52.52,13.4" and len(meta["box"].split(",")) == 4
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == tuple(item["shape"][:2]) and min(image.shape[:2]) >= 30
    for item in digit_items:
        key = item["image_url"].removeprefix(f"s3://{BUCKET}/")
        assert key.startswith(f"digits/{item['device']}/") and key.endswith(f"/{item['id']}.png")
        body, meta = objects[key]
        assert served[item["id"]] == body
        assert meta["model"] == "digits:1" and meta["device"] == item["device"]
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (8, 8)
    assert len([k for k in objects if k.startswith("face/")]) == FACE_FRAMES
    windows = site["windows"]
    assert sum(w["total"]["count"] for w in windows) == FACE_FRAMES  # one face a frame
    assert all(set(w["devices"]) == {"cam-1"} for w in windows)
    assert site["devices"]["cam-1"]["model"] == "haar-frontalface:1"


def _site_windows(worker: Any, site: str, frames: int, timeout: float = 30.0) -> dict[str, Any]:
    """The site view, once the camera's windows account for all its frames."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {"windows": []}
    while time.monotonic() < deadline:
        try:
            view = worker.get(f"/api/sites/{site}/windows")
        except OSError:  # 404 until the first window arrives
            time.sleep(0.5)
            continue
        if sum(w["total"]["frames"] for w in view["windows"]) >= frames:
            return view
        time.sleep(0.5)
    return view


def worker_bytes(worker: Any, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("image/png")
        return reply.read()


def worker_log_tail(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
