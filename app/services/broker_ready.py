"""Waiting for a Kafka-protocol broker (Tansu or Apache Kafka) to answer metadata requests."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


async def cluster_id(bootstrap: str) -> str | None:
    """The cluster id the broker reports (Tansu's is ours, so it identifies the broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        return (await admin.describe_cluster()).get("cluster_id")
    finally:
        await admin.close()


def wait_for_broker(bootstrap: str, timeout: float = 15.0) -> str | None:
    """Block until the broker answers a metadata request; return its cluster id.

    Runs in a thread of its own, so it works from sync code inside a running event loop too.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        while time.monotonic() < deadline:
            try:
                return pool.submit(asyncio.run, cluster_id(bootstrap)).result()
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.2)
    raise RuntimeError(f"broker {bootstrap} did not answer within {timeout:.0f}s: {last}")
