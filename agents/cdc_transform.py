"""cdc_transform: change events of a table into sample batches (the seed's custom SMT).

Which column is the id, the label, the image (and its shape), and optionally the device,
is configuration (``cdc_*_column``, ``cdc_image_shape``, ``cdc_sample_kind``). Creates,
updates and snapshot reads become samples; deletes, truncates and tombstones carry no row
to score and are skipped. Rows gathered together are packed into one batch per device
(by default the table: ``cdc:<schema>.<table>``), so the score stage pays per batch, not
per row. A row that cannot be a sample is dead-lettered on its own; its neighbours go on.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgewise.app.context import StageContext
from edgewise.app.frames import BadInput
from edgewise.app.records import SAMPLE_KINDS, SampleBatch
from edgewise.app.settings import Settings
from edgewise.app.topics import bootstrap_of, create_topics
from edgewise.app.wire import MAX_ID_LENGTH, MAX_LABEL, encode_sample_batch, validate_sample_batch

STAGE = "cdc_transform"
ROW_OPS = frozenset({"c", "u", "r"})
SKIPPED_OPS = frozenset({"d", "t"})


@dataclass(frozen=True)
class RowMapping:
    """How a table row becomes a sample."""

    id_column: str
    label_column: str
    image_column: str
    shape: tuple[int, ...]
    kind: str
    device_column: str = ""


@dataclass(frozen=True, slots=True)
class RowSample:
    """One row, ready to be packed: device, id, commit time (s), label (-1 unknown), image."""

    device: str
    id: str
    timestamp: float
    label: int
    pixels: np.ndarray


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8x8"`` -> ``(8, 8)``."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"image shape {text!r} is not like 8x8") from None
    if not shape or any(n <= 0 for n in shape):
        raise ValueError(f"image shape {text!r} must be positive sizes like 8x8")
    return shape


def mapping_from_settings(settings: Settings) -> RowMapping:
    """The configured mapping, checked against the sample kind's image shape."""
    shape = parse_shape(settings.cdc_image_shape)
    kind = settings.cdc_sample_kind
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"sample kind {kind!r} unknown; kinds: {', '.join(SAMPLE_KINDS)}")
    if shape != SAMPLE_KINDS[kind][0]:
        raise ValueError(f"image shape {shape} does not match kind {kind} "
                         f"{SAMPLE_KINDS[kind][0]}")
    return RowMapping(settings.cdc_id_column, settings.cdc_label_column,
                      settings.cdc_image_column, shape, kind, settings.cdc_device_column)


def transform_topics(settings: Settings) -> list[str]:
    """The CDC topics this stage reads: configured, or the digits test table's."""
    topics = [t.strip() for t in settings.cdc_transform_topics.split(",") if t.strip()]
    return topics or [f"{settings.cdc_topic_prefix}.public.digits_test"]


def _image(value: Any, mapping: RowMapping) -> np.ndarray:
    if isinstance(value, str):
        try:
            pixels = np.frombuffer(base64.b64decode(value, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError):
            raise BadInput("bad_pixels", f"{mapping.image_column} is not base64") from None
    elif isinstance(value, list):
        try:
            numbers = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise BadInput("bad_pixels", f"{mapping.image_column} is not numbers") from None
        if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
            raise BadInput("bad_pixels", "pixels must be whole numbers")
        if np.any(numbers < 0) or np.any(numbers > 255):
            raise BadInput("out_of_range", "pixels must lie in 0..255")
        pixels = numbers.astype(np.uint8)
    else:
        raise BadInput("missing_field", f"column {mapping.image_column}")
    if pixels.size != math.prod(mapping.shape):
        raise BadInput("wrong_shape", f"{pixels.size} pixels, expected {mapping.shape}")
    _, low, high = SAMPLE_KINDS[mapping.kind]
    if pixels.min() < low or pixels.max() > high:
        raise BadInput("out_of_range", f"{mapping.kind} pixels must lie in {low:g}..{high:g}")
    return pixels.reshape(mapping.shape)


def _label(row: dict[str, Any], mapping: RowMapping) -> int:
    if not mapping.label_column:
        return -1
    value = row.get(mapping.label_column)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"{mapping.label_column} must be a class number, "
                                    f"got {value!r}")
    return value


def change_to_sample(value: bytes | None, mapping: RowMapping) -> RowSample | None:
    """The sample in one change event, None for events without a row to score
    (tombstones, deletes, truncates); BadInput for anything else that is not a sample."""
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", str(exc)[:200]) from None
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, dict):
        raise BadInput("not_an_envelope", "no payload object")
    op = payload.get("op")
    if op in SKIPPED_OPS:
        return None
    if op not in ROW_OPS:
        raise BadInput("unknown_op", repr(op)[:50])
    row, source = payload.get("after"), payload.get("source")
    if not isinstance(row, dict) or not isinstance(source, dict):
        raise BadInput("not_an_envelope", "after and source must be objects")
    row_id = row.get(mapping.id_column)
    if row_id is None or isinstance(row_id, dict | list) or not str(row_id):
        raise BadInput("missing_field", f"column {mapping.id_column}")
    table = f"{source.get('schema')}.{source.get('table')}"
    device = (str(row.get(mapping.device_column) or "") if mapping.device_column
              else f"cdc:{table}")
    sample_id = f"{source.get('table')}-{row_id}"
    if not device or len(device) > MAX_ID_LENGTH or len(sample_id) > MAX_ID_LENGTH:
        raise BadInput("bad_id", "device and id must be 1..200 characters")
    millis = source.get("ts_ms", payload.get("ts_ms"))
    if isinstance(millis, bool) or not isinstance(millis, int | float) or millis <= 0:
        raise BadInput("bad_timestamp", f"ts_ms {millis!r}")
    return RowSample(device, sample_id, millis / 1000.0, _label(row, mapping),
                     _image(row.get(mapping.image_column), mapping))


def pack_samples(samples: Sequence[RowSample], kind: str, max_samples: int
                 ) -> list[SampleBatch]:
    """One batch per device (at most ``max_samples`` each), in arrival order; a row seen
    twice in one gathering (insert then update) is packed once, as its last version."""
    by_device: dict[str, dict[str, RowSample]] = {}
    for sample in samples:
        rows = by_device.setdefault(sample.device, {})
        rows.pop(sample.id, None)
        rows[sample.id] = sample
    batches = []
    for device, rows in by_device.items():
        ordered = list(rows.values())
        for start in range(0, len(ordered), max_samples):
            chunk = ordered[start:start + max_samples]
            batches.append(SampleBatch(
                device=device, kind=kind, ids=[s.id for s in chunk],
                timestamps=np.array([s.timestamp for s in chunk], dtype=np.float64),
                labels=np.array([s.label for s in chunk], dtype=np.int32),
                pixels=np.stack([s.pixels for s in chunk]).astype(np.uint8),
            ))
    return batches


def register(ctx: StageContext) -> None:
    """Attach the transform agent; the CDC topics it reads are created when missing."""
    settings = ctx.settings
    mapping = mapping_from_settings(settings)
    topics = transform_topics(settings)
    from edgewise.agents.ingest_cdc import cdc_topic_spec

    create_topics(bootstrap_of(settings.broker),
                  [cdc_topic_spec(t, settings.cdc_partitions) for t in topics])
    source = ctx.app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw")
    samples_topic = ctx.topic(ctx.names.samples)

    @ctx.app.agent(source, name="edgewise.cdc_transform")
    async def cdc_transform(stream: Any) -> None:
        async for events in stream.take_events(settings.cdc_pack_rows,
                                               within=settings.cdc_pack_seconds):
            rows: list[RowSample] = []
            for event in events:
                raw = event.value
                try:
                    sample = change_to_sample(raw, mapping)
                except Exception as exc:  # any row that is not a sample costs only itself
                    await ctx.dead_letter(STAGE, exc, raw, event.message.topic,
                                          key=event.key)
                    continue
                if sample is not None:
                    rows.append(sample)
            ctx.count(STAGE, events_in=len(events))
            for packed in pack_samples(rows, mapping.kind, settings.max_batch_samples):
                try:  # rows were checked one by one; this is the stage's own boundary
                    batch = validate_sample_batch(packed, settings.max_batch_samples)
                except BadInput as exc:
                    await ctx.dead_letter(STAGE, exc, encode_sample_batch(packed), STAGE)
                    continue
                await samples_topic.send(key=batch.device.encode(),
                                         value=encode_sample_batch(batch))
                ctx.count(STAGE, events_out=1, samples=len(batch))
