"""Window maths and per-device window state (tables/windows.py), and the aggregate fold.

Hand-computed examples use whole-second timestamps near T0 (a multiple of every window
size here), so window starts are exact floats. Windows are half-open: [start, start+size).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from edgewise.agents.aggregate import fold_prediction_batch
from edgewise.app.core.records import Origin, PredictionBatch
from edgewise.tables.seen_ids import SeenIds, id_hashes
from edgewise.tables.windows import (
    LATENCY_BASE_MS,
    LATENCY_BUCKETS,
    LATENCY_FACTOR,
    WindowSpec,
    add_to_stats,
    confidence_histogram,
    empty_stats,
    fold_device_batch,
    hopping_starts,
    latency_buckets,
    latency_quantile,
    merge_stats,
    summarize,
    tumbling_starts,
    window_view,
)

T0 = 1_700_000_000.0
SPEC = WindowSpec(tumbling=10.0, hopping=30.0, step=10.0, kept=3)


def key(seconds: float) -> str:
    """The table key of the window starting at T0 + seconds."""
    return repr(float(T0 + seconds))


def rows(offsets: list[float], labels: list[int] | None = None,
         confidence: list[float] | None = None, low: list[bool] | None = None,
         truth: list[int] | None = None, latency: list[float] | None = None
         ) -> dict[str, np.ndarray]:
    n = len(offsets)
    return {
        "timestamps": T0 + np.array(offsets, dtype=np.float64),
        "labels": np.array(labels if labels is not None else [1] * n, dtype=np.int32),
        "confidence": np.array(confidence if confidence is not None else [0.9] * n,
                               dtype=np.float32),
        "low": np.array(low if low is not None else [False] * n),
        "true_labels": np.array(truth if truth is not None else [-1] * n, dtype=np.int32),
        "latency_ms": np.array(latency if latency is not None else [5.0] * n,
                               dtype=np.float32),
    }


def ids(prefix: str, count: int, first: int = 0) -> list[str]:
    return [f"{prefix}-{i}" for i in range(first, first + count)]


def counts(state: dict[str, Any], kind: str, model: str = "m:1") -> dict[str, int]:
    return {start: window["models"][model]["count"] for start, window in state[kind].items()
            if model in window["models"]}


class Device:
    """One device's records in a dict standing in for the table (as its changelog would)."""

    def __init__(self, spec: WindowSpec = SPEC) -> None:
        self.table: dict[str, Any] = {}
        self.seen = SeenIds(600.0, 1_000_000)
        self.spec = spec

    def fold(self, model_key: str, batch_ids: list[str], batch: dict[str, np.ndarray],
             origin: Origin | None = None) -> tuple[dict[str, Any], int]:
        counted = fold_device_batch(self.table, self.seen, "dev", self.spec, model_key,
                                    batch_ids, batch, origin)
        return self.table["dev"], counted

    def recover(self) -> None:
        """A new worker: the table rebuilt from its changelog, nothing in memory."""
        self.table = json.loads(json.dumps(self.table))
        self.seen = SeenIds(600.0, 1_000_000)


# -- window starts ----------------------------------------------------------------------


def test_tumbling_starts_by_hand() -> None:
    ts = np.array([0.0, 9.999, 10.0, 10.5, 25.0, 30.0])
    assert tumbling_starts(ts, 10.0).tolist() == [0.0, 0.0, 10.0, 10.0, 20.0, 30.0]


def test_tumbling_start_of_an_epoch_timestamp_on_a_boundary() -> None:
    ts = T0 + np.array([-0.5, 0.0, 9.5, 10.0])
    assert (tumbling_starts(ts, 10.0) - T0).tolist() == [-10.0, 0.0, 0.0, 10.0]


def test_tumbling_starts_with_a_fractional_size() -> None:
    assert tumbling_starts(np.array([5.0, 7.4, 7.5]), 2.5).tolist() == [5.0, 5.0, 7.5]


def test_hopping_starts_by_hand() -> None:
    starts = hopping_starts(np.array([29.0, 30.0, 35.0]), 30.0, 10.0)
    assert starts.tolist() == [[20.0, 10.0, 0.0], [30.0, 20.0, 10.0], [30.0, 20.0, 10.0]]


def test_hopping_window_end_is_exclusive_when_size_is_not_a_multiple_of_step() -> None:
    starts = hopping_starts(np.array([34.0, 35.0, 36.0]), 25.0, 10.0)
    assert starts[0].tolist() == [30.0, 20.0, 10.0]  # [10, 35) holds 34
    assert starts[1, :2].tolist() == [30.0, 20.0] and math.isnan(starts[1, 2])  # not 35
    assert starts[2, :2].tolist() == [30.0, 20.0] and math.isnan(starts[2, 2])


def test_hopping_with_step_equal_to_size_is_tumbling() -> None:
    ts = T0 + np.array([0.0, 3.0, 10.0, 19.99])
    np.testing.assert_array_equal(hopping_starts(ts, 10.0, 10.0)[:, 0], tumbling_starts(ts, 10.0))


def test_every_hopping_start_holds_its_timestamp() -> None:
    ts = np.random.default_rng(0).uniform(0, 1000, 200).round(2)
    starts = hopping_starts(ts, 30.0, 10.0)
    for t, row in zip(ts, starts, strict=True):
        found = row[~np.isnan(row)]
        assert len(found) == 3
        assert np.all((found <= t) & (t < found + 30.0))
        assert np.all(found % 10.0 == 0)


def test_id_hashes_are_stable_and_distinct() -> None:
    first = id_hashes(["a", "b", "c"])
    assert first.dtype == np.uint64
    np.testing.assert_array_equal(first, id_hashes(["a", "b", "c"]))
    assert len(set(id_hashes(ids("cam", 5000)).tolist())) == 5000


# -- folding ----------------------------------------------------------------------------


def test_fold_counts_per_tumbling_and_hopping_window() -> None:
    dev = Device()
    state, counted = dev.fold("m:1", ids("a", 5), rows([1, 2, 11, 12, 13]))
    assert counted == 5
    assert counts(state, "tumbling") == {key(0): 2, key(10): 3}
    # [0,30) and [10,40) hold all; [-10,20) holds all; [-20,10) only the first two
    assert counts(state, "hopping") == {key(10): 3, key(0): 5, key(-10): 5, key(-20): 2}
    assert state["newest"] == T0 + 13
    assert (state["late"], state["replayed"]) == (0, 0)


def test_fold_keeps_stats_per_model_key() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 2), rows([1, 2]))
    state, _ = dev.fold("m:2", ids("b", 3), rows([3, 4, 5]))
    assert set(state["tumbling"][key(0)]["models"]) == {"m:1", "m:2"}
    assert counts(state, "tumbling", "m:1") == {key(0): 2}
    assert counts(state, "tumbling", "m:2") == {key(0): 3}


def test_fold_statistics_by_hand() -> None:
    batch = rows([1, 2, 3, 4], labels=[3, 3, 8, 1], confidence=[0.5, 0.75, 1.0, 0.25],
                 low=[True, False, False, True], truth=[3, 8, -1, 1])
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 4), batch)
    stats = state["tumbling"][key(0)]["models"]["m:1"]
    assert stats["count"] == 4
    assert stats["labels"] == {"1": 1, "3": 2, "8": 1}
    assert stats["conf_sum"] == pytest.approx(2.5)
    assert stats["conf_min"] == pytest.approx(0.25)
    assert (stats["low"], stats["labelled"], stats["correct"]) == (2, 3, 2)
    assert sum(stats["latency"].values()) == 4


def test_folding_the_same_batch_twice_counts_once() -> None:
    batch_ids, batch = ids("a", 4), rows([1, 2, 11, 12])
    dev = Device()
    state, first = dev.fold("m:1", batch_ids, batch)
    before = {kind: counts(state, kind) for kind in ("tumbling", "hopping")}
    state, second = dev.fold("m:1", batch_ids, batch)
    assert (first, second) == (4, 0)
    assert state["replayed"] == 4
    assert {kind: counts(state, kind) for kind in ("tumbling", "hopping")} == before


def test_a_batch_overlapping_a_previous_one_counts_only_the_new_samples() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 4), rows([1, 2, 3, 4]))
    state, counted = dev.fold("m:1", ids("a", 4, first=2), rows([3, 4, 5, 6]))
    assert counted == 2
    assert state["replayed"] == 2
    assert counts(state, "tumbling") == {key(0): 6}
    assert counts(state, "hopping")[key(0)] == 6


def test_replay_survives_a_json_round_trip_of_the_state() -> None:
    """The records are table values: they go through JSON in the changelog, and a new worker
    rebuilds its id sets from them."""
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 3), rows([1, 2, 3]))
    dev.recover()
    state, counted = dev.fold("m:1", ids("a", 3), rows([1, 2, 3]))
    assert counted == 0 and state["replayed"] == 3


def test_late_samples_are_dropped_and_counted() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 1), rows([100]))
    # newest window starts at T0+100; kept=3 closed windows reach back to T0+70
    state, counted = dev.fold("m:1", ids("b", 3), rows([69.9, 70.0, 85.0]))
    assert counted == 2
    assert state["late"] == 1
    assert counts(state, "tumbling") == {key(70): 1, key(80): 1, key(100): 1}


def test_late_samples_in_the_same_batch_as_new_ones() -> None:
    dev = Device()
    state, counted = dev.fold("m:1", ids("a", 3), rows([0, 80, 100]))
    assert counted == 2 and state["late"] == 1
    assert counts(state, "tumbling") == {key(80): 1, key(100): 1}


def test_old_windows_expire_as_time_moves_on() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 3), rows([1, 11, 21]))
    assert key(0) in state["tumbling"]
    state, _ = dev.fold("m:1", ids("b", 1), rows([45]))
    # newest window T0+40, horizon T0+10: T0 expires, T0+10 and T0+20 stay
    assert set(state["tumbling"]) == {key(10), key(20), key(40)}
    # hopping windows are kept down to horizon - hopping size = T0-20
    assert min(float(k) for k in state["hopping"]) == T0 - 20
    state, _ = dev.fold("m:1", ids("c", 1), rows([500]))
    assert set(state["tumbling"]) == {key(500)}
    assert all(float(k) >= T0 + 470 - 30 for k in state["hopping"])


def test_empty_batch_folds_to_nothing() -> None:
    """decode_prediction_batch lets a batch of zero ids through; it must not crash aggregate."""
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 2), rows([1, 2]))
    state, counted = dev.fold("m:1", [], rows([]))
    assert counted == 0
    assert counts(state, "tumbling") == {key(0): 2}


# -- latency histogram ------------------------------------------------------------------


def test_latency_buckets_by_hand() -> None:
    latency = np.array([0.0, 0.05, 0.1, 1.0, 100.0, 1e9])
    # 1 ms: log2(10) * 4 = 13.3; 100 ms: log2(1000) * 4 = 39.9
    assert latency_buckets(latency).tolist() == [0, 0, 0, 13, 39, LATENCY_BUCKETS - 1]


def test_quantile_is_the_upper_edge_of_its_bucket() -> None:
    hist = np.bincount(latency_buckets(np.array([1.0] * 9 + [100.0])),
                       minlength=LATENCY_BUCKETS).tolist()
    assert latency_quantile(hist, 0.5) == round(0.1 * 2 ** (14 / 4), 3) == 1.131
    assert latency_quantile(hist, 0.9) == 1.131
    assert latency_quantile(hist, 0.95) == 102.4  # 0.1 * 2 ** (40 / 4)
    assert latency_quantile(hist, 1.0) == 102.4


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert latency_quantile([0] * LATENCY_BUCKETS, 0.5) is None


@pytest.mark.parametrize("latency", [0.2, 0.37, 1.0, 7.5, 42.0, 999.0, 12_345.0])
def test_quantile_bounds_the_latency_within_one_bucket(latency: float) -> None:
    hist = np.bincount(latency_buckets(np.array([latency])), minlength=LATENCY_BUCKETS)
    edge = latency_quantile(hist.tolist(), 0.5)
    assert edge is not None
    assert latency <= edge * 1.001
    assert edge / LATENCY_FACTOR <= latency * 1.001


def test_latency_range_covers_a_tenth_of_a_millisecond_to_a_hundred_seconds() -> None:
    assert LATENCY_BASE_MS == 0.1
    assert LATENCY_BASE_MS * LATENCY_FACTOR ** LATENCY_BUCKETS == pytest.approx(104_857.6)


# -- summaries and views ----------------------------------------------------------------


def test_summarize_by_hand() -> None:
    stats = empty_stats()
    add_to_stats(stats, rows([1, 2, 3, 4], labels=[10, 2, 2, 7], confidence=[0.5, 1.0, 0.75, 0.25],
                             low=[True, False, False, True], truth=[10, 3, 2, -1],
                             latency=[1.0, 1.0, 1.0, 1.0]))
    summary = summarize(stats)
    assert summary["count"] == 4
    assert list(summary["labels"].items()) == [("2", 2), ("7", 1), ("10", 1)]
    assert summary["mean_confidence"] == 0.625
    assert summary["min_confidence"] == 0.25
    assert summary["low_confidence"] == 2
    assert summary["labelled"] == 3
    assert summary["accuracy"] == round(2 / 3, 4)
    assert summary["latency_p50_ms"] == summary["latency_p95_ms"] == 1.131


def test_summary_of_an_empty_window_has_no_averages() -> None:
    summary = summarize(empty_stats())
    assert summary["count"] == 0
    assert summary["mean_confidence"] is None and summary["min_confidence"] is None
    assert summary["accuracy"] is None and summary["latency_p50_ms"] is None


def test_window_view_tumbling_newest_first_current_then_closed() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 3), rows([5, 15, 16]))
    view = window_view(state, "tumbling", SPEC.tumbling)
    assert [(w["start"] - T0, w["end"] - T0, w["current"]) for w in view] == [
        (10.0, 20.0, True), (0.0, 10.0, False)]
    assert [w["total"]["count"] for w in view] == [2, 1]


def test_window_view_hopping_has_every_open_window_current() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 2), rows([5, 15]))
    view = window_view(state, "hopping", SPEC.hopping)
    assert [(w["start"] - T0, w["current"]) for w in view] == [
        (10.0, True), (0.0, True), (-10.0, True), (-20.0, False)]
    assert [w["total"]["count"] for w in view] == [1, 2, 2, 1]


def test_window_view_totals_merge_models() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 2), rows([1, 2], confidence=[0.5, 0.5]))
    state, _ = dev.fold("m:2", ids("b", 1), rows([3], confidence=[0.25]))
    [window] = window_view(state, "tumbling", SPEC.tumbling)
    assert set(window["models"]) == {"m:1", "m:2"}
    assert window["models"]["m:1"]["count"] == 2 and window["models"]["m:2"]["count"] == 1
    assert window["total"]["count"] == 3
    assert window["total"]["min_confidence"] == 0.25
    assert window["total"]["mean_confidence"] == round(1.25 / 3, 4)


def test_window_view_of_an_unknown_kind_is_empty() -> None:
    dev = Device()
    state, _ = dev.fold("m:1", ids("a", 1), rows([1]))
    assert window_view(state, "sliding", 10.0) == []


# -- the aggregate stage's fold ---------------------------------------------------------


def prediction_batch(offsets: list[float], top_probs: list[list[float]],
                     version: int = 3) -> PredictionBatch:
    probs = np.array(top_probs, dtype=np.float32)
    n = len(offsets)
    return PredictionBatch(
        device="cam-1", kind="digits", model="digits", model_version=version,
        ids=ids(f"v{version}", n), timestamps=T0 + np.array(offsets, dtype=np.float64),
        true_labels=np.array([1] * n, dtype=np.int32), labels=np.array([1, 2, 1][:n], np.int32),
        confidence=probs[:, 0].copy(), top_labels=np.tile(np.array([1, 2], np.int32), (n, 1)),
        top_probs=probs, latency_ms=np.full(n, 4.0, np.float32),
        pixels=np.zeros((n, 8, 8), np.uint8), scored_at=T0 + 20,
    )


def test_fold_prediction_batch_uses_the_route_rule_and_model_version() -> None:
    batch = prediction_batch([1, 2, 3], [[0.9, 0.05], [0.4, 0.3], [0.6, 0.55]])
    dev = Device()
    counted = fold_prediction_batch(dev.table, dev.seen, batch, SPEC, low_confidence=0.5,
                                    min_margin=0.1)
    state = dev.table[batch.device]
    assert counted == 3
    stats = state["tumbling"][key(0)]["models"]["digits:3"]
    assert stats["low"] == 2  # the second by confidence, the third by margin
    assert (stats["labelled"], stats["correct"]) == (3, 2)
    assert stats["labels"] == {"1": 2, "2": 1}


def test_fold_prediction_batch_is_idempotent() -> None:
    batch = prediction_batch([1, 2], [[0.9, 0.05], [0.8, 0.1]])
    dev = Device()
    first = fold_prediction_batch(dev.table, dev.seen, batch, SPEC, 0.5, 0.1)
    again = fold_prediction_batch(dev.table, dev.seen, batch, SPEC, 0.5, 0.1)
    state = dev.table[batch.device]
    assert (first, again, state["replayed"]) == (2, 0, 2)
    assert counts(state, "tumbling", "digits:3") == {key(0): 2}


def test_the_confidence_histogram_counts_tenths_and_adds_up() -> None:
    confidence = np.array([0.05, 0.1, 0.55, 0.999, 1.0, 0.9, 0.0], dtype=np.float32)
    n = len(confidence)
    rows = {"labels": np.zeros(n, np.int32), "confidence": confidence,
            "low": confidence < 0.6, "true_labels": np.full(n, -1, np.int32),
            "latency_ms": np.ones(n, np.float32)}
    stats = empty_stats()
    add_to_stats(stats, rows)
    assert confidence_histogram(stats) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 3]
    older = {k: v for k, v in empty_stats().items() if k != "confidence"}  # before it existed
    assert confidence_histogram(older) == [0] * 10
    merge_stats(older, stats)
    merge_stats(older, stats)
    assert summarize(older)["confidence_histogram"] == [4, 2, 0, 0, 0, 2, 0, 0, 0, 6]
