"""``edgewise bench loop``: from the Nth correction to every score replica serving the
promoted candidate (trained, gated on held-out data, scored in shadow on
``SHADOW_SAMPLES`` live samples, promoted), and accuracy on the stream before and after,
in one run.

Two score replicas (``edgewise worker --stage score``, one consumer group) and one worker of
the other stages, correct and retrain included, run on the broker while the simulator
streams digits (a high share of hard ones, so the review queue fills). The bench sets the
true labels of N queued items through ``POST /api/corrections``, as people at the station
would; the clock starts when the Nth is accepted. Candidate trained is the registry's
``created_at`` of the new version, promoted its promotion-log entry, served the first time
each replica's ``/api/models`` says so (polled every 50 ms). Accuracy is the evaluate
stage's cumulative figure per model version (``/api/evaluation``), from the simulator's
true labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edgewise.app.bench.harness import send_paced, start_stage_worker
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.services.processes import free_port, stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry, PromotionLog, read_decision

HUB = ["aggregate", "correct", "evaluate", "retrain", "review", "route"]
REPLICAS = 2
CORRECTIONS = 50
SHADOW_SAMPLES = 500
RATE = 400.0  # samples/s streamed through the whole run
BAR_SECONDS = 30.0
PARTITIONS = 4


class LoopFailed(RuntimeError):
    """A step of the loop did not happen in time: the figure is what happened."""


def _call(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _until(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found = check()
            if found:
                return found
        time.sleep(every)
    raise LoopFailed(f"{what}: not within {timeout:.0f} s")


def serving(port: int) -> int | None:
    """The version a score worker serves, from its ``/api/models``."""
    models = _call(port, "/api/models")[1]["models"]
    return next((m["version"] for m in models if m["serving"]), None)


def accuracy_by_version(port: int) -> dict[str, dict[str, Any]]:
    """Cumulative accuracy and sample count per model version, from ``/api/evaluation``."""
    view = _call(port, "/api/evaluation")[1]
    return {key: {"accuracy": m["cumulative"].get("accuracy"),
                  "count": m["cumulative"].get("count")}
            for key, m in view["models"].items()}


def bench_loop(settings: Settings, corrections: int = CORRECTIONS) -> dict[str, Any]:
    """Every figure of one loop on ``settings.broker`` (a running broker's URL)."""
    with tempfile.TemporaryDirectory(prefix="edgewise-loop-") as tmp:
        work = Path(tmp)
        models = work / "models"
        trained = train_digits("linear")
        registry = ModelRegistry(models)
        registry.register("digits", trained.model, training_data=trained.training_data,
                          metrics={"accuracy": trained.accuracy}, algorithm="linear")
        prefix = f"loop{int(time.time())}"
        url = settings.broker
        bootstrap = url.split("://", 1)[-1]
        local = settings.model_copy(update={"topic_prefix": prefix, "app_id": prefix,
                                            "partitions": PARTITIONS})
        create_topics(bootstrap, topic_specs(local, [f"{prefix}-{'-'.join(HUB)}",
                                                     f"{prefix}-score"]))
        env = {"EDGEWISE_PARTITIONS": str(PARTITIONS), "EDGEWISE_FETCH_WAIT_MS": "20",
               "EDGEWISE_BROKER_PROFILE": settings.broker_profile,
               "EDGEWISE_RETRAIN_EVERY_CORRECTIONS": str(corrections),
               "EDGEWISE_RETRAIN_MIN_INTERVAL_SECONDS": "0", "EDGEWISE_LOG_LEVEL": "warning",
               "EDGEWISE_SHADOW_SAMPLES": str(SHADOW_SAMPLES)}
        procs = []
        try:
            hub_port = free_port()
            procs.append(start_stage_worker(settings, url, prefix, models, "digits",
                                            work / "hub.log", HUB, hub_port, env))
            ports = []
            for i in range(REPLICAS):
                ports.append(free_port())
                procs.append(start_stage_worker(settings, url, prefix, models, "digits",
                                                work / f"score-{i}.log", ["score"], ports[-1],
                                                env))
            return _run(local, bootstrap, registry, hub_port, ports, corrections)
        except LoopFailed as exc:
            last = [line for line in (work / "hub.log").read_text(errors="replace")
                    .splitlines() if "ERROR" in line or "retrain:" in line][-1:]
            raise LoopFailed(f"{exc}{'; hub: ' + last[0][-300:] if last else ''}") from None
        finally:
            for proc in procs:
                stop_process(proc, 20)


def _run(settings: Settings, bootstrap: str, registry: ModelRegistry, hub: int,
         replicas: list[int], corrections: int) -> dict[str, Any]:
    stream_seconds = 120.0
    stop_stream = threading.Event()

    def stream() -> None:  # paced in slices, so it stops soon after it is told to
        seed = 0
        while not stop_stream.is_set() and seed * 2 < stream_seconds:
            asyncio.run(send_paced(bootstrap, settings, TopicNames(settings.topic_prefix)
                                   .samples, RATE, 2.0, 20, 8, seed))
            seed += 1

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        items = _until("review items", lambda: (lambda v: v["items"] if v["queued"] >=
                                                corrections else None)(
            _call(hub, f"/api/fleet/review?limit={corrections}")[1]), 90, 0.5)
        before = {port: serving(port) for port in replicas}
        if set(before.values()) != {1}:
            raise LoopFailed(f"replicas serve {before} before the loop, not v1")
        for item in items[:corrections]:
            status, answer = _call(hub, "/api/corrections", {"id": item["id"],
                                                             "label": item["true_label"]})
            if status != 202:
                raise LoopFailed(f"correction refused: {status} {answer}")
        nth = time.time()
        served: dict[int, float] = {}

        def all_serving() -> bool:
            for port in replicas:
                if port not in served and serving(port) == 2:
                    served[port] = time.time()
            return len(served) == len(replicas)

        _until("every replica serving v2", all_serving, 90)
        meta = registry.meta("digits", 2)
        promoted_at = next(h["at"] for h in PromotionLog(registry, "digits").history()
                           if h["version"] == 2)
        decision = read_decision(registry, "digits", 2) or {}
        time.sleep(6.0)  # the stream scored by the new version for a while
        accuracy = accuracy_by_version(hub)
    finally:
        stop_stream.set()
        streamer.join(10)
    return {"corrections": corrections, "trained": meta.created_at - nth,
            "promoted": promoted_at - nth, "shadow": decision.get("shadow") or {},
            "replicas": [served[port] - nth for port in replicas],
            "accuracy": accuracy, "bar": BAR_SECONDS}


def print_loop(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """The loop's figures, the brokers side by side."""
    width = 14
    print(f"learning loop: {runs[0][1]['corrections']} corrections -> candidate -> promoted "
          f"-> {REPLICAS} score replicas serving it (seconds after the last correction)")
    print(f"{'':34}" + "".join(f"{label:>{width}}" for label, _ in runs))
    rows = [("candidate trained", lambda r: f"{r['trained']:.2f}"),
            ("shadow samples scored", lambda r: str(r["shadow"].get("samples", "-"))),
            ("promoted after the shadow", lambda r: f"{r['promoted']:.2f}")]
    rows += [(f"replica {i + 1} serving it", lambda r, i=i: f"{r['replicas'][i]:.2f}")
             for i in range(REPLICAS)]
    rows += [("every replica (bar <= 30 s)", lambda r: f"{max(r['replicas']):.2f} "
              + ("ok" if max(r["replicas"]) <= r["bar"] else "MISSED"))]
    for version in ("digits:1", "digits:2"):
        rows.append((f"stream accuracy {version}", lambda r, v=version: (
            "-" if v not in r["accuracy"] or r["accuracy"][v]["accuracy"] is None else
            f"{r['accuracy'][v]['accuracy']:.3f} ({r['accuracy'][v]['count']})")))
    for name, cell in rows:
        print(f"{name:34}" + "".join(f"{cell(r):>{width}}" for _, r in runs))
