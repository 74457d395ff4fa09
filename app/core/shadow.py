"""Shadow scoring: a candidate scored beside the served model on the live stream, its
predictions compared and counted, never routed.

Each score worker counts, per gathering, how many samples both models saw, how many of
them had a true label, how many each model got right, and how often the two agreed, and
sends that tally to the shadow topic. The retrain stage adds the tallies up until the
candidate has seen enough samples, then gates it on stream accuracy as it gated it on the
held-out sets. A tally is a few numbers: checked field by field like every record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import orjson

from edgewise.app.core.bounds import check_model, check_size, is_int
from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.records import PredictionBatch

MAX_TALLY_BYTES = 1024
#: The largest count one tally may carry (a gathering is far smaller).
MAX_TALLY_COUNT = 10_000_000
COUNTS = ("samples", "labelled", "correct", "served_correct", "agree")


@dataclass(frozen=True, slots=True)
class ShadowTally:
    """What one gathering said about candidate ``version`` against served ``against``."""

    model: str
    version: int
    against: int
    samples: int = 0
    labelled: int = 0
    correct: int = 0
    served_correct: int = 0
    agree: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    def __add__(self, other: ShadowTally) -> ShadowTally:
        return ShadowTally(self.model, self.version, self.against,
                           *(getattr(self, c) + getattr(other, c) for c in COUNTS))


def tally(served: list[PredictionBatch], shadow: list[PredictionBatch]) -> ShadowTally:
    """Compare the served model's frames with the candidate's on the same samples (same
    frames, same order)."""
    if not served or len(served) != len(shadow):
        raise ValueError("shadow frames must match the served frames one for one")
    counts = dict.fromkeys(COUNTS, 0)
    for mine, theirs in zip(served, shadow, strict=True):
        known = mine.true_labels >= 0
        truth = mine.true_labels[known]
        counts["samples"] += len(mine)
        counts["labelled"] += int(known.sum())
        counts["correct"] += int((theirs.labels[known] == truth).sum())
        counts["served_correct"] += int((mine.labels[known] == truth).sum())
        counts["agree"] += int(np.count_nonzero(mine.labels == theirs.labels))
    first, candidate = served[0], shadow[0]
    return ShadowTally(first.model, candidate.model_version, first.model_version, **counts)


def parse_tally(data: bytes) -> ShadowTally:
    """A tally record, checked: known fields only, a model and versions, counts that add up."""
    check_size(data, MAX_TALLY_BYTES)
    doc = json_object(data, "shadow tally")
    known = {f.name for f in fields(ShadowTally)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise BadInput("bad_field", f"unknown tally fields: {', '.join(unknown)[:100]}")
    model, version = check_model(doc.get("model"), doc.get("version"))
    _, against = check_model(model, doc.get("against"))
    counts = {}
    for name in COUNTS:
        value = doc.get(name, 0)
        if not is_int(value) or not 0 <= value <= MAX_TALLY_COUNT:
            raise BadInput("bad_count", f"{name} must be a count 0..{MAX_TALLY_COUNT}")
        counts[name] = int(value)
    if not (counts["labelled"] <= counts["samples"] and counts["agree"] <= counts["samples"]
            and max(counts["correct"], counts["served_correct"]) <= counts["labelled"]):
        raise BadInput("bad_count", "tally counts do not add up (correct <= labelled <= "
                                    "samples, agree <= samples)")
    return ShadowTally(model, version, against, **counts)


def stream_figures(total: ShadowTally) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """The candidate's and the served model's accuracy on the labelled shadow samples
    (None when none was labelled), for the gate."""
    if not total.labelled:
        return {"stream_accuracy": None}, {"stream_accuracy": None}
    return ({"stream_accuracy": total.correct / total.labelled},
            {"stream_accuracy": total.served_correct / total.labelled})


def shadow_summary(total: ShadowTally, needed: int) -> dict[str, Any]:
    """A tally for people: progress, both accuracies, agreement."""
    mine, served = stream_figures(total)
    return {"version": total.version, "against": total.against, "samples": total.samples,
            "needed": needed, "labelled": total.labelled,
            "accuracy": mine["stream_accuracy"], "served_accuracy": served["stream_accuracy"],
            "agreement": total.agree / total.samples if total.samples else None}
