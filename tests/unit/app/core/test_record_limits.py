"""Topics, producers and consumers agree on one record size limit, above what a stage
accepts."""

from __future__ import annotations

from edgewise.app.core import broker_profile
from edgewise.app.core.dead_letters import encode_dead_letter
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import max_record_bytes, topic_specs


def test_every_topic_is_created_with_the_record_limit() -> None:
    settings = Settings(max_message_bytes=2_000_000)
    specs = topic_specs(settings, ["edgewise"])
    assert any(s.name.endswith("-review_queue-changelog") for s in specs)
    assert any(s.name.endswith("-dead-letters") for s in specs)
    assert {s.config["max.message.bytes"] for s in specs} == {str(max_record_bytes(settings))}
    assert max_record_bytes(settings) > settings.max_message_bytes


def test_producers_match_the_topics_on_every_broker() -> None:
    for settings in (Settings(), Settings(broker="kafka://h:9092", broker_profile="kafka")):
        limit = max_record_bytes(settings)
        assert broker_profile.producer_options(settings)["max_request_size"] == limit
        faust = broker_profile.faust_options(settings)
        assert faust["producer_max_request_size"] == limit
        assert faust["consumer_max_fetch_size"] >= limit
        assert broker_profile.consumer_options(settings)["max_partition_fetch_bytes"] >= limit


def test_a_dead_letter_of_the_largest_accepted_message_fits() -> None:
    settings = Settings()
    original = bytes(settings.max_message_bytes)
    letter = encode_dead_letter("bridge", "rejected", "x" * 10_000, original, "t" * 1000,
                                b"k" * 5000, settings.max_message_bytes)
    assert len(letter) <= settings.max_message_bytes < max_record_bytes(settings)
