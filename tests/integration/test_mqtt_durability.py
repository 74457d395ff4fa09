"""Durable where the guarantee says so: a real edge sends a burst of QoS 1 messages while
no bridge is connected (they sit in mosquitto's store, queued for the bridge's persistent
session), deletes each from its spool on the PUBACK, and exits; mosquitto is SIGKILLed at
once and restarted, a bridge started: every id the edge had acknowledged reaches Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.edge import edge_report, read_ids, spawn, start_bridge
from tests.fixtures.kafka import env_for
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

MESSAGES = 600


def test_mosquitto_killed_after_a_burst_loses_nothing_it_acknowledged(
    embedded_broker: EmbeddedBroker, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    env = env_for(base_settings, embedded_broker.url, unique_prefix, reconnect_max_seconds=1,
                  site="plant-2", device_id="line-4")
    expected = [f"line-4-burst-{i}" for i in range(MESSAGES)]
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        bridge.stop()  # its persistent session stays: mosquitto queues the burst for it
        edge = spawn(["edge", "--mqtt", mqtt.url, "--source", "digits", "--score-at", "hub",
                      "--count", str(MESSAGES), "--batch-size", "1", "--rate", "5000",
                      "--run-id", "burst"], env, tmp_path / "edge.log")
        assert edge.process.wait(90) == 0, edge.log_text()[-3000:]
        mqtt.kill()  # right after the last PUBACK: no time for a timed save
        mqtt.start()
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        try:
            ids = read_ids(embedded_broker.bootstrap, TopicNames(unique_prefix).samples,
                           expected, timeout=60)
        finally:
            bridge.stop()
    report = edge_report(edge)
    assert report["drained"] and report["queued"] == 0  # the edge kept nothing itself
    assert set(ids) == set(expected)
