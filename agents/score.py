"""score: sample batches in, prediction batches out, one ``predict_proba`` per gathering.

When batches queue up, ``stream.take`` hands over up to ``score_take`` of them at once and
the model sees them as one matrix. A newer registered version is swapped in without a
restart (the registry is polled, and a message on the model-updates topic triggers a look).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from edgewise.app.context import StageContext
from edgewise.app.frames import BadInput
from edgewise.app.records import PredictionBatch, SampleBatch
from edgewise.app.wire import decode_sample_batch, encode_prediction_batch, encode_sample_batch
from edgewise.models.registry import ModelMeta, ModelRegistry, RegistryError
from edgewise.models.scoring import score_rows

STAGE = "score"
MODEL_POLL_SECONDS = 2.0
log = logging.getLogger("edgewise.score")


class ModelHolder:
    """The model being served, swapped when the registry has a newer version."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.model: Any = None
        self.meta: ModelMeta | None = None

    def refresh(self) -> bool:
        """Load the newest version if it is not the one served; True when swapped."""
        latest = self.registry.latest(self.name)
        if latest is None or (self.meta is not None and self.meta.version == latest):
            return False
        model, meta = self.registry.load(self.name, latest)
        self.model, self.meta = model, meta
        log.warning("score: serving model %s v%d", meta.name, meta.version)
        return True


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


def register(ctx: StageContext) -> None:
    """Attach the score agent and its model watcher to the app."""
    settings = ctx.settings
    holder = ModelHolder(ModelRegistry(settings.models_dir), settings.model_name)
    holder.refresh()  # fail at start, clearly, when there is no model
    ctx.model_holder = holder
    predictions = ctx.topic(ctx.names.predictions)
    source = ctx.names.samples

    @ctx.app.agent(ctx.topic(source), name="edgewise.score")
    async def score(stream: Any) -> None:
        async for values in stream.take(settings.score_take, within=settings.score_take_within):
            batches = []
            for raw in values:
                try:
                    batches.append(decode_sample_batch(
                        raw, settings.max_message_bytes, settings.max_batch_samples))
                except Exception as exc:  # bad input, or a decoder bug: never the stage
                    await ctx.dead_letter(STAGE, exc, raw, source)
            ctx.count(STAGE, events_in=len(values))
            if batches:
                await score_and_send(ctx, holder, batches, predictions)

    @ctx.app.agent(ctx.topic(ctx.names.model_updates), name="edgewise.model_updates")
    async def model_updates(stream: Any) -> None:
        async for _ in stream:
            await asyncio.get_running_loop().run_in_executor(None, _safe_refresh, holder)

    @ctx.app.timer(MODEL_POLL_SECONDS)
    async def watch_registry() -> None:
        await asyncio.get_running_loop().run_in_executor(None, _safe_refresh, holder)


def _safe_refresh(holder: ModelHolder) -> None:
    try:
        holder.refresh()
    except RegistryError as exc:
        log.error("score: keeping the current model: %s", exc)


async def score_and_send(
    ctx: StageContext, holder: ModelHolder, batches: list[SampleBatch], predictions: Any
) -> None:
    """Score, count, and send one prediction frame per input batch."""
    assert holder.meta is not None
    try:
        results = predict_batches(holder.model, holder.meta, batches, ctx.settings.top_k)
    except ValueError:
        # one batch the model cannot take (say a kind it was not trained on): find it
        results = []
        for batch in batches:
            try:
                results += predict_batches(holder.model, holder.meta, [batch], ctx.settings.top_k)
            except ValueError as exc:
                await ctx.dead_letter(STAGE, BadInput("model_rejected", str(exc)),
                                      encode_sample_batch(batch), ctx.names.samples)
    totals = ctx.metrics.totals
    for result in results:
        known = result.true_labels >= 0
        totals.predictions += len(result)
        totals.labelled += int(known.sum())
        totals.correct += int((result.labels[known] == result.true_labels[known]).sum())
        totals.per_device[result.device] += len(result)
        ctx.metrics.observe_latencies(result.latency_ms)
        await predictions.send(key=result.device.encode(), value=encode_prediction_batch(result))
    ctx.count(STAGE, events_out=len(results), samples=sum(len(r) for r in results))
