"""``edgewise generate tabular``: sensor rows with missing values POSTed to ``/api/ingest``.

The generator asks the endpoint for the schema its rows must follow (``GET /api/ingest``),
takes rows from the dataset the model was trained on (or ``--dataset``, or a CSV file),
blanks ``--missing`` of each row's values where the schema allows a missing value, and
POSTs them in batches at ``--rate`` rows per second, over kept-alive connections. A 429 or
503 is retried with the same rows and ids (the same ids are counted once downstream) after
the answer's ``Retry-After`` or the backoff's delay, whichever is longer; a connection
error too, up to ``--max-retries`` times; any other refusal is counted by its reason. A
progress bar shows the rows accepted; a JSON summary follows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson
from tqdm import tqdm

from edgewise.app.cli.common import CliError, settings_from
from edgewise.app.core.api_auth import auth_headers
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.input_schema import InputSchema
from edgewise.models import tabular

RETRIED = frozenset({429, 503})


def row_source(schema: InputSchema, data: tabular.TabularData, missing: float, seed: int,
               run: str, devices: int) -> Iterator[dict[str, Any]]:
    """Rows for ``schema`` from ``data``, endlessly, with ``missing`` of the values that may
    be missing set to null, each with an id of this run, a device and the true label."""
    where = {name: i for i, name in enumerate(data.names)}
    absent = [n for n in schema.names if n not in where]
    if absent:
        raise CliError(f"the data has no column {absent[0]!r} of the model's schema")
    columns = [where[n] for n in schema.names]
    may_miss = np.array([f.missing for f in schema.features])
    values = data.x[:, columns]
    usable = ~np.isnan(values[:, ~may_miss]).any(axis=1)  # required values present
    values, labels = values[usable], data.y[usable]
    if not len(values):
        raise CliError("no row of the data has every required feature")
    rng = np.random.default_rng(seed)
    names = schema.names
    n = 0
    while True:
        for i in rng.permutation(len(values)):
            blank = may_miss & (rng.random(len(names)) < missing)
            row: dict[str, Any] = {name: None if blank[k] or np.isnan(v) else float(v)
                                   for k, (name, v) in enumerate(zip(names, values[i],
                                                                     strict=True))}
            row.update(id=f"{run}-{n}", device=f"gen-{n % devices}", label=int(labels[i]))
            n += 1
            yield row


def encode_rows(rows: list[dict[str, Any]], form: str) -> tuple[bytes, str]:
    """A request body and its Content-Type."""
    if form == "ndjson":
        return b"\n".join(orjson.dumps(r) for r in rows), "application/x-ndjson"
    return orjson.dumps(rows), "application/json"


@dataclass
class Tally:
    """What the endpoint answered."""

    requests: int = 0
    accepted: int = 0
    retries: int = 0
    failed: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)


async def post_until_answered(session: aiohttp.ClientSession, url: str, body: bytes,
                              headers: dict[str, str], rows: int, tally: Tally,
                              max_retries: int) -> int:
    """POST one batch; retry it on 429, 503 and connection errors with backoff. Returns
    the rows accepted (all or none)."""
    backoff = Backoff(0.2, 5.0)
    for attempt in range(max_retries + 1):
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError):
            status, answer, retry_after = 0, b"", None
        tally.requests += 1
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        if status == 202:
            tally.accepted += rows
            return rows
        if status and status not in RETRIED:
            try:
                reason = str(orjson.loads(answer).get("error", status))
            except (orjson.JSONDecodeError, AttributeError):
                reason = str(status)
            tally.refused[f"{status} {reason}"] += rows
            return 0
        if attempt == max_retries:
            break
        tally.retries += 1
        wait = backoff.next()
        if retry_after and retry_after.isdigit():
            wait = max(wait, float(retry_after))
        await asyncio.sleep(wait)
    tally.failed += rows
    return 0


async def generate(url: str, rows: Iterator[dict[str, Any]], count: int | None,
                   duration: float | None, rate: float, batch: int, form: str,
                   concurrency: int, headers: dict[str, str], max_retries: int,
                   bar: Any = None) -> tuple[Tally, float]:
    """Send batches at ``rate`` rows/s until ``count`` rows or ``duration`` seconds."""
    tally = Tally()
    started = time.monotonic()
    sent = 0
    lock = asyncio.Lock()
    endpoint = f"{url}/api/ingest"

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while True:
            async with lock:  # the next batch and its place in the schedule
                if duration is not None and time.monotonic() - started >= duration:
                    return
                size = batch if count is None else min(batch, count - sent)
                if size <= 0:
                    return
                chunk = [next(rows) for _ in range(size)]
                due = started + sent / rate
                sent += size
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body, content_type = encode_rows(chunk, form)
            accepted = await post_until_answered(
                session, endpoint, body, {**headers, "Content-Type": content_type}, size,
                tally, max_retries)
            if bar is not None:
                bar.update(accepted)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return tally, time.monotonic() - started


async def served_schema(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """What ``GET /api/ingest`` says: the model, its schema and the dataset it was made on."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"{url}/api/ingest", headers=headers) as response:
                if response.status != 200:
                    raise CliError(f"{url}/api/ingest answered {response.status}: "
                                   f"{(await response.text())[:200]}")
                return await response.json()
    except aiohttp.ClientError as exc:
        raise CliError(f"{url}/api/ingest: {type(exc).__name__}: {exc}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.batch < 1 or args.concurrency < 1 or not 0 <= args.missing < 1:
        raise CliError("--rate > 0, --batch >= 1, --concurrency >= 1, 0 <= --missing < 1")
    if args.count is None and args.duration is None:
        args.count = 1000
    settings = settings_from(args)
    headers = auth_headers(settings)
    if args.token:
        headers = {"Authorization": f"Bearer {args.token}"}
    url = args.url.rstrip("/")
    served = asyncio.run(served_schema(url, headers))
    schema = InputSchema.from_dict(served["schema"])
    try:
        if args.csv:
            data = tabular.read_csv(args.csv, args.label)
        else:
            data = tabular.bundled(args.dataset or served.get("dataset") or "wine", 0.0)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    run = args.run_id or f"g{os.urandom(3).hex()}"
    rows = row_source(schema, data, args.missing, args.seed, run, args.devices)
    with tqdm(total=args.count, desc=f"rows to {served['model']} v{served['version']}",
              unit="row", file=sys.stderr, disable=args.quiet) as bar:
        tally, seconds = asyncio.run(generate(
            url, rows, args.count, args.duration, args.rate, args.batch, args.format,
            args.concurrency, headers, args.max_retries, bar))
    latencies = np.array(tally.latencies_ms or [0.0])
    summary = {
        "run": run, "seconds": round(seconds, 2), "requests": tally.requests,
        "accepted": tally.accepted, "rows_per_s": round(tally.accepted / max(seconds, 1e-9), 1),
        "retries": tally.retries, "failed": tally.failed, "refused": dict(tally.refused),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }
    print(orjson.dumps(summary).decode())
    return 0 if not tally.failed and not tally.refused else 1


def add_commands(sub: Any, add: Any) -> None:
    """``edgewise generate tabular``."""
    p = add("generate", cmd_generate, "send generated rows to a collector", broker=False)
    p.add_argument("what", choices=["tabular"])
    p.add_argument("--url", required=True, help="a worker running ingest_http (http://host:port)")
    p.add_argument("--rate", type=float, default=1000.0, help="rows per second (all senders)")
    p.add_argument("--missing", type=float, default=0.2,
                   help="share of values sent as null (missing), where the schema allows it")
    p.add_argument("--count", type=int, help="rows to send (default 1000 without --duration)")
    p.add_argument("--duration", type=float, help="seconds to send for")
    p.add_argument("--batch", type=int, default=100, help="rows per request")
    p.add_argument("--format", choices=["json", "ndjson"], default="json")
    p.add_argument("--devices", type=int, default=4, help="devices the rows are spread over")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--dataset", choices=sorted(tabular.DATASETS),
                   help="rows from this bundled dataset (default: the model's)")
    p.add_argument("--csv", help="rows from this CSV file instead (with --label)")
    p.add_argument("--label", help="the CSV's label column")
    p.add_argument("--token", help="API token (default: EDGEWISE_API_TOKEN)")
    p.add_argument("--max-retries", type=int, default=10,
                   help="retries of one batch on 429, 503 or a connection error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-id", help="prefix of the rows' ids (default: random)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
