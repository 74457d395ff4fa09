"""Setup problems a person must fix: one line on stderr saying what to run, exit code 2."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.cdc import (
    new_database,
    run_cli,
    slot_name,
)
from tests.fixtures.postgres import PostgresServer, start_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A cluster left at wal_level=replica, as many servers are."""
    with start_postgres(tmp_path_factory.mktemp("replica"),
                        settings={"wal_level": "replica"}) as server:
        yield server


def cdc_error(broker: EmbeddedBroker, dsn: str, tmp: Path, *extra: str) -> str:
    """Run ``edgewise cdc`` expecting a setup error; return its only stderr line."""
    env = {"EDGEWISE_DATA_DIR": str(tmp), "EDGEWISE_TOPIC_PREFIX": "errors"}
    result = run_cli(["cdc", "--broker", broker.url, "--dsn", dsn,
                      "--slot", slot_name(tmp.name), *extra], env=env, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_wal_level_not_logical(replica_only: PostgresServer, embedded_broker: EmbeddedBroker,
                               tmp_path: Path) -> None:
    line = cdc_error(embedded_broker, replica_only.dsn, tmp_path)
    assert line == ("edgewise: error: PostgreSQL wal_level is 'replica', CDC needs 'logical': "
                    "run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL")


def test_user_without_replication_privilege(
    postgres_module: PostgresServer, embedded_broker: EmbeddedBroker,
    tmp_path: Path,
) -> None:
    dsn = new_database(postgres_module)

    async def make_role() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DO $$ BEGIN CREATE ROLE plain LOGIN; "
                               "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        finally:
            await conn.close()

    asyncio.run(make_role())
    line = cdc_error(embedded_broker, dsn.replace("postgres@", "plain@"), tmp_path)
    assert line == ("edgewise: error: PostgreSQL user plain lacks the REPLICATION privilege "
                    "CDC needs: run ALTER ROLE plain REPLICATION")


def test_table_without_primary_key_or_replica_identity(
    postgres_module: PostgresServer, embedded_broker: EmbeddedBroker,
    tmp_path: Path,
) -> None:
    dsn = new_database(postgres_module)

    async def make_table() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE public.readings (sensor text, value float8)")
        finally:
            await conn.close()

    asyncio.run(make_table())
    line = cdc_error(embedded_broker, dsn, tmp_path, "--tables", "public.readings")
    assert line == (
        "edgewise: error: table public.readings has no primary key and no replica identity: "
        "run ALTER TABLE public.readings ADD PRIMARY KEY (...) or ALTER TABLE "
        "public.readings REPLICA IDENTITY FULL")


def test_a_table_that_does_not_exist(
    postgres_module: PostgresServer, embedded_broker: EmbeddedBroker,
    tmp_path: Path,
) -> None:
    dsn = new_database(postgres_module)
    line = cdc_error(embedded_broker, dsn, tmp_path, "--tables", "public.nowhere")
    assert line == "edgewise: error: table public.nowhere does not exist"
