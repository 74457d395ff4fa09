"""Edge windows added up per site at the hub: idempotent, late windows counted."""

from __future__ import annotations

from typing import Any

import orjson

from edgewise.tables.site_metrics import (
    MAX_RECORD_BYTES,
    merge_edge_window,
    site_windows,
    window_totals,
)


def metrics(device: str, start: float, count: int = 10, **more: Any) -> dict[str, Any]:
    base = {"site": "s1", "device": device, "window_start": start, "window_end": start + 10,
            "detect": "digits", "model": "digits:1", "frames": 0, "count": count,
            "scored": count, "low": 1, "dropped": 0, "labels": {"3": count},
            "conf_sum": 0.8 * count, "conf_min": 0.4, "conf_max": 0.99}
    return {**base, **more}


def test_devices_of_a_site_add_up_per_window() -> None:
    state, _ = merge_edge_window(None, metrics("a", 100.0), kept=5)
    state, _ = merge_edge_window(state, metrics("b", 100.0, count=30, conf_min=0.2,
                                                labels={"3": 10, "4": 20}), kept=5)
    (window,) = site_windows(state)
    total = window["total"]
    assert (total["count"], total["scored"], total["low"], total["devices"]) == (40, 40, 2, 2)
    assert total["labels"] == {"3": 20, "4": 20}
    assert total["mean_confidence"] == 0.8 and total["min_confidence"] == 0.2
    assert sorted(window["devices"]) == ["a", "b"]


def test_a_resent_window_replaces_instead_of_adding() -> None:
    state, _ = merge_edge_window(None, metrics("a", 100.0), kept=5)
    state, _ = merge_edge_window(state, metrics("a", 100.0), kept=5)
    assert site_windows(state)[0]["total"]["count"] == 10


def test_only_the_newest_windows_are_kept_and_older_ones_are_late() -> None:
    state = None
    for start in (100.0, 110.0, 120.0, 130.0):
        state, kept = merge_edge_window(state, metrics("a", start), kept=3)
        assert kept
    assert [w["start"] for w in site_windows(state)] == [130.0, 120.0, 110.0]
    state, kept = merge_edge_window(state, metrics("b", 90.0), kept=3)
    assert not kept and state["late"] == 1
    assert state["devices"]["a"]["last_window"] == 130.0


def test_totals_without_scores() -> None:
    total = window_totals({"a": metrics("a", 0.0, scored=0, low=0, conf_sum=0.0,
                                        conf_min=None, conf_max=None)})
    assert total["mean_confidence"] is None and total["min_confidence"] is None


def test_a_silent_device_leaves_its_site_by_the_hubs_clock() -> None:
    state, _ = merge_edge_window(None, metrics("a", 100.0), kept=5, max_device_age=60, now=0)
    state, _ = merge_edge_window(state, metrics("b", 100.0), kept=5, max_device_age=60, now=30)
    assert sorted(state["devices"]) == ["a", "b"]
    state, _ = merge_edge_window(state, metrics("b", 110.0), kept=5, max_device_age=60, now=70)
    assert sorted(state["devices"]) == ["b"] and state["evicted"] == 1
    assert all(set(per) == {"b"} for per in state["windows"].values())


def test_a_far_future_edge_clock_does_not_age_the_others_out() -> None:
    state, _ = merge_edge_window(None, metrics("a", 100.0), kept=5, now=0)
    state, _ = merge_edge_window(state, metrics("b", 1e9), kept=5, now=1)
    assert "a" in state["devices"]


def test_beyond_the_count_the_longest_silent_devices_go() -> None:
    state = None
    for i in range(10):
        state, _ = merge_edge_window(state, metrics(f"d{i}", 100.0), kept=5, max_devices=4,
                                     now=float(i))
    assert sorted(state["devices"]) == ["d6", "d7", "d8", "d9"]
    assert sorted(site_windows(state)[0]["devices"]) == ["d6", "d7", "d8", "d9"]


def test_the_record_stays_under_its_byte_bound_with_the_most_labels() -> None:
    labels = {f"label-{i:026d}": i for i in range(1000)}  # as many as a payload may carry
    state = None
    for i in range(20):
        for start in (100.0, 110.0, 120.0):
            state, _ = merge_edge_window(state, metrics(f"d{i}", start, labels=labels),
                                         kept=6, max_devices=64, now=float(i))
            assert len(orjson.dumps(state)) <= MAX_RECORD_BYTES
    assert "d19" in state["devices"]  # the newest is never the one evicted


def test_many_devices_with_few_labels_keep_the_record_bounded() -> None:
    state = None
    for start in range(0, 60, 10):
        for i in range(64):
            state, _ = merge_edge_window(state, metrics(f"device-{i:03d}", float(start)),
                                         kept=6, now=float(start * 100 + i))
    size = len(orjson.dumps(state))
    print(f"\n64 devices x 6 windows: site record {size} bytes, {len(state['devices'])} kept")
    assert size <= MAX_RECORD_BYTES


def test_an_edge_ahead_by_the_skew_bound_leaves_the_others_their_windows() -> None:
    """With the default bound (half the horizon), a device whose clock is ahead by the whole
    bound takes at most half the kept windows; further ahead it is dead-lettered at the
    boundary (``parse_metrics_payload``), so it never reaches the table."""
    kept, size = 6, 10.0
    now = 1_000_000.0
    skew = kept * size / 2
    state = None
    for step in range(12):  # two minutes of windows from three edges
        t = now + step * size
        for device, clock in (("a", t), ("b", t), ("fast", t + skew)):
            state, _ = merge_edge_window(state, metrics(device, (clock // size) * size - size),
                                         kept=kept)
    newest = site_windows(state)
    honest = [w for w in newest if {"a", "b"} <= set(w["devices"])]
    assert len(honest) >= kept // 2 - 1
    assert honest[0]["start"] == (now + 11 * size) // size * size - size
