"""Retraining from corrections, and the gate a candidate must pass to be promoted.

A candidate is trained on the base data (the bundled digits' training split, the same
split the served model was trained on) plus the samples people corrected, and compared
with the served model on held-out data neither was trained on: the base test split, and a
quarter of the corrections (chosen by a hash of the sample id, so a correction is held out
or not whatever else changed). It is promoted only when it is not worse than the served
model by more than ``margin`` on each held-out set; otherwise it stays in the registry as
rejected, with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgewise.models.digits import digit_images, fit_in_steps

#: One correction in this many is held out for the gate (by id hash).
HOLD_OUT_ONE_IN = 4
DIGIT_SHAPES = ((8, 8), (64,))


@dataclass(frozen=True)
class CorrectionRows:
    """Corrected samples as features and labels, split into training and held-out rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray
    ids: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def held_out(sample_id: str) -> bool:
    """Whether a correction belongs to the held-out set (stable for a given id)."""
    digest = hashlib.sha256(sample_id.encode()).digest()
    return digest[0] % HOLD_OUT_ONE_IN == 0


def latest_corrections(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The standing correction of each sample: the newest by ``corrected_at``, and none
    for a sample whose newest record took it back."""
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        known = newest.get(record["id"])
        if known is None or record["corrected_at"] >= known["corrected_at"]:
            newest[record["id"]] = record
    return {k: v for k, v in newest.items() if v.get("label") is not None}


def correction_rows(corrections: dict[str, dict[str, Any]]) -> CorrectionRows:
    """Features and labels of the corrected digits (8x8 pixels kept in the review item);
    corrections without usable pixels are counted in ``skipped``."""
    train_x, train_y, held_x, held_y, ids = [], [], [], [], []
    skipped = 0
    for sample_id in sorted(corrections):
        record = corrections[sample_id]
        item = record.get("item") or {}
        try:
            raw = base64.b64decode(item.get("image_b64") or "", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        shape = tuple(item.get("shape") or ())
        if item.get("kind", "digits") != "digits" or shape not in DIGIT_SHAPES \
                or len(raw) != 64:
            skipped += 1
            continue
        pixels = np.frombuffer(raw, dtype=np.uint8).astype(np.float64)
        if held_out(sample_id):
            held_x.append(pixels)
            held_y.append(int(record["label"]))
        else:
            train_x.append(pixels)
            train_y.append(int(record["label"]))
        ids.append(sample_id)

    def stack(rows: list[np.ndarray]) -> np.ndarray:
        return np.array(rows, dtype=np.float64).reshape(len(rows), 64)

    return CorrectionRows(stack(train_x), np.array(train_y, dtype=np.int32), stack(held_x),
                          np.array(held_y, dtype=np.int32), ids, skipped)


def base_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits split as ``train_digits`` splits them (same seed, same rows)."""
    images, labels = digit_images()
    x = images.reshape(len(images), -1).astype(np.float64)
    from sklearn.model_selection import train_test_split  # seconds to import: when used

    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=0.25, random_state=seed, stratify=labels)
    return x_train, x_test, y_train, y_test


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float | None:
    return float((model.predict(x) == y).mean()) if len(y) else None


@dataclass(frozen=True)
class Candidate:
    """A trained candidate, its figures beside the served model's, and what it saw."""

    model: Any
    metrics: dict[str, float | None]
    served_metrics: dict[str, float | None]
    data: dict[str, Any] = field(default_factory=dict)


def train_candidate(algorithm: str, rows: CorrectionRows, served: Any,
                    progress: Callable[[int], None] | None = None,
                    seed: int = 0) -> Candidate:
    """Train on base + corrections and measure it and the served model on the held-out
    sets (base test split, held-out corrections)."""
    x_train, x_test, y_train, y_test = base_split(seed)
    x = np.concatenate([x_train, rows.x_train])
    y = np.concatenate([y_train, rows.y_train])
    model = fit_in_steps(algorithm, x, y, progress)

    def figures(m: Any) -> dict[str, float | None]:
        return {"accuracy": accuracy(m, x_test, y_test),
                "corrections_accuracy": accuracy(m, rows.x_held, rows.y_held)}

    data = {"base": "sklearn.datasets.load_digits", "base_train_rows": int(len(x_train)),
            "held_out_rows": int(len(x_test)), "corrections": len(rows),
            "corrections_trained": int(len(rows.y_train)),
            "corrections_held_out": int(len(rows.y_held)), "corrections_skipped": rows.skipped,
            "correction_ids_sha256": hashlib.sha256("\n".join(rows.ids).encode()).hexdigest(),
            "correction_ids": rows.ids[:1000]}
    return Candidate(model, figures(model), figures(served), data)


def gate(candidate: dict[str, float | None], served: dict[str, float | None],
         margin: float) -> tuple[bool, str]:
    """Promote only if not worse than the served model by more than ``margin`` on every
    held-out set both were measured on; the reason either way."""
    worse = []
    for name, value in candidate.items():
        base = served.get(name)
        if value is None or base is None:
            continue
        if value < base - margin:
            worse.append(f"{name} {value:.4f} < served {base:.4f} - margin {margin:g}")
    if worse:
        return False, "worse: " + "; ".join(worse)
    shown = ", ".join(f"{k} {v:.4f} (served {served.get(k) or 0:.4f})"
                      for k, v in candidate.items() if v is not None)
    return True, f"not worse by more than {margin:g}: {shown}"
