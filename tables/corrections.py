"""The corrections table: the latest correction of each reviewed sample, keyed by sample id,
and the accuracy per model version the corrections say (derived from the table in memory).

Last correction wins, by the time the hub made it (``corrected_at``, ties broken by the
label); the same record again (a replay) changes nothing, and an older one arriving after a
newer one is ignored, so any order of delivery ends in the same table.
Taking a correction back leaves a record with ``label: null`` rather than deleting the
key, so that a replayed older correction cannot come back to life; the record keeps the
review item, so the station can put it in the queue again.

Bounded like the review queue: ``corrections_max_items`` (shared out over the partitions)
and ``corrections_max_age_seconds`` since the correction was made; an evicted record is
deleted from the table (a tombstone in the compacted changelog). Eviction is per partition
for the same reason as the review queue's (``tables.review_index``): the corrections topic
is keyed by sample id and co-partitioned with the table, and a changelog record goes to the
partition of the event being processed.

The accuracy tally is derived state, like the review queue's order: updated as records
come and go, rebuilt from the table after a recovery or a rebalance, so it always adds up
what the table holds and costs no changelog writes of its own.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from edgewise.app.core.context import StageContext, json_schema
from edgewise.app.core.corrections import model_key
from edgewise.app.core.settings import Settings

TABLE = "corrections"


def window_start(record: dict[str, Any], window: float) -> float:
    """The window a correction counts in: that of the sample's time (when the record
    carries its review item), else of the time it was corrected."""
    item = record.get("item") or {}
    ts = item.get("timestamp", record["corrected_at"])
    return math.floor(float(ts) / window) * window


@dataclass
class CorrectedAccuracy:
    """Per model version: corrections counted and how many of them the model had right,
    in total and per window of sample time."""

    window: float
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, record: dict[str, Any], sign: int = 1) -> None:
        """Count one correction (``sign`` -1 takes it out); retractions count nothing."""
        if record.get("label") is None:
            return
        key = model_key(record)
        right = int(record["predicted"] == record["label"])
        model = self.models.setdefault(key, {"count": 0, "correct": 0, "windows": {}})
        model["count"] += sign
        model["correct"] += sign * right
        start = window_start(record, self.window)
        counts = model["windows"].setdefault(start, [0, 0])
        counts[0] += sign
        counts[1] += sign * right
        if counts[0] <= 0:
            del model["windows"][start]
        if model["count"] <= 0:
            del self.models[key]

    def raw(self) -> dict[str, Any]:
        """The tally as plain counts (a peer's part of the fleet's figures)."""
        return {key: {"count": m["count"], "correct": m["correct"],
                      "windows": {repr(s): list(c) for s, c in m["windows"].items()}}
                for key, m in self.models.items()}


def merge_corrected(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up raw tallies (from the partitions of several workers)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, model in part.items():
            into = out.setdefault(key, {"count": 0, "correct": 0, "windows": {}})
            into["count"] += model["count"]
            into["correct"] += model["correct"]
            for start, (count, correct) in model["windows"].items():
                counts = into["windows"].setdefault(start, [0, 0])
                counts[0] += count
                counts[1] += correct
    return out


def corrected_view(raw: dict[str, Any], window: float, kept: int) -> dict[str, Any]:
    """Accuracy per model version from a raw tally: cumulative, and the newest windows."""
    models = {}
    for key in sorted(raw):
        model = raw[key]
        starts = sorted(model["windows"], key=float, reverse=True)[:kept]
        models[key] = {
            "count": model["count"], "correct": model["correct"],
            "accuracy": round(model["correct"] / model["count"], 4) if model["count"] else None,
            "windows": [{"start": float(s), "end": float(s) + window,
                         "count": model["windows"][s][0], "correct": model["windows"][s][1],
                         "accuracy": round(model["windows"][s][1] / model["windows"][s][0], 4)}
                        for s in starts],
        }
    return models


def order_key(record: dict[str, Any]) -> tuple[float, int]:
    """Which of two corrections of a sample stands: the later one; at the very same time,
    the larger label (a taking back counts as -1), so any order of delivery ends alike."""
    label = record.get("label")
    return float(record["corrected_at"]), -1 if label is None else int(label)


@dataclass(frozen=True)
class Applied:
    """What one record did: ``set``, ``retracted``, or ``unchanged`` (a replay, an older
    record, a retraction of nothing); the record it replaced; the ids evicted."""

    action: str
    previous: dict[str, Any] | None
    evicted: list[str]


class CorrectionStore:
    """The table, its tally and its bounds; the correct stage's only way in."""

    def __init__(self, table: Any, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.max_items = max(1, math.ceil(settings.corrections_max_items / settings.partitions))
        self.max_age = settings.corrections_max_age_seconds
        self.accuracy = CorrectedAccuracy(settings.evaluation_window_seconds)
        self.clock = clock
        self.evicted = 0
        self._by_age: dict[int, dict[str, float]] = {}  # insertion order = arrival order

    def is_corrected(self, key: str) -> bool:
        """A correction with a label stands for this sample (its item is no longer pending)."""
        record = self.table.get(key)
        return isinstance(record, dict) and record.get("label") is not None

    def counts(self) -> dict[str, int]:
        """Corrections held (with a label) and retractions held."""
        corrected = sum(m["count"] for m in self.accuracy.models.values())
        return {"corrected": corrected, "held": sum(len(a) for a in self._by_age.values())}

    def apply(self, record: dict[str, Any], partition: int) -> Applied:
        """Fold one correction record into the table. Must run inside the correct stage's
        stream: table writes go to the partition of the event, which is the record's."""
        key = record["id"]
        previous = self.table.get(key)
        if isinstance(previous, dict) and order_key(previous) >= order_key(record):
            return Applied("unchanged", previous, [])  # the same again, or older
        if not isinstance(previous, dict) and record.get("label") is None:
            return Applied("unchanged", None, [])  # nothing to take back
        if isinstance(previous, dict):
            self.accuracy.add(previous, -1)
        record = {**record, "partition": partition}
        self.table[key] = record
        self.accuracy.add(record, 1)
        self._place(key, partition, float(record["corrected_at"]))
        evicted = self._evict(partition)
        action = "retracted" if record.get("label") is None else "set"
        return Applied(action, previous if isinstance(previous, dict) else None, evicted)

    def rebuild(self, items: Iterable[tuple[str, Any]]) -> None:
        """The tally and the arrival order again from the table's items."""
        self.accuracy = CorrectedAccuracy(self.accuracy.window)
        self._by_age = {}
        rows = sorted(((float(v["corrected_at"]), k, v) for k, v in items
                       if isinstance(v, dict)), key=lambda row: row[0])
        for corrected_at, key, value in rows:
            self.accuracy.add(value, 1)
            self._place(key, int(value.get("partition", 0)), corrected_at)

    def _place(self, key: str, partition: int, corrected_at: float) -> None:
        for ages in self._by_age.values():
            ages.pop(key, None)
        self._by_age.setdefault(partition, {})[key] = corrected_at

    def _evict(self, partition: int) -> list[str]:
        ages = self._by_age.get(partition, {})
        cutoff = self.clock() - self.max_age
        out = []
        for key, corrected_at in ages.items():
            if corrected_at >= cutoff and len(ages) - len(out) <= self.max_items:
                break
            out.append(key)
        for key in out:
            del ages[key]
            record = self.table.get(key)
            if isinstance(record, dict):
                self.accuracy.add(record, -1)
            del self.table[key]  # a tombstone in the changelog
        self.evicted += len(out)
        return out


def define(ctx: StageContext) -> CorrectionStore:
    """Create the corrections table, rebuilding the tally when it is recovered (its views:
    ``tables.correction_views``)."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="the latest correction of each reviewed sample, keyed by sample id",
    )
    store = CorrectionStore(table, ctx.settings)
    _STORES[ctx.app] = store

    @table.on_recover
    async def rebuild_tally() -> None:
        store.rebuild(table.items())

    return store


_STORES: weakref.WeakKeyDictionary[Any, CorrectionStore] = weakref.WeakKeyDictionary()


def store_for(app: Any) -> CorrectionStore | None:
    """The corrections of ``app``, when its worker runs the correct stage."""
    return _STORES.get(app)
