"""refs: images by reference, fetched from S3 or the image directory, as digit samples.

Reads the refs topic: object references (``s3://bucket/key``, a path under
``image_dir``) and S3 or MinIO event notifications (``core.object_refs``). Each gathering's
objects are fetched at once, ``refs_concurrency`` at a time (``adapters.object_fetch``:
only the configured buckets, sizes checked before and while reading, each attempt bounded
by ``refs_fetch_timeout_seconds``); an attempt that fails for want of the store (down,
slow, throttling) is made again with backoff, for as long as it takes, so the stream waits
rather than loses an image. Each image's header is read and held to
``refs_max_pixels`` before it is decoded (``adapters.image_decoding``), then it is made an
8x8 gray digit (the digits kind) and the gathering's samples leave as one batch per device
(``refs_device`` unless the reference names one) on the samples topic, where the score
stage takes them. The true label, when known, comes from the reference or from the
object's metadata (``label``).

A missing object, one too large, a bucket not configured, a path out of the image
directory, an image that is corrupt or too large to decode: each is dead-lettered with
its reason, the reference in the detail and its message as the original; the other
references go on. A gathering's input is committed only once its samples are sent; a stop
in the middle of it leaves it to be read again. Replicas share the topic's partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from edgewise.app.adapters.image_decoding import decode_gray, frame_to_digit
from edgewise.app.adapters.object_fetch import FetchedObject, ObjectFetcher
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.bounds import MAX_LABEL
from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.object_refs import ObjectRef, RefLimits, parse_refs
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.wire import encode_sample_batch

STAGE = "refs"
KIND = "digits"
REFS_TAKE = 64  # messages gathered per round (each may hold many references)
REFS_TAKE_WITHIN = 0.05
log = logging.getLogger("edgewise.refs")


def metadata_label(metadata: dict[str, str], url: str) -> int:
    """The ``label`` an object's metadata gives (-1 without one); a label that is not a
    class is refused, as everywhere."""
    text = metadata.get("label")
    if text is None or text == "":
        return -1
    if not text.isdigit() or int(text) > MAX_LABEL:
        raise BadInput("bad_label", f"{url[:300]}: metadata label {text[:20]!r} is not a "
                                    f"class in 0..{MAX_LABEL}")
    return int(text)


def to_sample(ref: ObjectRef, fetched: FetchedObject, max_pixels: int
              ) -> tuple[ObjectRef, np.ndarray, int]:
    """(reference, 8x8 digit, label) of a fetched image; BadInput when it is not one."""
    try:
        gray = decode_gray(fetched.body, max_pixels)
    except BadInput as exc:
        raise BadInput(exc.reason, f"{ref.url[:300]}: {exc.detail}") from None
    label = ref.label if ref.label >= 0 else metadata_label(fetched.metadata, ref.url)
    return ref, frame_to_digit(gray), label


def distinct(refs: list[tuple[bytes, ObjectRef]]) -> list[tuple[bytes, ObjectRef]]:
    """Each sample id once per gathering (an object notified twice), the first kept."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for raw, ref in refs:
        if (ref.device, ref.id) not in seen:
            seen.add((ref.device, ref.id))
            kept.append((raw, ref))
    return kept


def packed(samples: list[tuple[ObjectRef, np.ndarray, int]], now: float, max_samples: int
           ) -> list[SampleBatch]:
    """One batch per device, at most ``max_samples`` each, in arrival order."""
    by_device: dict[str, list[tuple[ObjectRef, np.ndarray, int]]] = {}
    for sample in samples:
        by_device.setdefault(sample[0].device, []).append(sample)
    batches = []
    for device, group in by_device.items():
        for start in range(0, len(group), max_samples):
            part = group[start:start + max_samples]
            batches.append(SampleBatch(
                device=device, kind=KIND, ids=[ref.id for ref, _, _ in part],
                timestamps=np.array([now if ref.timestamp is None else ref.timestamp
                                     for ref, _, _ in part], dtype=np.float64),
                labels=np.array([label for _, _, label in part], dtype=np.int32),
                pixels=np.stack([digit for _, digit, _ in part]).astype(np.uint8)))
    return batches


class RefFetching:
    """Fetch and decode references, bounded in concurrency, transient failures retried."""

    def __init__(self, ctx: StageContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.fetcher = ObjectFetcher(s)
        self.slots = asyncio.Semaphore(s.refs_concurrency)
        self.max_pixels = s.refs_max_pixels
        self.first, self.longest = s.reconnect_min_seconds, s.reconnect_max_seconds
        self.failing: set[str] = set()

    async def sample(self, ref: ObjectRef) -> tuple[ObjectRef, np.ndarray, int] | BadInput:
        """The reference's sample, or the BadInput to dead-letter it with."""
        try:
            async with self.slots:
                fetched = await self.fetched(ref)
                return await asyncio.to_thread(to_sample, ref, fetched, self.max_pixels)
        except BadInput as refused:
            return refused
        except Exception as exc:  # a decoder's bug costs this image, never the stage
            return BadInput("stage_error", f"{ref.url[:300]}: {type(exc).__name__}: {exc}")

    async def fetched(self, ref: ObjectRef) -> FetchedObject:
        backoff = Backoff(self.first, self.longest)
        while True:
            try:
                return await self.fetcher.fetch(ref)
            except BadInput:
                raise
            except Exception as exc:  # the store, not the object: wait and ask again
                reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                self.ctx.metrics.retries.labels(STAGE, reason).inc()
                if reason not in self.failing:
                    self.failing.add(reason)
                    log.warning("refs: fetching failed (%s: %s); retrying with backoff",
                                reason, str(exc)[:200])
                await asyncio.sleep(backoff.next())


def register(ctx: StageContext) -> None:
    """Attach the refs agent to the app."""
    settings = ctx.settings
    fetching = RefFetching(ctx)
    limits = RefLimits(buckets=settings.allowed_buckets, default_device=settings.refs_device,
                       max_bytes=settings.max_message_bytes,
                       max_refs=settings.max_batch_samples,
                       future_skew=ctx.boundary.future_skew)
    source = ctx.names.refs

    @ctx.app.on_before_shutdown.connect
    async def close_fetcher(app: Any, **kwargs: Any) -> None:
        await fetching.fetcher.close()

    @ctx.agent(ctx.topic(source), name="edgewise.refs", stage=STAGE)
    async def refs(stream: Any) -> None:
        async for values in stream.take(REFS_TAKE, within=REFS_TAKE_WITHIN):
            ctx.count(STAGE, events_in=len(values))
            with ctx.finishing(STAGE):
                await handle(ctx, fetching, limits, source, values)


async def handle(ctx: StageContext, fetching: RefFetching, limits: RefLimits, source: str,
                 values: list[bytes]) -> None:
    """One gathering: its references fetched, its samples sent, the rest dead-lettered."""
    jobs: list[tuple[bytes, ObjectRef]] = []
    for raw in values:
        ok, message = await ctx.decode_or_dead_letter(STAGE, raw, source,
                                                      lambda data: parse_refs(data, limits))
        if not ok:
            continue
        for refused in message.refused:  # type: ignore[union-attr]
            await ctx.dead_letter(STAGE, refused, raw, source)
        jobs += [(raw, ref) for ref in message.refs]  # type: ignore[union-attr]
    jobs = distinct(jobs)
    results = await asyncio.gather(*(fetching.sample(ref) for _, ref in jobs))
    samples = []
    for (raw, _), result in zip(jobs, results, strict=True):
        if isinstance(result, BadInput):
            await ctx.dead_letter(STAGE, result, raw, source)
        else:
            samples.append(result)
    for batch in packed(samples, time.time(), ctx.settings.max_batch_samples):
        try:
            batch = ctx.boundary.sample_batch(batch)
        except BadInput as exc:  # made here from checked parts; a bug costs its batch
            await ctx.dead_letter(STAGE, exc, encode_sample_batch(batch), source)
            continue
        await ctx.send(STAGE, ctx.names.samples, batch.device.encode(),
                       encode_sample_batch(batch), source)
        ctx.count(STAGE, events_out=1, samples=len(batch))
