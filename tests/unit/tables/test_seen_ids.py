"""Counted once, with bounded records: replays recognised by offset, repeated samples by id
(whatever their new timestamp), crashes at any point between a table write and a commit
leave the counts equal to the distinct samples, and no record outgrows its bound."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.records import Origin
from edgewise.tables.seen_ids import (
    CHUNK_IDS,
    PENDING_IDS,
    SeenIds,
    id_hashes,
    is_chunk_key,
)
from edgewise.tables.windows import WindowSpec, fold_device_batch

T0 = 1_700_000_000.0
SPEC = WindowSpec(tumbling=10.0, hopping=30.0, step=10.0, kept=3)


def rows(offsets: list[float]) -> dict[str, np.ndarray]:
    n = len(offsets)
    return {
        "timestamps": T0 + np.array(offsets, dtype=np.float64),
        "labels": np.ones(n, dtype=np.int32), "confidence": np.full(n, 0.9, np.float32),
        "low": np.zeros(n, dtype=bool), "true_labels": np.full(n, -1, np.int32),
        "latency_ms": np.full(n, 5.0, np.float32),
    }


class ChangelogTable(MutableMapping[str, Any]):
    """A dict that logs every write as the changelog would, so a crash can keep any prefix."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or {}
        self.log: list[tuple[str, Any]] = []

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.log.append((key, json.loads(json.dumps(value))))

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.log.append((key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def rebuilt(self, upto: int) -> ChangelogTable:
        """The table a new worker rebuilds from the first ``upto`` changelog records."""
        data: dict[str, Any] = {}
        for key, value in self.log[:upto]:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        table = ChangelogTable(json.loads(json.dumps(data)))
        table.log = list(self.log[:upto])
        return table


def total(table: MutableMapping[str, Any], kind: str = "tumbling") -> int:
    state = table.get("dev") or {kind: {}}
    return sum(w["total"]["count"] for w in state[kind].values())


def test_a_replayed_input_is_skipped_by_its_offset() -> None:
    table, seen = ChangelogTable(), SeenIds(600, 10_000)
    ids = [f"s{i}" for i in range(5)]
    assert fold_device_batch(table, seen, "dev", SPEC, "m:1", ids, rows([1] * 5),
                             Origin(0, 7)) == 5
    assert fold_device_batch(table, seen, "dev", SPEC, "m:1", ids, rows([1] * 5),
                             Origin(0, 7)) == 0
    assert table["dev"]["replayed"] == 5 and total(table) == 5


def test_a_sample_sent_again_with_a_new_time_is_counted_once() -> None:
    """A CDC snapshot redone, a re-score after a model swap: same id, other window."""
    table, seen = ChangelogTable(), SeenIds(600, 10_000)
    fold_device_batch(table, seen, "dev", SPEC, "m:1", ["a", "b"], rows([1, 2]), Origin(0, 1))
    counted = fold_device_batch(table, seen, "dev", SPEC, "m:2", ["a", "b", "c"],
                                rows([25, 26, 27]), Origin(0, 2))
    assert counted == 1 and total(table) == 3


def test_a_chunk_written_before_a_crash_without_its_device_record_is_not_trusted() -> None:
    """The changelog kept the id chunk of the last batch but not the counts: the replay
    must count those samples, not take them for repeats."""
    table, seen = ChangelogTable(), SeenIds(600, 10_000)
    fold_device_batch(table, seen, "dev", SPEC, "m:1", ["a"], rows([1]), Origin(0, 1))
    committed = len(table.log)
    many = [f"b{i}" for i in range(PENDING_IDS + 10)]  # enough to move the ids to a chunk
    fold_device_batch(table, seen, "dev", SPEC, "m:1", many, rows([2] * len(many)),
                      Origin(0, 2))
    chunk_only = committed + 1  # the chunk record is written first
    assert is_chunk_key(table.log[committed][0]) and table.log[chunk_only][0] == "dev"
    after = table.rebuilt(chunk_only)
    counted = fold_device_batch(after, SeenIds(600, 10_000), "dev", SPEC, "m:1", many,
                                rows([2] * len(many)), Origin(0, 2))
    assert counted == len(many) and total(after) == len(many) + 1


def test_a_small_batch_costs_one_changelog_record() -> None:
    table, seen = ChangelogTable(), SeenIds(600, 10_000)
    fold_device_batch(table, seen, "dev", SPEC, "m:1", ["a", "b"], rows([1, 2]), Origin(0, 1))
    assert [key for key, _ in table.log] == ["dev"]


def test_id_chunks_roll_over_and_expire_with_event_time() -> None:
    table, seen = ChangelogTable(), SeenIds(horizon_seconds=20, max_ids=100_000)
    for n in range(3):  # three full chunks at t = 1, 2, 3
        ids = [f"{n}-{i}" for i in range(CHUNK_IDS)]
        fold_device_batch(table, seen, "dev", SPEC, "m:1", ids, rows([1 + n] * CHUNK_IDS),
                          Origin(0, n))
    chunks = sorted(k for k in table if is_chunk_key(k))
    assert len(chunks) == 3
    fold_device_batch(table, seen, "dev", SPEC, "m:1", ["late-enough"], rows([40]),
                      Origin(0, 9))
    assert not [k for k in table if is_chunk_key(k)]  # the old ones are tombstoned
    assert seen.sets["dev"] == {int(h) for h in id_hashes(["late-enough"])}


def test_ids_per_device_are_bounded() -> None:
    table, seen = ChangelogTable(), SeenIds(horizon_seconds=600, max_ids=4 * CHUNK_IDS)
    for n in range(10):
        ids = [f"{n}-{i}" for i in range(CHUNK_IDS)]
        fold_device_batch(table, seen, "dev", SPEC, "m:1", ids, rows([1] * CHUNK_IDS),
                          Origin(0, n))
    assert len([k for k in table if is_chunk_key(k)]) <= 4
    assert len(seen.sets["dev"]) <= 4 * CHUNK_IDS


def test_a_million_samples_in_one_window_keep_every_record_under_the_bound() -> None:
    table, seen = ChangelogTable(), SeenIds(600, 1_100_000)
    batch, counted, biggest = 4096, 0, 0
    for n in range(1_000_000 // batch + 1):
        size = min(batch, 1_000_000 - n * batch)
        ids = [f"s{n}-{i}" for i in range(size)]
        counted += fold_device_batch(table, seen, "dev", SPEC, f"m:{n % 7}", ids,
                                     rows(list(np.linspace(0, 9.9, size))), Origin(0, n))
        biggest = max(biggest, *(len(orjson.dumps(v)) for _, v in table.log[-3:] if v))
    assert counted == 1_000_000 == total(table)
    assert biggest <= SPEC.max_record_bytes
    # replaying the last input again, or a repeat of an early sample, counts nothing
    assert fold_device_batch(table, seen, "dev", SPEC, "m:1", ["s0-0"], rows([5]),
                             Origin(0, 10_000)) == 0


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Inputs (batches of ids from a small pool, so repeats abound, with timestamps moved
    about), crashes keeping any prefix of the uncommitted changelog, and commits."""
    steps = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["input", "input", "input", "commit", "crash"]))
        if kind == "input":
            ids = draw(st.lists(st.integers(0, 60), min_size=0, max_size=12))
            times = [draw(st.floats(0, 29.9)) for _ in ids]
            steps.append(("input", ([f"id{i}" for i in ids], times)))
        elif kind == "crash":
            steps.append(("crash", draw(st.floats(0, 1))))
        else:
            steps.append(("commit", None))
    return steps


@settings(max_examples=150, deadline=None)
@given(histories())
def test_any_interleaving_of_replays_repeats_and_crashes_counts_distinct_samples(
    steps: list[tuple[str, Any]],
) -> None:
    table, seen = ChangelogTable(), SeenIds(600, 100_000)
    inputs: list[tuple[list[str], list[float]]] = []  # the source topic
    committed, committed_log, position = 0, 0, 0

    def consume_to_end() -> None:
        nonlocal position
        while position < len(inputs):
            ids, times = inputs[position]
            fold_device_batch(table, seen, "dev", SPEC, "m:1", ids, rows(times),
                              Origin(0, position))
            position += 1

    for kind, arg in steps:
        if kind == "input":
            inputs.append(arg)
            consume_to_end()
        elif kind == "commit":
            committed, committed_log = position, len(table.log)  # table flushed first
        else:  # the worker dies: some uncommitted changelog records made it, the rest not
            keep = committed_log + round(arg * (len(table.log) - committed_log))
            table, seen = table.rebuilt(keep), SeenIds(600, 100_000)
            position = committed
            consume_to_end()
    distinct = {i for ids, _ in inputs for i in ids}
    assert total(table) == len(distinct)
    state = table.get("dev")
    if state is not None:  # every sample in its hopping windows too: 3 of them each
        assert sum(w["total"]["count"] for w in state["hopping"].values()) == 3 * len(distinct)


def test_a_record_of_an_older_layout_starts_over_instead_of_failing() -> None:
    """Window records written before ids were tracked have no ``ids``: they are replaced."""
    table = ChangelogTable({"dev": {"tumbling": {}, "hopping": {}, "seen": {}, "newest": 5.0}})
    counted = fold_device_batch(table, SeenIds(600, 10_000), "dev", SPEC, "m:1", ["a"],
                                rows([1]), Origin(0, 1))
    assert counted == 1 and table["dev"]["layout"] == 2 and total(table) == 1
