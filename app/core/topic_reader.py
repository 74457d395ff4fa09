"""Reading a topic from its beginning to its end as of now, then stopping.

Training from a change stream and restoring CDC state both need "everything written so
far", not a subscription that waits forever: the end offsets are taken when reading
starts, and reading stops once every partition has reached its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

POLL_MS = 500


class TopicMissing(RuntimeError):
    """The topic does not exist on the broker."""


async def topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The topic's partitions, asked of the broker; TopicMissing when there are none.

    A metadata request naming the topic, not the consumer's cached metadata: a consumer
    that subscribed to nothing knows no topics on Kafka (Tansu happens to tell it all).
    The topic list is asked first, since Tansu creates a topic a metadata request names.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            raise TopicMissing(f"topic {topic} does not exist")
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for d in described if d.get("topic") == topic
                  for p in d.get("partitions") or []]
    if not partitions:
        raise TopicMissing(f"topic {topic} does not exist")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_to_end(
    bootstrap: str, topic: str, options: dict[str, Any] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` up to the end offsets seen at the start, partition by
    partition interleaved; ``on_total(n)`` learns how many records that is (for a bar)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", **(options or {}))
    await consumer.start()
    try:
        partitions = await topic_partitions(bootstrap, topic)
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        if on_total:
            on_total(sum(max(0, ends[tp] - starts[tp]) for tp in partitions))
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
