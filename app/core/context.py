"""What every stage is handed: settings, topics, metrics and the dead-letter path."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
import faust.streams as faust_streams
import numpy as np
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.exceptions import ProducerSendError

from edgewise.app.core.boundary import Boundary
from edgewise.app.core.dead_letters import DeadLetterPath, is_rejection
from edgewise.app.core.deliveries import DeliveryFailed
from edgewise.app.core.frames import BadInput
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.records import Origin, PredictionBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, max_record_bytes

T = TypeVar("T")
DECODE_CACHE_SIZE = 256
#: Errors of the broker or the producer, not of a message: never dead-letter the input.
DELIVERY_ERRORS = (KafkaError, ProducerSendError, DeliveryFailed)


def record_size(key: bytes, value: bytes) -> int:
    """A record's size as the producer checks it against its limit: the payload and up to
    87 bytes of batch and record overhead (aiokafka's estimate)."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])


@dataclass
class StageContext:
    """Shared by the stages of one app; passed explicitly, never looked up implicitly."""

    app: faust.App
    settings: Settings
    names: TopicNames
    metrics: StageMetrics = field(default_factory=StageMetrics)
    topics: dict[str, faust.TopicT] = field(default_factory=dict)
    simulate_total: int = 0
    model_holder: Any = None
    dead_letters: DeadLetterPath = field(init=False)
    decoded_predictions: dict[int, tuple[bytes, PredictionBatch]] = field(default_factory=dict)
    hashed_ids: dict[int, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    boundary: Boundary = field(init=False)

    def __post_init__(self) -> None:
        self.dead_letters = DeadLetterPath(self.names.dead_letters,
                                           self.settings.max_message_bytes, self.metrics)
        self.boundary = Boundary.from_settings(self.settings)

    def topic(self, name: str) -> faust.TopicT:
        """The Faust topic for ``name`` (raw bytes keys and values), made once."""
        if name not in self.topics:
            self.topics[name] = self.app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw", partitions=None,
            )
        return self.topics[name]

    async def dead_letter(
        self, stage: str, error: BadInput | Exception, original: bytes | None, source: str,
        key: bytes | None = None,
    ) -> None:
        """Send ``original`` to the dead-letter topic with the reason (see core.dead_letters)."""
        letter_key, letter = self.dead_letters.letter(stage, error, original, source, key)
        await self.topic(self.names.dead_letters).send(key=letter_key, value=letter)

    def agent(self, channel: Any, name: str, stage: str) -> Callable[[Any], Any]:
        """``app.agent`` for a stage: when the stage raises, the delivery guard is poisoned,
        so what it had gathered is not committed (Faust acks it anyway) but read again."""

        def decorate(fun: Callable[[Any], Awaitable[None]]) -> Any:
            async def guarded(stream: Any) -> None:
                try:
                    await fun(stream)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    guard = getattr(self.app, "edgewise_guard", None)
                    if guard is not None:
                        guard.poison(stage, exc)
                    raise

            guarded.__name__ = guarded.__qualname__ = fun.__name__
            guarded.__doc__ = fun.__doc__
            return self.app.agent(channel, name=name)(guarded)

        return decorate

    @contextlib.contextmanager
    def finishing(self, stage: str) -> Iterator[None]:
        """Around work on gathered input that must be done before the input is committed
        (a write to a database, objects being fetched). Should the stage be cancelled in the
        middle (a stop that outlasted its grace), the delivery guard is poisoned: ``take``
        acks a gathering as it unwinds, and Faust's last commit would otherwise take offsets
        whose work was never done. The input is read again instead."""
        try:
            yield
        except asyncio.CancelledError as exc:
            guard = getattr(self.app, "edgewise_guard", None)
            if guard is not None:
                guard.poison(stage, exc)
            raise

    async def send(self, stage: str, topic: str, key: bytes, value: bytes,
                   source: str, partition: int | None = None) -> None:
        """Send one output record (to ``partition``, or the one its key hashes to), never
        dropping it: a record the broker could never take (over the size limit, or refused
        for good) is dead-lettered instead, and anything else that fails keeps its input
        from being committed (``core.deliveries``)."""
        if record_size(key, value) > max_record_bytes(self.settings):
            await self.dead_letter(stage, BadInput(
                "output_too_large", f"{len(value)} bytes for {topic}, over the record limit"),
                value, source, key)
            return
        try:
            await self.topic(topic).send(key=key, value=value, partition=partition)
        except Exception as exc:
            cause = exc.__cause__ or exc  # Faust wraps the producer's error
            if not (is_rejection(exc) or is_rejection(cause)):
                raise
            await self.dead_letter(stage, cause, value, source, key)

    def decode_predictions(self, raw: bytes) -> PredictionBatch:
        """A prediction batch from the predictions topic, checked within every limit.

        route, aggregate and evaluate in one worker are handed the same message: it is
        decoded and validated once (the stages only read the batch, never change it).
        """
        cache = self.decoded_predictions
        hit = cache.get(id(raw))
        if hit is not None and hit[0] is raw:
            return hit[1]
        batch = self.boundary.predictions(raw)
        cache[id(raw)] = (raw, batch)
        while len(cache) > DECODE_CACHE_SIZE:
            del cache[next(iter(cache))]
        return batch

    def id_hashes(self, batch: PredictionBatch, hash_ids: Callable[[list[str]], np.ndarray]
                  ) -> np.ndarray:
        """``hash_ids(batch.ids)``, computed once for the stages of one worker that fold the
        same decoded batch (aggregate and evaluate); never changed by them."""
        hit = self.hashed_ids.get(id(batch.ids))
        if hit is not None and hit[0] is batch.ids:
            return hit[1]
        hashes = hash_ids(batch.ids)
        self.hashed_ids[id(batch.ids)] = (batch.ids, hashes)
        while len(self.hashed_ids) > DECODE_CACHE_SIZE:
            del self.hashed_ids[next(iter(self.hashed_ids))]
        return hashes

    async def decode_or_dead_letter(
        self, stage: str, raw: bytes, source: str, decode: Callable[[bytes], T],
    ) -> tuple[bool, T | None]:
        """``(True, value)``, or ``(False, None)`` with ``raw`` dead-lettered: any exception
        from ``decode`` counts as bad input (reason: its type name), so a decoder bug costs
        one message, never the stage."""
        try:
            return True, decode(raw)
        except Exception as exc:
            await self.dead_letter(stage, exc, raw, source)
            return False, None

    async def each(
        self, stream: Any, stage: str, source: str, decode: Callable[[bytes], T],
        handle: Callable[[T, Origin, bytes], Awaitable[None]],
    ) -> None:
        """The one loop of a stage: every message decoded (or dead-lettered) and handed to
        ``handle(value, origin, raw)`` with where it came from (partition, offset: the tables
        that count samples keep the last offset folded, to recognise replays).

        An exception from ``handle`` costs that message (dead-lettered, ``stage_error``),
        never the stage, except a failed delivery: then the input must be read again, so it
        stops the stage and the delivery guard keeps it from being committed.
        """
        async for event in stream.events():
            raw = event.value
            self.count(stage, events_in=1)
            ok, value = await self.decode_or_dead_letter(stage, raw, source, decode)
            if not ok:
                continue
            try:
                await handle(value, Origin(event.message.partition, event.message.offset),
                             raw)  # type: ignore[arg-type]
            except DELIVERY_ERRORS:
                raise
            except Exception as exc:
                await self.dead_letter(stage, BadInput(
                    "stage_error", f"{type(exc).__name__}: {exc}"), raw, source)

    async def gathered(
        self, stream: Any, stage: str, source: str, decode: Callable[[bytes], T],
        group: Callable[[T, Origin], Hashable],
        handle: Callable[[list[tuple[T, Origin, bytes]]], Awaitable[None]],
        take: int, within: float, owner: Callable[[T, Origin], Hashable],
    ) -> None:
        """``each`` for stages that fold: up to ``take`` messages gathered (waiting at most
        ``within`` seconds for more), decoded, grouped by ``group(value, origin)`` (in
        order of arrival within a group) and handed to ``handle(members)`` group by group,
        so a backlog costs one fold and one table write per group, not per message.
        Groups of one ``owner(value, origin)`` (the record whose watermark tells replays)
        are runs of its consecutive messages, handled in its order (``runs_in_order``).

        When ``handle`` raises on a group, its members are handed over one at a time, and
        only the one that raises is dead-lettered (``stage_error``); a failed delivery
        stops the stage as in ``each``.
        """
        async for events in stream.take_events(take, within):
            self.count(stage, events_in=len(events))
            decoded: list[tuple[tuple[T, Origin, bytes], Any]] = []
            for event in events:
                raw = event.value
                ok, value = await self.decode_or_dead_letter(stage, raw, source, decode)
                if ok:
                    origin = Origin(event.message.partition, event.message.offset)
                    decoded.append(((value, origin, raw), event))  # type: ignore[arg-type]
            for run in runs_in_order(decoded, lambda d: group(d[0][0], d[0][1]),
                                     lambda d: owner(d[0][0], d[0][1])):
                members = [member for member, _ in run]
                with current_event(run[-1][1]):
                    failed = await self._handled(stage, source, handle, members)
                    if failed is not None and len(members) > 1:
                        for member in members:
                            await self._handled(stage, source, handle, [member])

    async def _handled(self, stage: str, source: str,
                       handle: Callable[[list[tuple[T, Origin, bytes]]], Awaitable[None]],
                       members: list[tuple[T, Origin, bytes]]) -> Exception | None:
        """``handle(members)``; what it raised (a lone member is then dead-lettered)."""
        try:
            await handle(members)
            return None
        except DELIVERY_ERRORS:
            raise
        except Exception as exc:
            if len(members) == 1:
                await self.dead_letter(stage, BadInput(
                    "stage_error", f"{type(exc).__name__}: {exc}"), members[0][2], source)
            return exc

    def count(self, stage: str, events_in: int = 0, events_out: int = 0, samples: int = 0) -> None:
        m = self.metrics
        if events_in:
            m.events_in.labels(stage).inc(events_in)
        if events_out:
            m.events_out.labels(stage).inc(events_out)
        if samples:
            m.samples.labels(stage).inc(samples)


def runs_in_order(items: list[T], key: Callable[[T], Hashable],
                  owner: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` grouped by ``key``, each group a run of one owner's consecutive items:
    a key's items after another key's item of the same owner start a new group. Groups
    come in the order of their first items, so each owner's are in its order.

    A stage that folds a group into its owner's record and keeps the offset it folded to
    tells replays by it: had a device's batches of model v1 at offsets 10 and 12 been one
    group and v2's at 11 another (two score replicas mid-swap), v1's fold would raise the
    watermark to 12 and v2's batch at 11 would pass for a replay, uncounted.
    """
    groups: dict[tuple[Hashable, int], list[T]] = {}
    run_of: dict[Hashable, int] = {}
    latest: dict[Hashable, Hashable] = {}
    for item in items:
        k, o = key(item), owner(item)
        if k in run_of and latest.get(o, k) != k:
            run_of[k] += 1
        latest[o] = k
        groups.setdefault((k, run_of.setdefault(k, 0)), []).append(item)
    return list(groups.values())


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Name ``event`` as this task's current event while a gathered group is handled.

    Faust writes a table's changelog to the partition of the current event, which it keeps
    in a context variable that ``take_events`` leaves unset for the consuming task. A group
    is one partition's, so its last event is the one to name. Only this task's variable is
    set: the stream's own ``current_event`` attribute belongs to its background drainer.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def json_schema() -> faust.Schema:
    """Tables: UTF-8 string keys as raw bytes (so partitioning matches the topics), JSON values."""
    return faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")


class StringKeyedTable(faust.Table):
    """A Faust table whose ``str`` keys go to the changelog as raw UTF-8, not JSON, and
    come back from every store as ``str``.

    Faust picks JSON for any key type but ``bytes``; then ``table_route`` hashes
    ``b'"device-3"'`` while the source topic was partitioned on ``b'device-3'``, and a view
    is sent to a worker that does not hold the key. Raw keys keep both hashes equal. The
    store decodes keys by the table's own ``key_type``, not the schema's: without it a
    RocksDB table hands its keys back as ``bytes`` (the memory store keeps what was put).
    """

    #: ``stale(current, incoming)``: whether a changelog record read back must not replace
    #: the value it would overwrite (``fresh_changelog_events``); set by a table whose
    #: records say how far into their input they have folded.
    stale: Callable[[Any, Any], bool] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema_key_type = self.schema.key_type if self.schema is not None else None
        if (self.key_type or schema_key_type) in (None, str):
            self.key_serializer = "raw"
            self.key_type = str

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        if self.stale is not None:
            batch = list(fresh_changelog_events(batch, self.data, self._to_key, self.stale))
        super().apply_changelog_batch(batch)


def fresh_changelog_events(batch: Iterable[Any], current: Mapping[Any, Any],
                           to_key: Callable[[Any], Any], stale: Callable[[Any, Any], bool],
                           ) -> Iterator[Any]:
    """The changelog events of ``batch`` (recovery or a standby) to apply: those whose
    value is not ``stale`` beside the key's value before it (in ``current``, the store, or
    earlier in the batch). Deletions always apply.

    A worker the group has dropped (it missed its session while the cores were busy) may
    still write a record or two for a partition another worker now owns, behind that
    owner's newer ones. The owner's memory is right, but a later rebuild would end on the
    stale record and skip, as replays, inputs it never held.
    """
    latest: dict[Any, Any] = {}
    for event in batch:
        key = to_key(event.key)
        new = None if event.message.value is None else event.value
        if new is not None:  # a deletion needs no look at the value before it
            old = latest[key] if key in latest else current.get(key)
            if old is not None and stale(old, new):
                continue
        latest[key] = new
        yield event
