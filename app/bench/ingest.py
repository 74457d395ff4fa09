"""``edgewise bench ingest``: rows accepted through ``POST /api/ingest`` per second, in
batches of 1 and of 100 rows per request, with the p50 and p99 response time, beside a
plain aiohttp + aiokafka collector doing the same work (``app.bench.plain_collector``: the
same parsing and schema checks, the same frames, 202 once the broker acknowledged).

Both servers run as their own processes on the broker (one worker each, each on topics of
its own); the bodies (rows of the bundled wine dataset with a fifth of their values null,
ids unique) are made before the clock starts, and one client process sends them over
kept-alive connections, a fixed number of requests in flight. Every answer must be 202.
Then the same rows' way into PostgreSQL: the sink stages beside a row-by-row peer
(``app.bench.sink``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from edgewise.app.bench.harness import start_stage_worker
from edgewise.app.bench.sink import bench_sink, print_sink
from edgewise.app.cli.generate import encode_rows, row_source
from edgewise.app.core.records import TABULAR
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of, create_topics, topic_specs
from edgewise.app.services.embedded_broker import wait_until_listening
from edgewise.app.services.processes import free_port, stop_process
from edgewise.models import tabular
from edgewise.models.registry import ModelRegistry

#: (rows per request, requests in flight, rows sent) of each measurement.
RUNS = ((1, 16, 6_000), (100, 8, 150_000))
BAR_ROWS_PER_S = 20_000  # in batches of 100, one worker
WARMUP_REQUESTS = 50


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """POST every body, ``concurrency`` at a time; rows/s and response times."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(bodies)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client() -> None:
            for body in queue:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ms = np.array(latencies)
    return {"seconds": seconds, "statuses": statuses, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99))}


def bodies_for(schema: Any, batch: int, rows: int, run: str) -> list[bytes]:
    source = row_source(schema, tabular.bundled("wine", 0.0), 0.2, seed=len(run), run=run,
                        devices=4)
    return [encode_rows([next(source) for _ in range(batch)], "json")[0]
            for _ in range(rows // batch)]


def measure(url: str, schema: Any, label: str) -> list[dict[str, Any]]:
    """Each run of RUNS against one server."""
    results = []
    warm = bodies_for(schema, 1, WARMUP_REQUESTS, f"warm-{label}-{os.urandom(2).hex()}")
    asyncio.run(send_all(url, warm, 4))
    for batch, concurrency, rows in RUNS:
        bodies = bodies_for(schema, batch, rows, f"{label}-{batch}-{os.urandom(2).hex()}")
        run = asyncio.run(send_all(url, bodies, concurrency))
        accepted = run["statuses"].get(202, 0) * batch
        if accepted != len(bodies) * batch:
            raise RuntimeError(f"{label}: not every request was accepted: {run['statuses']}")
        results.append({"batch": batch, "concurrency": concurrency,
                        "rows_per_s": accepted / run["seconds"], "p50": run["p50"],
                        "p99": run["p99"]})
    return results


def start_plain(bootstrap: str, topic: str, schema: dict[str, Any], profile: str,
                log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    handle = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise.app.bench.plain_collector", bootstrap, topic,
         str(port), orjson.dumps(schema).decode(), profile],
        stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)
    handle.close()
    wait_until_listening("127.0.0.1", port, timeout=60)
    return proc, port


def wait_connected(port: int, timeout: float = 60.0) -> None:
    """Until the worker's ingest producer is connected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ingest", timeout=5) as r:
            if orjson.loads(r.read())["connected"]:
                return
        time.sleep(0.2)
    raise RuntimeError("the ingest worker did not connect to the broker")


def bench_ingest(settings: Settings) -> dict[str, Any]:
    """Both servers on the broker ``settings`` point at (running), then the sinks
    (``app.bench.sink``)."""
    bootstrap = bootstrap_of(settings.broker)
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as tmp:
        work = Path(tmp)
        registry = ModelRegistry(work / "models")
        trained = tabular.train_tabular(tabular.bundled("wine", 0.2))
        registry.register("tabular", trained.model, training_data=trained.training_data,
                          kind=TABULAR, input_schema=trained.schema)
        prefix = f"bench-ingest-{os.urandom(2).hex()}"
        create_topics(bootstrap, topic_specs(settings.model_copy(
            update={"topic_prefix": prefix}), [f"{prefix}-ingest_http"]))
        create_topics(bootstrap, topic_specs(settings.model_copy(
            update={"topic_prefix": f"{prefix}-plain"}), []))
        port = free_port()
        worker = start_stage_worker(settings, settings.broker, prefix, registry.root,
                                    "tabular", work / "worker.log", ["ingest_http"], port=port)
        try:
            wait_connected(port)
            ours = measure(f"http://127.0.0.1:{port}/api/ingest", trained.schema, "edgewise")
        finally:
            stop_process(worker, 20)
        plain, plain_port = start_plain(bootstrap, TopicNames(f"{prefix}-plain").samples,
                                        trained.schema.to_dict(),
                                        "embedded" if settings.embedded_profile else "kafka",
                                        work / "plain.log")
        try:
            theirs = measure(f"http://127.0.0.1:{plain_port}/api/ingest", trained.schema,
                             "plain")
        finally:
            stop_process(plain, 20)
    return {"edgewise": ours, "plain": theirs, "sink": bench_sink(settings)}


def print_ingest(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """Two tables: per broker, edgewise's worker beside the plain collector; the sinks
    beside the naive peer."""
    print("rows/s accepted by POST /api/ingest (202 once the broker acknowledged), one "
          "server process; response time p50 / p99 in ms")
    cell = 27
    print(f"{'':16}" + "".join(f"{label:^{2 * cell}}" for label, _ in runs))
    print(f"{'batch':>5} {'in flight':>9} " + "".join(
        f"{'edgewise ingest_http':>{cell}}{'aiohttp + aiokafka':>{cell}}" for _ in runs)
        + f"{'bar':>9}")
    for i, (batch, concurrency, _) in enumerate(RUNS):
        line = f"{batch:>5} {concurrency:>9} "
        for _, result in runs:
            for side in ("edgewise", "plain"):
                r = result[side][i]
                line += f"{r['rows_per_s']:>10,.0f} {r['p50']:>7.1f} / {r['p99']:<6.1f}".rjust(
                    cell)
        bar = f"{BAR_ROWS_PER_S:,}" if batch == 100 else "-"
        print(line + f"{bar:>9}")
    print_sink([(label, result["sink"]) for label, result in runs])
