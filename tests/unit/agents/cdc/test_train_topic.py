"""Training from a change stream: replay to the table's current rows, then arrays."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from edgewise.agents.cdc.rows import RowMapping
from edgewise.agents.cdc.train import (
    TopicTrainingError,
    replay_changes,
    train_from_topic,
    training_arrays,
)
from edgewise.app.core.settings import Settings

MAPPING = RowMapping("id", "label", "pixels", (8, 8), "digits")
TS_MS = 1_700_000_000_000  # commit times are real times: 1970 is refused


def event(op: str, row_id: int, label: int | None = 1, value: int = 0,
          table: str = "digits_train") -> bytes:
    row = {"id": row_id, "label": label,
           "pixels": base64.b64encode(bytes([value]) * 64).decode()}
    body: dict[str, Any] = {"before": row if op == "d" else None,
                            "after": None if op in ("d", "t") else row, "op": op,
                            "source": {"schema": "public", "table": table, "ts_ms": TS_MS},
                            "ts_ms": TS_MS}
    return orjson.dumps({"payload": body})


def test_replay_applies_changes_in_order() -> None:
    table = replay_changes([
        event("r", 1), event("r", 2), event("c", 3), event("c", 3),  # a duplicate
        event("u", 1, label=7, value=9), event("d", 2), None,  # delete, then its tombstone
        b"{broken", event("c", 4, label=None),
    ], MAPPING)
    assert sorted(table.rows) == ["digits_train-1", "digits_train-3", "digits_train-4"]
    assert table.rows["digits_train-1"].label == 7
    assert int(table.rows["digits_train-1"].pixels.max()) == 9
    assert (table.records, table.deletes, table.skipped) == (9, 1, {"bad_json": 1})
    x, y = training_arrays(table)  # the unlabelled row 4 is left out
    assert x.shape == (2, 64) and y.tolist() == [7, 1]
    assert x.dtype == np.float64


def test_truncate_empties_the_table() -> None:
    table = replay_changes([event("c", 1), event("t", 0), event("c", 2)], MAPPING)
    assert list(table.rows) == ["digits_train-2"]


def test_no_labelled_rows_is_an_error() -> None:
    with pytest.raises(TopicTrainingError, match="no labelled rows"):
        training_arrays(replay_changes([event("c", 1, label=None)], MAPPING))


def test_training_from_a_topic_needs_a_running_broker() -> None:
    with pytest.raises(TopicTrainingError, match="--broker"):
        train_from_topic(Settings(), "digits", "linear", "edgewise.public.digits_train")
