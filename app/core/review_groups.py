"""Review groups: how review items travel on the review topic.

A record per routed item cost each item a producer round trip and a Faust event, so the
writers (route, the image sink) send the items of one frame as groups instead: one record
per partition the items' ids fall in, sent to that partition explicitly, and split where a
record would pass ``GROUP_MAX_BYTES``. The partition of an id is Kafka's default
partitioner on the id as key (murmur2), the same on Tansu and on Kafka, so the review topic
stays co-partitioned with the corrections topic and the review table, which are keyed by
sample id: a correction, a table write and ``table_route`` by item id all reach the
partition that holds the item. A group's key is its first item's id, so even a producer that
partitions by key puts it where its items belong.

Format: ``{"schema": 1, "items": [item, ...]}``, each item as ``review_items`` describes.
A bare item (no ``items``) is read as a group of one, so records written before groups are
still kept. The group is checked as a whole (size, JSON, schema, a non-empty list); then each
item on its own: a bad item is refused with its reason and its own bytes, the good ones
around it are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from edgewise.app.core.bounds import DEFAULT_FUTURE_SKEW_SECONDS, check_size, is_int
from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.records import SCHEMA_VERSION
from edgewise.app.core.review_items import DEFAULT_MAX_BYTES, check_review_item

#: A group record's bound (capped by ``max_message_bytes``): a frame's items for one
#: partition are split into records no larger than this, unless a single item is.
GROUP_MAX_BYTES = 1_000_000
_HEAD = b'{"schema":%d,"items":[' % SCHEMA_VERSION
_TAIL = b"]}"


def review_partition(item_id: str, partitions: int) -> int:
    """The partition of an item: Kafka's default partitioner with the sample id as key."""
    return (murmur2(item_id.encode()) & 0x7FFFFFFF) % partitions


def check_partition(item: dict[str, Any], partition: int, partitions: int) -> None:
    """BadInput unless the item is on the partition of its id: kept anywhere else, its
    correction, its table record and its image view would look for it on another."""
    home = review_partition(item["id"], partitions)
    if home != partition:
        raise BadInput("wrong_partition", f"item {item['id'][:80]} read from partition "
                                          f"{partition}; its id belongs to {home}")


@dataclass(frozen=True)
class GroupRecord:
    """One record to send: its partition, key (the first item's id) and value."""

    partition: int
    key: bytes
    value: bytes
    count: int


def _record(partition: int, members: list[tuple[str, bytes]]) -> GroupRecord:
    value = _HEAD + b",".join(data for _, data in members) + _TAIL
    return GroupRecord(partition, members[0][0].encode(), value, len(members))


def encode_review_groups(items: Iterable[dict[str, Any]], partitions: int,
                         max_bytes: int = GROUP_MAX_BYTES) -> list[GroupRecord]:
    """The records that carry ``items``: grouped by the partition of their id (in order of
    arrival within a partition), split so that no record passes ``max_bytes`` unless one
    item alone does (it then goes alone, for the sender's own size check)."""
    by_partition: dict[int, list[tuple[str, bytes]]] = {}
    for item in items:
        key = item["id"]
        by_partition.setdefault(review_partition(key, partitions), []).append(
            (key, orjson.dumps(item)))
    records = []
    empty = len(_HEAD) + len(_TAIL)
    for partition, encoded in by_partition.items():
        members: list[tuple[str, bytes]] = []
        size = empty
        for key, data in encoded:
            if members and size + len(data) + 1 > max_bytes:
                records.append(_record(partition, members))
                members, size = [], empty
            members.append((key, data))
            size += len(data) + 1
        records.append(_record(partition, members))
    return records


@dataclass
class ReviewGroup:
    """The items of one record that passed every check, and those refused, each with its
    own bytes, its reason and its id (when it had a usable one) for the dead letter."""

    items: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[bytes, BadInput, bytes | None]] = field(default_factory=list)


def _refused_key(entry: Any) -> bytes | None:
    key = entry.get("id") if isinstance(entry, dict) else None
    return key[:200].encode() if isinstance(key, str) else None


def parse_review_group(
    raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES, *,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> ReviewGroup:
    """A record of the review topic as its items: BadInput when the record as a whole is
    unusable; otherwise each item validated on its own (``ReviewGroup.refused``)."""
    check_size(raw, max_bytes)
    doc = json_object(raw, "review record")
    if "items" not in doc:  # a bare item
        return ReviewGroup([check_review_item(doc, future_skew=future_skew, now=now)])
    schema = doc.get("schema")
    if not is_int(schema) or schema != SCHEMA_VERSION:
        raise BadInput("unknown_schema_version", f"schema {str(schema)[:50]}")
    entries = doc["items"]
    if not isinstance(entries, list) or not entries:
        raise BadInput("bad_field", "a review group's items must be a non-empty list")
    group = ReviewGroup()
    for entry in entries:
        try:  # a copy: the item's own bytes go to its dead letter as they came
            group.items.append(check_review_item(
                dict(entry) if isinstance(entry, dict) else entry, future_skew=future_skew,
                now=now))
        except BadInput as exc:
            group.refused.append((orjson.dumps(entry), exc, _refused_key(entry)))
    return group
