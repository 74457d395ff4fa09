"""Consumer lag read from the broker: per consumer group and partition, the end offset minus
the committed offset, so it works against any Kafka and for any group, not only edgewise's.

Committed offsets come from the admin client's OffsetFetch (``list_consumer_group_offsets``)
with the partitions named: Tansu answers the "all partitions" form with a response aiokafka
cannot decode, and answers the named form correctly. Members come from DescribeGroups; Tansu
sends no member assignments there, so partitions owned per member are unknown on Tansu
(``None``) and known on Apache Kafka. End and start offsets come from a consumer (ListOffsets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

#: Where DescribeGroups puts a group's state and members (error, id, state, protocol type,
#: protocol, members[, authorized operations]).
STATE, MEMBERS = 2, 5


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group has committed on: where it is, where the log ends."""

    topic: str
    partition: int
    committed: int  # -1: nothing committed (the group starts from the log's start)
    start: int
    end: int

    @property
    def lag(self) -> int:
        return partition_lag(self.committed, self.start, self.end)


@dataclass
class GroupLag:
    """A consumer group as the broker sees it."""

    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)
    #: partitions each member owns (member id -> count); None when the broker does not say
    owned: dict[str, int] | None = None

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def committed_total(self) -> int:
        return sum(max(p.committed, p.start) for p in self.partitions)

    @property
    def end_total(self) -> int:
        return sum(p.end for p in self.partitions)


def partition_lag(committed: int, start: int, end: int) -> int:
    """Records not yet committed: a committed offset below the log's start (retention
    deleted them) or missing (-1) counts from the start; never negative."""
    position = committed if committed >= start else start
    return max(0, end - position)


def stages_of_group(group: str, app_id: str, stages: Iterable[str],
                    demo_stages: Sequence[str]) -> list[str] | None:
    """The stages an edgewise consumer group runs (its id is the app id, then the sorted
    stages joined by '-'), or None for a group that is not one of this app's."""
    if group == app_id:
        return list(demo_stages)
    if not group.startswith(f"{app_id}-"):
        return None
    names = group[len(app_id) + 1:].split("-")
    known = set(stages)
    return names if names and all(n in known for n in names) else None


def rate(earlier: int, later: int, seconds: float) -> float:
    """Records per second between two readings of an offset total (never negative: a
    group that was reset does not make a negative rate)."""
    if seconds <= 0:
        return 0.0
    return max(0, later - earlier) / seconds


def decode_owned(members: Sequence[Any]) -> dict[str, int] | None:
    """Partitions owned per member, from DescribeGroups' member assignments (the standard
    consumer protocol, which Faust's assignor uses); None when the broker sent none."""
    owned: dict[str, int] = {}
    for member in members:
        member_id, assignment = member[0], member[-1]
        if not assignment:
            return None
        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
        owned[member_id] = sum(len(parts) for _, parts in decoded.assignment)
    return owned


async def read_groups(bootstrap: str, groups: Iterable[str] | None = None,
                      timeout: float = 10.0, group_prefix: str = "",
                      topic_prefixes: tuple[str, ...] = ()) -> list[GroupLag]:
    """Every consumer group on the broker (or those named, or those whose id starts with
    ``group_prefix``), with the lag of each partition it has committed on, among the topics
    starting with one of ``topic_prefixes`` (all topics when empty). Raises the client's
    error when the broker refuses a call.

    Narrow both on a shared cluster: the committed offsets are asked for every partition
    of every topic considered, once per group (an unnamed fetch is not understood by
    Tansu), and a broker with hundreds of topics and groups closes such a connection."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    request_timeout_ms=int(timeout * 1000))
        await consumer.start()
        try:
            return await asyncio.wait_for(
                read_with(admin, consumer, groups, group_prefix, topic_prefixes),
                timeout=timeout)
        finally:
            await consumer.stop()
    finally:
        await admin.close()


async def read_with(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer,
                    groups: Iterable[str] | None, group_prefix: str = "",
                    topic_prefixes: tuple[str, ...] = ()) -> list[GroupLag]:
    """:func:`read_groups` with started clients."""
    wanted = sorted(set(groups)) if groups is not None else sorted(
        str(g[0]) for g in await admin.list_consumer_groups()
        if str(g[0]).startswith(group_prefix))
    if not wanted:
        return []
    every = sorted(TopicPartition(t["topic"], p["partition"])
                   for t in await admin.describe_topics() if not t["topic"].startswith("__")
                   and (not topic_prefixes or t["topic"].startswith(topic_prefixes))
                   for p in t["partitions"])
    described = {}
    for response in await admin.describe_consumer_groups(wanted):
        for entry in response.groups:
            described[entry[1]] = entry
    found = []
    committed_by_group = {}
    for group in wanted:
        offsets = await admin.list_consumer_group_offsets(group, partitions=every) if every else {}
        committed_by_group[group] = {tp: meta.offset for tp, meta in offsets.items()
                                     if meta.offset >= 0}
    needed = sorted({tp for c in committed_by_group.values() for tp in c})
    ends = await consumer.end_offsets(needed) if needed else {}
    starts = await consumer.beginning_offsets(needed) if needed else {}
    for group in wanted:
        entry = described.get(group)
        members = list(entry[MEMBERS]) if entry is not None else []
        lag = GroupLag(group=group, state=str(entry[STATE]) if entry is not None else "Unknown",
                       members=len(members), owned=decode_owned(members) if members else {})
        for tp, committed in sorted(committed_by_group[group].items()):
            lag.partitions.append(PartitionLag(tp.topic, tp.partition, committed,
                                               starts.get(tp, 0), ends.get(tp, 0)))
        found.append(lag)
    return found
