"""The broker profile: Tansu's workarounds only on Tansu, Kafka's defaults elsewhere."""

from __future__ import annotations

from edgewise.app.core import broker_profile
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import max_record_bytes

KAFKA = Settings(broker="kafka://127.0.0.1:9092", broker_profile="kafka")
TANSU = Settings(broker="kafka://127.0.0.1:9092", broker_profile="embedded")


def test_kafka_producers_batch_and_are_idempotent() -> None:
    options = broker_profile.producer_options(KAFKA)
    assert options["enable_idempotence"] and options["acks"] == "all"
    assert "max_batch_size" not in options and "linger_ms" not in options
    assert broker_profile.idempotent_producers(KAFKA)
    faust = broker_profile.faust_options(KAFKA)
    assert "producer_max_batch_size" not in faust
    # a killed worker's partitions move after 10 s, not Faust's 60 s; heartbeats a third
    assert (faust["broker_session_timeout"], faust["broker_heartbeat_interval"]) == (10.0, 3.0)
    assert broker_profile.consumer_options(KAFKA)["session_timeout_ms"] == 10_000
    custom = KAFKA.model_copy(update={"session_timeout_seconds": 30.0})
    assert broker_profile.session_timeout(custom) == (30.0, 3.0)
    assert broker_profile.session_timeout(TANSU) == (6.0, 1.0)


def test_tansu_gets_one_record_per_batch_and_no_idempotence() -> None:
    options = broker_profile.producer_options(TANSU)
    assert options["max_batch_size"] == 1 and "enable_idempotence" not in options
    assert not broker_profile.idempotent_producers(TANSU)
    assert broker_profile.faust_options(TANSU)["producer_max_batch_size"] == 1


def test_requests_may_be_as_large_as_the_topics_allow() -> None:
    for settings in (KAFKA, TANSU):
        assert broker_profile.producer_options(settings)["max_request_size"] == \
            max_record_bytes(settings)
        assert broker_profile.faust_options(settings)["producer_max_request_size"] == \
            max_record_bytes(settings)
