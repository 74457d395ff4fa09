"""Records up to ``max_message_bytes`` travel on both brokers.

Kafka refuses a record over the topic's ``max.message.bytes`` (about 1 MB by default) and
aiokafka one over ``max_request_size`` (1 MB) before it is sent; Tansu checks neither, so a
test on Tansu alone would hide both. Here a 2.5 MB malformed message goes through the score
stage, and its dead letter, carrying the whole original (over 3 MB in base64), must arrive.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from edgewise.app.core import broker_profile
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.kafka import consume_until, env_for, start_worker

pytestmark = pytest.mark.integration

ORIGINAL_BYTES = 2_500_000


async def produce_large(bootstrap: str, settings: Settings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                **broker_profile.producer_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"big-device")
    finally:
        await producer.stop()


def test_a_large_dead_letter_keeps_its_whole_original(
    broker: BrokerUnderTest, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    settings = Settings(broker=broker.url, broker_profile=broker.profile, models_dir=models_dir,
                        data_dir=tmp_path, topic_prefix=unique_prefix, app_id=unique_prefix)
    names = TopicNames(unique_prefix)
    create_topics(broker.bootstrap, topic_specs(settings, [f"{unique_prefix}-score"]))
    worker = start_worker(env_for(settings, broker.url, unique_prefix), ["score"],
                          tmp_path / "worker.log")
    try:
        original = b"{" + b"x" * (ORIGINAL_BYTES - 1)
        asyncio.run(produce_large(broker.bootstrap, settings, names.samples, original))
        letters = asyncio.run(consume_until(broker.bootstrap, names.dead_letters,
                                            lambda recs: len(recs) >= 1, timeout=60))
        assert letters, worker.log.read_text()[-3000:]
        letter = orjson.loads(letters[0].value)
        assert letter["reason"] == "bad_json" and letter["truncated"] is False
        assert base64.b64decode(letter["original_b64"]) == original
        assert len(letters[0].value) > 3_000_000
    finally:
        worker.stop()
