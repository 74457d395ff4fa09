"""score: sample batches in, prediction batches out, one ``predict_proba`` per gathering.

When batches queue up, ``stream.take`` hands over up to ``score_take`` of them at once and
the model sees them as one matrix; the batches of one device in a gathering leave as one
prediction frame (within ``max_batch_samples`` and half the record limit), so under load
the stages downstream handle fewer, larger records. A newer registered version is swapped
in without a restart (the registry is polled, and a message on the model-updates topic
triggers a look).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import PredictionBatch, SampleBatch, merged_per_device
from edgewise.app.core.shadow import ShadowTally, tally
from edgewise.app.core.topics import max_record_bytes
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from edgewise.models.registry import ModelRegistry, RegistryError
from edgewise.models.scoring import ModelHolder, predict_batches

STAGE = "score"
MODEL_POLL_SECONDS = 2.0
log = logging.getLogger("edgewise.score")


def register(ctx: StageContext) -> None:
    """Attach the score agent and its model watcher to the app."""
    settings = ctx.settings
    holder = ModelHolder(ModelRegistry(settings.models_dir), settings.model_name)
    holder.refresh()  # fail at start, clearly, when there is no model
    ctx.model_holder = holder
    source = ctx.names.samples

    @ctx.agent(ctx.topic(source), name="edgewise.score", stage=STAGE)
    async def score(stream: Any) -> None:
        async for values in stream.take(settings.score_take, within=settings.score_take_within):
            batches = []
            for raw in values:
                ok, batch = await ctx.decode_or_dead_letter(STAGE, raw, source,
                                                            ctx.boundary.samples)
                if ok:
                    try:
                        holder.check(batch)  # the model's kind; a tabular model's schema
                    except BadInput as exc:
                        await ctx.dead_letter(STAGE, exc, raw, source)
                        continue
                    batches.append(batch)
            ctx.count(STAGE, events_in=len(values))
            if batches:
                await score_and_send(ctx, holder, batches)

    @ctx.agent(ctx.topic(ctx.names.model_updates), name="edgewise.model_updates", stage=STAGE)
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


def shadow_tally(holder: ModelHolder, joined: list[SampleBatch],
                 served: list[PredictionBatch]) -> ShadowTally | None:
    """The shadow candidate's tally on the samples just scored, when one is in shadow; a
    candidate that fails on them is not counted (and says so once)."""
    model, meta = holder.shadow_model, holder.shadow_meta
    if model is None or meta is None or not served:
        return None
    try:
        return tally(served, predict_batches(model, meta, joined, 1))
    except Exception as exc:
        holder.refuse_shadow()
        log.error("score: candidate v%d failed in shadow, no longer scored: %s: %s",
                  meta.version, type(exc).__name__, exc)
        return None


async def score_and_send(
    ctx: StageContext, holder: ModelHolder, batches: list[SampleBatch]
) -> None:
    """Score, count, and send one prediction frame per device of the gathering."""
    assert holder.meta is not None
    settings = ctx.settings
    joined = merged_per_device(batches, settings.max_batch_samples,
                               max_record_bytes(settings) // 2)
    shadow: ShadowTally | None = None
    try:
        results = predict_batches(holder.model, holder.meta, joined, settings.top_k)
        shadow = shadow_tally(holder, joined, results)
    except Exception:
        # one batch the model cannot take (say a kind it was not trained on): find it
        results = []
        for batch in batches:
            try:
                results += predict_batches(holder.model, holder.meta, [batch], settings.top_k)
            except Exception as exc:  # the model refused it, or failed on it: this batch only
                await ctx.dead_letter(STAGE, BadInput("model_rejected",
                                                      f"{type(exc).__name__}: {exc}"),
                                      encode_sample_batch(batch), ctx.names.samples)
    totals = ctx.metrics.totals
    for result in results:
        known = result.true_labels >= 0
        totals.predictions += len(result)
        totals.labelled += int(known.sum())
        totals.correct += int((result.labels[known] == result.true_labels[known]).sum())
        totals.per_device[result.device] += len(result)
        ctx.metrics.observe_latencies(result.latency_ms)
        ctx.metrics.observe_confidence(result.confidence)
    per_device: dict[str, list[PredictionBatch]] = {}
    for result in results:
        per_device.setdefault(result.device, []).append(result)

    async def send_in_order(frames: list[PredictionBatch]) -> None:
        for frame in frames:  # a device's frames keep their order on its partition
            await ctx.send(STAGE, ctx.names.predictions, frame.device.encode(),
                           encode_prediction_batch(frame), ctx.names.samples)

    # devices side by side: one waiting for its partition's batch holds back no other
    sends = [send_in_order(frames) for frames in per_device.values()]
    if shadow is not None:
        sends.append(ctx.send(STAGE, ctx.names.shadow, shadow.model.encode(), shadow.encode(),
                              ctx.names.samples))
    await asyncio.gather(*sends)
    ctx.count(STAGE, events_out=len(results), samples=sum(len(r) for r in results))
