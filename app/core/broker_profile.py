"""The embedded broker profile: every Tansu-specific setting, in one place.

Measured on Tansu: it joins a consumer group only after half the session timeout (so a
short session), it answers "latest offset" wrongly when the newest stored batch holds
several records (so producers send one record per batch), and a waiting fetch is answered
late (so a short fetch wait), and it has no InitProducerId (so no idempotent producer).
Against a real Kafka none of this applies: producers batch as they were made to, and they
are idempotent, so a retry after a lost acknowledgement (a broker failing over) writes
nothing twice. On both, writes wait for ``acks=all`` and may be as large as the topics
allow (``max_record_bytes``), since Kafka checks a request's size on the client already.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import max_record_bytes

EMBEDDED_SESSION_TIMEOUT = 6.0
EMBEDDED_HEARTBEAT_INTERVAL = 1.0
#: On Kafka, a worker SIGKILLed (or a lost machine) keeps its partitions this long; Faust's
#: own default (60 s) would leave them unread for a minute.
KAFKA_SESSION_TIMEOUT = 10.0
EMBEDDED_FETCH_WAIT_MS = 20
KAFKA_FETCH_WAIT_MS = 500


EMBEDDED_CLUSTER_IDS = frozenset({"edgewise-embedded", "tansu_cluster"})


def is_embedded_cluster(cluster_id: str | None) -> bool:
    """True for the cluster id of an embedded (Tansu) broker."""
    return cluster_id in EMBEDDED_CLUSTER_IDS


def fetch_wait_ms(settings: Settings) -> int:
    """The consumer fetch wait: the setting, or the profile's default."""
    if settings.fetch_wait_ms >= 0:
        return settings.fetch_wait_ms
    return EMBEDDED_FETCH_WAIT_MS if settings.embedded_profile else KAFKA_FETCH_WAIT_MS


def idempotent_producers(settings: Settings) -> bool:
    """Whether producers may be idempotent: on Kafka, not on Tansu (InitProducerId fails)."""
    return not settings.embedded_profile


def session_timeout(settings: Settings) -> tuple[float, float]:
    """Consumer-group session timeout and heartbeat interval, in seconds: the setting's,
    or the profile's (6 s on Tansu, 10 s on Kafka), heartbeats a third of it or less."""
    default = EMBEDDED_SESSION_TIMEOUT if settings.embedded_profile else KAFKA_SESSION_TIMEOUT
    session = settings.session_timeout_seconds or default
    heartbeat = EMBEDDED_HEARTBEAT_INTERVAL if settings.embedded_profile else 3.0
    return session, min(heartbeat, session / 3)


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust settings of the profile (the idempotent producer is the transport's part)."""
    options: dict[str, Any] = {
        "producer_acks": -1, "producer_max_request_size": max_record_bytes(settings),
        "consumer_max_fetch_size": max(4 * 1024 * 1024, max_record_bytes(settings))}
    session, heartbeat = session_timeout(settings)
    options.update(broker_session_timeout=session, broker_heartbeat_interval=heartbeat)
    if settings.embedded_profile:
        options.update(producer_max_batch_size=1)
    return options


def producer_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for raw aiokafka producers (bridge, CDC, simulators, benches)."""
    options: dict[str, Any] = {"acks": "all", "max_request_size": max_record_bytes(settings)}
    if settings.embedded_profile:
        options.update(max_batch_size=1, linger_ms=0)
    else:
        options.update(enable_idempotence=True)
    return options


def consumer_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for raw aiokafka consumers."""
    options: dict[str, Any] = {
        "fetch_max_wait_ms": fetch_wait_ms(settings),
        "max_partition_fetch_bytes": max(1024 * 1024, max_record_bytes(settings)),
    }
    session, heartbeat = session_timeout(settings)
    options.update(session_timeout_ms=int(session * 1000),
                   heartbeat_interval_ms=int(heartbeat * 1000))
    return options
