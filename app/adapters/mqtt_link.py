"""The edge's link to its MQTT broker: store-and-forward through an on-disk spool.

Every outgoing message is written to the spool first (``app.spool``: bounded, oldest
dropped and counted when full), and one drain loop publishes from its head, in order, at
QoS 1, removing items only after the broker's PUBACK. So the edge never blocks on the
network, loses nothing while the broker is away (up to the spool's bound, and then says
how much it dropped), and whatever was in flight when the link broke is simply published
again from the spool (at-least-once; the hub is idempotent by sample id).

A spool item that cannot be decoded (a corrupted row) or is larger than the broker takes
would block the head of the queue for ever; such items are logged, counted and acked away.
Oversized messages are refused already when queued.

Connections use a fixed client id with ``clean_session=False`` (a persistent session), so
the broker keeps the edge's command subscription, and the QoS 1 commands sent while the
edge was away, across disconnects. Reconnects back off exponentially with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiomqtt

from edgewise.app.adapters.spool import Spool
from edgewise.app.core.backoff import Backoff

log = logging.getLogger("edgewise.mqtt")

MessageHandler = Callable[[str, bytes], Awaitable[None]]
PUBLISH_BATCH = 64  # spool items published (pipelined) before one ack_through
MAX_TOPIC_BYTES = 65_535
MIN_PUBLISH_TIMEOUT = 5.0  # seconds; a keepalive of 0 must not make every publish time out


def encode_item(topic: str, payload: bytes) -> bytes:
    """One spool item: topic length (2 bytes), topic, payload."""
    raw = topic.encode()
    if len(raw) > MAX_TOPIC_BYTES:
        raise ValueError("MQTT topics are at most 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw + payload


def decode_item(item: bytes) -> tuple[str, bytes]:
    """(topic, payload) of a spool item."""
    size = int.from_bytes(item[:2], "big")
    if len(item) < 2 + size or not size:
        raise ValueError(f"spool item of {len(item)} bytes is shorter than its topic")
    return item[2 : 2 + size].decode(), item[2 + size :]


@dataclass
class LinkStats:
    """What the link did; the edge reports it when it stops."""

    published: int = 0
    connects: int = 0
    disconnects: int = 0
    received: int = 0
    undecodable: int = 0  # corrupted spool items skipped
    oversize: int = 0  # messages refused for being larger than the broker takes


class SpoolPublisher:
    """Drains a spool to an MQTT broker, reconnecting for as long as ``run`` runs."""

    def __init__(
        self, spool: Spool, host: str, port: int, client_id: str, *, keepalive: int,
        backoff: Backoff, subscriptions: Iterable[str] = (),
        on_message: MessageHandler | None = None, connect_timeout: float = 5.0,
        max_payload_bytes: int | None = None,
    ) -> None:
        self.spool = spool
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive = keepalive
        self.backoff = backoff
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.connect_timeout = connect_timeout
        self.max_payload_bytes = max_payload_bytes
        self.publish_timeout = max(2.0 * keepalive, MIN_PUBLISH_TIMEOUT)
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()

    def _fits(self, topic: str, payload: bytes) -> bool:
        """Whether the broker can take the message; if not it is counted and logged once.

        A message the broker refuses would stay at the spool's head and block the queue.
        """
        if self.max_payload_bytes is None or len(payload) <= self.max_payload_bytes:
            return True
        if not self.stats.oversize:
            log.warning("refusing a %d-byte message on %s: over the %d-byte limit",
                        len(payload), topic[:200], self.max_payload_bytes)
        self.stats.oversize += 1
        return False

    def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (durably, on disk) and wake the drain loop."""
        self.put_many([(topic, payload)])

    def put_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Queue several messages in one spool transaction."""
        items = [encode_item(t, p) for t, p in messages if self._fits(t, p)]
        if items:
            self.spool.put_many(items)
            self._wake.set()

    async def run(self) -> None:
        """Connect, drain and receive; on any link failure back off and connect again."""
        down_since: float | None = None
        while True:
            client = aiomqtt.Client(
                self.host, self.port, identifier=self.client_id, clean_session=False,
                keepalive=self.keepalive, timeout=self.connect_timeout,
            )
            client.pending_calls_threshold = 10 * PUBLISH_BATCH  # pipelining is the point
            try:
                async with client:
                    self.stats.connects += 1
                    self.backoff.reset()
                    if down_since is not None:
                        log.warning("MQTT %s:%d is back after %.1f s; draining %d spooled",
                                    self.host, self.port, time.monotonic() - down_since,
                                    len(self.spool))
                        down_since = None
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._drain(client))
                        group.create_task(self._receive(client))
            except* (aiomqtt.MqttError, OSError) as failure:
                if self.connected.is_set():
                    self.stats.disconnects += 1  # lost, not closed by us
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("MQTT %s:%d unreachable (%s); spooling to disk (%d queued)",
                                self.host, self.port, failure.exceptions[0], len(self.spool))
            finally:
                self.connected.clear()
            await asyncio.sleep(self.backoff.next())

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the spool's head in order; ack it only after every PUBACK came back."""
        while True:
            items = self.spool.peek(PUBLISH_BATCH)
            if not items:
                self._wake.clear()
                await self._wake.wait()
                continue
            messages = [m for m in (self._decoded(seq, item) for seq, item in items) if m]
            async with asyncio.TaskGroup() as group:  # pipelined; paho keeps them in order
                for topic, payload in messages:
                    group.create_task(client.publish(
                        topic, payload, qos=1, timeout=self.publish_timeout))
            self.spool.ack_through(items[-1][0])  # skipped items go too: they never could
            self.stats.published += len(messages)

    def _decoded(self, seq: int, item: bytes) -> tuple[str, bytes] | None:
        """(topic, payload) of a spool item, or None (logged, counted) if it cannot go."""
        try:
            topic, payload = decode_item(item)
        except (UnicodeDecodeError, ValueError) as exc:
            if not self.stats.undecodable:
                log.warning("skipping undecodable spool item %d: %s", seq, exc)
            self.stats.undecodable += 1
            return None
        return (topic, payload) if self._fits(topic, payload) else None

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Hand incoming messages (commands) to ``on_message``; ends the session on a
        disconnect, since the message iterator raises MqttError then."""
        async for message in client.messages:
            self.stats.received += 1
            if self.on_message is None:
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                await self.on_message(message.topic.value, payload)
            except Exception:  # a bad command must not take the link down
                log.exception("handling a message on %s failed", message.topic.value)

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.spool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not len(self.spool)
