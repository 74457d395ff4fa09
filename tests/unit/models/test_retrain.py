"""Retraining's parts: corrections become rows (the newest standing one per sample, split
held-out by id) and the gate compares a candidate with the served model by a margin."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from edgewise.models.digits import digit_images
from edgewise.models.retrain import correction_rows, gate, held_out, latest_corrections

NOW = 1_800_000_000.0


def correction(sid: str, label: int | None, pixels: np.ndarray, at: float = NOW
               ) -> dict[str, Any]:
    item = {"id": sid, "kind": "digits", "shape": [8, 8],
            "image_b64": base64.b64encode(pixels.astype(np.uint8).tobytes()).decode()}
    return {"id": sid, "label": label, "predicted": 0, "model": "digits", "model_version": 1,
            "corrected_at": at, "item": item}


def test_the_newest_correction_stands_and_a_taken_back_one_does_not() -> None:
    pixels = np.zeros((8, 8))
    latest = latest_corrections([correction("a", 1, pixels, NOW), correction("a", 2, pixels,
                                 NOW + 1), correction("b", 3, pixels, NOW),
                                 correction("b", None, pixels, NOW + 1),
                                 correction("c", 4, pixels, NOW + 2),
                                 correction("c", 5, pixels, NOW + 1)])
    assert {k: v["label"] for k, v in latest.items()} == {"a": 2, "c": 4}


def test_rows_split_by_id_and_samples_without_pixels_are_counted() -> None:
    images, labels = digit_images()
    records = {f"s{i}": correction(f"s{i}", int(labels[i]), images[i]) for i in range(200)}
    records["faces"] = {**correction("faces", 1, images[0]), "item": {"kind": "faces"}}
    rows = correction_rows(records)
    assert rows.skipped == 1 and len(rows) == 200
    assert len(rows.y_held) == sum(held_out(f"s{i}") for i in range(200))
    assert 20 < len(rows.y_held) < 80 and rows.x_train.shape[1] == 64


def test_the_gate_promotes_only_what_is_not_worse_by_the_margin() -> None:
    served = {"accuracy": 0.97, "corrections_accuracy": 0.40}
    assert gate({"accuracy": 0.965, "corrections_accuracy": 0.8}, served, 0.01)[0]
    ok, reason = gate({"accuracy": 0.95, "corrections_accuracy": 0.8}, served, 0.01)
    assert not ok and "accuracy 0.9500 < served 0.9700" in reason
    assert gate({"accuracy": 0.97, "corrections_accuracy": None}, served, 0.0)[0]
