"""Spool items of the store-and-forward link."""

from __future__ import annotations

import pytest

from edgewise.app.adapters.mqtt_link import decode_item, encode_item


@pytest.mark.parametrize("payload", [b"", b"\x00\x01binary", b"x" * 100_000])
def test_items_round_trip(payload: bytes) -> None:
    topic = "edgewise/site-1/cam-ü/face"
    assert decode_item(encode_item(topic, payload)) == (topic, payload)


def test_topics_longer_than_mqtt_allows_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_item("t" * 70_000, b"")
