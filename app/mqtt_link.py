"""The edge's link to its MQTT broker: store-and-forward through an on-disk spool.

Every outgoing message is written to the spool first (``app.spool``: bounded, oldest
dropped and counted when full), and one drain loop publishes from its head, in order, at
QoS 1, removing items only after the broker's PUBACK. So the edge never blocks on the
network, loses nothing while the broker is away (up to the spool's bound, and then says
how much it dropped), and whatever was in flight when the link broke is simply published
again from the spool (at-least-once; the hub is idempotent by sample id).

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

from edgewise.app.backoff import Backoff
from edgewise.app.spool import Spool

log = logging.getLogger("edgewise.mqtt")

MessageHandler = Callable[[str, bytes], Awaitable[None]]
PUBLISH_BATCH = 64  # spool items published (pipelined) before one ack_through
MAX_TOPIC_BYTES = 65_535


def encode_item(topic: str, payload: bytes) -> bytes:
    """One spool item: topic length (2 bytes), topic, payload."""
    raw = topic.encode()
    if len(raw) > MAX_TOPIC_BYTES:
        raise ValueError("MQTT topics are at most 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw + payload


def decode_item(item: bytes) -> tuple[str, bytes]:
    """(topic, payload) of a spool item."""
    size = int.from_bytes(item[:2], "big")
    return item[2 : 2 + size].decode(), item[2 + size :]


@dataclass
class LinkStats:
    """What the link did; the edge reports it when it stops."""

    published: int = 0
    connects: int = 0
    disconnects: int = 0
    received: int = 0


class SpoolPublisher:
    """Drains a spool to an MQTT broker, reconnecting for as long as ``run`` runs."""

    def __init__(
        self, spool: Spool, host: str, port: int, client_id: str, *, keepalive: int,
        backoff: Backoff, subscriptions: Iterable[str] = (),
        on_message: MessageHandler | None = None, connect_timeout: float = 5.0,
    ) -> None:
        self.spool = spool
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive = keepalive
        self.backoff = backoff
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.connect_timeout = connect_timeout
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()

    def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (durably, on disk) and wake the drain loop."""
        self.spool.put(encode_item(topic, payload))
        self._wake.set()

    def put_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Queue several messages in one spool transaction."""
        self.spool.put_many([encode_item(t, p) for t, p in messages])
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
            async with asyncio.TaskGroup() as group:  # pipelined; paho keeps them in order
                for _, item in items:
                    topic, payload = decode_item(item)
                    group.create_task(client.publish(
                        topic, payload, qos=1, timeout=2.0 * self.keepalive))
            self.spool.ack_through(items[-1][0])
            self.stats.published += len(items)

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
