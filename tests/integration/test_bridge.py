"""The bridge against real processes: mosquitto, Tansu, ``edgewise bridge`` and ``edge``.

- SIGKILL the bridge mid-run and restart it: every id arrives (duplicates counted);
- malformed MQTT payloads are dead-lettered with their reason and the bridge carries on;
- the edge applies only commands signed with the shared key: an unsigned one and one
  signed with another key, published straight to its command topic, leave it serving the
  version it had; the bridge's signed commands are applied: a promotion reaches the
  running edge, which scores with it from then on, an edge that connects later gets it
  too (retained command), and a rollback takes the running one back to the older version.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson
import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.adapters.model_signing import sign_command
from edgewise.app.adapters.mqtt_payloads import FaceMessage, ModelCommand
from edgewise.app.adapters.mqtt_topics import command_topic
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.models.faces import encode_png
from edgewise.models.model_sync import export_version
from edgewise.models.registry import ModelRegistry
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.edge import edge_report, read_ids, spawn, start_bridge
from tests.fixtures.kafka import consume_until, env_for
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def test_bridge_killed_mid_run_loses_nothing(
    broker: BrokerUnderTest, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    env = env_for(base_settings, broker.url, unique_prefix, reconnect_max_seconds=1,
                  device_id="cam-9")
    expected = [f"cam-9-kill-{i}" for i in range(1000)]
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        edge = spawn(["edge", "--mqtt", mqtt.url, "--source", "digits", "--score-at", "hub",
                      "--count", "1000", "--batch-size", "1", "--rate", "250",
                      "--run-id", "kill"], env, tmp_path / "edge.log")
        try:
            time.sleep(1.5)
            assert edge.process.poll() is None, "the kill must fall in the middle of the run"
            assert bridge.stop(signal.SIGKILL) == -signal.SIGKILL
            time.sleep(2.0)  # the edge keeps publishing; mosquitto queues for the session
            bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
            assert edge.process.wait(60) == 0, edge.log_text()[-3000:]
            ids = read_ids(broker.bootstrap, TopicNames(unique_prefix).samples,
                           expected, timeout=60)
        finally:
            edge.stop()
            bridge.stop()
    duplicates = sum(ids.values()) - len(ids)
    print(f"\nbridge SIGKILLed at 1.5 s, back at 3.5 s: {len(ids)} ids, {duplicates} "
          f"duplicates ({sorted(i for i, n in ids.items() if n > 1)[:5]}…)")
    assert set(ids) == set(expected)
    assert edge_report(edge)["drained"]


def _face(device: str, png: bytes, box: tuple[int, int, int, int]) -> bytes:
    return FaceMessage(id=f"{device}-face", site="s1", device=device, timestamp=time.time(),
                       confidence=0.9, box=box, frame_size=(100, 100), png=png).encode()


def malformed_payloads() -> list[tuple[str, str, bytes]]:
    """(expected reason, topic under the root, payload)."""
    png = encode_png(np.zeros((10, 10, 3), np.uint8))
    frame = encode_sample_batch(DigitSimulator(1, 2, 0.0, seed=3).next_batch())  # device-000
    return [
        ("bad_json", "s1/d1/sample", b"{not json"),
        ("bad_json", "s1/d1/metrics", b"\xff\xfe"),
        ("wrong_image_size", "s1/d1/face", _face("d1", png, (5, 5, 20, 20))),
        ("bad_image", "s1/d1/face", _face("d1", b"\x89PNG\r\n\x1a\n" + b"x" * 30, (0, 0, 8, 8))),
        ("oversize", "s1/d1/sample", b"{" + b" " * 150_000 + b"}"),
        ("wrong_shape", "s1/d1/sample", orjson.dumps({"device": "d1", "samples": [
            {"id": "a", "ts": 1.0, "pixels": [1] * 63}]})),
        ("bad_field", "s1/d1/metrics", orjson.dumps({
            "schema": 1, "site": "s1", "device": "d1", "window_start": time.time() - 20,
            "window_end": time.time() - 10, "detect": "digits", "frames": 0, "count": 1,
            "scored": 1, "low": 2, "dropped": 0, "labels": {}, "conf_sum": 0.5})),
        ("device_mismatch", "s1/d1/sample", frame),
        ("unknown_kind", "s1/d1/telemetry", b"{}"),
    ]


async def _publish(url_port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def test_malformed_payloads_are_dead_lettered_and_the_bridge_carries_on(
    broker: BrokerUnderTest, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    env = env_for(base_settings, broker.url, unique_prefix, max_message_bytes=100_000)
    names = TopicNames(unique_prefix)
    bad = malformed_payloads()
    good = DigitSimulator(1, 3, 0.0, seed=4).next_batch()
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        try:
            messages = [(f"edgewise/{topic}", payload) for _, topic, payload in bad]
            messages.append(("edgewise/s1/device-000/sample", encode_sample_batch(good)))
            asyncio.run(_publish(mqtt.port, messages))
            ids = read_ids(broker.bootstrap, names.samples, good.ids, timeout=30)
            letters = asyncio.run(consume_until(broker.bootstrap, names.dead_letters,
                                                lambda r: len(r) >= len(bad), timeout=30))
            assert bridge.process.poll() is None, "the bridge must carry on"
        finally:
            bridge.stop()
    dead = [orjson.loads(r.value) for r in letters]
    assert sorted(d["reason"] for d in dead) == sorted(reason for reason, _, _ in bad)
    assert all(d["stage"] == "bridge" for d in dead)
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason["wrong_image_size"]["topic"] == "edgewise/s1/d1/face"
    first_bad_json = next(d for d in dead if d["topic"] == "edgewise/s1/d1/sample"
                          and d["reason"] == "bad_json")
    assert first_bad_json["original_b64"] == "e25vdCBqc29u"  # b"{not json", kept whole
    assert set(ids) == set(good.ids)


def _copy_registry(source: Path, target: Path, extra_version: bool) -> Path:
    shutil.copytree(source, target)
    if extra_version:  # the hub trains a new version: here, v1's model registered again
        registry = ModelRegistry(target)
        model, _ = registry.load("digits", 1)
        registry.register("digits", model, algorithm="linear")
    return target


def _model_versions(records: list[Any]) -> set[int]:
    return {decode_prediction_batch(r.value, 10_000_000).model_version for r in records}


def _versions_of(device: str, records: list[Any]) -> list[int]:
    """The model versions of one device's predictions, in the order it sent them (one
    device's records share a partition; a read of several interleaves partitions)."""
    batches = (decode_prediction_batch(r.value, 10_000_000) for r in records)
    return [b.model_version for b in batches if b.device == device]


def _wait_for(edge: Any, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while edge.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"no {count}x {text!r}:\n{edge.log_text()[-3000:]}"
        assert edge.process.poll() is None, edge.log_text()[-3000:]
        time.sleep(0.1)


def test_only_signed_model_commands_reach_an_edge(
    broker: BrokerUnderTest, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    hub_models = _copy_registry(base_settings.models_dir, tmp_path / "hub-models", True)
    edge_models = _copy_registry(base_settings.models_dir, tmp_path / "edge-models", False)
    hub_env = env_for(base_settings, broker.url, unique_prefix,
                      models_dir=hub_models, reconnect_max_seconds=1)
    edge_env = {**hub_env, "EDGEWISE_MODELS_DIR": str(edge_models),
                "EDGEWISE_DATA_DIR": str(tmp_path / "edge-data")}
    names = TopicNames(unique_prefix)
    meta, artifact = export_version(ModelRegistry(hub_models), "digits", 2)
    topic = command_topic("edgewise", "site-1", "signed-1")
    issued = int(time.time() * 1000) + 60_000  # later than anything the bridge will issue
    forged = [ModelCommand(meta.to_dict(), artifact, issued, topic).encode(),
              sign_command(ModelCommand(meta.to_dict(), artifact, issued + 1, topic),
                           b"a key the hub never had").encode()]
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(hub_env, mqtt.url, tmp_path / "bridge.log")
        edge = spawn(["edge", "--mqtt", mqtt.url, "--device-id", "signed-1", "--rate", "40",
                      "--batch-size", "4", "--duration", "900"], edge_env,
                     tmp_path / "edge.log")  # runs until stopped below
        try:
            first = asyncio.run(consume_until(broker.bootstrap, names.predictions,
                                              lambda r: len(r) >= 3, timeout=30))
            assert _model_versions(first) == {1}
            asyncio.run(_publish(mqtt.port, [(topic, payload) for payload in forged]))
            _wait_for(edge, "refused model command", 2, timeout=20)
            after = asyncio.run(consume_until(broker.bootstrap, names.predictions,
                                              lambda r: len(r) >= len(first) + 6, timeout=30))
            assert _model_versions(after) == {1}  # the forged v2 was never served
            assert not (edge_models / "digits" / "2").exists()
            for command in (["promote", "1", "--no-announce"], ["promote", "2"]):
                # (a promotion loads the model: all of scikit-learn imported, 12 s here)
                assert spawn(command, hub_env, tmp_path / "announce.log").process.wait(120) == 0
            updated = asyncio.run(consume_until(
                broker.bootstrap, names.predictions,
                lambda r: 2 in _versions_of("signed-1", r)[-3:], timeout=60))
            assert 2 in _versions_of("signed-1", updated)[-3:], edge.log_text()[-2000:]
            late_env = {**edge_env, "EDGEWISE_MODELS_DIR": str(_copy_registry(
                base_settings.models_dir, tmp_path / "late-models", False)),
                "EDGEWISE_DATA_DIR": str(tmp_path / "late-data")}
            late = spawn(["edge", "--mqtt", mqtt.url, "--device-id", "late-1", "--rate", "20",
                          "--batch-size", "4", "--duration", "4"], late_env,
                         tmp_path / "late.log")  # connects after the promotion
            assert late.process.wait(120) == 0, late.log_text()[-2000:]
            assert edge_report(late)["model"] == "digits:2"  # the retained command
            # a rollback: a new signed command for the older version
            seen = len(_versions_of("signed-1", updated))
            assert spawn(["rollback"], hub_env, tmp_path / "announce.log").process.wait(120) == 0
            _wait_for(edge, "now scoring with digits:1", 1, timeout=60)
            rolled = asyncio.run(consume_until(
                broker.bootstrap, names.predictions,
                lambda r: len(mine := _versions_of("signed-1", r)) > seen + 3
                and set(mine[-3:]) == {1}, timeout=60))
            assert set(_versions_of("signed-1", rolled)[-3:]) == {1}, edge.log_text()[-2000:]
        finally:
            edge.stop()
            bridge.stop()
    report = edge_report(edge)
    assert report["model"] == "digits:1"
    assert report["refused"] == {"unsigned": 1, "bad_signature": 1}, edge.log_text()[-2000:]
    assert "now scoring with digits:2" in edge.log_text()
    assert (edge_models / "digits" / "2" / "model.skops").is_file()
