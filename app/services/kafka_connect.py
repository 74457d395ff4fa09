"""Kafka Connect standalone running Debezium's PostgreSQL connector, from Maven jars.

The reference edgewise's own CDC is measured against: configuration only, no Java of ours.
The classpath (Kafka Connect, its JSON converter, Debezium's connector and the PostgreSQL
JDBC driver) is resolved once by Maven from ``deploy/kafka/connect/pom.xml`` into the same
cache as the broker's jars. Each worker runs in a temporary directory holding its worker
and connector properties, its offsets file and its logs, serves its REST API on a port
the OS picked, and is stopped by PID (SIGKILL: its offsets live in the temporary directory
that goes with it); the kernel kills it if edgewise dies.

The connector is configured as close to edgewise's envelope as Debezium allows: JSON
converter with schemas (edgewise writes the ``payload`` half only), ``pgoutput``, numerics
as strings (``decimal.handling.mode=string``), and a slot and publication of its own.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from edgewise.app.services.apache_kafka import (
    DEFAULT_CACHE,
    DEPLOY_DIR,
    KAFKA_VERSION,
    KafkaError,
    maven_classpath,
    require_tools,
)
from edgewise.app.services.processes import ManagedProcess, free_port, log_tail

DEBEZIUM_VERSION = "3.6.1.Final"
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
#: Logged by Debezium's PostgreSQL streaming source once the snapshot is over and it reads
#: the slot: from then on every commit is captured.
STREAMING_LINE = "Processing messages"
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Xshare:auto",
               "-Djava.awt.headless=true")
#: The JIT's quick tier: a faster start for tests that move little data.
QUICK_START = ("-XX:TieredStopAtLevel=1",)


class ConnectError(KafkaError):
    """Kafka Connect or its Debezium connector could not be resolved, started or reached."""


def connect_classpath(cache_root: Path = DEFAULT_CACHE,
                      pom: Path = DEPLOY_DIR / "connect" / "pom.xml") -> Path:
    """The directory of Kafka Connect's and Debezium's jars, resolved when missing."""
    target = cache_root.expanduser() / f"connect-{KAFKA_VERSION}-debezium-{DEBEZIUM_VERSION}"
    return maven_classpath(target, pom, "debezium-connector-postgres-*.jar",
                           {"kafka.version": KAFKA_VERSION,
                            "debezium.version": DEBEZIUM_VERSION},
                           f"Kafka Connect with Debezium {DEBEZIUM_VERSION}")


def properties_text(values: Mapping[str, object]) -> str:
    """A Java properties file; values are written as they are (no escaping needed here)."""
    return "".join(f"{key}={value}\n" for key, value in values.items())


def worker_properties(bootstrap: str, rest_port: int, offsets: Path, schemas: bool = True
                      ) -> dict[str, object]:
    """A standalone worker: JSON for keys and values (with their schemas unless told not
    to: then a value is the bare envelope, without the ``payload`` wrapper), offsets in a
    file."""
    flag = "true" if schemas else "false"
    return {
        "bootstrap.servers": bootstrap,
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": flag,
        "value.converter.schemas.enable": flag,
        "offset.storage.file.filename": offsets,
        "offset.flush.interval.ms": 1000,
        "listeners": f"http://127.0.0.1:{rest_port}",
        "plugin.discovery": "only_scan",
    }


def connector_properties(name: str, dsn: str, tables: Sequence[str], topic_prefix: str,
                         slot: str, publication: str, partitions: int = 1,
                         snapshot_mode: str = "initial",
                         extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """Debezium's PostgreSQL connector on ``dsn`` for ``tables`` (``schema.table``).

    Topics it creates itself are compacted like edgewise's CDC topics, with ``partitions``
    partitions and one replica (an existing topic is used as it is).
    """
    url = urlsplit(dsn)
    values: dict[str, object] = {
        "name": name,
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": 1,
        "database.hostname": url.hostname or "127.0.0.1",
        "database.port": url.port or 5432,
        "database.user": unquote(url.username or "postgres"),
        "database.password": unquote(url.password or ""),
        "database.dbname": url.path.lstrip("/") or "postgres",
        "topic.prefix": topic_prefix,
        "table.include.list": ",".join(tables),
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": publication,
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": snapshot_mode,
        "decimal.handling.mode": "string",
        "topic.creation.default.partitions": partitions,
        "topic.creation.default.replication.factor": 1,
        "topic.creation.default.cleanup.policy": "compact",
    }
    values.update(extra or {})
    return values


class DebeziumConnect(ManagedProcess):
    """One Kafka Connect standalone worker running one Debezium PostgreSQL connector.

    Ready when the REST API reports the connector and its task RUNNING and the connector's
    log says it streams (so its initial snapshot is complete and on its way to Kafka).
    """

    name = "Kafka Connect"
    start_error = ConnectError
    stop_signal = signal.SIGKILL
    stop_timeout = 10.0

    def __init__(self, bootstrap: str, directory: Path, connector: Mapping[str, object],
                 cache_root: Path = DEFAULT_CACHE, quick_start: bool = True,
                 schemas: bool = True) -> None:
        super().__init__(directory / "stdout.log", "127.0.0.1", 0)
        self.bootstrap = bootstrap
        self.directory = directory
        self.connector = dict(connector)
        self.cache_root = cache_root
        self.quick_start = quick_start
        self.schemas = schemas
        self.started_in = 0.0
        self._streams_seen = 0

    @property
    def connector_name(self) -> str:
        return str(self.connector["name"])

    @property
    def log_path_connect(self) -> Path:
        """Connect's and Debezium's own log (log4j), where their errors are."""
        return self.directory / "connect.log"

    def start(self, timeout: float = 120.0) -> DebeziumConnect:
        """Resolve the classpath, write the properties, start the JVM, wait until ready."""
        began = time.monotonic()
        classpath = connect_classpath(self.cache_root)
        require_tools("java")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        worker = self.directory / "worker.properties"
        connector = self.directory / "connector.properties"
        worker.write_text(properties_text(worker_properties(
            self.bootstrap, self.port, self.directory / "offsets.dat", self.schemas)))
        connector.write_text(properties_text(self.connector))
        self._streams_seen = self._log_count(STREAMING_LINE)
        options = [*JVM_OPTIONS, *(QUICK_START if self.quick_start else ())]
        self.spawn(["java", *options,
                    f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'connect' / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={self.directory}", "-cp", f"{classpath}/*",
                    "org.apache.kafka.connect.cli.ConnectStandalone", str(worker),
                    str(connector)])
        try:
            self.wait_ready(timeout, poll=0.2)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def status(self) -> dict[str, Any] | None:
        """The connector's status from the REST API, None while it does not answer."""
        url = f"http://{self.host}:{self.port}/connectors/{self.connector_name}/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return dict(orjson.loads(reply.read()))
        except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
            return None

    def ready(self) -> bool:
        """Streaming and RUNNING; a FAILED connector or task raises at once, with its trace."""
        status = self.status()
        if not status:
            return False
        parts = [status.get("connector") or {}, *(status.get("tasks") or [])]
        for part in parts:
            if part.get("state") == "FAILED":
                raise ConnectError("Debezium's connector failed: "
                                   f"{str(part.get('trace', ''))[:2000]}")
        return (len(parts) > 1 and all(p.get("state") == "RUNNING" for p in parts)
                and self._log_count(STREAMING_LINE) > self._streams_seen)

    def _log_count(self, line: str) -> int:
        try:
            return self.log_path_connect.read_text(errors="replace").count(line)
        except OSError:
            return 0

    def log_tail(self, lines: int = 30) -> str:
        """The JVM's output, then Connect's log."""
        connect = log_tail(self.log_path_connect, lines, missing="(no connect.log)")
        return f"{super().log_tail(lines)}\n{connect}"

    def __enter__(self) -> DebeziumConnect:
        return self.start()
