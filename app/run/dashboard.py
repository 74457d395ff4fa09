"""The dashboard's figures: each worker's local part, and the merge of every part into the
fleet's view (``/api/dashboard``).

A part carries what can be added up across workers: raw window statistics (counts, label
counts, sparse latency histograms) per window start and model version, summed over the
worker's devices, rather than summaries, so that quantiles and rates of the fleet are
computed from the whole and not averaged from averages. Devices and sites are each owned
by one worker, so their summaries simply come together. What a worker does not run (a
stage, a table) is ``None`` in its part.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from edgewise.agents.retrain import status_for
from edgewise.app.core.context import StageContext
from edgewise.tables import corrections as corrections_table
from edgewise.tables import evaluation, review_queue, windows
from edgewise.tables.seen_ids import is_chunk_key
from edgewise.tables.site_metrics import site_windows

#: Devices one worker lists in its part (the most recently active first); the rest are
#: counted in ``devices_total``, and their figures are in the fleet's windows all the same.
MAX_DEVICES_LISTED = 500


def device_rate(state: dict[str, Any], size: float) -> float:
    """Samples per second of one device: its newest closed tumbling window's count over the
    window's size; while it has only an open window, that one's count over its elapsed part."""
    kept = state.get("tumbling", {})
    if not kept:
        return 0.0
    starts = sorted(kept, key=float, reverse=True)
    newest = float(state.get("newest", 0.0))
    if len(starts) > 1:
        return kept[starts[1]]["total"]["count"] / size
    return kept[starts[0]]["total"]["count"] / max(newest - float(starts[0]), 1.0)


def device_summary(device: str, state: dict[str, Any], size: float) -> dict[str, Any]:
    """A device's figures: rate, the newest window and everything kept, summarized."""
    kept = state.get("tumbling", {})
    everything = windows.empty_stats()
    for window in kept.values():
        windows.merge_stats(everything, window["total"])
    newest_start = max(kept, key=float) if kept else None
    return {"device": device, "newest": state.get("newest"), "late": state.get("late", 0),
            "replayed": state.get("replayed", 0), "rate": round(device_rate(state, size), 2),
            "current": windows.summarize(kept[newest_start]["total"]) if newest_start else None,
            "kept": windows.summarize(everything)}


def windows_part(items: Iterable[tuple[str, Any]], size: float, kept: int) -> dict[str, Any]:
    """The window table's part: per window start the devices' stats added up (in total and
    per model version), and each device's summary."""
    fleet: dict[str, dict[str, Any]] = {}
    devices = []
    for device, state in items:
        if is_chunk_key(device) or not isinstance(state, dict):
            continue
        devices.append(device_summary(device, state, size))
        for start, window in state.get("tumbling", {}).items():
            into = fleet.setdefault(start, {"total": windows.empty_stats(), "models": {}})
            windows.merge_stats(into["total"], window["total"])
            for key, stats in window["models"].items():
                windows.merge_stats(into["models"].setdefault(key, windows.empty_stats()), stats)
    newest = sorted(fleet, key=float, reverse=True)[:kept + 1]
    devices.sort(key=lambda d: -(d["newest"] or 0.0))
    return {"size": size, "fleet": {s: fleet[s] for s in newest},
            "devices": devices[:MAX_DEVICES_LISTED], "devices_total": len(devices)}


def evaluation_part(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The evaluation table's part: per model version, its stats in total and per window,
    added up over the worker's devices."""
    models: dict[str, dict[str, Any]] = {}
    for device, state in items:
        if is_chunk_key(device) or not isinstance(state, dict):
            continue
        for key, model in state.get("models", {}).items():
            into = models.setdefault(key, {"total": evaluation.empty_stats(), "windows": {}})
            evaluation.merge_stats(into["total"], model["total"])
            for start, stats in model["windows"].items():
                evaluation.merge_stats(into["windows"].setdefault(start,
                                                                  evaluation.empty_stats()), stats)
    return models


def metrics_part(ctx: StageContext) -> dict[str, Any]:
    """Counters and histograms of this worker's stages, as plain numbers."""
    out: dict[str, Any] = {"samples": {}, "dead_letters": {}, "confidence": {},
                           "score_latency": {}, "consumer_lag": {}}
    for metric in ctx.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "edgewise_samples_total":
                out["samples"][sample.labels["stage"]] = sample.value
            elif sample.name == "edgewise_dead_letters_total":
                reasons = out["dead_letters"].setdefault(sample.labels["stage"], {})
                reasons[sample.labels["reason"]] = sample.value
            elif sample.name == "edgewise_confidence_bucket":
                out["confidence"][sample.labels["le"]] = sample.value
            elif sample.name == "edgewise_score_latency_ms_bucket":
                out["score_latency"][sample.labels["le"]] = sample.value
            elif sample.name == "edgewise_consumer_lag":
                group = out["consumer_lag"].setdefault(sample.labels["group"], {})
                group[f"{sample.labels['topic']}[{sample.labels['partition']}]"] = sample.value
    return out


def merge_lag(readings: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Every group's lag per partition and in total. Replicas of a group read the same
    offsets from the broker, so a partition counts once (the largest reading, the one
    taken last when they differ by a commit)."""
    groups: dict[str, dict[str, float]] = {}
    for reading in readings:
        for group, partitions in reading.items():
            into = groups.setdefault(group, {})
            for partition, lag in partitions.items():
                into[partition] = max(into.get(partition, 0), lag)
    return {"groups": {g: {"total": int(sum(p.values())),
                           "partitions": {k: int(v) for k, v in sorted(p.items())}}
                       for g, p in sorted(groups.items())},
            "total": int(sum(v for p in groups.values() for v in p.values()))}


def local_part(ctx: StageContext, stages: list[str]) -> dict[str, Any]:
    """What this worker knows, for the fan-out to merge."""
    app, s = ctx.app, ctx.settings
    tables = app.tables
    part: dict[str, Any] = {"worker": app.conf.id, "url": str(app.conf.canonical_url),
                            "stages": stages, "at": time.time(), "metrics": metrics_part(ctx)}
    device_table = tables.get("device_windows")
    part["windows"] = (windows_part(device_table.items(), s.tumbling_seconds, s.windows_kept)
                       if device_table is not None else None)
    eval_table = tables.get(evaluation.TABLE)
    part["evaluation"] = (evaluation_part(eval_table.items())
                          if eval_table is not None else None)
    queue = review_queue.queue_for(app)
    part["review"] = ({"queued": queue.page(0, 0)[1], "evicted": queue.evicted}
                      if queue is not None else None)
    store = corrections_table.store_for(app)
    part["corrections"] = ({**store.counts(), "evicted": store.evicted,
                            "raw": store.accuracy.raw()} if store is not None else None)
    status = status_for(app)
    part["retrain"] = ({**asdict(status), "every": s.retrain_every_corrections}
                       if status is not None else None)
    site_table = tables.get("site_metrics")
    part["sites"] = ([{"site": site, "devices": len(state["devices"]),
                       "newest": (site_windows(state) or [{}])[0].get("total")}
                      for site, state in sorted(site_table.items())]
                     if site_table is not None else None)
    return part


def _bucket_counts(cumulative: dict[str, float]) -> list[dict[str, Any]]:
    """Per-bucket counts from Prometheus' cumulative ``le`` buckets."""
    out, below = [], 0.0
    for le, count in sorted(cumulative.items(), key=lambda kv: float(kv[0])):
        out.append({"le": le, "count": int(count - below)})
        below = count
    return out


def _quantile(cumulative: dict[str, float], q: float) -> float | None:
    rows = sorted(((float(le), n) for le, n in cumulative.items()), key=lambda r: r[0])
    total = rows[-1][1] if rows else 0
    if not total:
        return None
    for le, count in rows:
        if count >= q * total:
            return le
    return None


def merge_dashboard(parts: list[dict[str, Any]], settings: Any) -> dict[str, Any]:
    """The fleet's figures from every worker's part."""
    fleet: dict[str, dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    devices_total = 0
    size = settings.tumbling_seconds
    models: dict[str, dict[str, Any]] = {}
    samples: dict[str, float] = {}
    dead: dict[str, dict[str, float]] = {}
    confidence: dict[str, float] = {}
    latency: dict[str, float] = {}
    queued = evicted = 0
    corrected_parts = []
    corrections = {"corrected": 0, "held": 0, "evicted": 0}
    sites: list[dict[str, Any]] = []
    retraining: list[dict[str, Any]] = []
    lag_readings = [(part.get("metrics") or {}).get("consumer_lag", {}) for part in parts]
    for part in parts:
        if part.get("windows"):
            size = part["windows"]["size"]
            devices += part["windows"]["devices"]
            devices_total += part["windows"]["devices_total"]
            for start, window in part["windows"]["fleet"].items():
                into = fleet.setdefault(start, {"total": windows.empty_stats(), "models": {}})
                windows.merge_stats(into["total"], window["total"])
                for key, stats in window["models"].items():
                    windows.merge_stats(into["models"].setdefault(key, windows.empty_stats()),
                                        stats)
        for key, model in (part.get("evaluation") or {}).items():
            into = models.setdefault(key, {"total": evaluation.empty_stats(), "windows": {}})
            evaluation.merge_stats(into["total"], model["total"])
            for start, stats in model["windows"].items():
                evaluation.merge_stats(into["windows"].setdefault(start,
                                                                  evaluation.empty_stats()), stats)
        metrics = part.get("metrics") or {}
        for stage, n in metrics.get("samples", {}).items():
            samples[stage] = samples.get(stage, 0) + n
        for stage, reasons in metrics.get("dead_letters", {}).items():
            for reason, n in reasons.items():
                by_reason = dead.setdefault(reason, {})
                by_reason[stage] = by_reason.get(stage, 0) + n
        for le, n in metrics.get("confidence", {}).items():
            confidence[le] = confidence.get(le, 0) + n
        for le, n in metrics.get("score_latency", {}).items():
            latency[le] = latency.get(le, 0) + n
        if part.get("review"):
            queued += part["review"]["queued"]
            evicted += part["review"]["evicted"]
        if part.get("corrections"):
            corrected_parts.append(part["corrections"]["raw"])
            for name in corrections:
                corrections[name] += part["corrections"][name]
        sites += part.get("sites") or []
        if part.get("retrain"):
            retraining.append({**part["retrain"], "worker": part.get("url")})
    starts = sorted(fleet, key=float, reverse=True)[:settings.windows_kept + 1]
    recent = windows.empty_stats()
    for start in starts:
        windows.merge_stats(recent, fleet[start]["total"])
    window_list = [{"start": float(s), "end": float(s) + size,
                    "total": windows.summarize(fleet[s]["total"]),
                    "models": {k: windows.summarize(v)
                               for k, v in sorted(fleet[s]["models"].items())}}
                   for s in starts]
    recent_summary = windows.summarize(recent)
    window = settings.evaluation_window_seconds
    kept = settings.evaluation_windows_kept
    raw_corrected = corrections_table.merge_corrected(corrected_parts)
    return {
        "at": time.time(),
        "fleet": {
            "samples_per_second": round(sum(d["rate"] for d in devices), 2),
            "devices": devices_total,
            "recent": recent_summary,
            "low_confidence_rate": (round(recent["low"] / recent["count"], 4)
                                    if recent["count"] else None),
            "predictions": int(samples.get("score", 0)),
        },
        "windows": {"size_seconds": size, "list": window_list},
        "devices": sorted(devices, key=lambda d: d["device"]),
        "sites": sorted(sites, key=lambda s: s["site"]),
        "accuracy": {
            "true_labels": {key: {"cumulative": evaluation.summarize(m["total"]),
                                  "windows": [{"start": float(st), "end": float(st) + window,
                                               **evaluation.summarize(m["windows"][st])}
                                              for st in sorted(m["windows"], key=float,
                                                               reverse=True)[:kept]]}
                            for key, m in sorted(models.items())},
            "corrections": corrections_table.corrected_view(raw_corrected, window, kept),
            "window_seconds": window,
        },
        "confidence": {"buckets": _bucket_counts(confidence),
                       "p50": _quantile(confidence, 0.5)},
        "score_latency": {"p50_ms": _quantile(latency, 0.5), "p95_ms": _quantile(latency, 0.95)},
        "dead_letters": {"by_reason": {r: dict(sorted(s.items()))
                                       for r, s in sorted(dead.items())},
                         "total": int(sum(n for s in dead.values() for n in s.values()))},
        "review": {"queued": queued, "evicted": evicted},
        "corrections": corrections,
        "samples_by_stage": samples,
        "retrain": retraining,
        "consumer_lag": merge_lag(lag_readings),
    }
