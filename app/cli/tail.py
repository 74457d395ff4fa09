"""``edgewise tail TOPIC``: print a topic's messages, decoding edgewise frames."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from edgewise.app.core import broker_profile
from edgewise.app.core.frames import (
    KIND_PREDICTIONS,
    KIND_SAMPLES,
    BadInput,
    decode_frame,
    is_frame,
)
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import bootstrap_of

IDLE_SECONDS = 2.0


def describe_message(value: bytes | None) -> dict[str, Any] | str:
    """A printable form of a message: frames summarised, JSON as is, else repr."""
    if value is None:
        return "(tombstone)"
    if is_frame(value):
        for kind in (KIND_SAMPLES, KIND_PREDICTIONS):
            try:
                meta, arrays = decode_frame(value, kind)
            except BadInput:
                continue
            ids = meta.pop("ids", [])
            meta.update(samples=len(ids), first_id=ids[0] if ids else None)
            if "labels" in arrays and kind == KIND_PREDICTIONS:
                meta["labels"] = arrays["labels"][:10].tolist()
                meta["confidence"] = [round(float(c), 3) for c in arrays["confidence"][:10]]
            meta["frame"] = "samples" if kind == KIND_SAMPLES else "predictions"
            return meta
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return repr(value[:200])


async def _tail(bootstrap: str, topic: str, limit: int, follow: bool, options: dict) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **options)
    await consumer.start()
    count = 0
    try:
        while not limit or count < limit:
            batch = await consumer.getmany(timeout_ms=int(IDLE_SECONDS * 1000))
            if not batch and not follow:
                break
            for records in batch.values():
                for rec in records[: limit - count if limit else None]:
                    line = {"partition": rec.partition, "offset": rec.offset,
                            "key": rec.key.decode(errors="replace") if rec.key else None,
                            "value": describe_message(rec.value)}
                    sys.stdout.write(orjson.dumps(line).decode() + "\n")
                    count += 1
            sys.stdout.flush()
    finally:
        await consumer.stop()
    return count


def tail(settings: Settings, topic: str, limit: int, follow: bool) -> int:
    """Print messages of ``topic`` from the beginning; stops when idle unless following."""
    if settings.embedded:
        raise ValueError("tail needs a running broker: --broker kafka://host:port "
                         "(start one with: edgewise broker)")
    options = {"fetch_max_wait_ms": broker_profile.fetch_wait_ms(settings)}
    asyncio.run(_tail(bootstrap_of(settings.broker), topic, limit, follow, options))
    return 0
