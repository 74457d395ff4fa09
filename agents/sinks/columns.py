"""A gathering's batches as the array parameters of a sink's insert (``sinks.tables``).

asyncpg encodes an array parameter at about a third of a microsecond per element, which
is most of what a write costs this process, so as few elements as possible travel: what a
batch holds once (device, kind, model and version, when it was scored, the width of its
top-k, its row shape) goes once per batch, and each row says only its batch (and what is
its own: id, time, labels, confidence, latency); the variable-width values (top-k, a
tabular row) go as one flat array, pixels as one blob, and the server finds each row's
part from its batch's start and width and the row's place in it. Unknown labels stay -1
(the server makes them NULL), times epoch seconds (the server makes timestamps), NaN in
a tabular row marks a missing value (the server stores NULL there). A sample twice in one
gathering is sent once: one ``INSERT … ON CONFLICT DO UPDATE`` may not touch a row twice.
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
    per_device: dict[str, list[B]] = {}
    for batch in batches:
        per_device.setdefault(batch.device, []).append(batch)
    if all(len(group) == 1 or len({i for b in group for i in b.ids}) == sum(
            len(b) for b in group) for group in per_device.values()):
        return [None] * len(batches)  # a frame holds each id once (checked at decoding)
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


def row_columns(batches: Sequence[B], masks: list[np.ndarray | None], names: Sequence[str]
                ) -> tuple[list[str], list[int], dict[str, list[Any]], list[int]]:
    """(ids, each row's batch (1-based), the named per-row columns, each batch's first row)
    of the kept rows."""
    ids: list[str] = []
    batch_of: list[int] = []
    first: list[int] = []
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for n, (batch, mask) in enumerate(zip(batches, masks, strict=True), start=1):
        part = _ids(batch, mask)
        first.append(len(ids))
        ids += part
        batch_of += [n] * len(part)
        for name, values in columns.items():
            values += _col(getattr(batch, name), mask).tolist()
    return ids, batch_of, columns, first


def flat(parts: list[np.ndarray]) -> tuple[list[Any], list[int], list[int]]:
    """2-D parts (rows, each part its own width) as one flat list, with each part's start
    in it and its width."""
    values: list[Any] = []
    starts: list[int] = []
    widths: list[int] = []
    for part in parts:
        starts.append(len(values))
        widths.append(int(np.prod(part.shape[1:], dtype=np.int64)))
        values += part.reshape(-1).tolist()
    return values, starts, widths


def prediction_params(batches: Sequence[PredictionBatch]) -> tuple[int, list[Any]]:
    """(rows, the parameters of ``tables.PREDICTION_INSERT``, in order)."""
    masks = kept_rows(batches, newest_scoring)
    ids, batch_of, columns, first = row_columns(
        batches, masks, ("labels", "confidence", "true_labels", "latency_ms", "timestamps"))
    top_labels, top_at, top_k = flat([_col(b.top_labels, m) for b, m in zip(
        batches, masks, strict=True)])
    top_probs, _, _ = flat([_col(b.top_probs, m) for b, m in zip(batches, masks, strict=True)])
    return len(ids), [
        [b.device for b in batches], [b.kind for b in batches], [b.model for b in batches],
        [b.model_version for b in batches], [b.scored_at for b in batches], first, top_k,
        top_at, top_labels, top_probs, ids, batch_of, columns["labels"], columns["confidence"],
        columns["true_labels"], columns["latency_ms"], columns["timestamps"], len(ids)]


def sample_params(batches: Sequence[SampleBatch]) -> tuple[int, list[Any]]:
    """(rows, the parameters of ``tables.SAMPLE_INSERT``, in order)."""
    masks = kept_rows(batches)
    ids, batch_of, columns, first = row_columns(batches, masks, ("timestamps", "labels"))
    shapes = [np.asarray(b.pixels.shape[1:], dtype=np.int64)[None, :] for b in batches]
    shape, shape_at, shape_len = flat(shapes)
    images = [_col(b.pixels, m) if b.kind != TABULAR else None
              for b, m in zip(batches, masks, strict=True)]
    rows = [_col(b.pixels, m) if b.kind == TABULAR else np.zeros((0, 0), np.float32)
            for b, m in zip(batches, masks, strict=True)]
    features, features_at, features_width = flat(rows)
    blob, pixels_at, pixels_width = [], [], []
    at = 0
    for image in images:
        pixels_at.append(at)
        width = 0 if image is None else int(np.prod(image.shape[1:], dtype=np.int64))
        pixels_width.append(width)
        if image is not None:
            blob.append(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
            at += width * len(image)
    return len(ids), [
        [b.device for b in batches], [b.kind for b in batches], first, shape, shape_at,
        shape_len, pixels_at, pixels_width, features_at, features_width, b"".join(blob),
        features, ids, batch_of, columns["timestamps"], columns["labels"], len(ids)]
