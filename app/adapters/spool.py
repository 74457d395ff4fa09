"""A bounded on-disk FIFO for the edge's store-and-forward.

While the MQTT broker is unreachable the edge keeps producing; it writes every outgoing
payload here, and a drain loop publishes from the head, in order, removing an item only
once the broker has acknowledged it (QoS 1 PUBACK). That gives at-least-once delivery
across broker outages *and* edge restarts: whatever was not acknowledged is still here
when the process comes back.

Design: one SQLite database in WAL mode (stdlib, crash-safe, one file plus its WAL).
Rows carry an ``AUTOINCREMENT`` sequence number, so sequence numbers only ever grow, even
after the queue empties or the process restarts; a ``seq`` handed out by ``peek`` therefore
always names the same payload. The connection holds SQLite's exclusive lock for its whole
life, so a second process opening the same spool fails at once instead of interleaving.

Bounds: ``max_items`` and/or ``max_bytes`` (payload bytes). A full spool drops its OLDEST
items to make room, because on a camera the newest data is the most valuable; each drop is
counted in ``dropped``, which is persisted with the data, and logged. A single payload
larger than ``max_bytes`` can never fit and is refused with ``SpoolItemTooLargeError``.

Durability: with ``fsync=True`` (default) every commit is fsynced (``synchronous=FULL``),
so an acknowledged ``put`` survives power loss. ``fsync=False`` (``synchronous=NORMAL``)
survives a process crash but may lose the last commits on power loss, for a much faster
``put`` on slow SD cards.

Threads and asyncio: the methods are plain synchronous calls, each one short transaction
(tens of microseconds without fsync; one fsync with it). Calling them straight from the
event loop is fine for the edge's rates; on storage with slow fsync, wrap them in
``asyncio.to_thread``. A lock makes the object safe to share between threads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


class SpoolError(Exception):
    """Base class for store-and-forward spool errors."""


class SpoolItemTooLargeError(SpoolError, ValueError):
    """A payload is larger than the whole spool may hold, so it could never be stored."""


class SpoolLockedError(SpoolError):
    """Another process (or another Spool object) already has this spool open."""


class Spool:
    """Durable, ordered, bounded queue of byte payloads awaiting a broker acknowledgement.

    Usage by a drain loop::

        for seq, payload in spool.peek(100):
            await publish(payload)      # returns once the broker has acknowledged
            spool.ack(seq)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        fsync: bool = True,
    ) -> None:
        if max_items is None and max_bytes is None:
            raise ValueError("a spool needs a bound: set max_items and/or max_bytes")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.path = Path(path)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._warned_full = False
        self._conn = self._open(self.path, fsync)
        self._count = self._bytes = self._dropped = 0
        self._reload_counters()
        if self._over_bound(0, 0):
            # The bounds were lowered since the spool was written; honour them now.
            with self._transaction():
                self._drop_oldest_to_fit(0, 0)

    @staticmethod
    def _open(path: Path, fsync: bool) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=0.0, isolation_level=None, check_same_thread=False)
        try:
            # Exclusive locking keeps other processes out and lets WAL run without shared
            # memory; it must be set before WAL is switched on.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc):
                raise SpoolLockedError(f"spool {path} is already open elsewhere") from exc
            raise
        conn.isolation_level = "DEFERRED"  # from here on, `with conn:` is one transaction
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One locked transaction; on failure the in-memory totals are re-read from disk."""
        with self._lock:
            try:
                with self._conn:
                    yield
            except BaseException:
                self._reload_counters()
                raise

    def _read_dropped(self) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0])

    # -- writing -------------------------------------------------------------------------

    def put(self, item: bytes) -> int:
        """Append one payload and return its sequence number.

        Drops (and counts) the oldest items first if the spool would exceed its bounds.
        """
        return self.put_many([item])[0]

    def put_many(self, items: Iterable[bytes]) -> list[int]:
        """Append payloads in order, in one transaction, and return their sequence numbers.

        One commit (and one fsync) for a whole batch is what keeps a camera burst cheap.
        A batch larger than the bounds keeps its newest items; the earlier ones are dropped
        and counted like any other (their returned seqs then no longer exist).
        """
        # memoryview() accepts only bytes-like objects; bytes(5) would silently be 5 zeros.
        payloads = [bytes(memoryview(item)) for item in items]
        for payload in payloads:
            if self.max_bytes is not None and len(payload) > self.max_bytes:
                raise SpoolItemTooLargeError(
                    f"payload of {len(payload)} bytes exceeds the spool's max_bytes "
                    f"{self.max_bytes}"
                )
        if not payloads:
            return []
        with self._transaction():
            return [self._insert(payload) for payload in payloads]

    def _insert(self, payload: bytes) -> int:
        self._drop_oldest_to_fit(1, len(payload))
        cursor = self._conn.execute(
            "INSERT INTO items (payload, size) VALUES (?, ?)", (payload, len(payload))
        )
        self._count += 1
        self._bytes += len(payload)
        return int(cursor.lastrowid or 0)

    def _over_bound(self, extra_items: int, extra_bytes: int) -> bool:
        too_many = self.max_items is not None and self._count + extra_items > self.max_items
        too_big = self.max_bytes is not None and self._bytes + extra_bytes > self.max_bytes
        return too_many or too_big

    def _drop_oldest_to_fit(self, extra_items: int, extra_bytes: int) -> None:
        """Delete the fewest oldest rows that make room; call inside a transaction."""
        if not self._over_bound(extra_items, extra_bytes):
            return
        items_needed = 0
        if self.max_items is not None:
            items_needed = self._count + extra_items - self.max_items
        bytes_needed = 0
        if self.max_bytes is not None:
            bytes_needed = self._bytes + extra_bytes - self.max_bytes
        # Running totals from the head: the first row where both deficits are covered is
        # the last one to drop. SQLite streams the window in seq order and stops at LIMIT 1.
        row = self._conn.execute(
            """
            SELECT seq, dropped_items, dropped_bytes FROM (
                SELECT seq,
                       ROW_NUMBER() OVER (ORDER BY seq) AS dropped_items,
                       SUM(size) OVER (ORDER BY seq) AS dropped_bytes
                FROM items
            )
            WHERE dropped_items >= ? AND dropped_bytes >= ?
            LIMIT 1
            """,
            (items_needed, bytes_needed),
        ).fetchone()
        if row is None:  # cannot happen while a single payload fits; keep the data safe
            raise SpoolError(f"spool {self.path} cannot make room for {extra_bytes} bytes")
        last_seq, dropped_now, bytes_freed = (int(value) for value in row)
        self._conn.execute("DELETE FROM items WHERE seq <= ?", (last_seq,))
        self._conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped_now,)
        )
        self._count -= dropped_now
        self._bytes -= bytes_freed
        self._dropped += dropped_now
        # Warn once per outage, not once per frame: the count lives in `dropped`.
        log = logger.debug if self._warned_full else logger.warning
        self._warned_full = True
        log(
            "spool %s full: dropped %d oldest item(s) through seq %d (%d dropped in total; "
            "further drops until the next acknowledgement are counted, not logged)",
            self.path,
            dropped_now,
            last_seq,
            self._dropped,
        )

    def _reload_counters(self) -> None:
        """Re-read the in-memory totals after a rolled-back transaction left them stale."""
        count, total = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM items"
        ).fetchone()
        self._count, self._bytes = int(count), int(total)
        self._dropped = self._read_dropped()

    # -- reading and acknowledging ------------------------------------------------------

    def peek(self, n: int = 1) -> list[tuple[int, bytes]]:
        """Return up to ``n`` of the oldest (seq, payload) pairs without removing them."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, payload FROM items ORDER BY seq LIMIT ?", (n,)
            ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def ack(self, seq: int) -> bool:
        """Remove one item after the broker acknowledged it.

        Returns False if it was already gone (acknowledged before, or dropped for space);
        that is normal under at-least-once delivery and not an error.
        """
        with self._transaction():
            row = self._conn.execute(
                "DELETE FROM items WHERE seq = ? RETURNING size", (seq,)
            ).fetchone()
            if row is None:
                return False
            self._count -= 1
            self._bytes -= int(row[0])
            self._warned_full = False
            return True

    def ack_through(self, seq: int) -> int:
        """Remove every item up to and including ``seq``; return how many were removed.

        For a drain loop that publishes a batch in order and acknowledges it at once.
        """
        with self._transaction():
            count, total = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM items WHERE seq <= ?", (seq,)
            ).fetchone()
            if count:
                self._conn.execute("DELETE FROM items WHERE seq <= ?", (seq,))
                self._count -= int(count)
                self._bytes -= int(total)
                self._warned_full = False
            return int(count)

    # -- state ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def bytes_used(self) -> int:
        """Payload bytes currently held (SQLite's own overhead not included)."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Items discarded for space since the spool file was created (persisted)."""
        return self._dropped

    def close(self) -> None:
        """Checkpoint the WAL into the database file and release the lock."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Spool({str(self.path)!r}, items={self._count}, bytes={self._bytes}, "
            f"dropped={self._dropped}, max_items={self.max_items}, max_bytes={self.max_bytes})"
        )
