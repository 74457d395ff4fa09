"""The dashboard's merge: the fleet's figures from two workers' parts equal those of one
worker holding every device (counts, labels, accuracy, latency quantiles), and the
counters, dead letters and corrections of every part add up."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.app.core.settings import load_settings
from edgewise.app.run.dashboard import evaluation_part, merge_dashboard, windows_part
from edgewise.tables.evaluation import EvaluationSpec, fold_device_evaluation
from edgewise.tables.seen_ids import SeenIds
from edgewise.tables.windows import WindowSpec, fold_device_batch

SETTINGS = load_settings()
NOW = 1_800_000_000.0


def fold_devices(devices: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Window and evaluation tables for these devices, folded as the stages fold them; each
    device's samples the same whichever worker folds it."""
    windows: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    seen, seen_by_evaluation = SeenIds(600, 10_000), SeenIds(600, 10_000)
    spec = WindowSpec(10, 30, 10, 6)
    espec = EvaluationSpec(60, 10, 1e-6)
    for device in devices:
        rng = np.random.default_rng(int(device[1:]))
        for b in range(5):
            n = 20
            ts = NOW + b * 7 + rng.random(n)
            labels = rng.integers(0, 10, n).astype(np.int32)
            truth = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 10).astype(np.int32)
            confidence = rng.random(n).astype(np.float32)
            ids = [f"{device}-{b}-{i}" for i in range(n)]
            rows = {"timestamps": ts, "labels": labels, "confidence": confidence,
                    "low": confidence < 0.6, "true_labels": truth,
                    "latency_ms": (rng.random(n) * 50).astype(np.float32)}
            model = f"digits:{1 + b % 2}"
            fold_device_batch(windows, seen, device, spec, model, ids, rows)
            top_labels = np.stack([labels, (labels + 1) % 10], axis=1)
            top_probs = np.stack([confidence, 1 - confidence], axis=1)
            fold_device_evaluation(evaluation, seen_by_evaluation, device, espec, model, ids,
                                   float(ts.max()), truth, labels, top_labels, top_probs)
    return windows, evaluation


def part(devices: list[str], **more: Any) -> dict[str, Any]:
    windows, evaluation = fold_devices(devices)
    return {"windows": windows_part(windows.items(), 10, 6),
            "evaluation": evaluation_part(evaluation.items()), **more}


def fleet_figures(view: dict[str, Any]) -> Any:
    return (view["fleet"], view["windows"], view["accuracy"]["true_labels"],
            [d["device"] for d in view["devices"]])


def test_two_workers_parts_merge_to_the_one_worker_figures() -> None:
    whole = merge_dashboard([part(["d0", "d1", "d2", "d3"])], SETTINGS)
    split = merge_dashboard([part(["d0", "d2"]), part(["d1", "d3"])], SETTINGS)
    assert fleet_figures(split)[1:] == fleet_figures(whole)[1:]
    for name in ("recent", "devices", "low_confidence_rate", "samples_per_second"):
        assert split["fleet"][name] == whole["fleet"][name], name
    assert whole["fleet"]["recent"]["count"] == 4 * 5 * 20
    assert whole["fleet"]["recent"]["latency_p95_ms"] is not None
    assert set(whole["accuracy"]["true_labels"]) == {"digits:1", "digits:2"}


def test_counters_dead_letters_review_and_corrections_add_up() -> None:
    metrics = {"samples": {"score": 10}, "dead_letters": {"score": {"bad_json": 2}},
               "confidence": {"0.5": 3, "1.0": 10, "+Inf": 10}, "score_latency": {}}
    raw = {"digits:1": {"count": 2, "correct": 1, "windows": {repr(NOW): [2, 1]}}}
    one = {"metrics": metrics, "review": {"queued": 4, "evicted": 1},
           "corrections": {"corrected": 2, "held": 3, "evicted": 0, "raw": raw}}
    two = {"metrics": {**metrics, "dead_letters": {"route": {"bad_json": 1, "oversize": 1}}},
           "review": {"queued": 6, "evicted": 0}, "windows": None, "evaluation": None,
           "corrections": {"corrected": 2, "held": 2, "evicted": 1, "raw": raw}}
    view = merge_dashboard([one, two], SETTINGS)
    assert view["fleet"]["predictions"] == 20
    assert view["dead_letters"] == {"by_reason": {"bad_json": {"route": 1, "score": 2},
                                                  "oversize": {"route": 1}}, "total": 4}
    assert view["review"] == {"queued": 10, "evicted": 1}
    assert view["corrections"] == {"corrected": 4, "held": 5, "evicted": 1}
    assert view["accuracy"]["corrections"]["digits:1"]["accuracy"] == 0.5
    buckets = {b["le"]: b["count"] for b in view["confidence"]["buckets"]}
    assert buckets == {"0.5": 6, "1.0": 14, "+Inf": 0}


def test_no_parts_give_an_empty_fleet() -> None:
    view = merge_dashboard([], SETTINGS)
    assert view["fleet"]["devices"] == 0 and view["devices"] == []
    assert view["fleet"]["low_confidence_rate"] is None


def test_lag_of_a_partition_counts_once_across_replicas_of_its_group() -> None:
    from edgewise.app.run.dashboard import merge_lag

    replica_a = {"edgewise-score": {"edgewise-samples[0]": 5.0, "edgewise-samples[1]": 2.0}}
    replica_b = {"edgewise-score": {"edgewise-samples[0]": 4.0, "edgewise-samples[1]": 2.0}}
    route = {"edgewise-route": {"edgewise-predictions[0]": 1.0}}
    merged = merge_lag([replica_a, replica_b, route, {}])
    assert merged["groups"]["edgewise-score"] == {
        "total": 7, "partitions": {"edgewise-samples[0]": 5, "edgewise-samples[1]": 2}}
    assert merged["total"] == 8
