"""Scoring whole batches: one vectorised ``predict_proba`` call, then top-k by array maths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Scores:
    """Per-row results of one scoring call, as columns."""

    labels: np.ndarray  # int32 (n,)
    confidence: np.ndarray  # float32 (n,)
    top_labels: np.ndarray  # int32 (n, k)
    top_probs: np.ndarray  # float32 (n, k)


def score_rows(model: Any, features: np.ndarray, top_k: int) -> Scores:
    """Probabilities for every row at once, reduced to label, confidence and top-k."""
    probs = np.asarray(model.predict_proba(features), dtype=np.float32)
    classes = np.asarray(model.classes_, dtype=np.int32)
    k = min(top_k, probs.shape[1])
    if k < probs.shape[1]:
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(probs.shape[1]), probs.shape)
    part_probs = np.take_along_axis(probs, part, axis=1)
    order = np.argsort(-part_probs, axis=1, kind="stable")
    top_idx = np.take_along_axis(part, order, axis=1)
    top_probs = np.take_along_axis(part_probs, order, axis=1)
    top_labels = classes[top_idx]
    return Scores(
        labels=top_labels[:, 0].copy(), confidence=top_probs[:, 0].copy(),
        top_labels=np.ascontiguousarray(top_labels), top_probs=np.ascontiguousarray(top_probs),
    )
