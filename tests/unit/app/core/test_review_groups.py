"""Review groups: one record per partition, the partition Kafka's default partitioner gives
each sample id, split at the record bound, each item checked on its own."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from edgewise.app.core.frames import BadInput
from edgewise.app.core.review_groups import (
    GROUP_MAX_BYTES,
    check_partition,
    encode_review_groups,
    parse_review_group,
    review_partition,
)
from edgewise.app.core.review_items import parse_review_item

# org.apache.kafka.common.utils.Utils.murmur2 of these keys, as signed 32-bit ints
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482,
                b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829, b"abc": 479470107}


def item(item_id: str, **changes: Any) -> dict[str, Any]:
    doc = {"id": item_id, "device": "cam-1", "model": "digits", "model_version": 1,
           "label": 3, "confidence": 0.4, "margin": 0.1, "top_k": [[3, 0.4], [5, 0.3]],
           "image_b64": "AAAAAA==", "shape": [2, 2], "timestamp": time.time() - 1.0,
           "reason": "confidence 0.40 < 0.60"}
    return {**doc, **changes}


def items(n: int) -> list[dict[str, Any]]:
    return [item(f"cam-1-{i}") for i in range(n)]


@pytest.mark.parametrize("partitions", [1, 3, 4, 8, 64])
def test_the_partition_of_an_id_is_kafkas_default_for_the_id_as_key(partitions: int) -> None:
    every = list(range(partitions))
    for key, java in JAVA_MURMUR2.items():
        assert review_partition(key.decode(), partitions) == (java & 0x7FFFFFFF) % partitions
    for i in range(500):
        key = f"cam-{i % 7}-{i}"
        assert review_partition(key, partitions) == DefaultPartitioner()(key.encode(), every,
                                                                          every)


def test_one_record_per_partition_each_holding_the_items_of_its_ids() -> None:
    sent = items(200)
    records = encode_review_groups(sent, partitions=4)
    assert sorted(r.partition for r in records) == [0, 1, 2, 3]
    seen = []
    for record in records:
        doc = orjson.loads(record.value)
        assert set(doc) == {"schema", "items"} and doc["schema"] == 1
        assert record.count == len(doc["items"])
        assert record.key == doc["items"][0]["id"].encode()  # keyed where its items go
        assert review_partition(record.key.decode(), 4) == record.partition
        for got in doc["items"]:
            assert review_partition(got["id"], 4) == record.partition
            seen.append(got)
    assert sorted(seen, key=lambda d: d["id"]) == sorted(sent, key=lambda d: d["id"])
    # order of arrival kept within a partition
    for record in records:
        ids = [d["id"] for d in orjson.loads(record.value)["items"]]
        assert ids == [d["id"] for d in sent if review_partition(d["id"], 4) == record.partition]


def test_a_group_is_split_at_the_bound_and_nothing_is_lost_or_repeated() -> None:
    sent = items(500)
    bound = 4_000
    records = encode_review_groups(sent, partitions=2, max_bytes=bound)
    assert len(records) > 2
    assert all(len(r.value) <= bound for r in records)
    got = [d["id"] for r in records for d in parse_review_group(r.value).items]
    assert sorted(got) == sorted(d["id"] for d in sent)
    assert len(got) == len(set(got))
    # what a whole frame of digits needs fits one record per partition by default
    assert len(encode_review_groups(sent, partitions=2)) == 2
    assert all(len(r.value) <= GROUP_MAX_BYTES for r in encode_review_groups(sent, 2))


def test_an_item_over_the_bound_goes_alone() -> None:
    big = item("cam-1-big", reason="r" * 1500)
    records = encode_review_groups([item("cam-1-a"), big, item("cam-1-b")], partitions=1,
                                   max_bytes=1200)
    assert [r.count for r in records] == [1, 1, 1]
    assert [r.key for r in records] == [b"cam-1-a", b"cam-1-big", b"cam-1-b"]


def test_a_bad_item_is_refused_alone_with_its_bytes_and_the_good_ones_kept() -> None:
    bad = item("cam-1-bad", confidence=1.5)
    no_id = item("x", label="3")
    del no_id["id"]
    [record] = encode_review_groups([item("cam-1-a"), bad, item("cam-1-b")], partitions=1)
    doc = orjson.loads(record.value)
    doc["items"] += [no_id, "not an item"]
    group = parse_review_group(orjson.dumps(doc))
    assert [d["id"] for d in group.items] == ["cam-1-a", "cam-1-b"]
    reasons = [(exc.reason, key) for _, exc, key in group.refused]
    assert reasons == [("out_of_range", b"cam-1-bad"), ("missing_field", None),
                       ("bad_json", None)]
    assert orjson.loads(group.refused[0][0]) == bad  # its own bytes, as they came
    assert group.refused[2][0] == b'"not an item"'


@pytest.mark.parametrize(("doc", "reason"), [
    ({"schema": 2, "items": [item("a")]}, "unknown_schema_version"),
    ({"items": [item("a")]}, "unknown_schema_version"),
    ({"schema": 1, "items": []}, "bad_field"),
    ({"schema": 1, "items": {"a": 1}}, "bad_field"),
    ({"schema": 1, "items": None}, "bad_field"),
])
def test_a_record_that_is_not_a_group_is_refused_whole(doc: dict[str, Any], reason: str
                                                       ) -> None:
    with pytest.raises(BadInput) as refused:
        parse_review_group(orjson.dumps(doc))
    assert refused.value.reason == reason


def test_the_record_is_checked_before_its_items() -> None:
    for raw, reason in [(b"", "empty"), (b"[1]", "bad_json"), (b"{", "bad_json"),
                        (b" " * 2000 + b"{}", "oversize")]:
        with pytest.raises(BadInput) as refused:
            parse_review_group(raw, max_bytes=1000)
        assert refused.value.reason == reason


def test_a_bare_item_is_a_group_of_one() -> None:
    raw = orjson.dumps(item("cam-1-7"))
    group = parse_review_group(raw)
    assert group.items == [parse_review_item(raw)] and not group.refused
    with pytest.raises(BadInput) as refused:
        parse_review_group(orjson.dumps(item("cam-1-7", margin=3.0)))
    assert refused.value.reason == "out_of_range"


def test_an_item_off_the_partition_of_its_id_is_refused() -> None:
    doc = item("cam-1-7")
    home = review_partition("cam-1-7", 4)
    check_partition(doc, home, 4)
    with pytest.raises(BadInput) as refused:
        check_partition(doc, (home + 1) % 4, 4)
    assert refused.value.reason == "wrong_partition"
