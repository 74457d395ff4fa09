"""Store-and-forward: the MQTT broker goes away for 10 s in the middle of a 1,000-message
edge run and comes back; every id still reaches Kafka (edge -> mosquitto -> bridge -> Tansu).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.edge import edge_report, read_ids, spawn, start_bridge
from tests.fixtures.kafka import env_for
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

MESSAGES = 1000
RATE = 100.0  # messages per second: a 10 s run
OUTAGE_S = 10.0


def test_broker_outage_loses_nothing(
    broker: BrokerUnderTest, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    env = env_for(base_settings, broker.url, unique_prefix, reconnect_max_seconds=1,
                  site="plant-7", device_id="press-3")
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        try:
            started = time.monotonic()
            edge = spawn(["edge", "--mqtt", mqtt.url, "--source", "digits", "--score-at", "hub",
                          "--count", str(MESSAGES), "--batch-size", "1", "--rate", str(RATE),
                          "--run-id", "outage", "--drain-timeout", "60"],
                         env, tmp_path / "edge.log")
            # the edge is publishing (it may take seconds to start on a cold machine)
            read_ids(broker.bootstrap, TopicNames(unique_prefix).samples,
                     [f"press-3-outage-{i}" for i in range(50)], timeout=30)
            fiftieth = time.monotonic()  # at RATE, the rest take 9.5 s more at the least
            time.sleep(1.0)
            mid_run = edge.process.poll() is None  # ~150 of 1,000 sent, at 100/s
            mqtt.stop()  # mid-run: a few hundred messages are out, the rest to come
            mid_run = mid_run and time.monotonic() - fiftieth < (MESSAGES - 50) / RATE
            stopped_at = time.monotonic() - started
            time.sleep(OUTAGE_S)
            mqtt.start()
            assert edge.process.wait(90) == 0, edge.log_text()[-3000:]
            ids = read_ids(broker.bootstrap, TopicNames(unique_prefix).samples,
                           [f"press-3-outage-{i}" for i in range(MESSAGES)], timeout=60)
        finally:
            bridge.stop()
    report = edge_report(edge)
    duplicates = sum(ids.values()) - len(ids)
    print(f"\nbroker stopped at {stopped_at:.1f} s for {OUTAGE_S:.0f} s; edge report {report}; "
          f"{len(ids)} ids in Kafka, {duplicates} duplicates")
    assert set(ids) == {f"press-3-outage-{i}" for i in range(MESSAGES)}
    assert report["samples"] == MESSAGES and report["dropped"] == 0 and report["drained"]
    assert report["disconnects"] >= 1 and report["connects"] >= 2
    assert mid_run  # the outage really fell in the middle of the run (however slow the start)
    assert "unreachable" in edge.log_text() and "is back" in edge.log_text()
