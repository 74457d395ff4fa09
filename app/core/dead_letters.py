"""The one dead-letter path: every stage, the bridge and the CDC capture build, count and log
their dead letters here, and only the send differs (a Faust topic or an aiokafka producer).

The rule for the original bytes: kept whole when the dead-letter record fits the topic's
limit; otherwise cut to what fits, with the original's length and sha256 recorded so it can
still be identified. Each (stage, reason) is logged once; every dead letter is counted in
``/metrics`` (``edgewise_dead_letters_total{stage,reason}``) when the path has metrics.

A record the broker (or the producer's own size check) refuses for good is dead-lettered
too (:func:`is_rejection`), so the bridge and the CDC capture never replay it forever; the
dead letter is built under ``max_message_bytes``, which every topic and producer accepts
(``core.topics.max_record_bytes``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time

from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError

from edgewise.app.core.frames import BadInput
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.records import DeadLetter

log = logging.getLogger("edgewise")

#: Room left in the record for JSON escaping of the short fields, whatever they hold.
SLACK_BYTES = 1024
MAX_DETAIL = 500
MAX_SOURCE = 300
MAX_KEY = 1024
#: The size a dead letter is cut to when even the bounded one was refused (a topic made by
#: someone else with a smaller limit): the reason, the original's length and sha256.
MIN_LETTER_BYTES = 4096

NOT_ABOUT_THE_RECORD: tuple[type[KafkaError], ...] = (
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.BrokerNotAvailableError,
    kafka_errors.ReplicaNotAvailableError, kafka_errors.UnsupportedVersionError,
    kafka_errors.InvalidRequiredAcksError, kafka_errors.ProducerClosed,
    kafka_errors.KafkaTimeoutError,
)
"""Non-retriable errors that would refuse *every* record (or say nothing about this one:
a send that timed out while the broker was away): dead-lettering them would empty the
stream into the dead-letter topic, so the session is rebuilt instead, with backoff, and
keeps failing loudly until someone fixes the cause."""


def is_rejection(exc: BaseException) -> bool:
    """Whether the broker refused this record for good (dead-letter it and move on) rather
    than failing for now (back off, rebuild the session and send again): a non-retriable
    Kafka error about the record itself (too large, corrupt, keyless on a compacted topic)."""
    return (isinstance(exc, KafkaError) and not exc.retriable
            and not isinstance(exc, NOT_ABOUT_THE_RECORD))


def reason_of(error: BadInput | Exception) -> tuple[str, str]:
    """The reason (a short code) and the detail of a rejection."""
    if isinstance(error, BadInput):
        return error.reason, error.detail
    return type(error).__name__, str(error)


def encode_dead_letter(
    stage: str, reason: str, detail: str, original: bytes, source: str, key: bytes | None,
    max_bytes: int, now: float | None = None,
) -> bytes:
    """The dead-letter record as JSON bytes, never longer than ``max_bytes``."""
    original = bytes(original)
    letter = DeadLetter(
        stage=stage, reason=reason, detail=detail[:MAX_DETAIL], original_b64="",
        topic=source[:MAX_SOURCE], timestamp=time.time() if now is None else now,
        key_b64=base64.b64encode((key or b"")[:MAX_KEY]).decode(),
        original_length=len(original), original_sha256=hashlib.sha256(original).hexdigest(),
        truncated=False,
    )
    room = max_bytes - len(letter.dumps(serializer="json")) - SLACK_BYTES
    keep = max(0, room) // 4 * 3  # base64 turns 3 bytes into 4 characters
    if len(original) > keep:
        letter.truncated = True
        original = original[:keep]
    letter.original_b64 = base64.b64encode(original).decode()
    return letter.dumps(serializer="json")


class DeadLetterPath:
    """Builds, counts and logs dead letters bound for one topic under one size limit."""

    def __init__(self, topic: str, max_bytes: int, metrics: StageMetrics | None = None
                 ) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.logged: set[tuple[str, str]] = set()

    def letter(
        self, stage: str, error: BadInput | Exception, original: bytes | None, source: str,
        key: bytes | None = None, max_bytes: int | None = None,
    ) -> tuple[bytes, bytes]:
        """The dead letter's record key and value (under ``max_bytes``, default the path's
        limit); counted, and logged once per reason."""
        reason, detail = reason_of(error)
        if self.metrics is not None:
            self.metrics.record_dead_letter(stage, reason)
        if (stage, reason) not in self.logged:
            self.logged.add((stage, reason))
            log.warning("%s: dead-lettered a message from %s: %s %s", stage, source[:200],
                        reason, detail[:200])
        value = encode_dead_letter(stage, reason, detail, original or b"", source, key,
                                   max_bytes or self.max_bytes)
        return stage.encode(), value
