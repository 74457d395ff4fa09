"""Topic names, their partition counts and configs, and creating them up front.

Tansu does not create topics with the partition count a client asks for, so edgewise
creates every topic it will use before any worker starts, each with explicit configs.
The same code runs against a real Kafka, where it is simply idempotent, and where two more
things matter: a record larger than the topic's ``max.message.bytes`` is refused (Kafka's
default is about 1 MB, below edgewise's limit), so every topic gets a limit matched to
``max_message_bytes``; and on a cluster topics are replicated, three times with two in sync
for a write, so that losing one broker loses nothing and stops nobody.
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
#: Replicas of a topic on a cluster large enough, and how many must hold a write.
CLUSTER_REPLICAS = 3
CLUSTER_IN_SYNC = 2


def max_record_bytes(settings: Settings) -> int:
    """The broker's record limit matching ``max_message_bytes`` (topics' ``max.message.bytes``,
    producers' ``max_request_size``): whatever a stage accepts, it can also write."""
    return settings.max_message_bytes + RECORD_OVERHEAD_BYTES


#: Tables of each stage; their changelog topics are ``<app id>-<table>-changelog``.
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "aggregate": ("device_windows",),
    "review": ("review_queue",),
    "evaluate": ("evaluation",),
    "edge_metrics": ("site_metrics",),
    "correct": ("corrections",),
}


@dataclass(frozen=True)
class TopicNames:
    """Names of the topics between stages, all under one prefix."""

    prefix: str

    @property
    def samples(self) -> str:
        return f"{self.prefix}-samples"

    @property
    def refs(self) -> str:
        """References to objects (images in S3 or the image directory) and S3 event
        notifications, for the refs stage to fetch."""
        return f"{self.prefix}-refs"

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
    def corrections(self) -> str:
        """True labels people set at the correction station, keyed by sample id."""
        return f"{self.prefix}-corrections"

    @property
    def model_updates(self) -> str:
        return f"{self.prefix}-model-updates"

    @property
    def shadow(self) -> str:
        """Tallies of a candidate scored in shadow beside the served model (one partition:
        the retrain stage reads them all)."""
        return f"{self.prefix}-shadow"

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
    #: 0: from the cluster's size (see :func:`replicas_for`)
    replicas: int = 0


def topic_specs(settings: Settings, app_ids: Iterable[str] = ()) -> list[TopicSpec]:
    """Every topic a deployment with these Faust app ids needs, with explicit configs."""
    names = TopicNames(settings.topic_prefix)
    parts = settings.partitions
    delete, compact = DELETE, COMPACT
    specs = [
        TopicSpec(names.samples, parts, delete),
        TopicSpec(names.refs, parts, delete),
        TopicSpec(names.predictions, parts, delete),
        TopicSpec(names.review, parts, delete),
        TopicSpec(names.dead_letters, parts, delete),
        # co-partitioned with review (same key, same count): a correction reaches the worker
        # holding its item; compacted, so the last correction of each sample is kept
        TopicSpec(names.corrections, parts, compact),
        TopicSpec(names.model_updates, 1, delete),
        TopicSpec(names.shadow, 1, delete),
        TopicSpec(names.faces, parts, delete),
        TopicSpec(names.edge_metrics, parts, delete),
    ]
    for app_id in app_ids:
        specs.append(TopicSpec(f"{app_id}-__assignor-__leader", 1, compact))
        for tables in STAGE_TABLES.values():
            specs += [TopicSpec(f"{app_id}-{t}-changelog", parts, compact) for t in tables]
    return [with_limits(spec, settings) for spec in specs]


def with_limits(spec: TopicSpec, settings: Settings) -> TopicSpec:
    """``spec`` with the record limit and the replication factor of these settings."""
    config = {"max.message.bytes": str(max_record_bytes(settings)), **spec.config}
    return TopicSpec(spec.name, spec.partitions, config,
                     spec.replicas or settings.replication_factor)


def replicas_for(requested: int, brokers: int) -> int:
    """Replicas of a new topic: as requested, else three on a cluster of three or more,
    else one per broker (a single broker cannot hold more)."""
    return requested if requested > 0 else min(CLUSTER_REPLICAS, max(1, brokers))


def replicated_config(config: dict[str, str], replicas: int) -> dict[str, str]:
    """A topic's configs with ``min.insync.replicas`` set when it is replicated three times
    or more: a write (``acks=all``) then lives on two brokers before it is acknowledged."""
    if replicas >= CLUSTER_REPLICAS and "min.insync.replicas" not in config:
        return {**config, "min.insync.replicas": str(CLUSTER_IN_SYNC)}
    return dict(config)


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
        brokers = len((await admin.describe_cluster()).get("brokers") or []) if wanted else 1
        created = []
        for spec in wanted:
            replicas = replicas_for(spec.replicas, brokers)
            topic = NewTopic(spec.name, spec.partitions, replicas,
                             topic_configs=replicated_config(spec.config, replicas))
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
