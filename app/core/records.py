"""The typed records of edgewise, each with a schema version.

Single items (``Sample``, ``Prediction``, ``ReviewItem``, ``DeadLetter``) are Faust
records: they are what views, the review queue and the dead-letter topic carry. Between
stages the unit is a batch from one device (``SampleBatch``, ``PredictionBatch``): column
arrays, so a stage pays Python costs once per batch, not once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
import numpy as np

SCHEMA_VERSION = 1

#: Image sample kinds and their image shape and pixel value range (pixels are uint8).
SAMPLE_KINDS: dict[str, tuple[tuple[int, ...], float, float]] = {
    "digits": ((8, 8), 0.0, 16.0),
}
#: The other kind: rows of named features, float32, NaN where a value is missing, as many
#: per row as the model's input schema names (``bounds.MAX_FEATURES`` at most). A tabular
#: batch carries its rows where an image batch carries its pixels.
TABULAR = "tabular"


def known_kind(kind: object) -> bool:
    """A kind a sample or prediction frame may say it is."""
    return kind == TABULAR or kind in SAMPLE_KINDS


class Sample(faust.Record, serializer="json"):
    """One sample from one device. ``payload`` holds the pixels as raw bytes (uint8)."""

    device: str
    id: str
    timestamp: float
    kind: str
    payload: bytes
    shape: list[int]
    label: int | None = None
    schema: int = SCHEMA_VERSION


class Prediction(faust.Record, serializer="json"):
    """The model's answer for one sample."""

    device: str
    id: str
    model: str
    model_version: int
    label: int
    confidence: float
    top_k: list[tuple[int, float]]
    latency_ms: float
    timestamp: float
    true_label: int | None = None
    schema: int = SCHEMA_VERSION


class ReviewItem(faust.Record, serializer="json"):
    """A prediction a person should look at, with the image (or the row) and the top-k."""

    id: str
    device: str
    model: str
    model_version: int
    label: int
    confidence: float
    margin: float
    top_k: list[tuple[int, float]]
    image_b64: str
    shape: list[int]
    timestamp: float
    true_label: int | None = None
    reason: str = ""
    image_url: str = ""
    kind: str = "digits"
    #: a tabular sample's row in place of an image (``image_b64`` empty, ``shape`` its
    #: width): the feature values in the model's schema order, None where missing
    row: list[float | None] | None = None
    schema: int = SCHEMA_VERSION


class DeadLetter(faust.Record, serializer="json"):
    """Input a stage could not use: why, where, and the original bytes (base64), whole when
    they fit the topic's limit, else cut (``truncated``) with their length and sha256."""

    stage: str
    reason: str
    detail: str
    original_b64: str
    topic: str
    timestamp: float
    key_b64: str = ""
    original_length: int = 0
    original_sha256: str = ""
    truncated: bool = False
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Origin:
    """Where an input record came from: its partition and offset on the source topic."""

    partition: int
    offset: int


def row_values(values: np.ndarray) -> list[float | None]:
    """One tabular row as JSON takes it: its float32 values at their shortest (``13.2``, not
    ``13.199999809265137``), None where missing."""
    return [None if v != v else float(str(v)) for v in values.astype(np.float32)]


def top_k_pairs(labels: np.ndarray, probs: np.ndarray) -> list[tuple[int, float]]:
    """(label, probability) pairs of one prediction, best first."""
    return [(int(a), float(b)) for a, b in zip(labels, probs, strict=True)]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Samples from one device, as columns. ``labels`` is -1 where the truth is unknown.

    ``pixels`` holds what the model reads: uint8 images for image kinds, float32 feature
    rows (NaN: missing) for the tabular kind.
    """

    device: str
    kind: str
    ids: list[str]
    timestamps: np.ndarray  # float64 seconds since the epoch, shape (n,)
    labels: np.ndarray  # int32, shape (n,)
    pixels: np.ndarray  # uint8 (n, *image shape), or float32 (n, features) when tabular

    def __len__(self) -> int:
        return len(self.ids)

    def features(self) -> np.ndarray:
        """Pixels flattened to one row per sample, as the models take them."""
        return self.pixels.reshape(len(self.ids), -1)

    def samples(self) -> list[Sample]:
        """The batch as single Sample records (for views and tests, not the hot path)."""
        shape = list(self.pixels.shape[1:])
        return [
            Sample(
                device=self.device, id=sid, timestamp=float(self.timestamps[i]),
                kind=self.kind, payload=self.pixels[i].tobytes(), shape=shape,
                label=None if self.labels[i] < 0 else int(self.labels[i]),
            )
            for i, sid in enumerate(self.ids)
        ]


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """Predictions for one SampleBatch, as columns, with the samples' pixels and truth."""

    device: str
    kind: str
    model: str
    model_version: int
    ids: list[str]
    timestamps: np.ndarray  # float64, edge time of each sample
    true_labels: np.ndarray  # int32, -1 unknown
    labels: np.ndarray  # int32 predicted label
    confidence: np.ndarray  # float32 top-1 probability
    top_labels: np.ndarray  # int32 (n, k)
    top_probs: np.ndarray  # float32 (n, k)
    latency_ms: np.ndarray  # float32, edge timestamp to prediction
    pixels: np.ndarray  # uint8 (n, *image shape), or float32 (n, features) when tabular
    scored_at: float

    def __len__(self) -> int:
        return len(self.ids)

    def margins(self) -> np.ndarray:
        """Top-1 minus top-2 probability (1.0 when the model kept only one)."""
        if self.top_probs.shape[1] < 2:
            return np.ones(len(self.ids), dtype=np.float32)
        return self.top_probs[:, 0] - self.top_probs[:, 1]

    def predictions(self) -> list[Prediction]:
        """The batch as single Prediction records (for views and tests)."""
        return [
            Prediction(
                device=self.device, id=sid, model=self.model,
                model_version=self.model_version, label=int(self.labels[i]),
                confidence=float(self.confidence[i]),
                top_k=top_k_pairs(self.top_labels[i], self.top_probs[i]),
                latency_ms=float(self.latency_ms[i]), timestamp=float(self.timestamps[i]),
                true_label=None if self.true_labels[i] < 0 else int(self.true_labels[i]),
            )
            for i, sid in enumerate(self.ids)
        ]


#: Bytes a prediction frame carries per sample besides its pixels and id (the columns).
PREDICTION_COLUMN_BYTES = 64


def merged_per_device(batches: list[SampleBatch], max_samples: int,
                      max_bytes: int) -> list[SampleBatch]:
    """The batches of one gathering joined per device (same kind and image shape), in order
    of first arrival, each join within ``max_samples`` and, as a prediction frame, about
    ``max_bytes``: downstream stages then handle one record per device per gathering, not
    one per edge batch. A batch already over a bound stays as it is, and so does a batch
    repeating an id of the join (a frame holds each id once; the repeat is for the tables'
    dedupe to see)."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[_Join]] = {}
    order: list[_Join] = []
    for batch in batches:
        joins = groups.setdefault((batch.device, batch.kind, batch.pixels.shape[1:]), [])
        if joins and joins[-1].takes(batch, max_samples, max_bytes):
            joins[-1].add(batch)
            continue
        joins.append(_Join(batch))
        order.append(joins[-1])
    return [join.batch() for join in order]


def _frame_bytes(batch: SampleBatch) -> int:
    return batch.pixels.nbytes + sum(map(len, batch.ids)) + PREDICTION_COLUMN_BYTES * len(batch)


class _Join:
    """Batches of one device being joined, with their size and ids so far."""

    def __init__(self, first: SampleBatch) -> None:
        self.parts = [first]
        self.samples = len(first)
        self.bytes = _frame_bytes(first)
        self.ids = set(first.ids)

    def takes(self, batch: SampleBatch, max_samples: int, max_bytes: int) -> bool:
        return (self.samples + len(batch) <= max_samples
                and self.bytes + _frame_bytes(batch) <= max_bytes
                and self.ids.isdisjoint(batch.ids))

    def add(self, batch: SampleBatch) -> None:
        self.parts.append(batch)
        self.samples += len(batch)
        self.bytes += _frame_bytes(batch)
        self.ids.update(batch.ids)

    def batch(self) -> SampleBatch:
        if len(self.parts) == 1:
            return self.parts[0]
        first = self.parts[0]
        return SampleBatch(
            device=first.device, kind=first.kind, ids=[i for b in self.parts for i in b.ids],
            timestamps=np.concatenate([b.timestamps for b in self.parts]),
            labels=np.concatenate([b.labels for b in self.parts]),
            pixels=np.concatenate([b.pixels for b in self.parts]),
        )


def joined_predictions(batches: list[PredictionBatch]) -> PredictionBatch:
    """Prediction batches of one device, model version and kind as one batch, in order
    (``scored_at``: the last one's). Ids may repeat across them: the tables' dedupe
    counts the first."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])

    return PredictionBatch(
        device=first.device, kind=first.kind, model=first.model,
        model_version=first.model_version, ids=[i for b in batches for i in b.ids],
        timestamps=cat("timestamps"), true_labels=cat("true_labels"), labels=cat("labels"),
        confidence=cat("confidence"), top_labels=cat("top_labels"), top_probs=cat("top_probs"),
        latency_ms=cat("latency_ms"), pixels=cat("pixels"),
        scored_at=max(b.scored_at for b in batches),
    )
