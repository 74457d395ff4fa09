"""The writer of one sink table: a connection kept open, the table made when missing, rows
upserted in one statement (its own transaction: the insert, or when a sample is there
already the upsert), and a database that is away waited out.

``write`` returns only once the rows are committed, so the stage that awaits it moves on
(and its input is committed) only after the database has them: a slow database slows the
stream, it is never buffered away from. What fails is sorted in two:

- the database refused the rows for what they hold (a data error, a constraint of a table
  someone else made): :class:`RowsRefused`, for the stage to dead-letter their message;
- anything else (the server restarting, the network, a timeout, a privilege missing): the
  connection is dropped and the same rows are written again after a backoff, for as long
  as it takes. A write the server committed but whose answer was lost is simply written
  again: the upsert makes the repeat change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from edgewise.agents.sinks.tables import SinkTable
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.metrics import StageMetrics

log = logging.getLogger("edgewise.sinks")
CLOSE_SECONDS = 2.0


class RowsRefused(Exception):
    """The database refused these rows for what they hold; writing them again would fail
    the same way."""


def refused_for_the_rows(exc: BaseException) -> bool:
    """A data exception (SQLSTATE class 22), an integrity violation (class 23), or a value
    asyncpg could not encode: about the rows, not about the database being away."""
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


class PostgresSink:
    """Upserts rows into one table through one connection of its own."""

    def __init__(self, dsn: str, table: SinkTable, stage: str, *, first_delay: float,
                 longest_delay: float, timeout: float, metrics: StageMetrics | None = None
                 ) -> None:
        self.dsn = dsn
        self.table = table
        self.stage = stage
        self.first_delay = first_delay
        self.longest_delay = longest_delay
        self.timeout = timeout
        self.metrics = metrics
        self.conn: asyncpg.Connection | None = None
        self.failures = 0  # attempts that failed and were made again

    async def connect(self) -> asyncpg.Connection:
        """A new connection, and the table created when missing."""
        conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                   self.table.lock_key)
                for statement in self.table.create_statements():
                    await conn.execute(statement)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def write(self, params: list[Any]) -> int:
        """Run the table's upsert with ``params`` (``sinks.columns``: each sample at most
        once) in a transaction of its own; the rows written (new or changed), the others
        were there already. Waits out a database that is away; RowsRefused when it refuses
        the rows themselves."""
        backoff = Backoff(self.first_delay, self.longest_delay)
        failing = ""
        while True:
            if self.conn is not None and self.conn.is_closed():  # the server went away
                self.conn = None
                failing = self.failed("connection_lost", "the server closed it", failing)
            try:
                async with asyncio.timeout(self.timeout):
                    if self.conn is None:
                        self.conn = await self.connect()
                    status = await self.run(self.conn, params)
            except Exception as exc:  # one of the two kinds above, sorted here
                self.drop()
                if refused_for_the_rows(exc):
                    raise RowsRefused(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
                reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                failing = self.failed(reason, str(exc), failing)
                await asyncio.sleep(backoff.next())
                continue
            if failing:
                log.warning("%s: writes to %s work again", self.stage, self.table.name)
            return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows written>"

    async def run(self, conn: asyncpg.Connection, params: list[Any]) -> str:
        """The plain insert; the upsert when a sample was there already (the insert, one
        statement, then changed nothing)."""
        try:
            return await conn.execute(self.table.insert, *params)
        except asyncpg.UniqueViolationError:
            return await conn.execute(self.table.upsert, *params)

    def failed(self, reason: str, detail: str, failing: str) -> str:
        """Count a failed attempt; log it when the reason is new. The reason, as ``failing``."""
        self.failures += 1
        if self.metrics is not None:
            self.metrics.retries.labels(self.stage, reason).inc()
        if reason != failing:
            log.warning("%s: writing to %s failed (%s: %s); retrying with backoff",
                        self.stage, self.table.name, reason, detail[:200])
        return reason

    def drop(self) -> None:
        """Forget the connection (it may be broken, or half way through a transaction)."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=CLOSE_SECONDS)
            except Exception:
                conn.terminate()
