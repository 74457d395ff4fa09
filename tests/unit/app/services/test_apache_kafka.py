"""The Apache Kafka service without starting a JVM: node configs, missing tools, the cache."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edgewise.app.services import apache_kafka
from edgewise.app.services.apache_kafka import (
    KafkaCluster,
    KafkaError,
    new_cluster_id,
    node_properties,
)


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_a_cluster_replicates_three_times_with_two_in_sync(tmp_path: Path) -> None:
    three = props(node_properties(2, 9092, 9093, "1@a:1,2@a:2,3@a:3", tmp_path, 3))
    assert three["default.replication.factor"] == "3" and three["min.insync.replicas"] == "2"
    assert three["offsets.topic.replication.factor"] == "3" and three["node.id"] == "2"
    one = props(node_properties(1, 9092, 9093, "1@a:1", tmp_path, 1))
    assert one["default.replication.factor"] == "1" and one["min.insync.replicas"] == "1"
    # the default dedupe buffer (128 MB) does not fit the small heap
    assert int(one["log.cleaner.dedupe.buffer.size"]) <= 16 * 1024 * 1024
    assert one["auto.create.topics.enable"] == "false"


def test_missing_java_or_maven_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(apache_kafka.shutil, "which", lambda tool: None)
    with pytest.raises(KafkaError) as err:
        apache_kafka.kafka_classpath(tmp_path / "cache")
    assert "java and mvn" in str(err.value) and "\n" not in str(err.value)


def test_a_resolved_cache_is_used_without_maven(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    target = tmp_path / apache_kafka.KAFKA_VERSION
    target.mkdir()
    (target / apache_kafka.COMPLETE).touch()
    monkeypatch.setattr(apache_kafka.shutil, "which", lambda tool: None)
    assert apache_kafka.kafka_classpath(tmp_path) == target


def test_the_pom_resolves_the_version_the_service_runs() -> None:
    pom = (apache_kafka.DEPLOY_DIR / "broker" / "pom.xml").read_text()
    assert f"<kafka.version>{apache_kafka.KAFKA_VERSION}</kafka.version>" in pom


def test_a_cluster_needs_a_node() -> None:
    with pytest.raises(ValueError):
        KafkaCluster(0)


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    # 0xf8 as the first byte encodes to "-" in URL-safe base64: the storage tool took such an
    # id for an option and every Kafka test of that run failed at setup
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    draws = iter([dashed, dashed, plain])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA" and len(cluster_id) == 22
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))
