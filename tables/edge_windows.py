"""Tumbling windows at the edge: what an edge counted, sent up once per window.

An edge sends aggregates, not every event, so that a thin uplink carries a summary; the
hub then adds up the windows of many edges. Windows are aligned to the epoch
(``floor(t / size) * size``), so windows of different edges line up at the hub.

Lateness: the edge counts by its own clock when it handles an observation, so nothing is
ever late here. A window closes when the first observation of a later window arrives, or
when ``due(now)`` finds it over, so it is sent on time even when nothing follows it.
Windows with nothing in them are not sent.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class WindowTally:
    """What one edge saw in one window."""

    start: float
    size: float
    frames: int = 0
    count: int = 0
    scored: int = 0
    low: int = 0
    conf_sum: float = 0.0
    conf_min: float | None = None
    conf_max: float | None = None
    labels: Counter[str] = field(default_factory=Counter)

    @property
    def end(self) -> float:
        return self.start + self.size

    def empty(self) -> bool:
        return self.frames == 0 and self.count == 0

    def fields(self) -> dict[str, Any]:
        """The window as metrics payload fields (``edge_wire.encode_metrics``)."""
        return {
            "window_start": self.start, "window_end": self.end, "frames": self.frames,
            "count": self.count, "scored": self.scored, "low": self.low,
            "conf_sum": round(self.conf_sum, 6),
            "conf_min": None if self.conf_min is None else round(self.conf_min, 6),
            "conf_max": None if self.conf_max is None else round(self.conf_max, 6),
            "labels": dict(sorted(self.labels.items())),
        }


def window_start(now: float, size: float) -> float:
    """Start of the epoch-aligned tumbling window holding ``now``."""
    return math.floor(now / size) * size


class EdgeWindows:
    """The open window of one edge; ``add`` and ``due`` hand back windows that closed."""

    def __init__(self, size: float) -> None:
        if size <= 0:
            raise ValueError(f"window size must be > 0, got {size}")
        self.size = size
        self.current: WindowTally | None = None

    def add(
        self, now: float, *, frames: int = 0, count: int = 0,
        labels: np.ndarray | None = None, confidence: np.ndarray | None = None,
        low: np.ndarray | None = None,
    ) -> list[WindowTally]:
        """Count an observation at ``now``: frames seen, samples or faces (``count``), and,
        when scored, their labels, confidences and low-confidence mask."""
        closed = self.due(now)
        if self.current is None:
            self.current = WindowTally(window_start(now, self.size), self.size)
        tally = self.current
        tally.frames += frames
        tally.count += count
        if confidence is not None and len(confidence):
            conf = np.asarray(confidence, dtype=np.float64)
            tally.scored += len(conf)
            tally.conf_sum += float(conf.sum())
            low_min, high_max = float(conf.min()), float(conf.max())
            tally.conf_min = low_min if tally.conf_min is None else min(tally.conf_min, low_min)
            tally.conf_max = high_max if tally.conf_max is None else max(tally.conf_max, high_max)
            if low is not None:
                tally.low += int(np.count_nonzero(low))
        if labels is not None and len(labels):
            values, counts = np.unique(np.asarray(labels), return_counts=True)
            tally.labels.update({str(v): int(c) for v, c in zip(values.tolist(),
                                                               counts.tolist(), strict=True)})
        return closed

    def due(self, now: float) -> list[WindowTally]:
        """The open window, if ``now`` is past its end (and it holds anything)."""
        if self.current is None or now < self.current.end:
            return []
        closed, self.current = self.current, None
        return [] if closed.empty() else [closed]

    def flush(self) -> list[WindowTally]:
        """Close the open window now (the edge is stopping)."""
        closed, self.current = self.current, None
        return [] if closed is None or closed.empty() else [closed]
