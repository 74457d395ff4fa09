"""A corrupted or oversized spool item must not block the link; a dead link stops the edge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgewise.agents.edge.device import LinkFailed, supervised
from edgewise.app.adapters.mqtt_link import MIN_PUBLISH_TIMEOUT, SpoolPublisher, encode_item
from edgewise.app.adapters.spool import Spool, SpoolError
from edgewise.app.core.backoff import Backoff


class FakeClient:
    """Takes every publish at once and remembers it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, float]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int, timeout: float) -> None:
        self.published.append((topic, payload, timeout))


def publisher(tmp_path: Path, keepalive: int = 10, limit: int | None = None) -> SpoolPublisher:
    spool = Spool(tmp_path / "edge.spool", max_items=100, fsync=False)
    return SpoolPublisher(spool, "localhost", 1883, "edge", keepalive=keepalive,
                          backoff=Backoff(0.01, 0.01), max_payload_bytes=limit)


async def drain(link: SpoolPublisher, client: FakeClient) -> None:
    task = asyncio.create_task(link._drain(client))  # type: ignore[arg-type]
    assert await link.wait_drained(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_undecodable_spool_items_are_skipped_and_counted(tmp_path: Path) -> None:
    link = publisher(tmp_path)
    link.spool.put(encode_item("edge/s/d/samples", b"first"))
    link.spool.put(b"\x00\x04\xff\xfe\xfd\xfcpayload")  # a corrupted row: topic not UTF-8
    link.spool.put(b"\x00\x50short")  # a topic longer than the item
    link.put("edge/s/d/samples", b"last")
    client = FakeClient()
    await drain(link, client)
    assert [p for _, p, _ in client.published] == [b"first", b"last"]
    assert link.stats.undecodable == 2 and link.stats.published == 2
    link.spool.close()


async def test_oversized_messages_never_reach_the_spool_head(tmp_path: Path) -> None:
    link = publisher(tmp_path, limit=10)
    link.put("t/s/d/samples", b"x" * 11)
    link.put_many([("t/s/d/samples", b"ok"), ("t/s/d/faces", b"y" * 50)])
    assert len(link.spool) == 1 and link.stats.oversize == 2
    link.spool.put(encode_item("t/s/d/faces", b"z" * 50))  # spooled by an older edge
    client = FakeClient()
    await drain(link, client)
    assert [p for _, p, _ in client.published] == [b"ok"]
    assert link.stats.oversize == 3
    link.spool.close()


def test_publish_timeout_is_never_zero(tmp_path: Path) -> None:
    link = publisher(tmp_path, keepalive=0)
    assert link.publish_timeout == MIN_PUBLISH_TIMEOUT > 0
    assert publisher(tmp_path / "b", keepalive=60).publish_timeout == 120.0


async def test_a_dead_link_stops_the_edge_with_a_clear_error() -> None:
    async def broken_link() -> None:
        raise SpoolError("disk I/O error")

    link_task = asyncio.create_task(broken_link())
    with pytest.raises(LinkFailed, match="disk I/O error"):
        await supervised(asyncio.sleep(3600), link_task)


async def test_work_that_ends_first_is_not_disturbed() -> None:
    link_task = asyncio.create_task(asyncio.sleep(3600))
    await supervised(asyncio.sleep(0), link_task)
    assert not link_task.done()
    link_task.cancel()
