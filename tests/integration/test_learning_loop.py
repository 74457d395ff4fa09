"""Corrections to a promoted model, on real workers and the embedded broker: corrections
POSTed at the station reach the retrain stage (its own worker and group), which trains a
candidate after N of them, records the decision in the registry and promotes it; the hub's
score stage then serves the new version without a restart, and a rollback brings the old
one back the same way (from the CLI, and promotion again from the dashboard's view)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.kafka import EDGEWISE, WorkerProcess, env_for, produce, start_worker
from tests.integration.test_dashboard import call, wait_for

pytestmark = pytest.mark.integration

HUB = ["score", "route", "review", "correct", "aggregate", "evaluate"]
EVERY = 24


def serving(worker: WorkerProcess) -> int | None:
    models = call(worker, "/api/models")[1]["models"]
    return next((m["version"] for m in models if m["serving"]), None)


def test_corrections_train_a_candidate_that_is_promoted_served_and_rolled_back(
    embedded_broker: EmbeddedBroker, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)  # the session's registry stays at v1
    settings = Settings(models_dir=models, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    apps = [f"{unique_prefix}-{'-'.join(sorted(HUB))}", f"{unique_prefix}-retrain"]
    create_topics(embedded_broker.bootstrap, topic_specs(settings, apps))
    env = env_for(settings, embedded_broker.url, unique_prefix, retrain_every_corrections=EVERY,
                  retrain_min_interval_seconds=0, retrain_margin=0.02)
    hub = start_worker(env, HUB, tmp_path / "hub.log")
    trainer = start_worker(env, ["retrain"], tmp_path / "retrain.log")
    try:
        time.sleep(6)
        sim = DigitSimulator(devices=4, batch_size=25, hard_share=0.8, seed=21)
        batches = [sim.next_batch() for _ in range(16)]
        asyncio.run(produce(embedded_broker.bootstrap, TopicNames(unique_prefix).samples,
                            [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
        items = wait_for("review items", lambda: (lambda v: v["items"] if v["queued"] >= EVERY
                                                  else None)(
            call(hub, f"/api/fleet/review?limit={EVERY}")[1]))
        assert serving(hub) == 1
        started = time.monotonic()
        for item in items[:EVERY]:  # people set the true labels
            status, answer = call(hub, "/api/corrections", {"id": item["id"],
                                                            "label": item["true_label"]})
            assert status == 202, answer
        status_view = wait_for("a candidate trained", lambda: (lambda v: v if v["runs"] else
                                                               None)(
            call(trainer, "/api/retrain")[1]), timeout=60)
        assert status_view["error"] == "" and status_view["last"]["version"] == 2, status_view
        last = status_view["last"]
        assert last["decision"] == "promoted", last
        assert last["data"]["corrections"] == EVERY
        wait_for("the hub serving v2", lambda: serving(hub) == 2, timeout=30)
        loop_seconds = time.monotonic() - started
        listed = {m["version"]: m for m in call(hub, "/api/models")[1]["models"]}
        assert listed[2]["promoted"] and listed[2]["decision"]["decision"] == "promoted"
        assert listed[2]["decision"]["against"] == 1
        print(f"\n{EVERY} corrections -> candidate trained, promoted and served by the hub "
              f"in {loop_seconds:.1f} s; held-out {last['metrics']} vs served "
              f"{last['served_metrics']}")

        done = subprocess.run([EDGEWISE, "rollback", "--no-announce"], capture_output=True,
                              env={**_os_env(), **env}, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        wait_for("the hub back on v1", lambda: serving(hub) == 1, timeout=30)
        status, answer = call(hub, "/api/models/promote", {"version": 2})  # the dashboard's
        assert (status, answer["served"]) == (200, 2), answer
        wait_for("the hub on v2 again", lambda: serving(hub) == 2, timeout=30)
        status, answer = call(hub, "/api/models/promote", {"version": 9})
        assert (status, answer["error"]) == (404, "refused"), answer
    finally:
        hub.stop()
        trainer.stop()


def _os_env() -> dict[str, Any]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
