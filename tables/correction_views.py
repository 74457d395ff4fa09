"""The corrections' views: ``POST /api/corrections`` (set or take back a sample's true
label) and ``GET /api/corrections`` (this worker's part of the corrected accuracy).

A POST is answered by the worker that owns the sample's partition (where its review item
and its previous correction live): any other worker forwards the body there. The owner
turns the request into a correction record (what the model said, from the item or the
previous correction), writes it to the corrections topic and answers 202 once the broker
has acknowledged it; the correct stage then folds it in and settles the review item.

Answers: 202 accepted; 400 with the reason for a bad body; 401 without the token (checked
for every write by ``app.run.views``); 404 for a sample neither queued nor corrected; 413
for a body over the limit; 503 while partitions are being assigned, or when the owner did
not answer (nothing was written: the request may simply be sent again).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from faust.web import View

from edgewise.app.core.api_auth import auth_headers
from edgewise.app.core.context import StageContext
from edgewise.app.core.corrections import (
    MAX_REQUEST_BYTES,
    CorrectionRequest,
    new_correction,
    parse_correction_request,
)
from edgewise.app.core.frames import BadInput
from edgewise.app.core.peers import base_url, same_worker
from edgewise.tables.corrections import TABLE, CorrectionStore, corrected_view
from edgewise.tables.review_queue import ReviewQueue

FORWARDED_HEADER = "X-Edgewise-Forwarded"


def error_body(status: int, reason: str, detail: str = "") -> dict[str, Any]:
    """The JSON of a refused request: the status, a short reason code and what was wrong."""
    return {"status": status, "error": reason, "detail": detail}


def known_sample(queue: ReviewQueue, store: CorrectionStore, key: str) -> dict[str, Any] | None:
    """What this worker knows of a sample: its queued review item, else its correction."""
    item = queue.get(key)
    if item is not None:
        return item
    record = store.table.get(key)
    return record if isinstance(record, dict) else None


def correction_for(request: CorrectionRequest, queue: ReviewQueue, store: CorrectionStore
                   ) -> tuple[int, dict[str, Any]]:
    """(status, record or error body) for a request at the sample's owner."""
    known = known_sample(queue, store, request.id)
    if known is None:
        return 404, error_body(404, "unknown_sample",
                               f"no review item or correction for {request.id[:80]}")
    if request.label is None and not store.is_corrected(request.id):
        return 404, error_body(404, "nothing_to_take_back",
                               f"{request.id[:80]} has no correction to take back")
    return 202, new_correction(request, known)


def define(ctx: StageContext, store: CorrectionStore, queue: ReviewQueue) -> None:
    """Attach ``/api/corrections`` (GET and POST)."""
    app = ctx.app
    settings = ctx.settings
    topic = ctx.topic(ctx.names.corrections)

    async def forward(owner: Any, body: bytes, web: Any) -> Any:
        url = f"{base_url(owner)}/api/corrections"
        headers = {"Content-Type": "application/json", FORWARDED_HEADER: "1",
                   **auth_headers(settings)}
        try:
            async with asyncio.timeout(settings.fanout_timeout_seconds):
                async with app.http_client.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                    return web.text(text, content_type="application/json",
                                    status=response.status)
        except (TimeoutError, OSError) as exc:
            return web.json(error_body(503, "owner_unreachable",
                                       f"{url}: {type(exc).__name__}; nothing was written"),
                            status=503)

    async def post(web: Any, request: Any) -> Any:
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            return web.json(error_body(413, "oversize",
                                       f"body over {MAX_REQUEST_BYTES} bytes"), status=413)
        body = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(body) > MAX_REQUEST_BYTES:
            return web.json(error_body(413, "oversize",
                                       f"body over {MAX_REQUEST_BYTES} bytes"), status=413)
        try:
            parsed = parse_correction_request(body)
        except BadInput as exc:
            return web.json(error_body(400, exc.reason, exc.detail), status=400)
        try:
            owner = app.router.key_store(TABLE, parsed.id)
        except KeyError:
            return web.json(error_body(503, "not_assigned",
                                       "partitions are being assigned; try again"), status=503)
        if not same_worker(owner, app.conf.canonical_url):
            if request.headers.get(FORWARDED_HEADER):
                return web.json(error_body(503, "partition_moved",
                                           "the sample's partition moved; try again"),
                                status=503)
            return await forward(owner, body, web)
        status, answer = correction_for(parsed, queue, store)
        if status != 202:
            return web.json(answer, status=status)
        sent = await topic.send(key=parsed.id.encode(), value=orjson.dumps(answer))
        await sent  # answered only once the broker has the correction
        summary = {k: answer[k] for k in ("id", "label", "device", "model", "model_version",
                                          "predicted", "corrected_at")}
        return web.json({"accepted": summary, "owner": base_url(app.conf.canonical_url)},
                        status=202)

    @app.page("/api/corrections")
    class Corrections(View):
        """GET: this worker's corrections; POST: set or take back a sample's label."""

        async def get(self, request: Any) -> Any:
            return self.web.json(local_corrections(ctx, store))

        async def post(self, request: Any) -> Any:
            return await post(self.web, request)


def local_corrections(ctx: StageContext, store: CorrectionStore) -> dict[str, Any]:
    """This worker's part: counts, the raw tally (for the fan-out) and its view."""
    settings = ctx.settings
    raw = store.accuracy.raw()
    return {
        **store.counts(), "evicted": store.evicted, "raw": raw,
        "models": corrected_view(raw, settings.evaluation_window_seconds,
                                 settings.evaluation_windows_kept),
        "window_seconds": settings.evaluation_window_seconds,
        "worker": ctx.app.conf.id, "partitions": "this worker's",
    }
