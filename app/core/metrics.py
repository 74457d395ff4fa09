"""Prometheus metrics of one app, and the running totals the demo summary prints.

Each app gets its own registry, so several apps can live in one process (tests).
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Finer where the promise is (p99 within 150 ms), for edge time to the window updated.
WINDOW_BUCKETS_MS = (5, 10, 15, 20, 30, 40, 50, 60, 75, 100, 125, 150, 200, 300, 500, 1000,
                     2000, 5000, 10000, 30000)
#: Top-1 probability of each prediction, for the dashboard's confidence distribution.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@dataclass
class Totals:
    """Counts of what this process saw; read by ``edgewise demo`` for its summary."""

    samples_sent: int = 0
    predictions: int = 0
    labelled: int = 0
    correct: int = 0
    low_confidence: int = 0
    dead_letters: int = 0
    routed_seen: int = 0
    per_device: Tally[str] = field(default_factory=Tally)
    dead_letter_reasons: Tally[str] = field(default_factory=Tally)


class StageMetrics:
    """Events in and out per stage, dead letters, score latency, low-confidence rate."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.totals = Totals()
        self.events_in = Counter(
            "edgewise_events_in", "messages consumed per stage", ["stage"], registry=self.registry
        )
        self.events_out = Counter(
            "edgewise_events_out", "messages produced per stage", ["stage"], registry=self.registry
        )
        self.samples = Counter(
            "edgewise_samples", "samples handled per stage", ["stage"], registry=self.registry
        )
        self.dead_letters = Counter(
            "edgewise_dead_letters", "dead-lettered messages", ["stage", "reason"],
            registry=self.registry,
        )
        self.score_latency = Histogram(
            "edgewise_score_latency_ms", "edge timestamp to prediction, milliseconds",
            buckets=LATENCY_BUCKETS_MS, registry=self.registry,
        )
        self.window_latency = Histogram(
            "edgewise_window_latency_ms", "edge timestamp to the window table updated, ms",
            buckets=WINDOW_BUCKETS_MS, registry=self.registry,
        )
        self.confidence = Histogram(
            "edgewise_confidence", "top-1 probability of each prediction",
            buckets=CONFIDENCE_BUCKETS, registry=self.registry,
        )
        self.low_confidence = Counter(
            "edgewise_low_confidence", "predictions routed to review", registry=self.registry
        )
        self.low_confidence_rate = Gauge(
            "edgewise_low_confidence_rate", "share of predictions routed to review",
            registry=self.registry,
        )
        self.retries = Counter(
            "edgewise_retries", "attempts a stage made again after a failure that was not its "
            "input's (a database or object store away, a timeout)", ["stage", "reason"],
            registry=self.registry,
        )
        self.sink_rows = Counter(
            "edgewise_sink_rows", "rows a sink stage wrote, by outcome: written (new or "
            "changed) or repeated (already there, as a replay leaves them)",
            ["stage", "outcome"], registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "edgewise_consumer_lag", "records of a partition this worker's consumer group has "
            "not committed yet (end offset - committed offset), read from the broker",
            ["group", "stage", "topic", "partition"], registry=self.registry,
        )

    def observe_latencies(self, latency_ms: Any, hist: Histogram | None = None) -> None:
        """Add a whole batch of latencies to a histogram (the score latency by default) with
        array maths, not a loop."""
        values = np.asarray(latency_ms, dtype=np.float64)
        hist = hist if hist is not None else self.score_latency
        bounds = LATENCY_BUCKETS_MS if hist is self.score_latency else WINDOW_BUCKETS_MS
        self.observe_many(hist, bounds, values)

    def observe_confidence(self, confidence: Any) -> None:
        """Add a batch's top-1 probabilities to the confidence histogram."""
        self.observe_many(self.confidence, CONFIDENCE_BUCKETS,
                          np.asarray(confidence, dtype=np.float64))

    @staticmethod
    def observe_many(hist: Histogram, bounds: tuple[float, ...], values: np.ndarray) -> None:
        """Add many values to a histogram with array maths (its own buckets, when the
        client library's layout is the one expected; else one by one)."""
        buckets = getattr(hist, "_buckets", None)
        if buckets is None or len(buckets) != len(bounds) + 1:
            for value in values:
                hist.observe(float(value))
            return
        index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values)
        for bucket, count in enumerate(np.bincount(index, minlength=len(buckets)).tolist()):
            if count:
                buckets[bucket].inc(count)
        hist._sum.inc(float(values.sum()))

    def record_dead_letter(self, stage: str, reason: str) -> None:
        self.dead_letters.labels(stage, reason).inc()
        self.totals.dead_letters += 1
        self.totals.dead_letter_reasons[reason] += 1

    def record_routed(self, scored: int, low: int) -> None:
        self.totals.low_confidence += low
        self.totals.routed_seen += scored
        self.low_confidence.inc(low)
        if self.totals.routed_seen:
            self.low_confidence_rate.set(self.totals.low_confidence / self.totals.routed_seen)

    def exposition(self) -> bytes:
        """The Prometheus text format of this registry."""
        return generate_latest(self.registry)
