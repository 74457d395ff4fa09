"""The store-and-forward spool: order, durability, bounds and acknowledgement.

These are the promises the edge's drain loop relies on: what was put comes out in the
order it went in, survives a restart until acknowledged, and a full spool gives up its
oldest items, counting every one.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.app.adapters.spool import Spool, SpoolItemTooLargeError, SpoolLockedError


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "edge" / "spool.db"


@pytest.fixture
def spool(spool_path: Path) -> Iterator[Spool]:
    with Spool(spool_path, max_items=1000, fsync=False) as opened:
        yield opened


def payloads(count: int, prefix: str = "frame") -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(count)]


# -- order ------------------------------------------------------------------------------


def test_items_come_out_in_the_order_they_went_in(spool: Spool) -> None:
    for item in payloads(50):
        spool.put(item)
    batch = spool.peek(50)
    assert [payload for _, payload in batch] == payloads(50)
    seqs = [seq for seq, _ in batch]
    assert seqs == sorted(seqs) and len(set(seqs)) == 50


def test_put_returns_increasing_sequence_numbers(spool: Spool) -> None:
    first = spool.put(b"a")
    second, third = spool.put_many([b"b", b"c"])
    assert first < second < third
    assert spool.peek(3) == [(first, b"a"), (second, b"b"), (third, b"c")]


def test_peek_does_not_remove(spool: Spool) -> None:
    spool.put_many(payloads(3))
    assert spool.peek(2) == spool.peek(2)
    assert len(spool) == 3
    assert spool.peek(0) == []
    assert len(spool.peek(100)) == 3


def test_empty_and_binary_payloads_are_kept_exactly(spool: Spool) -> None:
    blobs = [b"", bytes(range(256)), b"\x00" * 1000, bytearray(b"mutable")]
    spool.put_many(blobs)
    assert [payload for _, payload in spool.peek(10)] == [bytes(blob) for blob in blobs]


def test_non_bytes_payloads_are_refused(spool: Spool) -> None:
    with pytest.raises(TypeError):
        spool.put(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        spool.put("text is not bytes")  # type: ignore[arg-type]
    assert len(spool) == 0


def test_a_batch_bigger_than_the_spool_keeps_its_newest_items(spool_path: Path) -> None:
    with Spool(spool_path, max_items=3, fsync=False) as spool:
        seqs = spool.put_many(payloads(5))
        assert len(seqs) == 5 and spool.dropped == 2
        assert spool.peek(10) == list(zip(seqs[2:], payloads(5)[2:], strict=True))


def test_put_many_of_nothing_is_a_no_op(spool: Spool) -> None:
    assert spool.put_many([]) == []
    assert len(spool) == 0


def test_negative_peek_is_refused(spool: Spool) -> None:
    with pytest.raises(ValueError):
        spool.peek(-1)


# -- acknowledgement ---------------------------------------------------------------------


def test_ack_removes_only_the_acknowledged_item(spool: Spool) -> None:
    a, b, c = spool.put_many([b"a", b"b", b"c"])
    assert spool.ack(b) is True
    assert spool.peek(10) == [(a, b"a"), (c, b"c")]
    assert len(spool) == 2
    assert spool.bytes_used == 2


def test_acking_twice_or_an_unknown_seq_is_harmless(spool: Spool) -> None:
    (a,) = spool.put_many([b"a"])
    assert spool.ack(a) is True
    assert spool.ack(a) is False
    assert spool.ack(999_999) is False
    assert len(spool) == 0 and spool.bytes_used == 0


def test_ack_through_removes_the_head_up_to_and_including_seq(spool: Spool) -> None:
    seqs = spool.put_many(payloads(10))
    assert spool.ack_through(seqs[3]) == 4
    assert [seq for seq, _ in spool.peek(100)] == seqs[4:]
    assert spool.ack_through(seqs[3]) == 0
    assert spool.ack_through(seqs[-1]) == 6
    assert len(spool) == 0 and spool.bytes_used == 0


def test_drain_loop_delivers_everything_once_acknowledged(spool: Spool) -> None:
    spool.put_many(payloads(25))
    delivered: list[bytes] = []
    while batch := spool.peek(10):
        delivered.extend(payload for _, payload in batch)
        spool.ack_through(batch[-1][0])
    assert delivered == payloads(25)


def test_unacknowledged_items_are_redelivered(spool: Spool) -> None:
    spool.put_many(payloads(3))
    first_try = spool.peek(3)
    # The publish failed (broker gone): nothing is acked, so the next peek is the same.
    assert spool.peek(3) == first_try


# -- durability --------------------------------------------------------------------------


def test_items_survive_closing_and_reopening(spool_path: Path) -> None:
    with Spool(spool_path, max_items=100) as spool:
        seqs = spool.put_many(payloads(5))
        spool.ack(seqs[0])
    with Spool(spool_path, max_items=100) as reopened:
        assert reopened.peek(10) == list(zip(seqs[1:], payloads(5)[1:], strict=True))
        assert len(reopened) == 4
        assert reopened.bytes_used == sum(len(p) for p in payloads(5)[1:])


def test_sequence_numbers_never_go_back_even_after_emptying(spool_path: Path) -> None:
    with Spool(spool_path, max_items=100) as spool:
        last = spool.put_many(payloads(3))[-1]
        spool.ack_through(last)
    with Spool(spool_path, max_items=100) as reopened:
        assert reopened.put(b"next") > last


CRASHING_PRODUCER = """
import os, signal, sys
from edgewise.app.adapters.spool import Spool
spool = Spool(sys.argv[1], max_items=100, fsync=True)
spool.put_many([b"written", b"before", b"crash"])
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: as abrupt as a power cut
"""


def test_items_survive_a_producer_killed_without_closing(spool_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_PRODUCER, str(spool_path)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    with Spool(spool_path, max_items=100) as reopened:
        assert [payload for _, payload in reopened.peek(10)] == [b"written", b"before", b"crash"]


def test_a_second_opener_is_refused_while_the_spool_is_open(spool: Spool) -> None:
    with pytest.raises(SpoolLockedError):
        Spool(spool.path, max_items=10)
    spool.put(b"still works")
    assert len(spool) == 1


# -- bounds ------------------------------------------------------------------------------


def test_full_spool_drops_the_oldest_by_item_count(spool_path: Path) -> None:
    with Spool(spool_path, max_items=5, fsync=False) as spool:
        spool.put_many(payloads(8))
        assert len(spool) == 5
        assert spool.dropped == 3
        assert [payload for _, payload in spool.peek(10)] == payloads(8)[3:]


def test_full_spool_drops_the_oldest_by_bytes(spool_path: Path) -> None:
    with Spool(spool_path, max_bytes=100, fsync=False) as spool:
        for _ in range(4):
            spool.put(b"x" * 30)
        assert len(spool) == 3 and spool.bytes_used == 90 and spool.dropped == 1
        spool.put(b"y" * 70)  # needs 60 more bytes: the two oldest 30-byte items go
        assert spool.dropped == 3
        assert [payload for _, payload in spool.peek(10)] == [b"x" * 30, b"y" * 70]
        assert spool.bytes_used == 100


def test_both_bounds_apply_together(spool_path: Path) -> None:
    with Spool(spool_path, max_items=3, max_bytes=10, fsync=False) as spool:
        spool.put_many([b"1", b"2", b"3", b"4"])  # item bound bites
        assert [p for _, p in spool.peek(10)] == [b"2", b"3", b"4"]
        spool.put(b"123456789")  # byte bound bites: 3 + 9 > 10, so "2" and "3" go
        assert [p for _, p in spool.peek(10)] == [b"4", b"123456789"]
        assert spool.dropped == 3 and spool.bytes_used == 10


def test_dropped_counter_is_persisted(spool_path: Path) -> None:
    with Spool(spool_path, max_items=2, fsync=False) as spool:
        spool.put_many(payloads(5))
        assert spool.dropped == 3
    with Spool(spool_path, max_items=2, fsync=False) as reopened:
        assert reopened.dropped == 3
        reopened.put(b"more")
        assert reopened.dropped == 4


def test_lowering_the_bound_on_reopen_drops_the_oldest(spool_path: Path) -> None:
    with Spool(spool_path, max_items=10, fsync=False) as spool:
        spool.put_many(payloads(10))
    with Spool(spool_path, max_items=4, fsync=False) as smaller:
        assert len(smaller) == 4 and smaller.dropped == 6
        assert [p for _, p in smaller.peek(10)] == payloads(10)[6:]


def test_acking_a_dropped_item_is_harmless(spool_path: Path) -> None:
    with Spool(spool_path, max_items=2, fsync=False) as spool:
        first = spool.put(b"old")
        in_flight = spool.peek(1)
        spool.put_many([b"new1", b"new2"])  # "old" is dropped while being published
        assert spool.ack(in_flight[0][0]) is False
        assert spool.ack_through(first) == 0
        assert len(spool) == 2


def test_an_item_larger_than_the_spool_is_refused_not_dropped(spool_path: Path) -> None:
    with Spool(spool_path, max_bytes=10, fsync=False) as spool:
        spool.put(b"keep")
        with pytest.raises(SpoolItemTooLargeError, match="max_bytes"):
            spool.put(b"x" * 11)
        with pytest.raises(ValueError):  # it is also a ValueError for generic callers
            spool.put_many([b"ok", b"y" * 11])
        assert [p for _, p in spool.peek(10)] == [b"keep"]
        assert spool.dropped == 0


def test_drops_are_logged_once_per_outage(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(spool_path, max_items=2, fsync=False) as spool:
        with caplog.at_level(logging.WARNING, logger="edgewise.app.adapters.spool"):
            spool.put_many(payloads(10))
        assert spool.dropped == 8
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        spool.ack(spool.peek(1)[0][0])  # the broker is back: the next outage warns again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgewise.app.adapters.spool"):
            spool.put_many(payloads(3))
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pytest.mark.parametrize(
    "bounds",
    [{}, {"max_items": 0}, {"max_bytes": 0}, {"max_items": -1, "max_bytes": 10}],
)
def test_a_spool_must_have_a_positive_bound(spool_path: Path, bounds: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Spool(spool_path, **bounds)


def test_a_failed_batch_is_rolled_back_whole(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool.put_many(payloads(3))
    real_insert = spool._insert
    calls = 0

    def insert_then_fail(payload: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_insert(payload)

    monkeypatch.setattr(spool, "_insert", insert_then_fail)
    with pytest.raises(sqlite3.OperationalError):
        spool.put_many([b"first of batch", b"second of batch"])
    monkeypatch.undo()
    assert len(spool) == 3
    assert spool.bytes_used == sum(len(p) for p in payloads(3))
    assert [p for _, p in spool.peek(10)] == payloads(3)


def test_the_file_is_a_plain_sqlite_database_in_wal_mode(spool_path: Path) -> None:
    with Spool(spool_path, max_items=10) as spool:
        spool.put(b"x")
    connection = sqlite3.connect(spool_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1
    finally:
        connection.close()
