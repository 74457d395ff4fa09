"""The PostgreSQL side of change data capture: checks, publication, slot, peek, advance.

Capture talks to a stock server through plain SQL (no replication connection, no
extension), so everything here is a query; the capture loop in ``ingest_cdc`` decides
*when* to call them. Setup problems a person must fix (wal_level, the REPLICATION
privilege, a table PostgreSQL cannot identify rows of) raise :class:`CdcSetupError`
with one line saying what to run; everything else is left to the loop's reconnects.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from edgewise.agents.cdc.pgoutput import Relation, RelationColumn, lsn_to_text

NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

PEEK_SQL = (
    "SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, "
    "'proto_version', '1', 'publication_names', $3, 'binary', 'true')"
)
"""Up to ``$2`` changes (whole transactions: a bigger one comes entire) from the slot."""

TABLE_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relkind,
       ARRAY(SELECT a.attname FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = c.oid AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)) AS primary_key
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1
"""

COLUMNS_SQL = """
SELECT attname, atttypid, atttypmod FROM pg_attribute
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""


class CdcSetupError(RuntimeError):
    """PostgreSQL is not set up for capture; the message says, in one line, how to fix it."""


@dataclass(frozen=True)
class CapturedTable:
    """A published table: its OID, names, replica identity and primary-key columns."""

    oid: int
    schema: str
    name: str
    replica_identity: str
    primary_key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_table_list(text: str) -> list[tuple[str, str]]:
    """``"public.a, b"`` -> ``[("public", "a"), ("public", "b")]`` (unqualified: public)."""
    tables = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        schema, _, name = item.rpartition(".")
        tables.append((schema or "public", name))
    return tables


def redact_dsn(dsn: str) -> str:
    """A connection URL fit for a log line: any password replaced by ``***``."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return dsn
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def quote_ident(name: str) -> str:
    """An identifier quoted as PostgreSQL's quote_ident would, always."""
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def check_name(kind: str, name: str) -> str:
    """Slot and publication names: lower-case letters, digits and ``_``, as slots require."""
    if not NAME.match(name):
        raise CdcSetupError(f"{kind} name {name!r} must be lower-case letters, digits and _")
    return name


def identity_problem(table: CapturedTable) -> str | None:
    """Why PostgreSQL could not identify this table's rows in UPDATE/DELETE, or None."""
    if table.replica_identity == "n" or (
            table.replica_identity == "d" and not table.primary_key):
        return (f"table {table.qualified} has no primary key and no replica identity: run "
                f"ALTER TABLE {table.qualified} ADD PRIMARY KEY (...) or ALTER TABLE "
                f"{table.qualified} REPLICA IDENTITY FULL")
    if not table.primary_key:  # FULL or USING INDEX without a key: records would be keyless
        return (f"table {table.qualified} has no primary key, which CDC needs as the record "
                f"key of its compacted topic: run ALTER TABLE {table.qualified} ADD PRIMARY "
                f"KEY (...)")
    return None


async def check_server(conn: asyncpg.Connection) -> None:
    """wal_level must be logical and the user must hold REPLICATION (or be superuser)."""
    wal_level = await conn.fetchval("SHOW wal_level")
    if wal_level != "logical":
        raise CdcSetupError(
            f"PostgreSQL wal_level is '{wal_level}', CDC needs 'logical': run ALTER SYSTEM SET "
            "wal_level = logical and restart PostgreSQL")
    role = await conn.fetchrow(
        "SELECT current_user AS name, rolsuper, rolreplication FROM pg_roles "
        "WHERE rolname = current_user")
    if role is None or not (role["rolsuper"] or role["rolreplication"]):
        user = role["name"] if role else "the current user"
        raise CdcSetupError(
            f"PostgreSQL user {user} lacks the REPLICATION privilege CDC needs: run "
            f"ALTER ROLE {user} REPLICATION")


async def table_info(conn: asyncpg.Connection, oid: int) -> CapturedTable | None:
    """The catalog's view of one table (None when it no longer exists)."""
    row = await conn.fetchrow(TABLE_SQL, oid)
    if row is None:
        return None
    identity = row["relreplident"]  # the one-byte "char" type arrives as bytes
    identity = identity.decode() if isinstance(identity, bytes) else str(identity)
    return CapturedTable(row["oid"], row["nspname"], row["relname"], identity,
                         tuple(row["primary_key"]))


async def resolve_tables(conn: asyncpg.Connection, names: Sequence[tuple[str, str]]
                         ) -> list[CapturedTable]:
    """The configured tables, each checked: it exists and its rows can be identified."""
    tables = []
    for schema, name in names:
        oid = await conn.fetchval("SELECT to_regclass($1)::oid", qualified_name(schema, name))
        info = None if oid is None else await table_info(conn, oid)
        if info is None:
            raise CdcSetupError(f"table {schema}.{name} does not exist")
        tables.append(info)
    return tables


async def ensure_publication(conn: asyncpg.Connection, publication: str,
                             tables: Sequence[CapturedTable]) -> None:
    """Create the publication (for these tables, or all tables) or add missing tables."""
    row = await conn.fetchrow("SELECT puballtables FROM pg_publication WHERE pubname = $1",
                              publication)
    wanted = ", ".join(qualified_name(t.schema, t.name) for t in tables)
    try:
        if row is None:
            target = f"TABLE {wanted}" if tables else "ALL TABLES"
            await conn.execute(f"CREATE PUBLICATION {quote_ident(publication)} FOR {target}")
            return
        if row["puballtables"] or not tables:
            return
        have = {(r["schemaname"], r["tablename"]) for r in await conn.fetch(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1",
            publication)}
        missing = [t for t in tables if (t.schema, t.name) not in have]
        if missing:
            await conn.execute(f"ALTER PUBLICATION {quote_ident(publication)} ADD TABLE "
                               + ", ".join(qualified_name(t.schema, t.name) for t in missing))
    except asyncpg.InsufficientPrivilegeError as exc:
        raise CdcSetupError(f"cannot create or change publication {publication}: {exc}; "
                            "create it as the tables' owner (or a superuser)") from None


async def published_tables(conn: asyncpg.Connection, publication: str) -> list[CapturedTable]:
    """Every table the publication covers, checked like configured ones."""
    oids = await conn.fetch(
        "SELECT format('%I.%I', schemaname, tablename)::regclass::oid AS oid "
        "FROM pg_publication_tables WHERE pubname = $1 ORDER BY schemaname, tablename",
        publication)
    tables = [await table_info(conn, r["oid"]) for r in oids]
    return [t for t in tables if t is not None]


async def ensure_slot(conn: asyncpg.Connection, slot: str) -> bool:
    """Create the pgoutput slot when missing; True when it was created now."""
    row = await conn.fetchrow(
        "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1", slot)
    if row is not None:
        database = await conn.fetchval("SELECT current_database()")
        if row["plugin"] != "pgoutput" or row["database"] != database:
            raise CdcSetupError(
                f"replication slot {slot} exists for plugin {row['plugin']} in database "
                f"{row['database']}; CDC needs a pgoutput slot in {database}: choose another "
                "EDGEWISE_CDC_SLOT")
        return False
    try:
        await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    except asyncpg.DuplicateObjectError:
        return False  # another capture created it a moment ago
    return True


async def relation_from_catalog(conn: asyncpg.Connection, table: CapturedTable) -> Relation:
    """A Relation as pgoutput would send it, built from the catalog (for the snapshot)."""
    columns = tuple(
        RelationColumn(r["attname"], r["atttypid"], r["atttypmod"],
                       is_key=r["attname"] in table.primary_key)
        for r in await conn.fetch(COLUMNS_SQL, table.oid))
    return Relation(table.oid, table.schema, table.name,
                    table.replica_identity,  # type: ignore[arg-type]
                    columns)


async def peek_changes(conn: asyncpg.Connection, slot: str, publication: str,
                       max_changes: int, page_rows: int) -> AsyncIterator[asyncpg.Record]:
    """Slot rows (lsn, xid, data) through a cursor: the client holds one page at a time.

    The server materialises the peek (spilling to disk when large); the cursor then hands
    it over ``page_rows`` at a time, so a huge transaction never sits in our memory.
    """
    async with conn.transaction():
        cursor = conn.cursor(PEEK_SQL, slot, max_changes, publication, prefetch=page_rows)
        async for row in cursor:
            yield row


async def confirmed_lsn(conn: asyncpg.Connection, slot: str) -> int | None:
    """Where the slot resumes: its confirmed_flush_lsn."""
    return await conn.fetchval(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot)


async def flushed_lsn(conn: asyncpg.Connection) -> int:
    """The end of the WAL flushed to disk: a peek started later sees at least this far."""
    return int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()"))


async def advance_slot(conn: asyncpg.Connection, slot: str, lsn: int) -> None:
    """Move the slot's confirmed position forward to ``lsn`` (never backwards)."""
    current = await confirmed_lsn(conn, slot)
    if current is not None and lsn <= current:
        return
    await conn.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                       slot, lsn_to_text(lsn))
