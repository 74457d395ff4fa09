"""Kafka Connect with Debezium without starting a JVM: the properties it is given, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.app.services import apache_kafka, kafka_connect
from edgewise.app.services.kafka_connect import (
    ConnectError,
    connector_properties,
    properties_text,
    worker_properties,
)


def test_the_connector_reads_the_dsn_and_encodes_as_edgewise_compares() -> None:
    props = connector_properties("dbz", "postgresql://pg%40me:s3cret@10.0.0.5:6543/shop",
                                 ["public.a", "public.b"], "dbz", "slot_x", "pub_x",
                                 partitions=3)
    assert (props["database.hostname"], props["database.port"]) == ("10.0.0.5", 6543)
    assert (props["database.user"], props["database.password"]) == ("pg@me", "s3cret")
    assert props["database.dbname"] == "shop"
    assert props["table.include.list"] == "public.a,public.b"
    assert (props["plugin.name"], props["slot.name"], props["publication.name"]) == (
        "pgoutput", "slot_x", "pub_x")
    assert props["decimal.handling.mode"] == "string"
    assert props["topic.creation.default.partitions"] == 3
    assert props["topic.creation.default.cleanup.policy"] == "compact"


def test_extra_settings_win() -> None:
    props = connector_properties("dbz", "postgresql://u@h/db", ["public.a"], "p", "s", "q",
                                 extra={"snapshot.mode": "no_data"})
    assert props["snapshot.mode"] == "no_data"


def test_the_worker_writes_json_with_schemas_and_keeps_offsets_in_a_file(tmp_path: Path
                                                                          ) -> None:
    text = properties_text(worker_properties("127.0.0.1:9092", 18083, tmp_path / "o.dat"))
    values = dict(line.split("=", 1) for line in text.splitlines())
    assert values["listeners"] == "http://127.0.0.1:18083"
    assert values["value.converter.schemas.enable"] == "true"
    assert values["offset.storage.file.filename"] == str(tmp_path / "o.dat")


def test_missing_java_or_maven_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(apache_kafka.shutil, "which", lambda tool: None)
    with pytest.raises(apache_kafka.KafkaError) as err:
        kafka_connect.connect_classpath(tmp_path)
    assert "java and mvn" in str(err.value) and "\n" not in str(err.value)
    assert issubclass(ConnectError, apache_kafka.KafkaError)


def test_the_pom_resolves_the_versions_the_service_runs() -> None:
    pom = (apache_kafka.DEPLOY_DIR / "connect" / "pom.xml").read_text()
    assert f"<kafka.version>{apache_kafka.KAFKA_VERSION}</kafka.version>" in pom
    assert f"<debezium.version>{kafka_connect.DEBEZIUM_VERSION}</debezium.version>" in pom
