"""``edgewise train digits --from-topic <cdc topic>``: train from a change stream.

The topic is read from its beginning to its end as of now and replayed into the table's
current rows (creates, updates and snapshot reads set a row, deletes and truncates remove
it), so duplicates from an at-least-once capture and rows deleted since cost nothing. The
rows become samples with the same column mapping as the ``cdc_transform`` stage, and the
trained model is registered with its held-out accuracy and where its data came from.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from edgewise.agents.cdc.rows import (
    RowMapping,
    RowSample,
    change_to_sample,
    mapping_from_settings,
)
from edgewise.app.core import broker_profile
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings
from edgewise.app.core.topic_reader import TopicMissing, read_to_end
from edgewise.app.core.topics import TopicNames, bootstrap_of
from edgewise.models.digits import TRAIN_STEPS, train_digits
from edgewise.models.registry import ModelRegistry


class TopicTrainingError(ValueError):
    """The topic cannot be trained from: missing, empty, or without labelled rows."""


@dataclass
class ReplayedTable:
    """A table's rows as of the end of its change stream, and what was skipped."""

    rows: dict[str, RowSample] = field(default_factory=dict)
    records: int = 0
    deletes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def replay_changes(values: Iterable[bytes | None], mapping: RowMapping) -> ReplayedTable:
    """Apply change events in order to an empty table (pure)."""
    table = ReplayedTable()
    for value in values:
        table.records += 1
        if value is None:
            continue  # tombstone: the delete before it already removed the row
        try:
            sample = change_to_sample(value, mapping)
        except BadInput as exc:
            table.skipped[exc.reason] = table.skipped.get(exc.reason, 0) + 1
            continue
        if sample is not None:
            table.rows[sample.id] = sample
            continue
        payload = orjson.loads(value)["payload"]
        source = payload.get("source") or {}
        if payload.get("op") == "t":
            prefix = f"{source.get('table')}-"
            table.rows = {k: v for k, v in table.rows.items() if not k.startswith(prefix)}
        elif isinstance(payload.get("before"), dict):
            row_id = payload["before"].get(mapping.id_column)
            if table.rows.pop(f"{source.get('table')}-{row_id}", None) is not None:
                table.deletes += 1
    return table


def training_arrays(table: ReplayedTable) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the labelled rows, in id order (deterministic)."""
    labelled = [table.rows[k] for k in sorted(table.rows) if table.rows[k].label >= 0]
    if not labelled:
        raise TopicTrainingError("no labelled rows to train from")
    x = np.stack([s.pixels.reshape(-1) for s in labelled]).astype(np.float64)
    y = np.array([s.label for s in labelled], dtype=np.int32)
    return x, y


async def read_values(settings: Settings, topic: str) -> list[bytes | None]:
    """Every value of the topic up to its current end, with a progress bar."""
    bars: list[tqdm[Any]] = []
    values: list[bytes | None] = []

    def start_bar(total: int) -> None:
        bars.append(tqdm(total=total, desc=f"reading {topic}", unit="event", file=sys.stderr))

    try:
        options = broker_profile.consumer_options(settings)
        async for record in read_to_end(bootstrap_of(settings.broker), topic, options,
                                        on_total=start_bar):
            values.append(record.value)
            bars[0].update(1)
    except TopicMissing as exc:
        raise TopicTrainingError(str(exc)) from None
    finally:
        for bar in bars:
            bar.close()
    if not values:
        raise TopicTrainingError(f"topic {topic} is empty")
    return values


async def announce(settings: Settings, version: int) -> None:
    """Tell score stages a new version exists (they also poll the registry)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_of(settings.broker),
                                **broker_profile.producer_options(settings))
    await producer.start()
    try:
        update = {"model": settings.model_name, "version": version}
        await producer.send_and_wait(TopicNames(settings.topic_prefix).model_updates,
                                     orjson.dumps(update))
    finally:
        await producer.stop()


def train_from_topic(settings: Settings, model: str, algorithm: str, topic: str) -> int:
    """Read, replay, train with a progress bar, register; returns the exit code."""
    if settings.embedded:
        raise TopicTrainingError("--from-topic reads a running broker: pass --broker "
                                 "kafka://host:port (or set EDGEWISE_BROKER)")
    mapping = mapping_from_settings(settings)
    table = replay_changes(asyncio.run(read_values(settings, topic)), mapping)
    x, y = training_arrays(table)
    with tqdm(total=TRAIN_STEPS, desc=f"training {model} ({algorithm})", unit="step",
              file=sys.stderr) as bar:
        trained = train_digits(algorithm, x=x, y=y, progress=bar.update,
                               source=f"kafka topic {topic}")
    data: dict[str, Any] = {**trained.training_data, "topic": topic,
                            "change_events": table.records, "deleted_rows": table.deletes,
                            "skipped_events": table.skipped}
    meta = ModelRegistry(settings.models_dir).register(
        model, trained.model, training_data=data, metrics={"accuracy": trained.accuracy},
        algorithm=algorithm)
    try:
        asyncio.run(announce(settings, meta.version))
    except Exception as exc:  # the registry poll still finds it; say so and go on
        print(f"note: could not announce the new version: {exc}", file=sys.stderr)
    print(f"{table.records} change events -> {len(x)} labelled rows; held-out accuracy "
          f"{trained.accuracy:.4f} on {trained.training_data['test_rows']} rows; registered "
          f"{meta.name} v{meta.version} ({meta.sha256[:12]}) in {settings.models_dir}")
    return 0
