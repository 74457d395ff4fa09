"""ingest_http: ``POST /api/ingest`` turns rows of sensor values into tabular samples.

Rows are held to the input schema of the served tabular model (``settings.model_name``, the
version its promotion log serves, followed as it changes) and sent to the samples topic
as tabular sample batches, one per device (cut to the batch and record limits; the rows of
requests arriving while a device's frame is on its way leave together in its next frame,
``core.joined_delivery``); the answer is ``202`` with the rows' ids once the broker has
acknowledged every one of them, so an accepted row is never lost. The score stage scores
them like any other samples.

Answers: 202 ``{"accepted", "ids", "model", "version"}``; 400 with the reason for a bad
body (also dead-lettered, with the body); 401 without the token when one is configured
(``app.run.views``); 413 over ``ingest_max_bytes`` or ``ingest_max_rows``; 415 for a
Content-Type other than JSON or NDJSON in UTF-8; 429 with ``Retry-After`` while the rows
this worker holds unacknowledged would pass ``ingest_max_in_flight_rows``; 503 with
``Retry-After`` when the broker did not acknowledge within ``ingest_ack_timeout_seconds``
(then for ``ingest_retry_after_seconds`` every request is answered 503 at once) or the
producer is not connected yet. A row answered 503 may still arrive: sent again with the
same id, it is counted once downstream. ``GET /api/ingest`` tells the schema and limits.

The stage has its own producer: its deliveries answer HTTP requests, not stage inputs, so
a failed one is the client's to retry and never holds back the commits of stages in the
same worker. Any number of workers may run it; each takes any row.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.web import View
from prometheus_client import Counter

from edgewise.app.core import broker_profile
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.context import StageContext
from edgewise.app.core.dead_letters import is_rejection
from edgewise.app.core.frames import BadInput
from edgewise.app.core.ingest_rows import (
    ACCEPTED_TYPES,
    TOO_LARGE,
    UNSUPPORTED,
    body_format,
    frames_within,
    parse_ingest,
)
from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.joined_delivery import JoinedDelivery
from edgewise.app.core.records import TABULAR, SampleBatch
from edgewise.app.core.settings import Settings, SettingsError
from edgewise.app.core.topics import bootstrap_of, max_record_bytes
from edgewise.models.registry import ModelMeta, ModelRegistry, PromotionLog, RegistryError

STAGE = "ingest_http"
PATH = "/api/ingest"
SCHEMA_POLL_SECONDS = 2.0
DEAD_LETTER_SEND_SECONDS = 0.5
log = logging.getLogger("edgewise.ingest_http")


def refusal(status: int, reason: str, detail: str, retry_after: float | None = None
            ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of a refused request."""
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return status, {"status": status, "error": reason, "detail": detail}, headers


class IngestGate:
    """Whether a request may go ahead: the rows this worker holds unacknowledged, and
    whether the broker failed lately."""

    def __init__(self, max_in_flight: int, retry_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.clock = clock
        self.in_flight = 0
        self.unavailable_until = 0.0
        self.connected = False

    def refused(self, rows: int) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """The 503 or 429 for ``rows`` more, or None. One request alone is always let in:
        the cap bounds what waits for the broker, it never starves a lone client."""
        wait = self.unavailable_until - self.clock()
        if not self.connected:
            return refusal(503, "broker_unavailable", "not connected to the broker yet",
                           self.retry_after)
        if wait > 0:
            return refusal(503, "broker_unavailable", "the broker did not acknowledge a "
                           "recent delivery; try again", wait)
        if self.in_flight and self.in_flight + rows > self.max_in_flight:
            return refusal(429, "saturated", f"{self.in_flight} rows wait for the broker's "
                           f"acknowledgement (limit {self.max_in_flight})", self.retry_after)
        return None

    def failed(self) -> None:
        """A delivery failed: answer 503 at once for ``retry_after``."""
        self.unavailable_until = self.clock() + self.retry_after

    @contextlib.contextmanager
    def holding(self, rows: int) -> Iterator[None]:
        self.in_flight += rows
        try:
            yield
        finally:
            self.in_flight -= rows


class ServedSchema:
    """The input schema of the version the promotion log serves, followed as it changes."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.promotions = PromotionLog(registry, name)
        self.registry = registry
        self.name = name
        self.meta: ModelMeta | None = None
        self.schema: InputSchema | None = None

    def refresh(self) -> None:
        """Read the served version's schema when the version changed; RegistryError when it
        is not a tabular model (the schema served so far stays)."""
        version = self.promotions.served()
        if version is None:
            raise RegistryError(f"no model named {self.name!r} in {self.registry.root}; "
                                "train one: edgewise train tabular")
        if self.meta is not None and self.meta.version == version:
            return
        meta = self.registry.meta(self.name, version)
        if meta.kind != TABULAR or meta.input_schema is None:
            raise RegistryError(f"model {self.name} v{version} is a {meta.kind} model; the "
                                "ingest stage needs a tabular one (edgewise train tabular, "
                                "EDGEWISE_MODEL_NAME)")
        self.schema, self.meta = meta.schema(), meta
        log.warning("ingest_http: rows held to %s v%d (%d features)", meta.name, meta.version,
                    len(self.schema or ()))


class IngestProducer:
    """The stage's own producer, connected with backoff while the broker is away."""

    def __init__(self, settings: Settings, gate: IngestGate, topic: str) -> None:
        self.settings = settings
        self.gate = gate
        self.topic = topic
        self.producer: AIOKafkaProducer | None = None
        self.stopping = False
        self.delivery = JoinedDelivery(self._send, settings.max_batch_samples,
                                       max_record_bytes(settings) // 2)

    async def _send(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        assert self.producer is not None
        return await self.producer.send(self.topic, value, key=key)

    async def connect(self) -> None:
        s = self.settings
        backoff = Backoff(s.reconnect_min_seconds, s.reconnect_max_seconds)
        while not self.stopping:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap_of(s.broker),
                                        **broker_profile.producer_options(s))
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning("ingest_http: no broker yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff.next())
                continue
            self.producer = producer
            self.gate.connected = True
            return

    async def stop(self) -> None:
        self.stopping = True
        self.gate.connected = False
        if self.producer is not None:
            await self.producer.stop()

    async def deliver(self, batches: list[SampleBatch], timeout: float) -> None:
        """Send the batches (joined with other requests' rows of the same device) and wait
        until the broker acknowledged every one."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(self.delivery.deliver(b) for b in batches))

    async def send_soon(self, topic: str, key: bytes, value: bytes) -> None:
        """Hand a record to the producer without waiting for its acknowledgement (a dead
        letter of a refused body: the client still has the body)."""
        if self.producer is None:
            return
        try:
            async with asyncio.timeout(DEAD_LETTER_SEND_SECONDS):
                future = await self.producer.send(topic, value, key=key)
        except (TimeoutError, KafkaError) as exc:
            log.warning("ingest_http: a dead letter was not sent: %s", type(exc).__name__)
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


def new_ids() -> Callable[[], str]:
    """Ids for rows that bring none: a random prefix per process, then a counter."""
    prefix, counter = os.urandom(5).hex(), itertools.count()
    return lambda: f"{prefix}-{next(counter)}"


def register(ctx: StageContext) -> None:
    """Attach ``/api/ingest`` and its producer to the app."""
    settings = ctx.settings
    served = ServedSchema(ModelRegistry(settings.models_dir), settings.model_name)
    try:
        served.refresh()  # fail at start, clearly, without a tabular model
    except RegistryError as exc:
        raise SettingsError(f"the ingest_http stage: {exc}") from None
    gate = IngestGate(settings.ingest_max_in_flight_rows, settings.ingest_retry_after_seconds)
    producer = IngestProducer(settings, gate, ctx.names.samples)
    requests = Counter("edgewise_ingest_requests", "POST /api/ingest answers by status and "
                       "reason", ["status", "reason"], registry=ctx.metrics.registry)
    make_id = new_ids()
    frame_bytes = max_record_bytes(settings) // 2  # predictions carry the rows again
    sent = {"frames": 0}

    @ctx.app.task
    async def connect_producer() -> None:
        await producer.connect()

    @ctx.app.on_before_shutdown.connect
    async def stop_producer(app: Any, **kwargs: Any) -> None:
        await producer.stop()

    @ctx.app.timer(1.0)
    async def count_frames() -> None:
        frames = producer.delivery.frames
        ctx.count(STAGE, events_out=frames - sent["frames"])
        sent["frames"] = frames

    @ctx.app.timer(SCHEMA_POLL_SECONDS)
    async def follow_schema() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, served.refresh)
        except RegistryError as exc:
            log.error("ingest_http: keeping the schema of v%s: %s",
                      served.meta.version if served.meta else "-", exc)

    async def answer(request: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        limit = settings.ingest_max_bytes
        if (request.content_length or 0) > limit:
            return refusal(413, "oversize", f"body over {limit} bytes")
        content_type = request.headers.get("Content-Type", "")
        try:
            body_format(content_type)
        except BadInput as exc:
            return refusal(415, UNSUPPORTED, exc.detail)
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            return refusal(413, "oversize", f"body over {limit} bytes")
        closed = gate.refused(0)
        if closed is not None:
            return closed
        meta, schema = served.meta, served.schema
        assert meta is not None and schema is not None
        try:
            rows = parse_ingest(body, content_type, schema, max_rows=settings.ingest_max_rows,
                                default_device=settings.ingest_device, new_id=make_id,
                                future_skew=ctx.boundary.future_skew)
        except BadInput as exc:
            if exc.reason in TOO_LARGE:
                return refusal(413, exc.reason, exc.detail)
            key, letter = ctx.dead_letters.letter(STAGE, exc, body, f"POST {PATH}")
            await producer.send_soon(ctx.names.dead_letters, key, letter)
            return refusal(400, exc.reason, exc.detail)
        busy = gate.refused(len(rows))
        if busy is not None:
            return busy
        batches = [frame for batch in rows.batches
                   for frame in frames_within(batch, settings.max_batch_samples, frame_bytes)]
        with gate.holding(len(rows)):
            try:
                await producer.deliver(batches, settings.ingest_ack_timeout_seconds)
            except TimeoutError:
                gate.failed()
                return refusal(503, "not_acknowledged", "the broker did not acknowledge the "
                               f"rows within {settings.ingest_ack_timeout_seconds:g} s; send "
                               "them again (the same ids are counted once)",
                               settings.ingest_retry_after_seconds)
            except KafkaError as exc:
                if is_rejection(exc):
                    return refusal(413, "record_rejected", f"{type(exc).__name__}: {exc}")
                gate.failed()
                return refusal(503, "broker_unavailable", f"{type(exc).__name__}; send the "
                               "rows again (the same ids are counted once)",
                               settings.ingest_retry_after_seconds)
        ctx.count(STAGE, samples=len(rows))
        return 202, {"accepted": len(rows), "ids": rows.ids, "model": meta.name,
                     "version": meta.version}, {}

    @ctx.app.page(PATH)
    class Ingest(View):
        """POST rows (JSON or NDJSON); GET the schema they are held to."""

        async def get(self, request: Any) -> Any:
            meta, schema = served.meta, served.schema
            assert meta is not None and schema is not None
            return self.web.json({
                "model": meta.name, "version": meta.version, "kind": meta.kind,
                "schema": schema.to_dict(), "dataset": meta.training_data.get("dataset", ""),
                "accepts": ACCEPTED_TYPES, "max_bytes": settings.ingest_max_bytes,
                "max_rows": settings.ingest_max_rows, "in_flight": gate.in_flight,
                "connected": gate.connected})

        async def post(self, request: Any) -> Any:
            ctx.count(STAGE, events_in=1)
            status, body, headers = await answer(request)
            requests.labels(str(status), body.get("error", "accepted")).inc()
            return self.web.json(body, status=status, headers=headers or None)
