"""The review rule: which predictions a person should look at, and why.

A prediction is routed when its confidence is below ``low_confidence`` or its top-2 margin
is below ``min_margin``. The hub's route and aggregate stages, the image sink and the edge
apply the same rule.
"""

from __future__ import annotations

import numpy as np


def route_low_confidence(
    confidence: np.ndarray, margins: np.ndarray, low_confidence: float, min_margin: float
) -> np.ndarray:
    """Mask of the predictions a person should review."""
    return (confidence < low_confidence) | (margins < min_margin)


def review_reasons(confidence: float, margin: float, low: float, min_margin: float) -> str:
    """Why one prediction was routed, for the person reviewing it."""
    reasons = []
    if confidence < low:
        reasons.append(f"confidence {confidence:.2f} < {low:.2f}")
    if margin < min_margin:
        reasons.append(f"top-2 margin {margin:.2f} < {min_margin:.2f}")
    return "; ".join(reasons)
