"""cdc: PostgreSQL changes into Kafka as Debezium envelopes, losing nothing.

The loop: peek the slot (a bounded number of changes, read a page at a time), decode
pgoutput, produce one record per event, and advance the slot only past commits whose every
event Kafka acknowledged (:func:`advance_slot_after_ack`). A crash therefore replays from
the slot: duplicates, never loss. Before streaming, an initial snapshot per
``cdc_snapshot_mode``. When PostgreSQL goes away the session is rebuilt with backoff; when
nothing of ours happens the slot is still advanced every ``cdc_heartbeat_seconds`` so it
does not pin the server's WAL. Runs as the ``cdc`` stage of a worker or as ``edgewise cdc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from edgewise.agents.cdc import postgres as pg
from edgewise.agents.cdc import state as cdc_state
from edgewise.agents.cdc.acks import AckTracker, Record
from edgewise.agents.cdc.envelope import (
    CaptureSource,
    ChangeEvent,
    ChangePosition,
    cdc_topic_spec,
    change_events,
)
from edgewise.agents.cdc.pgoutput import (
    Begin,
    Commit,
    CustomType,
    Delete,
    Insert,
    Relation,
    RelationCache,
    Truncate,
    Update,
    decode_message,
)
from edgewise.agents.cdc.pgoutput_values import PgOutputError
from edgewise.agents.cdc.snapshot import snapshot_events, tables_to_snapshot
from edgewise.app.core import broker_profile
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.context import StageContext
from edgewise.app.core.dead_letters import DeadLetterPath
from edgewise.app.core.frames import BadInput
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of, create_topics_async

STAGE = "cdc"
ADVANCE_EVERY_SECONDS = 1.0
log = logging.getLogger("edgewise.cdc")

#: Errors after which the session is rebuilt from the slot (server restart, slot busy
#: because a killed capture's backend has not noticed yet, broker hiccup).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.ObjectInUseError,
    asyncpg.exceptions.UndefinedObjectError, asyncpg.exceptions.InternalClientError,
    KafkaError,
)


def encode_event(event: ChangeEvent) -> tuple[bytes | None, bytes | None]:
    """Key and value bytes: both ``{"payload": …}`` as Debezium's JSON converter writes
    them with the schema left out; a tombstone's value is null. A null key is only ever
    returned for a keyless event, which :meth:`CdcCapture._send` dead-letters instead of
    producing (compacted topics reject records without a key)."""
    key = None if event.key is None else orjson.dumps({"payload": event.key})
    value = None if event.value is None else orjson.dumps(event.value)
    return key, value


@dataclass
class CaptureStats:
    """What a capture did, for logs, metrics, tests and the benchmark."""

    snapshot_rows: int = 0
    snapshot_started_at: float | None = None
    snapshot_done_at: float | None = None
    changes: int = 0
    transactions: int = 0
    events: int = 0
    dead_letters: int = 0
    truncates_skipped: int = 0  # as Debezium's default skipped.operations=t
    peeks: int = 0
    reconnects: int = 0
    advanced_lsn: int | None = None
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=100))  # newest kept


class CdcCapture:
    """One capture: a PostgreSQL database and slot into Kafka through one producer."""

    def __init__(self, settings: Settings, bootstrap: str,
                 metrics: StageMetrics | None = None) -> None:
        for kind, name in (("slot", settings.cdc_slot),
                           ("publication", settings.cdc_publication)):
            pg.check_name(kind, name)
        if not settings.cdc_dsn:
            raise pg.CdcSetupError("no PostgreSQL to capture: set EDGEWISE_CDC_DSN or --dsn")
        self.settings = settings
        self.bootstrap = bootstrap
        self.stats = CaptureStats()
        self.dead_letters = DeadLetterPath(TopicNames(settings.topic_prefix).dead_letters,
                                           settings.max_message_bytes, metrics)
        self.ready = asyncio.Event()  # set once streaming (after any snapshot) begins
        self.tracker = self._new_tracker()
        self.source = CaptureSource(name=settings.cdc_topic_prefix, db="")
        self._producer: AIOKafkaProducer | None = None
        self._topics: set[str] = set()
        self._keys: dict[int, tuple[str, ...]] = {}
        self._seen_relations: dict[int, Relation] = {}
        self._last_commit_lsn: int | None = None
        self._last_advance = time.monotonic()

    def _new_tracker(self) -> AckTracker:
        """A tracker that dead-letters records Kafka rejects for good instead of failing."""
        return AckTracker(redirect=self._redirect_rejected)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Capture until ``stop`` is set; rebuild the session after transient errors."""
        stop = stop or asyncio.Event()
        s = self.settings
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                          **broker_profile.producer_options(s))
        await self._producer.start()
        backoff = Backoff(s.reconnect_min_seconds, s.cdc_reconnect_max_seconds)
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                except pg.CdcSetupError:
                    raise
                except TRANSIENT_ERRORS as exc:
                    if self.ready.is_set():  # it had been streaming: start the backoff over
                        backoff.reset()
                    self.ready.clear()
                    self.stats.reconnects += 1
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    delay = backoff.next()
                    log.warning("cdc: %s: %s; resuming from the slot in %.1fs",
                                type(exc).__name__, str(exc)[:200], delay)
                    self.tracker = self._new_tracker()  # unacked events will be replayed
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
        finally:
            await self._producer.stop()

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        connections: list[asyncpg.Connection] = []
        try:
            conn = await asyncpg.connect(s.cdc_dsn, timeout=10)
            connections.append(conn)
            control = await asyncpg.connect(s.cdc_dsn, timeout=10)
            connections.append(control)
            await pg.check_server(conn)
            tables = await pg.resolve_tables(conn, pg.parse_table_list(s.cdc_tables))
            _check_identities(tables)
            await pg.ensure_publication(conn, s.cdc_publication, tables)
            if not tables:
                tables = await pg.published_tables(conn, s.cdc_publication)
                _check_identities(tables)
            created = await pg.ensure_slot(conn, s.cdc_slot)
            database = await conn.fetchval("SELECT current_database()")
            self.source = CaptureSource(name=s.cdc_topic_prefix, db=database)
            await self._ensure_topics([self._topic(t.schema, t.name) for t in tables])
            for table in tables:
                self._keys[table.oid] = table.primary_key
            await self._maybe_snapshot(conn, tables, created, database, stop)
            self.ready.set()
            await self._stream(conn, control, stop)
        finally:
            for c in connections:
                await _close_quietly(c)

    def _topic(self, schema: str, table: str) -> str:
        return f"{self.settings.cdc_topic_prefix}.{schema}.{table}"

    async def _ensure_topics(self, topics: list[str]) -> None:
        wanted = [t for t in topics if t not in self._topics]
        if wanted:
            specs = [cdc_topic_spec(t, self.settings) for t in wanted]
            await create_topics_async(self.bootstrap, specs)
            self._topics.update(wanted)

    async def _maybe_snapshot(self, conn: asyncpg.Connection, tables: list[pg.CapturedTable],
                              created: bool, database: str, stop: asyncio.Event) -> None:
        s = self.settings
        topic = cdc_state.state_topic(s.topic_prefix)
        key = cdc_state.state_key(database, s.cdc_slot)
        names = [t.qualified for t in tables]
        done: set[str] = set()
        if s.cdc_snapshot_mode == "initial" and not created:
            await create_topics_async(self.bootstrap, [cdc_state.state_spec(s)])
            state = await cdc_state.load_state(self.bootstrap, topic, key,
                                               broker_profile.consumer_options(s))
            done = cdc_state.snapshotted_tables(state, names)
        wanted = set(tables_to_snapshot(s.cdc_snapshot_mode, created, done, names))
        if not wanted:
            return
        rows = 0
        self.stats.snapshot_started_at = time.time()
        reads = snapshot_events(conn, [t for t in tables if t.qualified in wanted],
                                self.source, s.cdc_page_rows)
        async with contextlib.aclosing(reads):
            async for event in reads:
                await self._send(event)
                rows += 1
                self.stats.snapshot_rows += 1
                if stop.is_set():
                    return  # not recorded as completed: the next start snapshots again
        await self.tracker.wait_until(0)
        await create_topics_async(self.bootstrap, [cdc_state.state_spec(s)])
        assert self._producer is not None
        await cdc_state.save_state(self._producer, topic, key, cdc_state.snapshot_record(
            await pg.confirmed_lsn(conn, s.cdc_slot), rows, done | wanted))
        self.stats.snapshot_done_at = time.time()
        log.info("cdc: snapshot of %d tables done: %d rows", len(wanted), rows)

    async def _stream(self, conn: asyncpg.Connection, control: asyncpg.Connection,
                      stop: asyncio.Event) -> None:
        s = self.settings
        cache = RelationCache()
        while not stop.is_set():
            flushed = await pg.flushed_lsn(control)
            rows = 0
            begin: Begin | None = None
            self.stats.peeks += 1
            peek = pg.peek_changes(conn, s.cdc_slot, s.cdc_publication, s.cdc_max_changes,
                                   s.cdc_page_rows)
            async with contextlib.aclosing(peek):
                async for row in peek:
                    rows += 1
                    begin = await self._handle(row, cache, begin, control)
                    if stop.is_set():
                        break  # what was acknowledged is kept; the rest is peeked again
                    if self.tracker.in_flight >= s.cdc_max_in_flight:
                        await self.tracker.wait_until(s.cdc_max_in_flight // 2)
                        await self._advance(control, force=False)
            await self.tracker.wait_until(0)
            if rows:
                await self._advance(control, force=True)
            else:
                if time.monotonic() - self._last_advance >= s.cdc_heartbeat_seconds:
                    await pg.advance_slot(control, s.cdc_slot, flushed)  # heartbeat
                    self._last_advance = time.monotonic()
                try:
                    await asyncio.wait_for(stop.wait(), s.cdc_poll_seconds)
                except TimeoutError:
                    pass

    async def _handle(self, row: asyncpg.Record, cache: RelationCache, begin: Begin | None,
                      control: asyncpg.Connection) -> Begin | None:
        data = row["data"]
        try:
            message = decode_message(data)
        except PgOutputError as exc:
            await self._dead_letter("bad_pgoutput", str(exc), data)
            return begin
        if isinstance(message, Begin):
            return message
        if isinstance(message, Commit):
            self.tracker.commit(message.end_lsn)
            self._last_commit_lsn = message.commit_lsn
            self.stats.transactions += 1
            return None
        if isinstance(message, Relation | CustomType):
            cache.observe(message)
            if isinstance(message, Relation):
                await self._learn(message, control)
            return begin
        if isinstance(message, Truncate):
            # no row key to send it under on a compacted topic: skipped, as Debezium does
            self.stats.truncates_skipped += len(message.relation_oids)
            log.info("cdc: skipped a TRUNCATE of %d tables", len(message.relation_oids))
            return begin
        if isinstance(message, Insert | Update | Delete):
            self.stats.changes += 1
            position = ChangePosition(
                lsn=int(row["lsn"]), tx_id=begin.xid if begin else int(row["xid"]),
                commit_time=begin.commit_time if begin else _now(),
                last_commit_lsn=self._last_commit_lsn)
            try:
                events = change_events(message, cache, self.source, position,
                                       key_columns=self._keys)
            except PgOutputError as exc:
                await self._dead_letter("bad_change", str(exc), data)
                return begin
            for event in events:
                await self._send(event)
        return begin

    async def _learn(self, relation: Relation, control: asyncpg.Connection) -> None:
        """A Relation message: learn the table's primary key and make its topic (once per
        table, again when its columns change)."""
        if self._seen_relations.get(relation.oid) == relation:
            return
        self._seen_relations[relation.oid] = relation
        info = await pg.table_info(control, relation.oid)
        if info is not None:
            self._keys[relation.oid] = info.primary_key
        elif relation.replica_identity != "f":
            self._keys[relation.oid] = relation.key_columns
        await self._ensure_topics([self._topic(relation.namespace, relation.name)])

    async def _send(self, event: ChangeEvent) -> None:
        assert self._producer is not None
        key, value = encode_event(event)
        if key is None:  # a compacted topic refuses it, and the session would replay forever
            await self._dead_letter("keyless", f"{event.topic}: event without a record key",
                                    value or b"")
            return
        try:
            future = await self._producer.send(event.topic, value, key=key)
        except MessageSizeTooLargeError as exc:
            await self._dead_letter("oversize", f"{event.topic}: {exc}", value or b"", key)
            return
        self.tracker.add(future, (event.topic, key, value))
        self.stats.events += 1

    async def _redirect_rejected(self, record: Record, exc: BaseException
                                 ) -> asyncio.Future[Any]:
        """A record the broker refused for good (non-retriable error on its future): its
        dead letter's ack future, which the tracker counts in the record's place."""
        topic, key, value = record
        return await self._send_dead_letter("rejected", f"{topic}: {type(exc).__name__}: "
                                            f"{exc}", value or b"", key)

    async def _dead_letter(self, reason: str, detail: str, original: bytes,
                           key: bytes | None = None) -> None:
        """Input capture cannot turn into an event goes to the dead-letter topic, counted
        like an event so the slot still moves past it once Kafka has it."""
        self.tracker.add(await self._send_dead_letter(reason, detail, original, key))

    async def _send_dead_letter(self, reason: str, detail: str, original: bytes,
                                key: bytes | None = None) -> asyncio.Future[Any]:
        """Produce one dead letter; the caller decides how its ack is tracked."""
        assert self._producer is not None
        self.stats.dead_letters += 1
        letter_key, letter = self.dead_letters.letter(
            STAGE, BadInput(reason, detail), original, f"slot {self.settings.cdc_slot}", key)
        future: asyncio.Future[Any] = await self._producer.send(
            self.dead_letters.topic, letter, key=letter_key)
        return future

    async def _advance(self, control: asyncpg.Connection, force: bool) -> None:
        if not force and time.monotonic() - self._last_advance < ADVANCE_EVERY_SECONDS:
            return
        lsn = self.tracker.take_advance()
        if lsn is not None:
            await pg.advance_slot(control, self.settings.cdc_slot, lsn)
            self.stats.advanced_lsn = lsn
            self._last_advance = time.monotonic()


def _check_identities(tables: Sequence[pg.CapturedTable]) -> None:
    problems = [p for p in map(pg.identity_problem, tables) if p]
    if problems:
        raise pg.CdcSetupError(problems[0])


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:  # a dead server: nothing left to close politely
        conn.terminate()


def register(ctx: StageContext) -> None:
    """Attach the capture to the app as a task with its own producer (the broker profile's
    one record per batch on Tansu)."""
    capture = CdcCapture(ctx.settings, bootstrap_of(ctx.settings.broker), ctx.metrics)
    ctx.cdc_capture = capture  # type: ignore[attr-defined]

    counted = {"events": 0}

    @ctx.app.task
    async def cdc() -> None:
        try:
            await capture.run()
        except pg.CdcSetupError as exc:
            log.error("cdc: %s", exc)
            raise

    @ctx.app.timer(1.0)
    async def cdc_metrics() -> None:
        events = capture.stats.events
        ctx.count(STAGE, events_out=events - counted["events"])
        counted["events"] = events
