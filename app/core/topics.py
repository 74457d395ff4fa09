"""Topic names, their partition counts and configs, and creating them up front.

Tansu does not create topics with the partition count a client asks for, so edgewise
creates every topic it will use before any worker starts, each with explicit configs.
The same code runs against a real Kafka, where it is simply idempotent.

Every topic carries ``max.message.bytes`` = :func:`max_record_bytes`: the largest message
a stage accepts (``max_message_bytes``) plus room for its key and framing, and the same
number is every producer's ``max_request_size`` (``core.broker_profile``). So what a stage
may send, a dead letter carrying a whole accepted original included, the broker takes; and
the topic-level setting overrides a broker's default ``message.max.bytes`` (1 MB on Kafka).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from edgewise.app.core.settings import Settings

T = TypeVar("T")
WEEK_MS = 7 * 24 * 3600 * 1000
DELETE = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}
COMPACT = {"cleanup.policy": "compact", "retention.ms": "-1"}
#: Room above ``max_message_bytes`` for a record's key, headers and batch framing.
RECORD_OVERHEAD_BYTES = 65_536

#: Tables of each stage; their changelog topics are ``<app id>-<table>-changelog``.
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "aggregate": ("device_windows",),
    "review": ("review_queue",),
    "evaluate": ("evaluation",),
    "edge_metrics": ("site_metrics",),
}


@dataclass(frozen=True)
class TopicNames:
    """Names of the topics between stages, all under one prefix."""

    prefix: str

    @property
    def samples(self) -> str:
        return f"{self.prefix}-samples"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}-predictions"

    @property
    def review(self) -> str:
        return f"{self.prefix}-review"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}-dead-letters"

    @property
    def model_updates(self) -> str:
        return f"{self.prefix}-model-updates"

    @property
    def faces(self) -> str:
        """Face crops from edge cameras (JSON with a PNG), keyed by device."""
        return f"{self.prefix}-faces"

    @property
    def edge_metrics(self) -> str:
        """Tumbling-window metrics computed at the edges, keyed by site."""
        return f"{self.prefix}-edge-metrics"


def max_record_bytes(settings: Settings) -> int:
    """The record size limit shared by every topic and producer of edgewise."""
    return settings.max_message_bytes + RECORD_OVERHEAD_BYTES


def sized(config: dict[str, str], settings: Settings) -> dict[str, str]:
    """A topic config with the record size limit made explicit."""
    return {**config, "max.message.bytes": str(max_record_bytes(settings))}


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions and configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, app_ids: Iterable[str] = ()) -> list[TopicSpec]:
    """Every topic a deployment with these Faust app ids needs, with explicit configs."""
    names = TopicNames(settings.topic_prefix)
    parts = settings.partitions
    delete, compact = sized(DELETE, settings), sized(COMPACT, settings)
    specs = [
        TopicSpec(names.samples, parts, delete),
        TopicSpec(names.predictions, parts, delete),
        TopicSpec(names.review, parts, delete),
        TopicSpec(names.dead_letters, parts, delete),
        TopicSpec(names.model_updates, 1, delete),
        TopicSpec(names.faces, parts, delete),
        TopicSpec(names.edge_metrics, parts, delete),
    ]
    for app_id in app_ids:
        specs.append(TopicSpec(f"{app_id}-__assignor-__leader", 1, compact))
        for tables in STAGE_TABLES.values():
            specs += [TopicSpec(f"{app_id}-{t}-changelog", parts, compact) for t in tables]
    return specs


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def create_topics_async(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        created = []
        for spec in wanted:
            topic = NewTopic(spec.name, spec.partitions, 1, topic_configs=dict(spec.config))
            try:
                await admin.create_topics([topic])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


def create_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Blocking form of :func:`create_topics_async`."""
    return run_sync(create_topics_async(bootstrap, list(specs)))


def bootstrap_of(url: str) -> str:
    """host:port list of a kafka:// URL (Faust style, ';' separated)."""
    rest = url.split("://", 1)[-1]
    return ",".join(part.split("://", 1)[-1] for part in rest.split(";"))
