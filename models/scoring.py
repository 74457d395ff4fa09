"""Scoring whole batches: one vectorised ``predict_proba`` call, then top-k by array maths.

The hub's score stage and the edge device run the same code: :class:`ModelHolder` serves
a registry version and :func:`predict_batches` scores many sample batches in one call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgewise.app.core.frames import BadInput
from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.records import TABULAR, PredictionBatch, SampleBatch
from edgewise.models.registry import ModelMeta, ModelRegistry, PromotionLog, RegistryError

log = logging.getLogger("edgewise.score")


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


class ModelHolder:
    """The model being served, swapped when another version is promoted, and the candidate
    scored beside it in shadow while one is."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.model: Any = None
        self.meta: ModelMeta | None = None
        self.schema: InputSchema | None = None  # the served model's, when tabular
        self.shadow_model: Any = None
        self.shadow_meta: ModelMeta | None = None
        self._shadow_refused: int | None = None

    def refresh(self) -> bool:
        """Load the promoted version (the newest when none was promoted) if it is not the
        one served, and the shadow candidate if it changed; True when the served model was
        swapped. A candidate registered but not promoted is not served; a rollback swaps
        back."""
        promotions = PromotionLog(self.registry, self.name)
        wanted = promotions.served()
        swapped = False
        if wanted is not None and (self.meta is None or self.meta.version != wanted):
            model, meta = self.registry.load(self.name, wanted)
            self.model, self.meta, self.schema = model, meta, meta.schema()
            log.warning("score: serving model %s v%d", meta.name, meta.version)
            swapped = True
        self._refresh_shadow(promotions.shadow())
        return swapped

    def check(self, batch: SampleBatch) -> None:
        """BadInput when the served model was not made for ``batch``: samples of another
        kind, or tabular rows its input schema refuses (the wrong width, a missing value
        where the feature may not be missing)."""
        meta = self.meta
        assert meta is not None
        if batch.kind != meta.kind:
            raise BadInput("wrong_kind", f"{batch.kind[:50]} samples; the served model "
                                         f"{meta.name} v{meta.version} scores {meta.kind}")
        if meta.kind == TABULAR and self.schema is not None:
            self.schema.check_rows(batch.pixels)

    def refuse_shadow(self) -> None:
        """Stop scoring the shadow candidate (it failed on live samples), for good."""
        if self.shadow_meta is not None:
            self._shadow_refused = self.shadow_meta.version
        self.shadow_model = self.shadow_meta = None

    def _refresh_shadow(self, entry: dict[str, Any] | None) -> None:
        version = None if entry is None else int(entry["version"])
        if version in (self.shadow_meta.version if self.shadow_meta else None,
                       self._shadow_refused):
            return
        self.shadow_model = self.shadow_meta = None
        if version is None:
            return
        try:
            self.shadow_model, self.shadow_meta = self.registry.load(self.name, version)
        except RegistryError as exc:  # the served model stays; the shadow times out
            self._shadow_refused = version
            log.error("score: not scoring candidate v%d in shadow: %s", version, exc)
            return
        log.warning("score: scoring model %s v%d in shadow", self.name, version)


def predict_batches(
    model: Any, meta: ModelMeta, batches: list[SampleBatch], top_k: int, now: float | None = None
) -> list[PredictionBatch]:
    """Score many batches with one model call and split the answers back per batch."""
    features = np.concatenate([b.features() for b in batches])
    scores = score_rows(model, features, top_k)
    scored_at = time.time() if now is None else now
    out = []
    start = 0
    for batch in batches:
        end = start + len(batch)
        out.append(PredictionBatch(
            device=batch.device, kind=batch.kind, model=meta.name, model_version=meta.version,
            ids=batch.ids, timestamps=batch.timestamps, true_labels=batch.labels,
            labels=scores.labels[start:end], confidence=scores.confidence[start:end],
            top_labels=scores.top_labels[start:end], top_probs=scores.top_probs[start:end],
            latency_ms=((scored_at - batch.timestamps) * 1000.0).astype(np.float32),
            pixels=batch.pixels, scored_at=scored_at,
        ))
        start = end
    return out
