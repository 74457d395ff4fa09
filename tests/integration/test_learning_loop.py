"""Corrections to a promoted model, on real workers and the embedded broker: corrections
POSTed at the station reach the retrain stage (its own worker and group), which trains a
candidate after N of them and, once it passed the held-out sets, has both score replicas
score it in shadow on the live stream; it is promoted on what it did there, and every
replica serves it without a restart, no sample lost or scored twice across the swap (by
id). A rollback brings the old one back the same way (from the CLI, and promotion again
from the dashboard's view)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.kafka import (
    EDGEWISE,
    WorkerProcess,
    consume_until,
    env_for,
    produce,
    start_worker,
)
from tests.integration.test_dashboard import call, wait_for

pytestmark = pytest.mark.integration

HUB = ["route", "review", "correct", "aggregate", "evaluate"]
EVERY = 50
SHADOW = 300
REPLICAS = 2


def serving(worker: WorkerProcess) -> int | None:
    models = call(worker, "/api/models")[1]["models"]
    return next((m["version"] for m in models if m["serving"]), None)


class Stream:
    """Digit batches of unique ids sent at a steady pace from a thread until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.sim = DigitSimulator(devices=4, batch_size=25, hard_share=0.8, seed=21)
        self.ids: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.is_set():
            batches = [self.sim.next_batch() for _ in range(4)]
            asyncio.run(produce(self.bootstrap, self.topic,
                                [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
            self.ids += [i for b in batches for i in b.ids]
            time.sleep(0.4)  # about 250 samples/s

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)


def test_corrections_train_a_candidate_shadowed_promoted_served_by_every_replica(
    embedded_broker: EmbeddedBroker, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)  # the session's registry stays at v1
    settings = Settings(models_dir=models, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    apps = [f"{unique_prefix}-{'-'.join(sorted(HUB))}", f"{unique_prefix}-retrain",
            f"{unique_prefix}-score"]
    create_topics(embedded_broker.bootstrap, topic_specs(settings, apps))
    env = env_for(settings, embedded_broker.url, unique_prefix, retrain_every_corrections=EVERY,
                  retrain_min_interval_seconds=0, retrain_margin=0.02, shadow_samples=SHADOW)
    hub = start_worker(env, HUB, tmp_path / "hub.log")
    scorers = [start_worker(env, ["score"], tmp_path / f"score-{i}.log")
               for i in range(REPLICAS)]
    trainer = start_worker(env, ["retrain"], tmp_path / "retrain.log")
    names = TopicNames(unique_prefix)
    stream = Stream(embedded_broker.bootstrap, names.samples)
    try:
        for worker in scorers:
            wait_for("a score replica serving v1", lambda w=worker: serving(w) == 1)
        time.sleep(6)  # the replicas' group settled: a rebalance would replay, not lose
        stream.thread.start()
        items = wait_for("review items", lambda: (lambda v: v["items"] if v["queued"] >= EVERY
                                                  else None)(
            call(hub, f"/api/fleet/review?limit={EVERY}")[1]))
        started = time.monotonic()
        for item in items[:EVERY]:  # people set the true labels
            status, answer = call(hub, "/api/corrections", {"id": item["id"],
                                                            "label": item["true_label"]})
            assert status == 202, answer
        in_shadow = wait_for("a candidate in shadow", lambda: (lambda v: v if (
            v["shadow"] or {}).get("version") == 2 else None)(call(trainer, "/api/retrain")[1]))
        assert in_shadow["last"]["decision"] == "shadow", in_shadow
        assert {serving(w) for w in scorers} == {1}  # shadowed, not served
        decided = wait_for("the shadow decided", lambda: (lambda v: v if v["runs"] and v[
            "last"]["decision"] != "shadow" else None)(call(trainer, "/api/retrain")[1]))
        last = decided["last"]
        assert decided["error"] == "" and last["version"] == 2, decided
        assert last["decision"] == "promoted", last
        assert last["data"]["corrections"] == EVERY
        assert last["reason"].startswith("shadow on "), last
        for worker in scorers:
            wait_for("every replica serving v2", lambda w=worker: serving(w) == 2, timeout=30)
        loop_seconds = time.monotonic() - started
        listed = {m["version"]: m for m in call(hub, "/api/models")[1]["models"]}
        decision = listed[2]["decision"]
        assert listed[2]["promoted"] and decision["decision"] == "promoted"
        assert decision["against"] == 1 and decision["shadow"]["samples"] >= SHADOW
        assert decision["metrics"]["stream_accuracy"] is not None
        print(f"\n{EVERY} corrections -> candidate trained, shadowed on "
              f"{decision['shadow']['samples']} samples, promoted and served by {REPLICAS} "
              f"replicas in {loop_seconds:.1f} s; {last['metrics']} vs served "
              f"{last['served_metrics']}")
        time.sleep(2)  # the stream scored by v2 for a while
        stream.stop()
        expected = set(stream.ids)
        def decoded(record: Any) -> Any:
            return decode_prediction_batch(record.value, settings.max_message_bytes,
                                           future_skew=3600)

        frames = asyncio.run(consume_until(
            embedded_broker.bootstrap, names.predictions,
            lambda records: sum(len(decoded(r).ids) for r in records) >= len(expected),
            timeout=60))
        scored = [(i, f.model_version) for f in map(decoded, frames) for i in f.ids]
        ids = [i for i, _ in scored]
        assert len(ids) == len(set(ids)), "a sample was scored twice across the swap"
        assert set(ids) == expected, f"{len(expected - set(ids))} samples never scored"
        assert {v for _, v in scored} == {1, 2}

        done = subprocess.run([EDGEWISE, "rollback", "--no-announce"], capture_output=True,
                              env={**_os_env(), **env}, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        for worker in scorers:
            wait_for("every replica back on v1", lambda w=worker: serving(w) == 1, timeout=30)
        # the dashboard's: its check loads the model (the hub's first: all of
        # scikit-learn imported, seconds), while the stages and views go on answering
        promoted: list[tuple[int, Any]] = []
        promoting = threading.Thread(target=lambda: promoted.append(
            call(hub, "/api/models/promote", {"version": 2}, timeout=120)))
        promoting.start()
        slowest = 0.0
        while promoting.is_alive():
            asked = time.monotonic()
            hub.get("/healthz", timeout=30)
            slowest = max(slowest, time.monotonic() - asked)
            time.sleep(0.1)
        promoting.join()
        status, answer = promoted[0]
        assert (status, answer["served"]) == (200, 2), answer
        assert slowest < 3.0, f"the hub stalled {slowest:.1f} s during a promotion"
        for worker in scorers:
            wait_for("every replica on v2 again", lambda w=worker: serving(w) == 2, timeout=30)
        status, answer = call(hub, "/api/models/promote", {"version": 9})
        assert (status, answer["error"]) == (404, "refused"), answer
    finally:
        stream.stop()
        for worker in [hub, *scorers, trainer]:
            worker.stop()


def _os_env() -> dict[str, Any]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
