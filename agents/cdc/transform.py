"""cdc_transform: change events of a table into sample batches.

Which column is the id, the label, the image (and its shape), and optionally the device,
is configuration (``cdc_*_column``, ``cdc_image_shape``, ``cdc_sample_kind``). Creates,
updates and snapshot reads become samples; deletes, truncates and tombstones carry no row
to score and are skipped. Rows gathered together are packed into one batch per device
(by default the table: ``cdc:<schema>.<table>``), so the score stage pays per batch, not
per row. A row that cannot be a sample is dead-lettered on its own; its neighbours go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgewise.agents.cdc.envelope import cdc_topic_spec
from edgewise.agents.cdc.rows import RowSample, change_to_sample, mapping_from_settings
from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import bootstrap_of, create_topics
from edgewise.app.core.wire import encode_sample_batch

STAGE = "cdc_transform"


def transform_topics(settings: Settings) -> list[str]:
    """The CDC topics this stage reads: configured, or the digits test table's."""
    topics = [t.strip() for t in settings.cdc_transform_topics.split(",") if t.strip()]
    return topics or [f"{settings.cdc_topic_prefix}.public.digits_test"]


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
    create_topics(bootstrap_of(settings.broker),
                  [cdc_topic_spec(t, settings) for t in topics])
    source = ctx.app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw")

    @ctx.agent(source, name="edgewise.cdc_transform", stage=STAGE)
    async def cdc_transform(stream: Any) -> None:
        async for events in stream.take_events(settings.cdc_pack_rows,
                                               within=settings.cdc_pack_seconds):
            rows: list[RowSample] = []
            for event in events:
                raw = event.value
                try:
                    sample = change_to_sample(raw, mapping, ctx.boundary.future_skew)
                except Exception as exc:  # any row that is not a sample costs only itself
                    await ctx.dead_letter(STAGE, exc, raw, event.message.topic,
                                          key=event.key)
                    continue
                if sample is not None:
                    rows.append(sample)
            ctx.count(STAGE, events_in=len(events))
            for packed in pack_samples(rows, mapping.kind, settings.max_batch_samples):
                try:  # rows were checked one by one; this is the stage's own boundary
                    batch = ctx.boundary.sample_batch(packed)
                except BadInput as exc:
                    await ctx.dead_letter(STAGE, exc, encode_sample_batch(packed), STAGE)
                    continue
                await ctx.send(STAGE, ctx.names.samples, batch.device.encode(),
                               encode_sample_batch(batch), STAGE)
                ctx.count(STAGE, events_out=1, samples=len(batch))
