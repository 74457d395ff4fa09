"""bridge: MQTT to Kafka, acknowledging MQTT only after Kafka has; model updates back.

Upstream, the bridge subscribes to every edge message (``<root>/+/+/+``) with a persistent
session and manual acknowledgements. Each message is validated (``route_message``: topic,
size, payload, and that the payload's device is the topic's device), then forwarded to its
Kafka topic as is, or dead-lettered with the reason. Its MQTT PUBACK is sent only when
Kafka has acknowledged that record, in the order the messages came (as MQTT requires). If
the bridge dies between the two, the broker redelivers: at-least-once, and the hub stages
are idempotent by sample id.

A record Kafka refuses for good (too large for the topic, corrupt: ``is_rejection``), when
it is sent or when its ack comes back, is dead-lettered in its place and then acknowledged,
so one bad record never makes the session end and the broker redeliver it, and everything
behind it, forever. Other Kafka errors (the broker away) end the session; it is rebuilt
with backoff and the broker redelivers.

Downstream, a consumer of the model-updates topic turns each update into a retained QoS 1
command carrying the artifact (``models.model_sync``), so edges that connect later get the
promoted model too; an update without a version means the promoted one. Each command is
signed with the key the edges share (``app.adapters.model_signing``). Its offset is
committed after the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from edgewise.app.adapters.model_signing import CommandClock, require_signing_key, sign_command
from edgewise.app.adapters.mqtt_payloads import (
    ModelCommand,
    parse_face_payload,
    parse_metrics_payload,
)
from edgewise.app.adapters.mqtt_topics import (
    BROADCAST,
    COMMAND,
    bridge_subscription,
    command_topic,
    kafka_key_for,
    kafka_topic_for,
    mqtt_address,
    parse_edge_topic,
)
from edgewise.app.core import broker_profile
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.boundary import Boundary
from edgewise.app.core.dead_letters import (
    MIN_LETTER_BYTES,
    DeadLetterPath,
    is_rejection,
    reason_of,
)
from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of
from edgewise.models.model_sync import export_version
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError

STAGE = "bridge"
log = logging.getLogger("edgewise.bridge")


@dataclass(frozen=True)
class Forward:
    """Where one valid MQTT message goes in Kafka."""

    kind: str
    topic: str
    key: bytes
    value: bytes


def _same_origin(topic_site: str, topic_device: str, site: str | None, device: str) -> None:
    if device != topic_device or (site is not None and site != topic_site):
        raise BadInput("device_mismatch",
                       f"payload of {site}/{device} published on {topic_site}/{topic_device}")


def route_message(mqtt_topic: str, payload: bytes, settings: Settings, names: TopicNames
                  ) -> Forward | None:
    """Validate one MQTT message and say where it goes; None for commands (not carried).

    Raises BadInput (reason: bad_topic, unknown_kind, oversize, bad_json, wrong_shape,
    wrong_image_size, device_mismatch, …) for anything the hub must not see.
    """
    where = parse_edge_topic(settings.mqtt_root, mqtt_topic)
    if where.kind == COMMAND:
        return None
    limit = settings.max_message_bytes
    if len(payload) > limit:
        raise BadInput("oversize", f"{len(payload)} bytes > limit {limit}")
    boundary = Boundary.from_settings(settings)
    if where.kind == "sample":
        _same_origin(where.site, where.device, None, boundary.samples(payload).device)
    elif where.kind == "prediction":
        _same_origin(where.site, where.device, None, boundary.predictions(payload).device)
    elif where.kind == "metrics":
        metrics = parse_metrics_payload(payload, limit, future_skew=boundary.future_skew)
        _same_origin(where.site, where.device, metrics["site"], metrics["device"])
    else:
        face = parse_face_payload(payload, limit, settings.max_image_side,
                                  future_skew=boundary.future_skew)
        _same_origin(where.site, where.device, face.site, face.device)
    return Forward(where.kind, kafka_topic_for(where.kind, names), kafka_key_for(where), payload)


def parse_model_update(raw: bytes | None, default_model: str) -> tuple[str, int | None, str, str]:
    """(model, version or None for the newest, site, device) of a model-updates record.

    The record is JSON ``{"model", "version", "site", "device"}``, every field optional; an
    empty record means "the newest version of the served model, to everyone".
    """
    doc = json_object(raw, "model update") if raw else {}
    version = doc.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise BadInput("bad_field", "version must be a whole number >= 1")
    fields = [doc.get(k, d) for k, d in (("model", default_model), ("site", BROADCAST),
                                          ("device", BROADCAST))]
    if not all(isinstance(v, str) and v for v in fields):
        raise BadInput("bad_field", "model, site and device must be non-empty strings")
    return fields[0], version, fields[1], fields[2]


@dataclass
class BridgeStats:
    """What the bridge moved; printed when it stops, read by the demo."""

    forwarded: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    commands: int = 0
    connects: int = 0
    rejected: int = 0  # sent, then refused by Kafka for good: dead-lettered instead

    def as_dict(self) -> dict[str, Any]:
        return {"forwarded": dict(self.forwarded), "forwarded_total": sum(self.forwarded.values()),
                "dead_letters": dict(self.dead_letters), "ignored": self.ignored,
                "commands": self.commands, "connects": self.connects,
                "rejected": self.rejected}


async def check_acked(acked: asyncio.Future[Any]) -> None:
    """Wait for Kafka's acknowledgement of one record.

    A cancelled future (the producer stopped) would raise CancelledError, which a TaskGroup
    takes for a quiet cancel: the ack task would end and PUBACKs stop for good. It is turned
    into a KafkaError instead, so the session ends and the broker redelivers.
    """
    try:
        await asyncio.shield(acked)  # our own cancellation must not cancel the future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if acked.cancelled() and not (task is not None and task.cancelling()):
            raise KafkaError("the Kafka send was cancelled before it was acknowledged"
                             ) from None
        raise  # our own task is being cancelled


def rejected(exc: KafkaError) -> BadInput:
    """The dead letter's reason for a record Kafka refused for good."""
    return BadInput("rejected", f"{type(exc).__name__}: {exc}")


class Bridge:
    """One bridge between an MQTT broker and Kafka (``settings.broker`` must be a URL)."""

    def __init__(self, settings: Settings, metrics: StageMetrics | None = None) -> None:
        self.settings = settings
        self.signing_key = require_signing_key(settings, "the bridge")
        self.clock = CommandClock()
        self.names = TopicNames(settings.topic_prefix)
        self.dead_letters = DeadLetterPath(self.names.dead_letters, settings.max_message_bytes,
                                           metrics)
        self.host, self.port = mqtt_address(settings.mqtt_url)
        self.client_id = settings.mqtt_client_id or f"edgewise-bridge-{settings.topic_prefix}"
        self.stats = BridgeStats()
        self.subscribed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._producer: AIOKafkaProducer | None = None
        self.in_flight = 0  # messages taken from MQTT and not yet acknowledged to it
        self.last_activity = time.monotonic()  # a message taken or acknowledged

    async def run(self, stop: asyncio.Event) -> None:
        """Bridge until ``stop`` is set; in-flight messages stay unacknowledged (redelivered)."""
        self._producer = await self._start_producer(stop)
        if self._producer is None:
            return
        try:
            async with asyncio.TaskGroup() as group:
                upstream = group.create_task(self._upstream())
                downstream = group.create_task(self._downstream())
                await stop.wait()
                upstream.cancel()
                downstream.cancel()
        finally:
            await self._producer.stop()

    async def quiet(self, idle: float, limit: float) -> bool:
        """Wait until every message taken from MQTT is acknowledged and none has come for
        ``idle`` seconds (nor an acknowledgement, after which the MQTT broker may send one it
        held back), at most ``limit`` seconds; whether it got quiet. Whoever stops the
        publishers first lets their last messages through before stopping the bridge."""
        deadline = time.monotonic() + limit
        while True:
            now = time.monotonic()
            if self.in_flight == 0 and now - self.last_activity >= idle:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(0.05, deadline - now))

    async def _start_producer(self, stop: asyncio.Event) -> AIOKafkaProducer | None:
        backoff = Backoff(self.settings.reconnect_min_seconds, self.settings.reconnect_max_seconds)
        while not stop.is_set():
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap_of(self.settings.broker),
                **broker_profile.producer_options(self.settings))
            try:
                await producer.start()
                return producer
            except KafkaConnectionError as exc:
                await producer.stop()
                log.warning("bridge: Kafka not reachable yet (%s); retrying", exc)
                await asyncio.sleep(backoff.next())
        return None

    # -- MQTT -> Kafka ---------------------------------------------------------------------

    async def _upstream(self) -> None:
        backoff = Backoff(self.settings.reconnect_min_seconds, self.settings.reconnect_max_seconds)
        while True:
            client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                    clean_session=False, keepalive=self.settings.mqtt_keepalive,
                                    timeout=5.0)
            client._client.manual_ack_set(True)  # aiomqtt has no option; paho acks on our word
            client.pending_calls_threshold = 1000
            try:
                async with client:
                    self.stats.connects += 1
                    backoff.reset()
                    subscription = bridge_subscription(self.settings.mqtt_root)
                    await client.subscribe(subscription, qos=1)
                    self._client = client
                    if not self.subscribed.is_set():
                        log.warning("bridge: subscribed to %s as %s", subscription,
                                    self.client_id)
                    self.subscribed.set()
                    await self._carry(client)
            except* (aiomqtt.MqttError, OSError, KafkaError) as failure:
                log.warning("bridge: MQTT session ended (%s); reconnecting",
                            failure.exceptions[0])
            except* Exception as failure:  # a bug must not stop the bridge: reconnect, and
                # the broker redelivers what was not acknowledged
                log.exception("bridge: MQTT session failed unexpectedly (%r); reconnecting",
                              failure.exceptions[0])
            finally:
                self._client = None
            await asyncio.sleep(backoff.next())

    async def _carry(self, client: aiomqtt.Client) -> None:
        """Forward each message; a second task acks them in arrival order once Kafka has."""
        pending: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Future[Any] | None]] = (
            asyncio.Queue())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._ack_in_order(client, pending))
                async for message in client.messages:
                    self.in_flight += 1
                    self.last_activity = time.monotonic()
                    await pending.put((message, await self._forward(message)))
        finally:
            self.in_flight = 0  # what the session left unacknowledged, the broker sends again

    async def _forward(self, message: aiomqtt.Message) -> asyncio.Future[Any] | None:
        assert self._producer is not None
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            target = route_message(topic, payload, self.settings, self.names)
        except Exception as exc:  # bad input, or a validator bug: a dead letter either way
            return await self._dead_letter(exc, payload, topic)
        if target is None:
            self.stats.ignored += 1
            return None
        try:
            sent = await self._producer.send(target.topic, target.value, key=target.key)
        except KafkaError as exc:
            if is_rejection(exc):  # refused for good (the producer's size check)
                return await self._dead_letter(rejected(exc), payload, topic)
            raise  # Kafka down ends the session; the broker redelivers
        except Exception as exc:  # this one message cannot be sent (e.g. a serializer bug)
            return await self._dead_letter(exc, payload, topic)
        self.stats.forwarded[target.kind] += 1
        return sent

    async def _dead_letter(self, error: Exception, original: bytes, topic: str,
                           max_bytes: int | None = None) -> asyncio.Future[Any]:
        assert self._producer is not None
        key, letter = self.dead_letters.letter(STAGE, error, original, topic, topic.encode(),
                                               max_bytes)
        self.stats.dead_letters[reason_of(error)[0]] += 1
        return await self._producer.send(self.names.dead_letters, letter, key=key)

    async def _settle(self, message: aiomqtt.Message, acked: asyncio.Future[Any]) -> None:
        """Wait for Kafka's ack of one message; a record refused for good is replaced by its
        dead letter (cut to ``MIN_LETTER_BYTES`` if that is refused too), any other error
        ends the session."""
        try:
            await check_acked(acked)
            return
        except KafkaError as exc:
            if not is_rejection(exc):
                raise
            error: Exception = rejected(exc)
        self.stats.rejected += 1
        payload = message.payload if isinstance(message.payload, bytes) else b""
        topic = message.topic.value
        try:
            await check_acked(await self._dead_letter(error, payload, topic))
        except KafkaError as exc:
            if not is_rejection(exc):
                raise
            await check_acked(await self._dead_letter(error, payload, topic, MIN_LETTER_BYTES))

    async def _ack_in_order(
        self, client: aiomqtt.Client,
        pending: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Future[Any] | None]],
    ) -> None:
        while True:
            message, acked = await pending.get()
            if acked is not None:
                await self._settle(message, acked)  # a Kafka outage ends the session
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
            self.in_flight -= 1
            self.last_activity = time.monotonic()  # the broker may now send one it held back

    # -- Kafka -> MQTT ---------------------------------------------------------------------

    async def _downstream(self) -> None:
        """Model updates to the edges; a Kafka failure restarts the consumer, with backoff,
        from the last committed offset (so an update is sent again, never skipped)."""
        settings = self.settings
        backoff = Backoff(settings.reconnect_min_seconds, settings.reconnect_max_seconds)
        while True:
            consumer = AIOKafkaConsumer(
                self.names.model_updates, bootstrap_servers=bootstrap_of(settings.broker),
                group_id=f"{settings.app_id}-bridge", enable_auto_commit=False,
                auto_offset_reset="earliest", **broker_profile.consumer_options(settings))
            try:
                await consumer.start()
                backoff.reset()
                while True:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for records in batch.values():
                        for record in records:
                            await self._send_model_update(record.value)
                    if batch:
                        await consumer.commit()
            except KafkaError as exc:
                log.warning("bridge: model-updates consumer failed (%s); restarting", exc)
            finally:
                await consumer.stop()
            await asyncio.sleep(backoff.next())

    async def _send_model_update(self, raw: bytes | None) -> None:
        settings = self.settings
        registry = ModelRegistry(settings.models_dir)
        try:
            name, version, site, device = parse_model_update(raw, settings.model_name)
            if version is None:  # "the served one": the promoted version, not the newest
                version = await asyncio.to_thread(PromotionLog(registry, name).served)
            meta, artifact = await asyncio.to_thread(export_version, registry, name, version)
            topic = command_topic(settings.mqtt_root, site, device)
            payload = sign_command(ModelCommand(meta.to_dict(), artifact, self.clock.next(),
                                                topic), self.signing_key).encode()
        except Exception as exc:  # bad update, missing artifact, a bug: one dead letter,
            # never the end of the downstream task (its TaskGroup would stop the bridge)
            if not isinstance(exc, BadInput | RegistryError | ValueError):
                log.warning("bridge: model update failed (%s: %s)", type(exc).__name__, exc)
            await (await self._dead_letter(exc, raw or b"", self.names.model_updates))
            return
        while True:  # until a broker acknowledges it; a lost link is waited out
            client = self._client
            if client is None:
                await asyncio.sleep(0.2)
                continue
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(topic, payload, qos=1, retain=True, timeout=10)
                self.stats.commands += 1
                log.warning("bridge: sent %s v%d to %s", meta.name, meta.version, topic)
                return
