"""image_sink: face crops and low-confidence images into the image store.

Two agents, one store (``app.object_store``: a local directory or S3):

- faces: every face crop from the edges is stored under ``face/<device>/<date>/<id>.png``
  with its confidence, box, device, model and time as metadata; a face the route rule
  finds doubtful also becomes a review item, pointing at the stored crop;
- review: every review item without an ``image_url`` (low-confidence digits from the route
  stage) has its pixels stored as a PNG, and is sent again, now pointing at the object.
  Items that already carry a URL are left alone, so the stage never loops on its output.

Review items go to the review topic as groups by partition (``core.review_groups``), as
route sends them: the doubtful faces of one gathering, and the stored items of one record.

Keys are stable per sample id, so a replay overwrites the same object (idempotent). A store
that is down is retried with backoff: the stream waits rather than drop an image. A store
that refuses an image for good (access denied, no such bucket, invalid parameters) would
stall the partition forever if retried, so such an image is dead-lettered instead. Images
of one gathering of messages are stored concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from edgewise.app.adapters.mqtt_payloads import FaceMessage, parse_face_payload
from edgewise.app.adapters.object_store import ImageStore, is_permanent, object_key, store_for
from edgewise.app.adapters.review_images import review_png
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import ReviewItem
from edgewise.app.core.review_groups import ReviewGroup, encode_review_groups, parse_review_group
from edgewise.models.review_rule import review_reasons, route_low_confidence

STAGE = "image_sink"
STORE_TAKE = 64  # messages gathered, and images stored concurrently, per round
STORE_TAKE_WITHIN = 0.05  # seconds to wait for a round to fill
log = logging.getLogger("edgewise.image_sink")
_ASCII_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))


class StoreRefused(Exception):
    """The store refused an image for good; retrying would stall the partition."""


def ascii_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata with non-ASCII characters percent-encoded: S3 refuses them, for ever."""
    return {quote(str(k), safe=_ASCII_SAFE): quote(str(v), safe=_ASCII_SAFE)
            for k, v in metadata.items()}


def face_review_item(face: FaceMessage, url: str, low: float, min_margin: float
                     ) -> ReviewItem | None:
    """A review item for a doubtful face (label 1: face, 0: not a face), or None."""
    confidence = face.confidence
    margin = 2.0 * confidence - 1.0  # top-1 minus top-2 of the two answers
    if not route_low_confidence(confidence, margin, low, min_margin):
        return None
    return ReviewItem(
        id=face.id, device=face.device, model=face.model, model_version=face.model_version,
        label=1, confidence=confidence, margin=margin,
        top_k=[(1, confidence), (0, round(1.0 - confidence, 6))], image_b64="",
        shape=[face.box[3], face.box[2], 3], timestamp=face.timestamp,
        reason=review_reasons(confidence, margin, low, min_margin), image_url=url, kind="face",
    )


def review_metadata(item: dict[str, Any]) -> dict[str, str]:
    """Object metadata of a review image: ASCII strings, as S3 wants."""
    return ascii_metadata({"kind": str(item.get("kind") or "digits"), "id": item["id"],
            "device": str(item["device"]), "confidence": f"{float(item['confidence']):.4f}",
            "model": f"{item['model']}:{item['model_version']}",
            "label": str(item["label"]), "timestamp": f"{float(item['timestamp']):.3f}"})


async def put_until_stored(store: ImageStore, key: str, body: bytes, metadata: dict[str, str],
                           backoff: Backoff) -> str:
    """Store one image, retrying with backoff while the store fails; its URL.

    A permanent refusal (see ``object_store.is_permanent``) raises StoreRefused instead: the caller
    dead-letters that one image and the stream moves on.
    """
    failing = False
    while True:
        try:
            url = await store.put(key, body, metadata)
        except Exception as exc:  # S3 down, disk full: wait and try again, never drop
            if is_permanent(exc):
                raise StoreRefused(f"{key[:200]}: {type(exc).__name__}: {str(exc)[:300]}"
                                   ) from exc
            if not failing:
                log.warning("image_sink: store failed (%s: %s); retrying", type(exc).__name__,
                            str(exc)[:200])
            failing = True
            await asyncio.sleep(backoff.next())
            continue
        if failing:
            log.warning("image_sink: store works again")
        return url


def review_image_jobs(
    raw: bytes, parse: Callable[[bytes], ReviewGroup] = parse_review_group,
) -> list[tuple[dict[str, Any], str, bytes]]:
    """(item, object key, PNG) for each item of a review record still without a stored
    image.

    Items that carry a URL (our own output, or faces) and items the review stage will
    dead-letter anyway (BadInput: the record, or the item alone) are skipped: one dead
    letter per bad item is enough. Any other error is raised, for the caller to dead-letter.
    """
    try:
        group = parse(raw)
    except BadInput:
        return []
    jobs = []
    for item in group.items:
        if item.get("image_url"):
            continue
        try:
            png = review_png(item)
        except BadInput:
            continue
        key = object_key(str(item.get("kind") or "digits"), str(item["device"]),
                         float(item["timestamp"]), item["id"])
        jobs.append((item, key, png))
    return jobs


def register(ctx: StageContext) -> None:
    """Attach the two image agents to the app.

    Each gathers up to ``STORE_TAKE`` messages and stores their images concurrently: one
    S3 PUT costs tens of milliseconds, and a sink that stored one at a time would fall
    behind the review topic it reads.
    """
    settings = ctx.settings
    store = store_for(settings)
    review_source = ctx.names.review
    review = ctx.topic(review_source)
    faces_source = ctx.names.faces

    async def put_all(jobs: list[tuple[str, bytes, dict[str, str]]]
                      ) -> list[str | StoreRefused]:
        """URL of each stored image, or the StoreRefused that the caller dead-letters."""
        results = await asyncio.gather(*(
            put_until_stored(store, key, body, ascii_metadata(meta), Backoff(
                settings.reconnect_min_seconds, settings.reconnect_max_seconds))
            for key, body, meta in jobs), return_exceptions=True)
        for result in results:  # anything but a refusal is a bug: let the stage report it
            if isinstance(result, BaseException) and not isinstance(result, StoreRefused):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def send_groups(items: list[dict[str, Any]], source: str) -> int:
        """Review items to the review topic, a record per partition (and size bound);
        returns how many records."""
        groups = encode_review_groups(items, settings.partitions,
                                      ctx.boundary.review_group_bytes)
        for group in groups:
            await ctx.send(STAGE, review_source, group.key, group.value, source,
                           partition=group.partition)
        return len(groups)

    @ctx.app.on_before_shutdown.connect
    async def close_store(app: Any, **kwargs: Any) -> None:
        await store.close()

    @ctx.agent(ctx.topic(faces_source), name="edgewise.image_sink.faces", stage=STAGE)
    async def store_faces(stream: Any) -> None:
        async for values in stream.take(STORE_TAKE, within=STORE_TAKE_WITHIN):
            ctx.count(STAGE, events_in=len(values))
            faces = []
            for raw in values:
                try:
                    faces.append(parse_face_payload(
                        raw, settings.max_message_bytes, settings.max_image_side,
                        future_skew=ctx.boundary.future_skew))
                except Exception as exc:  # bad input, or a validator bug: never the stage
                    await ctx.dead_letter(STAGE, exc, raw, faces_source)
            urls = await put_all([(object_key("face", f.device, f.timestamp, f.id), f.png,
                                   f.metadata()) for f in faces])
            doubtful = []
            for f, url in zip(faces, urls, strict=True):
                if isinstance(url, StoreRefused):
                    await ctx.dead_letter(STAGE, url, f.id.encode(), faces_source)
                    continue
                item = face_review_item(f, url, settings.low_confidence, settings.min_margin)
                if item is not None:
                    doubtful.append(item)
            sent = await send_groups([item.asdict() for item in doubtful], faces_source)
            ctx.count(STAGE, samples=len(faces), events_out=sent)

    @ctx.agent(review, name="edgewise.image_sink.review", stage=STAGE)
    async def store_review_images(stream: Any) -> None:
        async for values in stream.take(STORE_TAKE, within=STORE_TAKE_WITHIN):
            jobs = []
            for raw in values:  # one bad item is a dead letter, never the stage's end
                try:
                    jobs += [(item, key, png, review_metadata(item)) for item, key, png
                             in review_image_jobs(raw, ctx.boundary.review_group)]
                except Exception as exc:
                    await ctx.dead_letter(STAGE, exc, raw, review_source)
            if not jobs:
                continue
            ctx.count(STAGE, events_in=len(jobs))
            urls = await put_all([(key, png, meta) for _, key, png, meta in jobs])
            stored = []
            for (item, _, _, _), url in zip(jobs, urls, strict=True):
                if isinstance(url, StoreRefused):
                    await ctx.dead_letter(STAGE, url, orjson.dumps(item), review_source,
                                          item["id"].encode())
                    continue
                item["image_url"] = url
                stored.append(item)
            await send_groups(stored, review_source)
            ctx.count(STAGE, events_out=len(stored), samples=len(stored))
