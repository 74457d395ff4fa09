"""Rows of ``edgewise db load digits``: the split, the ids, the bytes, the chunks."""

from __future__ import annotations

import collections

import numpy as np

from edgewise.agents.cdc.db_load import (
    chunked,
    create_table_sql,
    digit_rows,
    split_digits,
    splits_for,
)


def test_the_split_is_stratified_and_repeatable() -> None:
    first, second = split_digits(), split_digits()
    assert len(first["train"][0]) == 1347 and len(first["test"][0]) == 450
    assert np.array_equal(first["test"][1], second["test"][1])
    shares = collections.Counter(first["test"][1].tolist())
    assert set(shares) == set(range(10)) and min(shares.values()) >= 40


def test_rows_carry_64_bytes_in_0_to_16_and_continue_the_ids() -> None:
    images, labels = split_digits()["test"]
    rows = list(digit_rows(images[:3], labels[:3], "test", first_id=11, repeat=2))
    assert [r[0] for r in rows] == [11, 12, 13, 14, 15, 16]
    assert all(len(r[2]) == 64 and max(r[2]) <= 16 and r[3] == "test" for r in rows)
    assert rows[0][2] == rows[3][2] and rows[0][1] == int(labels[0])
    assert np.frombuffer(rows[1][2], dtype=np.uint8).reshape(8, 8).tolist() == \
        images[1].tolist()


def test_chunks_and_splits() -> None:
    assert [len(c) for c in chunked(iter(range(7)), 3)] == [3, 3, 1]  # type: ignore[arg-type]
    assert splits_for("both") == ("train", "test") and splits_for("test") == ("test",)
    assert create_table_sql("public", "digits_test") == (
        'CREATE TABLE IF NOT EXISTS "public"."digits_test" (id bigint PRIMARY KEY, label '
        "smallint NOT NULL, pixels bytea NOT NULL, split text NOT NULL)")
