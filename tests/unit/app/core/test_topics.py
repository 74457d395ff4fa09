"""Topic specs carry the record limit and the replication the broker needs."""

from __future__ import annotations

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import (
    COMPACT,
    TopicSpec,
    max_record_bytes,
    replicas_for,
    replicated_config,
    topic_specs,
    with_limits,
)


def test_every_topic_allows_records_as_large_as_a_stage_accepts() -> None:
    settings = Settings(max_message_bytes=3_000_000)
    specs = topic_specs(settings, ["app"])
    assert specs and all(int(s.config["max.message.bytes"]) == max_record_bytes(settings)
                         for s in specs)
    assert max_record_bytes(settings) > settings.max_message_bytes


def test_replication_follows_the_setting_or_the_cluster_size() -> None:
    assert [replicas_for(0, n) for n in (0, 1, 2, 3, 5)] == [1, 1, 2, 3, 3]
    assert replicas_for(2, 5) == 2
    assert {s.replicas for s in topic_specs(Settings(replication_factor=2))} == {2}


def test_three_replicas_need_two_in_sync() -> None:
    assert replicated_config({"a": "b"}, 3)["min.insync.replicas"] == "2"
    assert "min.insync.replicas" not in replicated_config({}, 1)
    assert replicated_config({"min.insync.replicas": "3"}, 3)["min.insync.replicas"] == "3"


def test_limits_added_to_a_spec_keep_its_own_configs() -> None:
    spec = with_limits(TopicSpec("cdc.public.t", 8, COMPACT), Settings(replication_factor=3))
    assert spec.config["cleanup.policy"] == "compact" and spec.replicas == 3
    assert "max.message.bytes" in spec.config
