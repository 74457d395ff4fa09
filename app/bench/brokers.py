"""Which broker a benchmark runs on: ``--broker`` of ``edgewise bench``.

- ``tansu`` (or ``embedded``): the embedded Tansu, started by the bench;
- ``kafka``: a single-node Apache Kafka (KRaft) started by the bench (needs java);
- ``kafka://host:port``: a Kafka that is already running;
- ``both``: Tansu and a local Apache Kafka, one after the other, printed side by side;
- ``auto`` (the default): ``both`` when java is on PATH, else Tansu alone.

Each broker is started only for its own measurements and stopped by PID afterwards, so
two brokers never share the machine's cores during a measurement.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from edgewise.app.core.settings import Settings
from edgewise.app.services.apache_kafka import KAFKA_VERSION, KafkaCluster
from edgewise.app.services.embedded_broker import EmbeddedBroker

CHOICES = ("auto", "both", "tansu", "embedded", "kafka")
TANSU, KAFKA = "Tansu", "Apache Kafka"


class BrokerChoiceError(ValueError):
    """``--broker`` names no broker a bench can run on."""


@dataclass(frozen=True)
class BenchBroker:
    """One broker to measure on: how to start it (``spec``) and what to call it."""

    spec: Literal["tansu", "kafka"] | str  # or a kafka:// URL
    label: str

    @property
    def profile(self) -> Literal["embedded", "kafka"]:
        return "embedded" if self.spec == "tansu" else "kafka"


def plan(choice: str | None, java_available: bool | None = None) -> list[BenchBroker]:
    """The brokers ``--broker choice`` means, in the order they are measured."""
    java = shutil.which("java") is not None if java_available is None else java_available
    choice = (choice or "auto").strip()
    if choice == "auto":
        choice = "both" if java else "tansu"
    if choice in ("tansu", "embedded"):
        return [BenchBroker("tansu", TANSU)]
    if choice == "kafka":
        return [BenchBroker("kafka", f"{KAFKA} {KAFKA_VERSION}")]
    if choice == "both":
        return [BenchBroker("tansu", TANSU), BenchBroker("kafka", f"{KAFKA} {KAFKA_VERSION}")]
    if choice.startswith("kafka://"):
        return [BenchBroker(choice, KAFKA)]
    raise BrokerChoiceError(f"--broker {choice!r}: one of {', '.join(CHOICES)} "
                            "or kafka://host:port")


@contextlib.contextmanager
def running(broker: BenchBroker, settings: Settings) -> Iterator[Settings]:
    """``settings`` pointed at ``broker``, started for the block when the bench starts it."""
    if broker.spec == "tansu":
        with EmbeddedBroker() as tansu:
            yield settings.model_copy(update={"broker": tansu.url,
                                              "broker_profile": "embedded"})
    elif broker.spec == "kafka":
        with KafkaCluster(1, settings.kafka_cache_dir) as kafka:
            yield settings.model_copy(update={"broker": kafka.url, "broker_profile": "kafka"})
    else:
        yield settings.model_copy(update={"broker": broker.spec, "broker_profile": "kafka"})

