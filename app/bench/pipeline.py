"""``edgewise bench pipeline``: the whole hub pipeline (score, route, review, aggregate,
evaluate) in one worker, side by side with the score stage alone and with a per-event Faust
pipeline of the same stages; then latency from edge timestamp to the window updated at a
fixed rate; then the largest changelog record the run wrote.

Throughput is measured draining a backlog: the clock starts when the worker's first sample
is counted (its start-up and group join excluded) and stops when the last stage has counted
every sample: route, aggregate and evaluate all of them, and review every item route sent
it. Figures come from the worker's own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.bench.harness import fill_topic, send_paced, start_stage_worker
from edgewise.app.core.settings import Settings
from edgewise.app.core.topic_reader import read_to_end
from edgewise.app.core.topics import (
    COMPACT,
    DELETE,
    TopicNames,
    TopicSpec,
    create_topics,
    topic_specs,
)
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker, wait_until_listening
from edgewise.app.services.processes import free_port, stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

PIPELINE = ["score", "route", "review", "aggregate", "evaluate"]
DEVICES = 16
PEER_SAMPLES = 20_000
BAR = {32: 20_000, 256: 80_000}
LATENCY_RATES = (1_000, 10_000)
LATENCY_SECONDS = 10.0


def scrape(port: int) -> dict[str, Any]:
    """The worker's metrics: samples per stage (the review stage counts the items it kept),
    the items route sent for review, and the window-latency histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    routed = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "edgewise_samples_total":
                samples[s.labels["stage"]] = s.value
            elif s.name == "edgewise_low_confidence_total":
                routed = s.value
            elif s.name == "edgewise_window_latency_ms_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    return {"samples": samples, "routed": routed, "buckets": sorted(buckets)}


def pipeline_counts(port: int) -> dict[str, float]:
    """Samples per stage of the worker on ``port`` (see ``stage_counts``)."""
    return stage_counts(scrape(port))


def stage_counts(scraped: dict[str, Any]) -> dict[str, float]:
    """Samples per stage of a scrape, with the review stage's items as the share of the
    routed ones it kept times the samples route has seen: it reaches the total when review
    is done."""
    counted = dict(scraped["samples"])
    if "review" in counted:
        routed = scraped["routed"]
        share = counted["review"] / routed if routed else 0.0
        counted["review"] = share * counted.get("route", 0.0)
    return counted


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile of a cumulative histogram, interpolated within its bucket (as
    Prometheus' histogram_quantile does)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def drain(port: int, stages: list[str], total: int, timeout: float = 300,
          counts: Callable[[int], dict[str, float]] | None = None) -> float:
    """Samples/s from the first sample counted until every stage in ``stages`` has all;
    ``counts(port)`` reads the counts per stage (the worker's ``/metrics`` by default)."""
    read = counts or (lambda p: scrape(p)["samples"])
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        try:
            counted = read(port)
        except OSError:
            time.sleep(0.2)
            continue
        now = time.monotonic()
        if first is None and any(counted.get(s, 0) for s in stages):
            first = now
        if all(counted.get(s, 0) >= total for s in stages):
            return total / max(now - (first or now), 1e-9)
        time.sleep(0.1)  # each scrape costs the worker a little; 0.1 s is resolution enough
    raise RuntimeError(f"stages {stages} did not count {total} samples in {timeout:.0f}s")


def peer_progress(port: int) -> dict[str, float]:
    """The per-event peer's counts per stage (its ``/progress`` page)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=5) as reply:
        return orjson.loads(reply.read())


@contextlib.contextmanager
def worker(settings: Settings, url: str, prefix: str, models: Path, stages: list[str],
           log: Path) -> Iterator[int]:
    port = free_port()
    proc = start_stage_worker(settings, url, prefix, models, "digits", log, stages, port)
    try:
        yield port
    finally:
        stop_process(proc, 20)


def backlog(settings: Settings, bootstrap: str, prefix: str, batch: int, total: int) -> int:
    """Fill the samples topic with ``total`` samples (rounded down to whole batches)."""
    sim = DigitSimulator(devices=DEVICES, batch_size=batch, hard_share=0.2, seed=11)
    now = time.time()
    batches = [sim.next_batch(now=now) for _ in range(total // batch)]
    asyncio.run(fill_topic(bootstrap, settings, TopicNames(prefix).samples,
                           [(b.device.encode(), encode_sample_batch(b)) for b in batches]))
    return sum(len(b) for b in batches)


def measure_stages(settings: Settings, broker_url: str, bootstrap: str, models: Path,
                   work: Path, stages: list[str], batch: int, total: int) -> float:
    prefix = f"pipe-{batch}-{len(stages)}-{os.urandom(2).hex()}"
    app_id = f"{prefix}-{'-'.join(sorted(stages))}"
    create_topics(bootstrap, topic_specs(settings.model_copy(update={"topic_prefix": prefix}),
                                         [app_id]))
    total = backlog(settings, bootstrap, prefix, batch, total)
    # every stage that handles the samples; review only once route has sent them all
    counting = [s for s in stages if s in ("route", "review", "aggregate", "evaluate")]
    with worker(settings, broker_url, prefix, models, stages, work / f"{prefix}.log") as port:
        return drain(port, counting or ["score"], total, counts=pipeline_counts)


def measure_peer(settings: Settings, broker_url: str, bootstrap: str, models: Path,
                 work: Path, total: int) -> float:
    prefix = f"peer-{os.urandom(2).hex()}"
    parts = 8
    app_id = f"{prefix}-peer"
    specs = [TopicSpec(f"{prefix}-{t}", parts, DELETE) for t in ("samples", "predictions",
                                                                  "review")]
    specs += [TopicSpec(f"{app_id}-{t}-changelog", parts, COMPACT)
              for t in ("peer_review", "peer_windows", "peer_accuracy")]
    specs.append(TopicSpec(f"{app_id}-__assignor-__leader", 1, COMPACT))
    create_topics(bootstrap, specs)
    sim = DigitSimulator(devices=DEVICES, batch_size=1, hard_share=0.2, seed=12)
    rows = []
    for i in range(total):
        one = sim.next_batch()
        rows.append((one.device.encode(), orjson.dumps({
            "id": f"p{i}", "device": one.device, "ts": float(one.timestamps[0]),
            "label": int(one.labels[0]), "pixels": one.pixels[0].ravel().tolist()})))
    asyncio.run(fill_topic(bootstrap, settings, f"{prefix}-samples", rows))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    with open(work / f"{prefix}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise.app.bench.per_event", broker_url, prefix,
             str(models), str(port)], env=env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, cwd=work)  # its Faust data dir lands in ``work``
    try:
        wait_until_listening("127.0.0.1", port, timeout=60)
        return drain(port, ["aggregate", "evaluate"], total, timeout=600,
                     counts=peer_progress)
    finally:
        stop_process(proc, 20)


def measure_latency(settings: Settings, broker_url: str, bootstrap: str, models: Path,
                    work: Path, rate: float) -> dict[str, Any]:
    batch = 10 if rate <= 1_000 else 32
    prefix = f"lat-{int(rate)}-{os.urandom(2).hex()}"
    app_id = f"{prefix}-{'-'.join(sorted(PIPELINE))}"
    create_topics(bootstrap, topic_specs(settings.model_copy(update={"topic_prefix": prefix}),
                                         [app_id]))
    with worker(settings, broker_url, prefix, models, PIPELINE, work / f"{prefix}.log") as port:
        time.sleep(8.0)  # the group forms and the partitions are assigned first
        sent = asyncio.run(send_paced(bootstrap, settings, TopicNames(prefix).samples, rate,
                                      LATENCY_SECONDS, batch, DEVICES, seed=13))
        drain(port, ["aggregate"], sent, timeout=120)
        buckets = scrape(port)["buckets"]
    biggest = asyncio.run(largest_record(bootstrap, app_id))
    return {"rate": rate, "sent": sent, "p50": quantile(buckets, 0.5),
            "p99": quantile(buckets, 0.99), "largest_record": biggest}


async def largest_record(bootstrap: str, app_id: str) -> dict[str, int]:
    """The largest value written to each table's changelog, in bytes."""
    out = {}
    for table in ("device_windows", "evaluation", "review_queue"):
        size = 0
        async for record in read_to_end(bootstrap, f"{app_id}-{table}-changelog"):
            size = max(size, len(record.value or b""))
        out[table] = size
    return out


def bench_pipeline(settings: Settings, samples: int) -> dict[str, Any]:
    """Every figure of the pipeline benchmark, on the configured broker (Tansu when
    embedded)."""
    with tempfile.TemporaryDirectory(prefix="edgewise-pipe-") as tmp, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.model_copy(update={"broker": broker.url,
                                                   "broker_profile": "embedded"})
        url = settings.broker
        bootstrap = url.split("://", 1)[-1]
        trained = train_digits("linear")
        ModelRegistry(work / "models").register("digits", trained.model, algorithm="linear")
        models = work / "models"
        result: dict[str, Any] = {"broker": url, "throughput": [], "latency": []}
        for batch in (32, 256):
            total = samples or (120_000 if batch == 32 else 400_000)
            whole = measure_stages(settings, url, bootstrap, models, work, PIPELINE, batch,
                                   total)
            alone = measure_stages(settings, url, bootstrap, models, work, ["score"], batch,
                                   total)
            result["throughput"].append({"batch": batch, "samples": total, "pipeline": whole,
                                         "score_alone": alone, "bar": BAR[batch]})
        result["per_event"] = measure_peer(settings, url, bootstrap, models, work, PEER_SAMPLES)
        for rate in LATENCY_RATES:
            result["latency"].append(measure_latency(settings, url, bootstrap, models, work,
                                                     rate))
        return result


def print_pipeline(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """One table, the brokers side by side."""
    print(f"whole hub pipeline ({', '.join(PIPELINE)}) in one worker; samples/s draining a "
          "backlog")
    width = 41
    print(f"{'':6}" + "".join(f"{label:>{width}}" for label, _ in runs) + f"{'':>9}")
    print(f"{'batch':>6}" + "".join(f"{'pipeline':>11}{'score alone':>13}{'per-event Faust':>17}"
                                    for _ in runs) + f"{'bar':>9}")
    for i, first in enumerate(runs[0][1]["throughput"]):
        line = f"{first['batch']:6}"
        for _, r in runs:
            t = r["throughput"][i]
            line += f"{t['pipeline']:11,.0f}{t['score_alone']:13,.0f}{r['per_event']:17,.0f}"
        print(line + f"{first['bar']:9,}")
    print("edge timestamp to window updated (ms; from the worker's histogram), and the "
          "largest changelog record (bytes)")
    print(f"{'rate/s':>8}" + "".join(f"{label[:20]:>22}" for label, _ in runs)
          + "   largest record (windows, evaluation, review)")
    for i, first in enumerate(runs[0][1]["latency"]):
        line = f"{first['rate']:8,.0f}"
        for _, r in runs:
            lat = r["latency"][i]
            p50 = "-" if lat["p50"] is None else f"{lat['p50']:,.1f}"
            p99 = "-" if lat["p99"] is None else f"{lat['p99']:,.0f}"
            line += f"{p50 + ' / ' + p99:>22}"
        sizes = ", ".join(f"{v:,}" for r in runs[-1:]
                          for v in r[1]["latency"][i]["largest_record"].values())
        print(f"{line}   {sizes}")
