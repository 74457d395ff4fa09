"""The edge's real-process fixtures: a mosquitto broker that goes away and comes back on
the same port, and a moto S3 server reached through aiobotocore.

Later integration tests (store-and-forward, the bridge, the face sink) build on exactly
these behaviours, so they are pinned here against the real processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import cv2
import matplotlib.cbook
import numpy as np
import pytest
from aiobotocore.session import get_session

from edgewise.app.services.processes import accepts_tcp
from edgewise.models.faces import crop_face, detect_faces, encode_png
from tests.fixtures.mosquitto import MosquittoBroker, MosquittoNotInstalledError
from tests.fixtures.s3 import MotoS3Server

pytestmark = pytest.mark.integration

TOPIC = "edgewise/test/faces"
SUBSCRIBER_ID = "edgewise-test-subscriber"
BROKER_DOWNTIME_S = 2.0
RECEIVE_TIMEOUT_S = 10.0


@asynccontextmanager
async def mqtt_client(
    broker: MosquittoBroker, identifier: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    """A client on the broker; with an identifier its session persists (clean_session off)."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier,
        clean_session=False if identifier else True,
        timeout=5,
    ) as client:
        yield client


async def receive(client: aiomqtt.Client, count: int) -> list[bytes]:
    """The next `count` payloads, or a timeout instead of a hung test."""
    received: list[bytes] = []
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            received.append(message.payload)
            if len(received) == count:
                break
    return received


# -- mosquitto ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_qos1_delivery_survives_a_broker_restart_on_the_same_port(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        port, first_pid = broker.port, broker.pid

        async with mqtt_client(broker, SUBSCRIBER_ID) as subscriber:
            await subscriber.subscribe(TOPIC, qos=1)
            async with mqtt_client(broker) as publisher:
                await publisher.publish(TOPIC, b"before restart", qos=1)
            assert await receive(subscriber, 1) == [b"before restart"]

        # The subscriber is offline; the broker must queue this for its persistent session
        # and keep it through the restart (SIGTERM makes mosquitto save its database).
        async with mqtt_client(broker) as publisher:
            await publisher.publish(TOPIC, b"queued across restart", qos=1)

        broker.stop()
        assert broker.pid is None and not accepts_tcp(broker.host, port)
        with pytest.raises(aiomqtt.MqttError):
            async with mqtt_client(broker):
                pass
        await asyncio.sleep(BROKER_DOWNTIME_S)

        broker.start()
        assert broker.port == port
        assert broker.pid is not None and broker.pid != first_pid

        async with mqtt_client(broker) as publisher:
            await publisher.publish(TOPIC, b"after restart", qos=1)
        # No subscribe call: the subscription came back with the persisted session.
        async with mqtt_client(broker, SUBSCRIBER_ID) as subscriber:
            assert await receive(subscriber, 2) == [b"queued across restart", b"after restart"]
    assert broker.pid is None


@pytest.mark.asyncio
async def test_a_killed_broker_restarts_on_the_same_port(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        port = broker.port
        broker.kill()
        assert not accepts_tcp(broker.host, port)
        broker.start()
        assert broker.port == port
        async with mqtt_client(broker) as client:
            await client.subscribe(TOPIC, qos=1)
            await client.publish(TOPIC, b"alive", qos=1)
            assert await receive(client, 1) == [b"alive"]


def test_broker_config_is_local_anonymous_and_persistent(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        config = broker.config_path.read_text().splitlines()
        assert f"listener {broker.port} 127.0.0.1" in config
        assert "allow_anonymous true" in config
        assert "persistence true" in config
    assert (broker.persistence_dir / "mosquitto.db").is_file()


def test_missing_mosquitto_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(MosquittoNotInstalledError, match="apt-get install mosquitto"):
        MosquittoBroker(tmp_path, binary=tmp_path / "no-such-mosquitto")


# -- S3 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_png() -> bytes:
    """A real face crop, as the cloud app stores it."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert frame is not None
    faces = detect_faces(frame)
    assert faces, "the sample portrait must contain a face"
    return encode_png(crop_face(frame, faces[0]))


@pytest.mark.asyncio
async def test_s3_object_with_metadata_round_trips(tmp_path: Path, face_png: bytes) -> None:
    with MotoS3Server(tmp_path / "s3") as server:
        session = get_session()
        async with session.create_client("s3", **server.client_kwargs()) as s3:
            await s3.create_bucket(Bucket="faces")
            metadata = {"device-id": "camera-7", "confidence": "0.9156", "schema": "1"}
            await s3.put_object(
                Bucket="faces",
                Key="camera-7/2024/frame-000001.png",
                Body=face_png,
                ContentType="image/png",
                Metadata=metadata,
            )

            head = await s3.head_object(Bucket="faces", Key="camera-7/2024/frame-000001.png")
            assert head["ContentLength"] == len(face_png)
            obj = await s3.get_object(Bucket="faces", Key="camera-7/2024/frame-000001.png")
            async with obj["Body"] as stream:
                body = await stream.read()
            listing = await s3.list_objects_v2(Bucket="faces", Prefix="camera-7/")

        assert body == face_png
        assert obj["Metadata"] == metadata
        assert obj["ContentType"] == "image/png"
        assert [item["Key"] for item in listing["Contents"]] == ["camera-7/2024/frame-000001.png"]
        decoded = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape[0] > 100

        port = server.port
        assert server.pid is not None
    assert server.pid is None and not accepts_tcp(server.host, port)
