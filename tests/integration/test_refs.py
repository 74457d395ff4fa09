"""Images by reference on real processes: a moto S3 server holds 200 digit images (PNG and
JPEG, keys with spaces and accents, the true label in each object's metadata) and 10 bad
objects (5 deleted after their upload, 5 corrupt); the bucket notifies an SQS queue of
moto's, whose messages (S3's own event JSON) go to the refs topic. Two refs replicas
share the work, a worker scores the samples and writes the predictions into PostgreSQL:
200 rows there, one per image, and exactly 10 dead letters, one per bad object, with
their reasons."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import numpy as np
import orjson
import pytest
from aiobotocore.session import get_session

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models.digits import digit_images
from tests.fixtures.kafka import (
    WorkerProcess,
    consume_until,
    env_for,
    produce,
    start_worker,
    wait_until,
)
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.s3 import MotoS3Server

pytestmark = pytest.mark.integration

BUCKET = "scans"
IMAGES = 200
TABLE = "refs_predictions"
SCORING = ["score", "sink_predictions"]


@dataclass
class Objects:
    """What the bucket holds and what it said about it."""

    labels: dict[str, int]  # good key -> true label
    bad: dict[str, str]  # bad key -> the reason its dead letter must give
    events: list[bytes]  # the queue's messages, as S3 sent them


def picture(digit: np.ndarray, fmt: str) -> bytes:
    """A digit (0..16) drawn 32 pixels wide, as a scanner would send it."""
    image = cv2.resize((digit.astype(np.uint16) * 255 // 16).astype(np.uint8), (32, 32),
                       interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(fmt, image, [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == ".jpg" else [])
    assert ok
    return data.tobytes()


async def fill_bucket(server: MotoS3Server) -> Objects:
    """Upload the images and the bad objects, and collect the queue's notifications."""
    pixels, labels = digit_images()
    pick = np.random.default_rng(11).permutation(len(pixels))[:IMAGES + 2]
    keys = {f"digits/batch {n // 50}/zähler-{n}.{'jpg' if n % 4 == 3 else 'png'}": int(i)
            for n, i in enumerate(pick[:IMAGES])}  # key -> the digit's index
    png = picture(pixels[pick[IMAGES]], ".png")
    jpeg = picture(pixels[pick[IMAGES + 1]], ".jpg")
    corrupt = {"bad/cut.png": (png[:len(png) // 2], "corrupt_image"),
               "bad/cut.jpg": (jpeg[:len(jpeg) // 2], "corrupt_image"),
               "bad/noise.png": (os.urandom(700), "unsupported_format"),
               "bad/empty.png": (b"", "empty"),
               "bad/header.png": (png[:16] + b"\x00\x00\x01\x00" + png[20:], "corrupt_image")}
    deleted = [f"bad/deleted-{i}.png" for i in range(5)]
    session = get_session()
    async with session.create_client("s3", **server.client_kwargs()) as s3, \
            session.create_client("sqs", **server.client_kwargs()) as sqs:
        await s3.create_bucket(Bucket=BUCKET)
        queue = (await sqs.create_queue(QueueName="scans-created"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
            "Attributes"]["QueueArn"]
        await s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": [
                "s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
        uploads = [s3.put_object(Bucket=BUCKET, Key=key, Body=picture(pixels[i], key[-4:]),
                                 Metadata={"label": str(labels[i])}) for key, i in keys.items()]
        uploads += [s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                    for key, (body, _) in corrupt.items()]
        uploads += [s3.put_object(Bucket=BUCKET, Key=key, Body=png) for key in deleted]
        await asyncio.gather(*uploads)
        for key in deleted:
            await s3.delete_object(Bucket=BUCKET, Key=key)
        events: list[bytes] = []
        while True:
            got = (await sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=0)).get("Messages", [])
            if not got:
                break
            events += [m["Body"].encode() for m in got]
            await sqs.delete_message_batch(QueueUrl=queue, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)])
    bad = {key: reason for key, (_, reason) in corrupt.items()}
    bad.update({key: "object_missing" for key in deleted})
    return Objects({key: int(labels[i]) for key, i in keys.items()}, bad, events)


@dataclass
class Pipeline:
    broker: EmbeddedBroker
    replicas: list[WorkerProcess]
    scoring: WorkerProcess
    names: TopicNames
    objects: Objects
    dsn: str


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, embedded_broker: EmbeddedBroker,
             postgres_module: PostgresServer, models_dir: Path) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("refs")
    prefix = f"tr{uuid.uuid4().hex[:8]}"
    settings = Settings(models_dir=models_dir, data_dir=work / "data", topic_prefix=prefix,
                        app_id=prefix, partitions=4)
    create_topics(embedded_broker.bootstrap, topic_specs(settings, [
        f"{prefix}-refs", f"{prefix}-{'-'.join(sorted(SCORING))}"]))
    with MotoS3Server(work / "moto") as server:
        objects = asyncio.run(fill_bucket(server))
        env = env_for(settings, embedded_broker.url, prefix, image_store="s3",
                      s3_endpoint=server.endpoint_url, s3_region=server.region,
                      s3_bucket=BUCKET, s3_access_key_id=server.access_key_id,
                      s3_secret_access_key=server.secret_access_key, refs_buckets=BUCKET,
                      refs_device="scanner", sink_dsn=postgres_module.dsn,
                      sink_predictions_table=TABLE, shutdown_seconds=4)
        started: list[WorkerProcess] = []
        try:
            for n in range(2):
                started.append(start_worker(env, ["refs"], work / f"refs-{n}.log"))
            started.append(start_worker(env, SCORING, work / "scoring.log"))
            yield Pipeline(embedded_broker, started[:2], started[2], TopicNames(prefix),
                           objects, postgres_module.dsn)
        finally:
            stop_together(started)


def stop_together(workers: list[WorkerProcess], timeout: float = 20.0) -> None:
    """SIGTERM every worker at once, then wait for each (SIGKILL if it outstays)."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.stop(signal.SIGKILL)


def counter(worker: WorkerProcess, name: str, stage: str) -> float:
    text = worker.get("/metrics")
    found = re.search(rf'^{name}_total\{{stage="{stage}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def predictions(dsn: str, at_least: int) -> list[Any] | None:
    """The predictions table's rows once it holds ``at_least`` of them."""
    async def read() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(f"SELECT sample_id, device, kind, label, true_label "
                                    f"FROM {TABLE}")
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()
    rows = asyncio.run(read())
    return rows if len(rows) >= at_least else None


def test_200_images_by_reference_reach_postgresql_and_10_bad_ones_the_dead_letters(
        pipeline: Pipeline) -> None:
    bootstrap, topic = pipeline.broker.bootstrap, pipeline.names.refs
    objects = pipeline.objects
    assert len(objects.events) == 1 + IMAGES + 10 + 5  # a test event, creations, removals
    test_event = b'{"Service": "Amazon S3", "Event": "s3:TestEvent"}'

    def both_replicas_reading() -> bool:  # S3's test events, which make no sample
        asyncio.run(produce(bootstrap, topic, [(os.urandom(8), test_event) for _ in range(8)]))
        return all(counter(r, "edgewise_events_in", "refs") > 0 for r in pipeline.replicas)

    wait_until("both refs replicas own partitions", both_replicas_reading, timeout=60,
               interval=0.5)
    asyncio.run(produce(bootstrap, topic, [(os.urandom(8), e) for e in objects.events]))

    expected = {f"s3://{BUCKET}/{key}": label for key, label in objects.labels.items()}
    rows = wait_until("every image's prediction in PostgreSQL",
                      lambda: predictions(pipeline.dsn, at_least=IMAGES), timeout=60)
    assert len(rows) == IMAGES and {r["sample_id"] for r in rows} == set(expected)
    assert {(r["device"], r["kind"]) for r in rows} == {("scanner", "digits")}
    assert all(r["true_label"] == expected[r["sample_id"]] for r in rows)
    accuracy = np.mean([r["label"] == r["true_label"] for r in rows])
    assert accuracy >= 0.9, accuracy

    def refs_letters(records: list[Any]) -> list[dict[str, Any]]:
        letters = [orjson.loads(r.value) for r in records]
        return [letter for letter in letters if letter["stage"] == "refs"]

    letters = refs_letters(asyncio.run(consume_until(
        bootstrap, pipeline.names.dead_letters,
        lambda got: len(refs_letters(got)) >= len(objects.bad), timeout=30)))
    assert len(letters) == len(objects.bad) == 10
    reasons: Counter[str] = Counter()
    for letter in letters:
        original = orjson.loads(base64.b64decode(letter["original_b64"]))
        (record,) = original["Records"]  # the notification of that object, whole
        key = next(k for k in objects.bad if f"s3://{BUCKET}/{k}:" in letter["detail"])
        assert record["eventName"].startswith("ObjectCreated:")
        assert letter["reason"] == objects.bad[key], letter
        reasons[letter["reason"]] += 1
    assert reasons == Counter(objects.bad.values())

    shares = [counter(r, "edgewise_samples", "refs") for r in pipeline.replicas]
    assert all(share > 0 for share in shares) and sum(shares) == IMAGES, shares
