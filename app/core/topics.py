"""Topic names, their partition counts and configs, and creating them up front.

Tansu does not create topics with the partition count a client asks for, so edgewise
creates every topic it will use before any worker starts, each with explicit configs.
The same code runs against a real Kafka, where it is simply idempotent.
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
    specs = [
        TopicSpec(names.samples, parts, DELETE),
        TopicSpec(names.predictions, parts, DELETE),
        TopicSpec(names.review, parts, DELETE),
        TopicSpec(names.dead_letters, parts, DELETE),
        TopicSpec(names.model_updates, 1, DELETE),
        TopicSpec(names.faces, parts, DELETE),
        TopicSpec(names.edge_metrics, parts, DELETE),
    ]
    for app_id in app_ids:
        specs.append(TopicSpec(f"{app_id}-__assignor-__leader", 1, COMPACT))
        for tables in STAGE_TABLES.values():
            specs += [TopicSpec(f"{app_id}-{t}-changelog", parts, COMPACT) for t in tables]
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
