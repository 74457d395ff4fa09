"""The edge device's message building, without a broker: sources, scoring, faces, commands."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgewise.agents.edge.device import EdgeDevice, EdgeOptions
from edgewise.agents.edge.sources import (
    DigitSource,
    EdgeSourceError,
    SourceSpec,
    open_frames,
    parse_source,
    sample_portraits,
)
from edgewise.app.adapters.model_signing import SigningRefused, sign_command
from edgewise.app.adapters.mqtt_payloads import (
    ModelCommand,
    parse_face_payload,
    parse_metrics_payload,
)
from edgewise.app.core.frames import KIND_SAMPLES, decode_frame
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import decode_prediction_batch, decode_sample_batch
from edgewise.models.faces import detect_faces
from edgewise.models.model_sync import export_version
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError

DIGITS = SourceSpec("digits")


KEY = b"shared-by-hub-and-edges"
TOPIC = "edgewise/all/all/command"


def settings(models_dir: Path, **more: object) -> Settings:
    more.setdefault("model_signing_key", KEY.decode())
    return Settings(models_dir=models_dir, site="s1", device_id="d1", geo="1.5,2.5", **more)


def signed(registry: ModelRegistry, version: int, issued_ms: int, key: bytes = KEY,
           topic: str = TOPIC) -> bytes:
    meta, artifact = export_version(registry, "digits", version)
    return sign_command(ModelCommand(meta.to_dict(), artifact, issued_ms, topic), key).encode()


def test_sources_parse() -> None:
    assert parse_source("camera:0") == SourceSpec("camera", "0")
    assert parse_source("video:/tmp/a.mp4") == SourceSpec("video", "/tmp/a.mp4")
    assert parse_source("digits") == DIGITS and not DIGITS.gives_frames
    for bad in ("camera:x", "images:", "webcam", "digits:3"):
        with pytest.raises(EdgeSourceError):
            parse_source(bad)


def test_hub_scoring_sends_raw_samples_with_site_and_geo(models_dir: Path) -> None:
    device = EdgeDevice(settings(models_dir), EdgeOptions(score_at="hub", run_id="r"), DIGITS)
    pixels = np.zeros((3, 8, 8), np.uint8)
    ((topic, payload),) = device.digit_messages(pixels, np.array([1, 2, -1]), time.time())
    assert topic == "edgewise/s1/d1/sample"
    batch = decode_sample_batch(payload, 10**6, 100)
    assert batch.ids == ["d1-r-0", "d1-r-1", "d1-r-2"] and batch.labels.tolist() == [1, 2, -1]
    meta, _ = decode_frame(payload, KIND_SAMPLES)
    assert meta["site"] == "s1" and meta["geo"] == {"lat": 1.5, "lon": 2.5}
    assert device.model_label == "" and device.windows.current.count == 3


def test_edge_scoring_sends_predictions_and_window_metrics(models_dir: Path) -> None:
    device = EdgeDevice(settings(models_dir), EdgeOptions(run_id="r"), DIGITS)
    pixels, labels = DigitSource(0.0, seed=1).take(16)
    ((topic, payload),) = device.digit_messages(pixels, labels, time.time())
    assert topic == "edgewise/s1/d1/prediction"
    scored = decode_prediction_batch(payload, 10**6)
    assert scored.model == "digits" and scored.model_version == 1
    assert (scored.labels == labels).mean() > 0.8
    assert device.metrics_due(time.time(), dropped=4) == []  # the window is still open
    later = time.time() + 2 * device.windows.size
    device.digit_messages(pixels[:2], labels[:2], later)  # a later window closes the first
    ((metrics_topic, metrics),) = device.metrics_due(later, dropped=4)
    assert metrics_topic == "edgewise/s1/d1/metrics"
    parsed = parse_metrics_payload(metrics, 10_000)
    assert (parsed["count"], parsed["scored"], parsed["dropped"]) == (16, 16, 4)
    assert parsed["model"] == "digits:1" and sum(parsed["labels"].values()) == 16
    ((_, last),) = device.metrics_due(later, dropped=4, final=True)  # the edge stops
    assert parse_metrics_payload(last, 10_000)["count"] == 2


def test_faces_become_face_messages(models_dir: Path) -> None:
    spec = SourceSpec("faces-sample")
    device = EdgeDevice(settings(models_dir), EdgeOptions(detect="faces", run_id="r"), spec)
    frame = sample_portraits()[0]
    faces = detect_faces(frame)
    messages = device.face_messages(frame, faces, time.time())
    assert len(messages) == len(faces) >= 1
    face = parse_face_payload(messages[0][1], 10**7, 4096)
    assert messages[0][0] == "edgewise/s1/d1/face" and face.id == "d1-r-0"
    assert face.frame_size == (frame.shape[1], frame.shape[0]) and face.geo == {
        "lat": 1.5, "lon": 2.5}
    assert device.counts["faces"] == len(faces) and device.model_label == "haar-frontalface:1"


def test_impossible_combinations_are_refused(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeSourceError, match="frame source"):
        EdgeDevice(settings(models_dir), EdgeOptions(detect="faces"), DIGITS)
    with pytest.raises(EdgeSourceError, match="at the edge"):
        EdgeDevice(settings(models_dir), EdgeOptions(detect="faces", score_at="hub"),
                   SourceSpec("faces-sample"))
    with pytest.raises(RegistryError, match="train one"):
        EdgeDevice(settings(tmp_path / "empty"), EdgeOptions(), DIGITS)
    with pytest.raises(ValueError, match="reserved"):
        EdgeDevice(Settings(models_dir=models_dir, device_id="all"), EdgeOptions(), DIGITS)


async def test_model_update_commands_are_applied(models_dir: Path, tmp_path: Path) -> None:
    hub = ModelRegistry(shutil.copytree(models_dir, tmp_path / "hub"))
    model, _ = hub.load("digits", 1)
    hub.register("digits", model)
    edge_models = shutil.copytree(models_dir, tmp_path / "edge")
    device = EdgeDevice(settings(edge_models, data_dir=tmp_path), EdgeOptions(), DIGITS)
    await device.apply_command(TOPIC, b"{garbage")
    meta, artifact = export_version(hub, "digits")
    other = sign_command(ModelCommand({**meta.to_dict(), "name": "faces"}, artifact, 5, TOPIC),
                         KEY)
    await device.apply_command(TOPIC, other.encode())
    assert device.model_label == "digits:1"
    await device.apply_command(TOPIC, signed(hub, 2, 10))
    assert device.model_label == "digits:2" and device.counts["commands"] == 3
    await device.apply_command(TOPIC, signed(hub, 2, 10))  # the retained one again: no harm
    assert device.model_label == "digits:2" and device.refused == {"bad_json": 1}


async def test_forged_redirected_and_replayed_commands_are_refused(
        models_dir: Path, tmp_path: Path) -> None:
    hub = ModelRegistry(shutil.copytree(models_dir, tmp_path / "hub"))
    model, _ = hub.load("digits", 1)
    hub.register("digits", model)
    edge_models = shutil.copytree(models_dir, tmp_path / "edge")
    device = EdgeDevice(settings(edge_models, data_dir=tmp_path), EdgeOptions(), DIGITS)
    meta, artifact = export_version(hub, "digits", 2)
    unsigned = ModelCommand(meta.to_dict(), artifact, 10, TOPIC).encode()
    await device.apply_command(TOPIC, unsigned)
    await device.apply_command(TOPIC, signed(hub, 2, 11, key=b"not the key"))
    await device.apply_command(TOPIC, signed(hub, 2, 12, topic="edgewise/s2/all/command"))
    assert device.model_label == "digits:1"
    assert not (edge_models / "digits" / "2").exists()  # nothing installed, nothing loaded
    assert device.refused == {"unsigned": 1, "bad_signature": 1, "wrong_target": 1}
    await device.apply_command(TOPIC, signed(hub, 2, 20))
    assert device.model_label == "digits:2"
    await device.apply_command(TOPIC, signed(hub, 1, 19))  # an older command, played again
    assert device.model_label == "digits:2" and device.refused["replayed"] == 1
    again = EdgeDevice(settings(edge_models, data_dir=tmp_path), EdgeOptions(), DIGITS)
    await again.apply_command(TOPIC, signed(hub, 1, 19))  # the ledger outlives a restart
    assert again.model_label == "digits:2" and again.refused == {"replayed": 1}
    await again.apply_command(TOPIC, signed(hub, 1, 30))  # a rollback: new command, old model
    assert again.model_label == "digits:1"
    assert served_version(edge_models) == 1


def served_version(edge_models: Path) -> int | None:
    return PromotionLog(ModelRegistry(edge_models), "digits").served()


def test_an_edge_that_applies_model_commands_needs_a_key(models_dir: Path) -> None:
    with pytest.raises(SigningRefused, match="model_signing_key"):
        EdgeDevice(settings(models_dir, model_signing_key=""), EdgeOptions(), DIGITS)
    EdgeDevice(settings(models_dir, model_signing_key=""), EdgeOptions(score_at="hub"), DIGITS)
    EdgeDevice(settings(models_dir, model_signing_key="", allow_unsigned_models=True),
               EdgeOptions(), DIGITS)


async def test_unsigned_commands_are_taken_only_when_allowed(models_dir: Path,
                                                             tmp_path: Path) -> None:
    hub = ModelRegistry(shutil.copytree(models_dir, tmp_path / "hub"))
    model, _ = hub.load("digits", 1)
    hub.register("digits", model)
    device = EdgeDevice(settings(shutil.copytree(models_dir, tmp_path / "edge"),
                                 model_signing_key="", allow_unsigned_models=True,
                                 data_dir=tmp_path), EdgeOptions(), DIGITS)
    meta, artifact = export_version(hub, "digits", 2)
    await device.apply_command(TOPIC, ModelCommand(meta.to_dict(), artifact).encode())
    assert device.model_label == "digits:2"


def test_video_and_image_directory_sources(tmp_path: Path) -> None:
    portrait = sample_portraits()[0]
    height, width = portrait.shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                             (width, height))
    for _ in range(3):
        writer.write(portrait)
    writer.release()
    frames = list(open_frames(parse_source(f"video:{tmp_path / 'clip.avi'}")))
    assert len(frames) == 3 and frames[0].shape == portrait.shape
    assert detect_faces(frames[0])  # a face survives the video codec
    (tmp_path / "shots").mkdir()
    cv2.imwrite(str(tmp_path / "shots" / "b.png"), portrait)
    cv2.imwrite(str(tmp_path / "shots" / "a.png"), portrait[:, ::-1])
    (tmp_path / "shots" / "notes.txt").write_text("not an image")
    shots = list(open_frames(parse_source(f"images:{tmp_path / 'shots'}")))
    assert len(shots) == 2 and np.array_equal(shots[1], portrait)  # name order
