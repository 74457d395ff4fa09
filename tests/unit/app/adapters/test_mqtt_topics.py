"""The MQTT topic tree and its mapping to Kafka topics."""

from __future__ import annotations

import pytest

from edgewise.app.adapters.mqtt_topics import (
    EdgeTopic,
    bridge_subscription,
    check_root,
    check_segment,
    command_subscriptions,
    command_topic,
    edge_topic,
    kafka_key_for,
    kafka_topic_for,
    mqtt_address,
    parse_edge_topic,
)
from edgewise.app.core.frames import BadInput
from edgewise.app.core.topics import TopicNames


def test_edge_topic_round_trips() -> None:
    topic = edge_topic("edgewise", "plant-7", "cam.1", "face")
    assert topic == "edgewise/plant-7/cam.1/face"
    assert parse_edge_topic("edgewise", topic) == EdgeTopic("plant-7", "cam.1", "face")


def test_multi_segment_root() -> None:
    assert check_root("acme/edge") == "acme/edge"
    topic = edge_topic("acme/edge", "s", "d", "sample")
    assert parse_edge_topic("acme/edge", topic) == EdgeTopic("s", "d", "sample")
    with pytest.raises(ValueError):
        check_root("acme/+")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "all", "x" * 65, "-lead", "sp ace"])
def test_segments_refuse_separators_wildcards_and_the_broadcast_name(bad: str) -> None:
    with pytest.raises(ValueError):
        check_segment(bad, "device")


def test_unknown_publish_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown edge message kind"):
        edge_topic("edgewise", "s", "d", "telemetry")


@pytest.mark.parametrize(("topic", "reason"), [
    ("other/s/d/sample", "bad_topic"),
    ("edgewise/s/d", "bad_topic"),
    ("edgewise/s/d/sample/extra", "bad_topic"),
    ("edgewise/s/d/telemetry", "unknown_kind"),
    ("edgewise/s/d$/sample", "bad_topic"),
    ("edgewise//d/sample", "bad_topic"),
])
def test_parse_refuses_topics_outside_the_tree(topic: str, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_edge_topic("edgewise", topic)
    assert caught.value.reason == reason


def test_kinds_map_to_kafka_topics_and_keys() -> None:
    names = TopicNames("p")
    assert [kafka_topic_for(k, names) for k in ("sample", "prediction", "metrics", "face")] == [
        "p-samples", "p-predictions", "p-edge-metrics", "p-faces"]
    assert kafka_key_for(EdgeTopic("s1", "d1", "sample")) == b"d1"
    assert kafka_key_for(EdgeTopic("s1", "d1", "metrics")) == b"s1"  # a site's edges together


def test_commands_address_a_device_a_site_or_everyone() -> None:
    assert command_topic("edgewise") == "edgewise/all/all/command"
    assert command_topic("edgewise", "s1", "d1") == "edgewise/s1/d1/command"
    assert command_subscriptions("edgewise", "s1", "d1") == [
        "edgewise/s1/d1/command", "edgewise/s1/all/command", "edgewise/all/all/command"]
    assert parse_edge_topic("edgewise", command_topic("edgewise")).kind == "command"
    assert bridge_subscription("edgewise") == "edgewise/+/+/+"
    with pytest.raises(ValueError):
        command_topic("edgewise", "s/1", "d1")


def test_mqtt_address() -> None:
    assert mqtt_address("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884)
    assert mqtt_address("mqtt://broker") == ("broker", 1883)
    assert mqtt_address("broker:2000") == ("broker", 2000)
    for bad in ("http://x:1", "mqtt://:1883", "mqtt://h:notaport"):
        with pytest.raises(ValueError):
            mqtt_address(bad)
