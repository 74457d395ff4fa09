"""``edgewise status``: the consumer groups on the broker as a table of stages, replicas,
partitions owned, lag, rates and dead letters, all read from the broker itself (committed
offsets against end offsets, the group's members, the dead-letter topic), so it answers for
any Kafka and for workers edgewise did not start.

Two readings ``--interval`` seconds apart give the rates: records committed per second
(what the group processes) and records arriving per second on the topics it reads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from edgewise.app.cli.common import CliError, settings_from
from edgewise.app.core.consumer_lag import GroupLag, rate, read_groups, stages_of_group
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, bootstrap_of
from edgewise.app.run.factory import STAGE_MODULES, STAGES

COLUMNS = ("stage", "group", "replicas", "partitions", "owned", "lag", "processed/s",
           "arriving/s", "dead letters")
#: At most this many dead letters are read to count them per stage (the rest shown as "+").
DEAD_LETTER_SCAN = 200_000


@dataclass
class StatusRow:
    """One consumer group's line."""

    stage: str
    group: str
    replicas: int
    partitions: int
    owned: str  # partitions per member, "3,3,2"; "?" when the broker does not say
    lag: int
    processed_per_second: float
    arriving_per_second: float
    dead_letters: int | None  # None: not an edgewise group

    def cells(self) -> list[str]:
        return [self.stage, self.group, str(self.replicas), str(self.partitions), self.owned,
                str(self.lag), f"{self.processed_per_second:.1f}",
                f"{self.arriving_per_second:.1f}",
                "-" if self.dead_letters is None else str(self.dead_letters)]


def status_rows(first: Sequence[GroupLag], second: Sequence[GroupLag], seconds: float,
                app_id: str, dead_letters: Counter[str]) -> list[StatusRow]:
    """The table's rows from two readings ``seconds`` apart (the lag is the later one's);
    a group's dead letters are those of the stages it runs."""
    before = {g.group: g for g in first}
    rows = []
    for group in second:
        stages = stages_of_group(group.group, app_id, STAGE_MODULES, STAGES)
        earlier = before.get(group.group, group)
        owned = "?" if group.owned is None else ",".join(
            str(n) for n in sorted(group.owned.values(), reverse=True)) or "-"
        rows.append(StatusRow(
            stage="+".join(stages) if stages and group.group != app_id else
            ("(all)" if stages else "-"),
            group=group.group, replicas=group.members, partitions=len(group.partitions),
            owned=owned, lag=group.lag,
            processed_per_second=rate(earlier.committed_total, group.committed_total, seconds),
            arriving_per_second=rate(earlier.end_total, group.end_total, seconds),
            dead_letters=sum(dead_letters[s] for s in stages) if stages else None))
    return sorted(rows, key=lambda r: (r.stage == "-", r.stage, r.group))


def render_table(rows: Iterable[StatusRow]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    lines = [list(COLUMNS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    left = {0, 1, 4}
    out = []
    for line in lines:
        out.append("  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                   .rstrip())
    return "\n".join(out)


async def count_dead_letters(bootstrap: str, topic: str,
                             limit: int = DEAD_LETTER_SCAN) -> Counter[str]:
    """Dead letters per stage in the dead-letter topic, read from its start to its end."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    counts: Counter[str] = Counter()
    if not partitions:
        return counts
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        left = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        seen = 0
        while left and seen < limit:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    seen += 1
                    counts[stage_of_letter(record.value)] += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return counts


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """A topic's partitions, asked of the broker (none when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["topic"] == topic and not t["error_code"]
                  for p in t["partitions"])


def stage_of_letter(value: bytes | None) -> str:
    try:
        return str(orjson.loads(value or b"{}").get("stage", "?"))
    except (orjson.JSONDecodeError, AttributeError):
        return "?"


async def read_status(settings: Settings, interval: float, every_group: bool = False
                      ) -> tuple[list[GroupLag],
                                                                     list[GroupLag],
                                                                     float, Counter[str]]:
    bootstrap = bootstrap_of(settings.broker)
    started = time.monotonic()
    # this deployment's groups (ids start with the app id) and topics (the topic prefix;
    # changelogs start with the app id), not every group of a shared cluster
    mine: dict[str, Any] = {} if every_group else {
        "group_prefix": settings.app_id,
        "topic_prefixes": (settings.topic_prefix, settings.app_id)}
    first = await read_groups(bootstrap, **mine)
    await asyncio.sleep(interval)
    second = await read_groups(bootstrap, **mine)
    seconds = time.monotonic() - started
    dead = await count_dead_letters(bootstrap, TopicNames(settings.topic_prefix).dead_letters)
    return first, second, seconds, dead


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.embedded:
        raise CliError("status reads a running broker: give --broker kafka://host:port")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it
    try:
        first, second, seconds, dead = asyncio.run(read_status(settings, args.interval,
                                                                  args.all))
    except (KafkaError, TimeoutError) as exc:
        said = str(exc) if str(exc).startswith(type(exc).__name__) else \
            f"{type(exc).__name__}: {exc}"
        raise CliError(f"the broker at {settings.broker} did not answer the consumer-group "
                       f"calls (ListGroups, DescribeGroups, OffsetFetch, ListOffsets): "
                       f"{said[:200]}") from None
    rows = status_rows(first, second, seconds, settings.app_id, dead)
    if args.json:
        print(orjson.dumps({
            "groups": [status_json(g) for g in second],
            "rows": [row.__dict__ for row in rows], "seconds": round(seconds, 3),
            "dead_letters": dict(dead)}, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(render_table(rows))
    return 0


def status_json(group: GroupLag) -> dict[str, Any]:
    return {"group": group.group, "state": group.state, "members": group.members,
            "owned": group.owned, "lag": group.lag,
            "partitions": [{"topic": p.topic, "partition": p.partition,
                            "committed": p.committed, "end": p.end, "lag": p.lag}
                           for p in group.partitions]}


def add_commands(sub: Any, add: Any) -> None:
    p = add("status", cmd_status, "consumer groups, their lag, rates and dead letters, read "
                                  "from the broker")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the two readings the rates come from")
    p.add_argument("--json", action="store_true", help="groups and partitions as JSON")
    p.add_argument("--all", action="store_true",
                   help="every consumer group and topic on the broker, not only this app's "
                        "(groups whose id starts with the app id)")
