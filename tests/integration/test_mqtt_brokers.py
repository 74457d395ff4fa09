"""The demo's local MQTT broker: mosquitto when installed, amqtt in-process otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from edgewise.app.adapters.mqtt_topics import mqtt_address
from edgewise.app.services.mqtt_broker import AmqttBroker, local_mqtt_broker
from edgewise.app.services.processes import accepts_tcp

pytestmark = pytest.mark.integration


async def _round_trip(url: str) -> bytes:
    host, port = mqtt_address(url)
    async with aiomqtt.Client(host, port, identifier="t-sub", clean_session=False) as sub:
        await sub.subscribe("edgewise/s/d/+", qos=1)
        async with aiomqtt.Client(host, port) as pub:
            await pub.publish("edgewise/s/d/sample", b"hello", qos=1)
        async with asyncio.timeout(10):
            async for message in sub.messages:
                return message.payload if isinstance(message.payload, bytes) else b""
    return b""


def test_amqtt_serves_qos1_in_process_and_stops() -> None:
    broker = AmqttBroker()
    broker.start()
    try:
        assert asyncio.run(_round_trip(broker.url)) == b"hello"
    finally:
        broker.stop()
    assert not accepts_tcp(broker.host, broker.port)


def test_local_broker_prefers_mosquitto(tmp_path: Path) -> None:
    with local_mqtt_broker(tmp_path) as (url, implementation):
        assert implementation == "mosquitto"  # installed by `make test`
        assert asyncio.run(_round_trip(url)) == b"hello"
    assert not accepts_tcp(*mqtt_address(url))
