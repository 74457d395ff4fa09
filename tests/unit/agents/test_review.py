"""review: a group's items kept as one table record on the partition of their ids; a bad
item, or one on another partition, dead-lettered alone with its reason and its own bytes."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import orjson

from edgewise.agents import review
from edgewise.app.core.review_groups import encode_review_groups, review_partition
from edgewise.tables import review_queue
from tests.fixtures import hostile
from tests.fixtures.stages import build_stage, next_value

PARTITIONS = 4


async def test_a_group_is_kept_item_by_item_and_its_bad_items_dead_lettered_alone(
        tmp_path: Path) -> None:
    run = build_stage(review.register, "edgewise.review", tmp_path, partitions=PARTITIONS)
    rng = random.Random(3)
    goods = [hostile.good_review_item(rng) for _ in range(40)]
    bad = {**hostile.good_review_item(rng), "confidence": 1.5}
    home = review_partition(goods[0]["id"], PARTITIONS)
    mine = [g for g in goods if review_partition(g["id"], PARTITIONS) == home]
    stray = next(g for g in goods if review_partition(g["id"], PARTITIONS) != home)
    [record] = [r for r in encode_review_groups(goods, PARTITIONS) if r.partition == home]
    doc = orjson.loads(record.value)
    doc["items"] = doc["items"][:1] + [bad] + doc["items"][1:] + [stray]
    async with run.agent.test_context() as agent:
        await agent.put(orjson.dumps(doc), key=record.key, partition=home)
        letters = [orjson.loads(await next_value(run.dead)) for _ in range(2)]
    table = run.ctx.app.tables["review_queue"]
    assert list(table) == [record.key.decode()]  # the group is one record, by its key
    assert sorted(table[record.key.decode()]["items"]) == sorted(g["id"] for g in mine)
    queue = review_queue.queue_for(run.ctx.app)
    assert queue is not None
    assert all(queue.get(g["id"])["partition"] == home for g in mine)
    assert [(x["stage"], x["reason"]) for x in letters] == [("review", "out_of_range"),
                                                            ("review", "wrong_partition")]
    assert base64.b64decode(letters[0]["original_b64"]) == orjson.dumps(bad)  # its own bytes
    assert orjson.loads(base64.b64decode(letters[1]["original_b64"]))["id"] == stray["id"]
    assert run.samples_counted("review") == len(mine)


async def test_every_partition_keeps_its_own_group(tmp_path: Path) -> None:
    run = build_stage(review.register, "edgewise.review", tmp_path, partitions=PARTITIONS)
    rng = random.Random(4)
    goods = [hostile.good_review_item(rng) for _ in range(60)]
    records = encode_review_groups(goods, PARTITIONS)
    assert len(records) == PARTITIONS
    async with run.agent.test_context() as agent:
        for record in records:
            await agent.put(record.value, key=record.key, partition=record.partition)
    table = run.ctx.app.tables["review_queue"]
    assert sorted(table) == sorted(r.key.decode() for r in records)  # a record per group
    assert sorted(i for v in table.values() for i in v["items"]) == sorted(
        g["id"] for g in goods)
    queue = review_queue.queue_for(run.ctx.app)
    assert queue is not None
    for g in goods:
        assert queue.get(g["id"])["partition"] == review_partition(g["id"], PARTITIONS)
    assert run.samples_counted("review") == len(goods)
