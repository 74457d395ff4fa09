"""`edgewise demo --duration 30 --json`: the whole pipeline in one process, on its own broker."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.fixtures.kafka import EDGEWISE

pytestmark = pytest.mark.e2e


def test_demo_runs_and_reports_a_sane_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env.update(EDGEWISE_DATA_DIR=str(tmp_path / "data"),
               EDGEWISE_MODELS_DIR=str(tmp_path / "models"), EDGEWISE_RATE="300")
    done = subprocess.run([EDGEWISE, "demo", "--duration", "30", "--json"], env=env,
                          capture_output=True, timeout=240, cwd=tmp_path)
    err = done.stderr.decode()
    assert done.returncode == 0, err[-3000:]
    summary = orjson.loads(done.stdout)
    assert 25 <= summary["seconds"] <= 75  # 30 s, or up to 40 s more for a slow edge
    assert summary["samples"] >= 3000  # 300/s for most of 30 s, after the group join
    assert summary["predictions"] >= 0.9 * summary["samples"]
    assert summary["predictions"] <= summary["samples"]
    # ~0.97 on clean digits, far less on the 20% made harder: ~0.87 overall, chance is 0.1
    assert 0.75 <= summary["accuracy"] <= 1.0
    assert 0 < summary["low_confidence"] < summary["predictions"]
    assert summary["dead_letters"] == 0
    assert sum(summary["per_device"].values()) == summary["predictions"]
    assert len(summary["per_device"]) == 4
    assert "registered digits v1" in err  # a fresh machine trains its first model
    edge = summary["edge"]  # edge processes -> MQTT -> bridge -> Kafka -> hub stages
    assert edge["mqtt"] in ("mosquitto", "amqtt") and edge["edges"] == ["edge-digits", "camera-1"]
    forwarded = edge["bridge"]["forwarded"]
    assert forwarded["prediction"] > 0 and forwarded["face"] > 0 and forwarded["metrics"] > 0
    reports = [orjson.loads(next(line for line in reversed(log.read_text().splitlines())
                                 if line.startswith("{")))
               for log in (tmp_path / "data" / "edges").glob("*.log")]  # each edge's report
    assert len(reports) == 2 and all(r["drained"] for r in reports)
    # the edges stop before the bridge: everything they published was forwarded
    assert edge["bridge"]["forwarded_total"] >= sum(r["published"] for r in reports)
    assert edge["bridge"]["dead_letters"] == {}
    assert list((tmp_path / ".edgewise" / "images" / "face" / "camera-1").rglob("*.png"))
    port = int(re.search(r"broker kafka://127\.0\.0\.1:(\d+)", err).group(1))
    with socket.socket() as sock:  # the embedded broker is gone: no orphan left behind
        assert sock.connect_ex(("127.0.0.1", port)) != 0
