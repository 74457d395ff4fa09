"""What the benchmarks share: a producer tuned for the broker, filling a topic, collecting
predictions, and a score worker process on its own topics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core import broker_profile
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.app.services.embedded_broker import wait_until_listening
from edgewise.app.services.processes import free_port


def tuned_producer(bootstrap: str, settings: Settings) -> AIOKafkaProducer:
    """A producer tuned for the broker, as the stages' producers are."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap,
                            **broker_profile.producer_options(settings))


async def fill_topic(bootstrap: str, settings: Settings, topic: str, messages: list[Any]) -> None:
    """Produce ``(key, value)`` pairs and wait until the broker acknowledged them all."""
    producer = tuned_producer(bootstrap, settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect_predictions(bootstrap: str, topic: str, expected: int,
                              timeout: float) -> list[Any]:
    """Prediction batches from ``topic`` with the time each arrived, until ``expected``
    samples were seen or ``timeout`` passed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    found: list[Any] = []
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for rec in records:
                    batch = decode_prediction_batch(rec.value, 1 << 30)
                    found.append((batch, time.time()))
                    seen += len(batch)
    finally:
        await consumer.stop()
    return found


def start_stage_worker(settings: Settings, broker: str, prefix: str, models: Path,
                       model_name: str, log: Path, stages: list[str], port: int | None = None,
                       extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """An ``edgewise worker`` process of ``stages`` for a bench, on its own topics; returns
    once its views answer."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env.update(EDGEWISE_BROKER=broker, EDGEWISE_TOPIC_PREFIX=prefix, EDGEWISE_APP_ID=prefix,
               EDGEWISE_MODELS_DIR=str(models), EDGEWISE_MODEL_NAME=model_name,
               EDGEWISE_DATA_DIR=str(log.parent / "data"), **(extra_env or {}))
    exe = str(Path(sys.executable).with_name("edgewise"))
    args = [exe, "worker", "--web-port", str(port)]
    for stage in stages:
        args += ["--stage", stage]
    handle = open(log, "ab")
    proc = subprocess.Popen(args, env=env, stdout=handle, stderr=handle,
                            stdin=subprocess.DEVNULL)
    handle.close()
    wait_until_listening("127.0.0.1", port, timeout=60)
    return proc


def start_score_worker(settings: Settings, broker: str, prefix: str, models: Path,
                       model_name: str, log: Path, extra_env: dict[str, str] | None = None
                       ) -> subprocess.Popen[bytes]:
    """An ``edgewise worker --stage score`` process for a bench, on its own topics."""
    return start_stage_worker(settings, broker, prefix, models, model_name, log, ["score"],
                              extra_env=extra_env)


async def send_paced(bootstrap: str, settings: Settings, topic: str, rate: float,
                     seconds: float, batch_size: int, devices: int, seed: int) -> int:
    """Simulator batches sent at ``rate`` samples/s for ``seconds``, each sample stamped with
    its capture time (spread over the batch's interval, as an edge that gathers them would);
    returns how many were sent, all acknowledged."""
    sim = DigitSimulator(devices=devices, batch_size=batch_size, hard_share=0.2, seed=seed)
    producer = tuned_producer(bootstrap, settings)
    await producer.start()
    interval = batch_size / rate
    sent, start = 0, time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            now = time.time()
            batch = sim.next_batch(now=now)
            batch.timestamps[:] = now - interval + interval * (
                np.arange(len(batch)) + 1) / len(batch)
            await producer.send(topic, encode_sample_batch(batch), key=batch.device.encode())
            sent += len(batch)
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
