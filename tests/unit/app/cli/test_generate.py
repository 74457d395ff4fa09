"""The tabular generator: rows with the schema's features and a share of nulls where they
are allowed, and batches retried on 429 and 503 (after Retry-After) but not on a 400."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from edgewise.app.cli.generate import Tally, generate, row_source
from edgewise.app.core.input_schema import Feature, InputSchema
from edgewise.app.services.processes import free_port
from edgewise.models import tabular


def test_rows_follow_the_schema_with_missing_values_where_allowed() -> None:
    data = tabular.bundled("wine", 0.0)
    schema = InputSchema((Feature("alcohol", missing=False), Feature("hue"),
                          Feature("proline")))
    rows = row_source(schema, data, 0.2, seed=3, run="r", devices=3)
    sample = [next(rows) for _ in range(3000)]
    assert set(sample[0]) == {"alcohol", "hue", "proline", "id", "device", "label"}
    assert len({r["id"] for r in sample}) == 3000
    assert {r["device"] for r in sample} == {"gen-0", "gen-1", "gen-2"}
    assert all(r["alcohol"] is not None for r in sample)
    missing = np.mean([[r["hue"] is None, r["proline"] is None] for r in sample])
    assert 0.18 < missing < 0.22
    assert {r["label"] for r in sample} == {0, 1, 2}


async def test_batches_are_retried_on_429_and_503_and_refusals_counted() -> None:
    answers = [(503, "1"), (429, "0"), (202, None), (400, None)]
    seen: list[Any] = []

    async def ingest(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append((time.monotonic(), [r["id"] for r in body]))
        status, retry_after = answers.pop(0) if answers else (202, None)
        headers = {"Retry-After": retry_after} if retry_after else {}
        return web.json_response({"error": "bad_row" if status == 400 else "x"},
                                 status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/api/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rows = row_source(InputSchema((Feature("hue"),)), tabular.bundled("wine", 0.0), 0.2,
                          seed=1, run="t", devices=1)
        tally, _ = await generate(f"http://127.0.0.1:{port}", rows, count=20, duration=None,
                                  rate=1e6, batch=10, form="json", concurrency=1,
                                  headers={}, max_retries=5)
    finally:
        await runner.cleanup()
    assert isinstance(tally, Tally)
    assert (tally.accepted, tally.retries, dict(tally.refused)) == (10, 2, {"400 bad_row": 10})
    assert seen[0][1] == seen[1][1] == seen[2][1]  # the same rows and ids, again
    assert seen[1][0] - seen[0][0] >= 1.0  # Retry-After was heeded
