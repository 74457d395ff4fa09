"""The fleet views and corrections across two real workers, on Tansu and on Apache Kafka: the
dashboard's fan-out shows every device of both, a peer that does not answer is named, a
correction POSTed to either worker settles the item for every worker and counts toward
corrected accuracy, and the token and body checks answer 401, 400, 404 and 413 (1,000
hostile bodies, each with its reason, and the worker stays up)."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.processes import free_port
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.hostile import hostile_correction_request
from tests.fixtures.kafka import WorkerProcess, env_for, produce, start_worker, wait_until

pytestmark = pytest.mark.integration

STAGES = ["score", "route", "review", "correct", "aggregate", "evaluate"]
TOKEN = "station-token"


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    """Until ``check()`` answers, a worker that is not up yet counting as not yet."""
    return wait_until(what, check, timeout, tolerate=(OSError, KeyError, ValueError))


def call(worker: WorkerProcess, path: str, body: Any = None, token: str | None = TOKEN,
         raw: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON answer) of a GET, or of a POST when a body is given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", data=data,
                                     method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def review_ids(worker: WorkerProcess) -> set[str]:
    status, view = call(worker, "/api/fleet/review?limit=500")
    assert status == 200, view
    return {item["id"] for item in view["items"]}


def evaluated(view: Any) -> int | None:
    """The dashboard's cumulative count of labelled samples evaluated."""
    return view.get("accuracy", {}).get("true_labels", {}).get("digits:1", {}).get(
        "cumulative", {}).get("count")


def test_fleet_views_and_corrections_across_two_workers(
    broker: BrokerUnderTest, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    settings = Settings(models_dir=models_dir, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    app_id = f"{unique_prefix}-{'-'.join(sorted(STAGES))}"
    create_topics(broker.bootstrap, topic_specs(settings, [app_id]))
    env = env_for(settings, broker.url, unique_prefix, tumbling_seconds=60,
                  api_token=TOKEN)
    dead_peer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    first = start_worker(env, STAGES, tmp_path / "w1.log")
    second = start_worker({**env, "EDGEWISE_PEER_URLS": dead_peer}, STAGES,
                          tmp_path / "w2.log")
    workers = [first, second]
    try:
        time.sleep(8)  # both members in the group, partitions shared out
        sim = DigitSimulator(devices=8, batch_size=25, hard_share=0.6, seed=11)
        batches = [sim.next_batch() for _ in range(24)]
        devices = sorted({b.device for b in batches})
        total = sum(len(b) for b in batches)
        asyncio.run(produce(broker.bootstrap, TopicNames(unique_prefix).samples,
                            [(b.device.encode(), encode_sample_batch(b)) for b in batches]))

        # every device of both workers, from either, though each holds only its own
        def full(worker: WorkerProcess) -> Any:
            # evaluate may trail aggregate by a gathering: wait for both to hold everything
            status, view = call(worker, "/api/dashboard", token=None)  # reads stay open
            return view if (status == 200 and view["fleet"]["recent"]["count"] == total
                            and len(view["devices"]) == len(devices)
                            and evaluated(view) == total) else None

        views = [wait_for(f"dashboard of worker {i}", lambda w=w: full(w))
                 for i, w in enumerate(workers)]
        local = [{d["device"] for d in call(w, "/api/devices")[1]["devices"]} for w in workers]
        assert local[0] and local[1] and not local[0] & local[1], local
        for view in views:
            assert [d["device"] for d in view["devices"]] == devices
            assert view["fleet"]["predictions"] == total  # both score replicas' counters
            assert view["accuracy"]["true_labels"]["digits:1"]["cumulative"]["count"] == total
        assert views[0]["complete"] is True and len(views[0]["workers"]) == 2
        marked = {w["url"]: w for w in views[1]["workers"]}
        assert views[1]["complete"] is False and not marked[dead_peer]["ok"]
        assert marked[dead_peer]["error"] and len(marked) == 3

        # the review queue of every partition, from either worker
        # items may still be arriving: the two answers must agree once the queue is still
        def same_queue() -> Any:
            mine = review_ids(first)
            return mine if mine and mine == review_ids(second) == review_ids(first) else None

        pending = wait_for("the same review queue from both workers", same_queue)
        queued = sum(call(w, "/api/review?limit=1")[1]["queued"] for w in workers)
        fleet = call(first, "/api/fleet/review?limit=500")[1]
        assert fleet["queued"] == queued == len(pending)
        by_holder: dict[str, list[dict[str, Any]]] = {}
        for item in fleet["items"]:
            by_holder.setdefault(item["worker"], []).append(item)
        assert len(by_holder) == 2, "both workers hold review items"
        held_by = {w.port: by_holder[f"http://127.0.0.1:{w.port}"] for w in workers}

        # write checks: 401 without the token, 400/404/413 with the reason
        some = held_by[first.port][0]
        assert call(first, "/api/corrections", {"id": some["id"], "label": 1},
                    token=None)[0] == 401
        assert call(first, "/api/corrections", {"id": some["id"], "label": 1},
                    token="wrong")[0] == 401
        status, answer = call(first, "/api/corrections", {"id": some["id"], "label": "one"})
        assert (status, answer["error"]) == (400, "bad_label")
        status, answer = call(first, "/api/corrections", raw=b"{oops")
        assert (status, answer["error"]) == (400, "bad_json")
        status, answer = call(second, "/api/corrections", {"id": "no-such-sample", "label": 1})
        assert (status, answer["error"]) == (404, "unknown_sample")
        assert call(first, "/api/corrections", raw=b" " * 5000)[0] == 413
        rng = random.Random(10)
        answers = collections.Counter()
        for _ in range(1000):  # hostile bodies: each refused with its reason, nothing lost
            body, reason = hostile_correction_request(rng)
            status, answer = call(first, "/api/corrections", raw=body)
            assert (status, answer["error"]) == (413 if reason == "oversize" else 400,
                                                 reason), (body[:200], answer)
            answers[reason] += 1
        assert len(answers) == 7 and first.get("/healthz")["status"] == "ok"
        assert review_ids(first) == pending, "a refused write changed nothing"

        # a correction POSTed to the worker that does not hold the item is forwarded to it
        one, two = held_by[second.port][0], held_by[first.port][0]
        sent = {}
        for target, item in ((first, one), (second, two)):
            label = (item["label"] + 1) % 10  # the model was wrong about both
            status, answer = call(target, "/api/corrections", {"id": item["id"],
                                                               "label": label})
            assert status == 202, answer
            assert answer["accepted"]["predicted"] == item["label"]
            assert answer["owner"] == item["worker"]
            sent[item["id"]] = label
        for worker in workers:
            wait_for("corrected items gone from the queue",
                     lambda w=worker: not set(sent) & review_ids(w))

        def corrected(worker: WorkerProcess) -> Any:
            view = call(worker, "/api/dashboard")[1]
            model = view["accuracy"]["corrections"].get("digits:1") or {}
            return view if model.get("count") == 2 else None

        for worker in workers:
            view = wait_for("corrected accuracy", lambda w=worker: corrected(w))
            assert view["accuracy"]["corrections"]["digits:1"]["accuracy"] == 0.0
            assert view["corrections"]["corrected"] == 2
            assert view["review"]["queued"] == len(pending) - 2

        # last correction wins; taking one back queues its item again
        status, _ = call(second, "/api/corrections", {"id": one["id"], "label": one["label"]})
        assert status == 202
        wait_for("the second correction wins", lambda: call(first, "/api/dashboard")[1][
            "accuracy"]["corrections"]["digits:1"]["correct"] == 1)
        assert call(first, "/api/corrections", {"id": two["id"], "label": None})[0] == 202
        wait_for("the item back in the queue", lambda: two["id"] in review_ids(second))
        view = wait_for("one correction left", lambda: (lambda v: v if v["corrections"][
            "corrected"] == 1 else None)(call(second, "/api/dashboard")[1]))
        assert view["accuracy"]["corrections"]["digits:1"] == {**view["accuracy"][
            "corrections"]["digits:1"], "count": 1, "correct": 1}

        # what the fan-out costs: the dashboard asked of one worker, both answering
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            call(first, "/api/dashboard", token=None)
            timings.append((time.perf_counter() - started) * 1000)
        print(f"\n/api/dashboard over 2 workers: median {statistics.median(timings):.1f} ms, "
              f"max {max(timings):.1f} ms; peers' own time "
              f"{[w['ms'] for w in call(first, '/api/dashboard')[1]['workers']]}")
    finally:
        for worker in workers:
            worker.stop()
