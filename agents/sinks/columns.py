"""A gathering's batches as the array parameters of a sink's upsert (``sinks.tables``).

Each column is built for all rows at once (``tolist`` of a numpy column, lists repeated for
a batch's constants); variable-width values go as one flat array (or one blob of bytes)
with each row's offset and length. Unknown labels stay -1 (the server makes them NULL),
times epoch seconds (the server makes timestamps), NaN in a tabular row marks a missing
value (the server stores NULL there). A sample twice in one gathering is sent once: one
``INSERT … ON CONFLICT DO UPDATE`` may not touch a row twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from edgewise.app.core.records import TABULAR, PredictionBatch, SampleBatch

B = TypeVar("B", PredictionBatch, SampleBatch)


def newest_scoring(batch: PredictionBatch) -> tuple[float, int]:
    """What decides between two predictions of one sample: scored later, then the newer
    model version (the upsert's rule too)."""
    return batch.scored_at, batch.model_version


def kept_rows(batches: Sequence[B], rank: Callable[[B], Any] | None = None
              ) -> list[np.ndarray | None]:
    """Per batch, a mask of the rows to send (None: all of them): each ``(device, id)``
    once, from the batch with the highest ``rank``, else from the first that has it."""
    total = sum(len(b) for b in batches)
    if len({(b.device, i) for b in batches for i in b.ids}) == total:
        return [None] * len(batches)
    masks = [np.ones(len(b), dtype=bool) for b in batches]
    holder: dict[tuple[str, str], tuple[int, int]] = {}
    for n, batch in enumerate(batches):
        for row, sample_id in enumerate(batch.ids):
            key = (batch.device, sample_id)
            held = holder.get(key)
            if held is None:
                holder[key] = (n, row)
            elif rank is not None and rank(batch) > rank(batches[held[0]]):
                masks[held[0]][held[1]] = False
                holder[key] = (n, row)
            else:
                masks[n][row] = False
    return [None if m.all() else m for m in masks]


def _ids(batch: B, mask: np.ndarray | None) -> list[str]:
    return batch.ids if mask is None else [i for i, keep in zip(batch.ids, mask,
                                                                strict=True) if keep]


def _col(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return values if mask is None else values[mask]


def flat_with_offsets(parts: list[np.ndarray]) -> tuple[list[Any], list[int], list[int]]:
    """2-D parts (rows of varying width between parts) as one flat list, with each row's
    offset and length in it."""
    flat: list[Any] = []
    offsets: list[int] = []
    lengths: list[int] = []
    at = 0
    for part in parts:
        n, width = part.shape[0], int(np.prod(part.shape[1:], dtype=np.int64))
        flat += part.reshape(-1).tolist()
        offsets += range(at, at + n * width, width) if width else [at] * n
        lengths += [width] * n
        at += n * width
    return flat, offsets, lengths


def prediction_params(batches: Sequence[PredictionBatch]) -> tuple[int, list[Any]]:
    """(rows, the fifteen parameters of ``tables.PREDICTION_UPSERT``)."""
    masks = kept_rows(batches, newest_scoring)
    devices: list[str] = []
    ids: list[str] = []
    kinds: list[str] = []
    models: list[str] = []
    versions: list[int] = []
    scored: list[float] = []
    columns: dict[str, list[Any]] = {c: [] for c in (
        "labels", "confidence", "true_labels", "latency_ms", "timestamps")}
    tops_l, tops_p = [], []
    for batch, mask in zip(batches, masks, strict=True):
        part = _ids(batch, mask)
        n = len(part)
        ids += part
        devices += [batch.device] * n
        kinds += [batch.kind] * n
        models += [batch.model] * n
        versions += [batch.model_version] * n
        scored += [batch.scored_at] * n
        for name, values in columns.items():
            values += _col(getattr(batch, name), mask).tolist()
        tops_l.append(_col(batch.top_labels, mask))
        tops_p.append(_col(batch.top_probs, mask))
    top_labels, top_at, top_k = flat_with_offsets(tops_l)
    top_probs, _, _ = flat_with_offsets(tops_p)
    return len(ids), [devices, ids, kinds, models, versions, columns["labels"],
                      columns["confidence"], top_labels, top_probs, top_at, top_k,
                      columns["true_labels"], columns["latency_ms"], columns["timestamps"],
                      scored]


def sample_params(batches: Sequence[SampleBatch]) -> tuple[int, list[Any]]:
    """(rows, the fourteen parameters of ``tables.SAMPLE_UPSERT``)."""
    masks = kept_rows(batches)
    devices: list[str] = []
    ids: list[str] = []
    kinds: list[str] = []
    times: list[float] = []
    labels: list[int] = []
    shapes, blobs, rows = [], [], []
    pixels_len: list[int] = []
    for batch, mask in zip(batches, masks, strict=True):
        part = _ids(batch, mask)
        n = len(part)
        ids += part
        devices += [batch.device] * n
        kinds += [batch.kind] * n
        times += _col(batch.timestamps, mask).tolist()
        labels += _col(batch.labels, mask).tolist()
        values = _col(batch.pixels, mask)
        shapes.append(np.tile(np.asarray(values.shape[1:], dtype=np.int64), (n, 1)))
        if batch.kind == TABULAR:
            rows.append(values.astype(np.float32, copy=False))
            blobs.append(np.zeros((n, 0), dtype=np.uint8))
        else:
            blobs.append(np.ascontiguousarray(values, dtype=np.uint8).reshape(n, -1))
            rows.append(np.zeros((n, 0), dtype=np.float32))
        pixels_len += [blobs[-1].shape[1]] * n
    shape, shape_at, shape_len = flat_with_offsets(shapes)
    features, features_at, features_len = flat_with_offsets(rows)
    pixels_at = np.concatenate([[0], np.cumsum(pixels_len)[:-1]]).astype(np.int64).tolist() \
        if pixels_len else []
    blob = b"".join(b.tobytes() for b in blobs)
    return len(ids), [devices, ids, kinds, times, labels, shape, shape_at, shape_len, blob,
                      pixels_at, pixels_len, features, features_at, features_len]
