"""Sizes agree with the broker: an oversize MQTT message is dead-lettered once and what is
behind it flows (real mosquitto, ``edgewise bridge`` and Tansu); and the producers' own size
check, which Tansu's missing ``max.message.bytes`` check leaves as the only one here,
refuses what is over the limit as a rejection while a dead letter of the largest accepted
message passes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core import broker_profile
from edgewise.app.core.dead_letters import DeadLetterPath, is_rejection
from edgewise.app.core.settings import Settings, load_settings
from edgewise.app.core.topics import TopicNames, create_topics, max_record_bytes, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.edge import read_ids, start_bridge
from tests.fixtures.kafka import consume_until, env_for
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

LIMIT = 100_000


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def test_an_oversize_mqtt_message_is_dead_lettered_once_and_the_rest_flows(
    embedded_broker: EmbeddedBroker, base_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    env = env_for(base_settings, embedded_broker.url, unique_prefix, max_message_bytes=LIMIT,
                  reconnect_max_seconds=1)
    names = TopicNames(unique_prefix)
    create_topics(embedded_broker.bootstrap, topic_specs(load_settings(
        topic_prefix=unique_prefix, max_message_bytes=LIMIT)))
    simulator = DigitSimulator(1, 4, 0.0, seed=5)
    before = [simulator.next_batch() for _ in range(5)]
    after = [simulator.next_batch() for _ in range(50)]
    topic = "edgewise/s1/device-000/sample"
    messages = [(topic, encode_sample_batch(b)) for b in before]
    messages.append((topic, b"\x00" * (LIMIT + 1)))
    messages += [(topic, encode_sample_batch(b)) for b in after]
    expected = [i for b in before + after for i in b.ids]
    with MosquittoBroker(tmp_path / "mosquitto") as mqtt:
        bridge = start_bridge(env, mqtt.url, tmp_path / "bridge.log")
        try:
            asyncio.run(publish(mqtt.port, messages))
            ids = read_ids(embedded_broker.bootstrap, names.samples, expected, timeout=30)
            time.sleep(3.0)  # a bridge that looped would have dead-lettered it again by now
            letters = asyncio.run(consume_until(embedded_broker.bootstrap, names.dead_letters,
                                                lambda r: False, timeout=3))
            assert bridge.process.poll() is None, "the bridge must carry on"
        finally:
            bridge.stop()
    stats = orjson.loads(bridge.log_text().strip().splitlines()[-1])
    dead = [orjson.loads(r.value) for r in letters]
    assert [(d["reason"], d["original_length"]) for d in dead] == [("oversize", LIMIT + 1)]
    assert all(len(r.value) <= LIMIT for r in letters)
    assert set(ids) == set(expected) and sum(ids.values()) == len(expected)  # no re-forwards
    assert stats["connects"] == 1 and stats["dead_letters"] == {"oversize": 1}


def test_the_producer_refuses_over_the_limit_and_takes_the_largest_dead_letter(
    embedded_broker: EmbeddedBroker, unique_prefix: str
) -> None:
    settings = load_settings(broker=embedded_broker.url, topic_prefix=unique_prefix,
                             max_message_bytes=LIMIT, broker_profile="embedded")
    names = TopicNames(unique_prefix)
    create_topics(embedded_broker.bootstrap, topic_specs(settings))

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=embedded_broker.bootstrap,
                                    **broker_profile.producer_options(settings))
        await producer.start()
        try:
            await (await producer.send(names.samples, bytes(LIMIT), key=b"device-000"))
            with pytest.raises(MessageSizeTooLargeError) as refused:
                await producer.send(names.samples, bytes(max_record_bytes(settings)), key=b"k")
            assert is_rejection(refused.value)
            path = DeadLetterPath(names.dead_letters, settings.max_message_bytes)
            key, letter = path.letter("bridge", refused.value, bytes(LIMIT), "edgewise/s/d/x",
                                      b"k" * 2000)
            assert len(letter) <= LIMIT
            await (await producer.send(names.dead_letters, letter, key=key))
        finally:
            await producer.stop()

    asyncio.run(main())
