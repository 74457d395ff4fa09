"""A Faust transport whose consumer fetch wait is a setting, and whose producer can be
idempotent outside transactions.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``; on Tansu a waiting fetch is
answered late, so every sample would wait over a second. It also asks for an idempotent
producer only inside transactions, while at-least-once on Kafka gains from one too: a retry
after a lost acknowledgement writes nothing twice. This transport is registered under the
``faust.transports`` entry point as ``edgewise://`` and reads both from the app
(``app.edgewise_fetch_wait_ms``, ``app.edgewise_idempotent``), set by the app factory.
Its consumer commits an offset only after every record sent before it was acknowledged,
and reads a changelog from its start where Faust's recovery has no offset for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_WAIT_MS = 500


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The driver's consumer thread with a configurable fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(
            getattr(self.app, "edgewise_fetch_wait_ms", DEFAULT_FETCH_WAIT_MS)
        )
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Consumer that uses :class:`ConsumerThread` and commits offsets only once everything
    sent before is acknowledged (``app.edgewise_guard``, see ``core.deliveries``)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Commit what was processed before the partitions go: Faust forgets the acked
        offsets of revoked partitions without committing them, so every rebalance (a
        replica joining, one stopping gracefully) would have the next owner read again up
        to a commit interval of input, and stages without a dedupe write it out twice."""
        if revoked and not self.app.should_stop:
            try:
                await self.commit_processed()
            except Exception as exc:  # the next owner reads it again: late, not lost
                self.log.warning("commit before the partitions were revoked failed: %r", exc)
        await super().on_partitions_revoked(revoked)

    async def commit_processed(self) -> bool:
        """Commit everything processed so far. Faust's ``commit`` called while another
        commit is under way (the periodic one, waiting for its records' acknowledgements)
        waits for that one and returns without committing what was processed since it
        began; this waits for it first, then commits."""
        await self.maybe_wait_for_commit_to_finish()
        return await self.commit()

    async def seek_wait(self, partitions: Mapping[Any, int | None]) -> None:
        """Seek and wait, with an offset Faust's table recovery has not worked out (None,
        or below -1) read from the start. Recovery builds the offsets of the standby
        partitions it knows of, waits for the actives, then seeks the standbys; a rebalance
        in between adds standbys with no offset yet, aiokafka refuses to seek those, and
        the recovery service crashes the worker. Reading a changelog from its start only
        costs time: every record holds a key's whole value."""
        unknown = {tp for tp, offset in partitions.items()
                   if not isinstance(offset, int) or offset < 0}
        if unknown:
            self.log.warning("no offset to resume %s from: reading from the start",
                             sorted(f"{tp.topic}-{tp.partition}" for tp in unknown))
            partitions = {tp: 0 if tp in unknown else offset
                          for tp, offset in partitions.items()}
        await super().seek_wait(partitions)

    async def _commit_offsets(self, offsets: Mapping[Any, int],
                              start_new_transaction: bool = True) -> bool:
        guard = getattr(self.app, "edgewise_guard", None)
        if guard is not None:
            await guard.settle(self.app.producer)
        return await super()._commit_offsets(offsets, start_new_transaction)


class Producer(faust_aiokafka.Producer):
    """Producer that is idempotent when the app says the broker allows it, and that tells
    the delivery guard which of the records it buffered (changelog writes) are not yet
    acknowledged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.buffered: deque[Any] = deque()

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None, headers: Any, *,
                   transactional_id: str | None = None) -> Any:
        """The driver's send; when it raises (the producer not ready, a record over its
        size estimate, no room in time, a cancel), the guard hears of it: Faust reports no
        outcome then, and the guard would wait for one before every commit."""
        guard = getattr(self.app, "edgewise_guard", None)
        token = guard.starting() if guard is not None else None
        try:
            return await super().send(topic, key, value, partition, timestamp, headers,
                                      transactional_id=transactional_id)
        except BaseException as exc:
            if token is not None:
                guard.not_sent(token, exc)
            raise

    def send_soon(self, fut: Any) -> None:
        super().send_soon(fut)
        while self.buffered and self.buffered[0].done():
            self.buffered.popleft()
        self.buffered.append(fut)

    def unacknowledged_buffered(self) -> list[Any]:
        """The buffered records (Faust's futures, resolved on acknowledgement or failure)
        still waiting; the acknowledged ones at the front are forgotten."""
        while self.buffered and self.buffered[0].done():
            self.buffered.popleft()
        return [fut for fut in self.buffered if not fut.done()]

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if getattr(self.app, "edgewise_idempotent", False):
            extra.update(acks="all", enable_idempotence=True)
        return extra


class Transport(faust_aiokafka.Transport):
    """aiokafka transport with the configurable-fetch-wait consumer and the producer above."""

    Consumer = Consumer
    Producer = Producer
