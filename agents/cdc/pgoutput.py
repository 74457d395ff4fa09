"""A decoder of PostgreSQL's built-in ``pgoutput`` logical replication protocol, version 1.

Change data capture reads a logical slot through SQL
(``pg_logical_slot_peek_binary_changes(slot, NULL, n, 'proto_version', '1',
'publication_names', pub, 'binary', 'true')``), so stock PostgreSQL needs no extension and
no replication connection. Every row it returns carries one protocol message; this module
turns those bytes into frozen dataclasses, without any I/O, so it is tested byte by byte.

Messages refer to tables by OID and carry column values untyped; a :class:`RelationCache`
remembers the :class:`Relation` messages (PostgreSQL sends one before the first change to a
table in each decoding session, i.e. each call of the slot function, and again after ALTER
TABLE) and decodes tuples into
``{column: value}`` dicts (see :mod:`edgewise.agents.cdc.pgoutput_values` for the types).

Malformed or truncated input raises :class:`PgOutputError` and nothing else, so the CDC
stage can send the original bytes to the dead-letter topic with a reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast

from edgewise.agents.cdc.pgoutput_values import (
    PgOutputError,
    decode_binary_value,
    decode_text_value,
    postgres_micros_to_datetime,
)

ReplicaIdentity = Literal["d", "n", "f", "i"]
"""Table's REPLICA IDENTITY: default (primary key), nothing, full (all columns), index."""


ColumnKind = Literal["n", "u", "t", "b"]
"""How a column is sent: 'n' null, 'u' unchanged TOAST (not sent), 't' text, 'b' binary."""


@dataclass(frozen=True, slots=True)
class ColumnValue:
    """One column of a TupleData, still undecoded: its kind and its bytes."""

    kind: ColumnKind
    data: bytes = b""


_NULL_COLUMN, _UNCHANGED_COLUMN = ColumnValue("n"), ColumnValue("u")
TupleData = tuple[ColumnValue, ...]
OldTupleKind = Literal["K", "O"]
"""How an old row is identified: by its replica identity key, or by the whole old row."""


@dataclass(frozen=True, slots=True)
class Begin:
    """Start of a transaction; ``final_lsn`` is where its commit record ends up."""

    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """End of a transaction; the slot may be advanced to ``end_lsn`` once all is delivered."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """The transaction was replicated here from another node (replication origin)."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    """A column of a published table; ``is_key`` means part of the replica identity."""

    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    """A published table's definition, which later messages refer to by ``oid``.

    With REPLICA IDENTITY FULL pgoutput flags *every* column as key, so the primary key
    must then come from the catalog, not from ``key_columns``.
    """

    oid: int
    namespace: str
    name: str
    replica_identity: ReplicaIdentity
    columns: tuple[RelationColumn, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Names of the replica identity columns, in table order."""
        return tuple(column.name for column in self.columns if column.is_key)


@dataclass(frozen=True, slots=True)
class CustomType:
    """A non-built-in type used by a published column (sent before its Relation)."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """A new row."""

    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """A changed row; ``old`` is the key ('K', key changed) or the whole row ('O', FULL)."""

    relation_oid: int
    old_kind: OldTupleKind | None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    """A removed row, identified by its key ('K') or its whole old row ('O', FULL)."""

    relation_oid: int
    old_kind: OldTupleKind
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    """TRUNCATE of one or more tables, in one message."""

    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """A ``pg_logical_emit_message`` payload (only sent with the ``messages`` option)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | CustomType | Insert | Update | Delete | Truncate
    | LogicalMessage
)


class UnchangedToast:
    """Marks a TOASTed column an UPDATE did not touch: PostgreSQL did not send its value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast()

_TRUNCATE_CASCADE, _TRUNCATE_RESTART_IDENTITY = 1, 2
_I8, _I16, _I32, _U32, _I64, _U64 = (
    struct.Struct(f) for f in (">b", ">h", ">i", ">I", ">q", ">Q")
)


class _Reader:
    """Reads big-endian protocol fields, raising PgOutputError when the bytes run out."""

    __slots__ = ("data", "pos", "kind")

    def __init__(self, data: bytes, kind: str) -> None:
        self.data, self.pos, self.kind = data, 1, kind

    def _fixed(self, layout: struct.Struct, what: str) -> Any:
        end = self.pos + layout.size
        if end > len(self.data):
            raise PgOutputError(f"{self.kind} message truncated reading {what} at {self.pos}")
        (value,) = layout.unpack_from(self.data, self.pos)
        self.pos = end
        return value

    def byte(self, what: str) -> str:
        if self.pos >= len(self.data):
            raise PgOutputError(f"{self.kind} message truncated reading {what} at {self.pos}")
        self.pos += 1
        return chr(self.data[self.pos - 1])

    def int8(self, what: str) -> int:
        return int(self._fixed(_I8, what))

    def int16(self, what: str) -> int:
        return int(self._fixed(_I16, what))

    def int32(self, what: str) -> int:
        return int(self._fixed(_I32, what))

    def uint32(self, what: str) -> int:
        return int(self._fixed(_U32, what))

    def lsn(self, what: str) -> int:
        return int(self._fixed(_U64, what))

    def timestamp(self, what: str) -> datetime:
        micros = int(self._fixed(_I64, what))
        try:
            return postgres_micros_to_datetime(micros, utc=True)
        except OverflowError:
            raise PgOutputError(f"{self.kind} message: {what} {micros} out of range") from None

    def raw(self, length: int, what: str) -> bytes:
        end = self.pos + length
        if length < 0 or end > len(self.data):
            raise PgOutputError(f"{self.kind} message truncated reading {what} at {self.pos}")
        self.pos = end
        return bytes(self.data[end - length : end])

    def string(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError(f"{self.kind} message: unterminated {what} at {self.pos}")
        try:
            text = bytes(self.data[self.pos : end]).decode()
        except UnicodeDecodeError as error:
            raise PgOutputError(f"{self.kind} message: {what} is not UTF-8: {error}") from None
        self.pos = end + 1
        return text

    def tuple_data(self) -> TupleData:
        count = self.int16("column count")
        if count < 0:
            raise PgOutputError(f"{self.kind} message: negative column count {count}")
        columns: list[ColumnValue] = []
        for index in range(count):
            kind = self.byte(f"column {index} kind")
            if kind == "n" or kind == "u":
                columns.append(_NULL_COLUMN if kind == "n" else _UNCHANGED_COLUMN)
            elif kind == "t" or kind == "b":
                length = self.int32(f"column {index} length")
                value = self.raw(length, f"column {index} value")
                columns.append(ColumnValue(cast(ColumnKind, kind), value))
            else:
                raise PgOutputError(f"{self.kind} message: column {index} kind {kind!r}")
        return tuple(columns)

    def old_kind(self, allowed: str) -> str:
        kind = self.byte("tuple marker")
        if kind not in allowed:
            raise PgOutputError(f"{self.kind} message: tuple marker {kind!r}, want {allowed}")
        return kind

    def finish(self, message: Message) -> Message:
        if self.pos != len(self.data):
            extra = len(self.data) - self.pos
            raise PgOutputError(f"{self.kind} message has {extra} unexpected trailing bytes")
        return message


def _relation_column(r: _Reader) -> RelationColumn:
    flags = r.int8("column flags")
    name = r.string("column name")
    return RelationColumn(name, r.uint32("column type"), r.int32("column type modifier"),
                          is_key=bool(flags & 1))


def _relation(r: _Reader) -> Relation:
    oid, namespace, name = r.uint32("oid"), r.string("namespace"), r.string("name")
    identity = r.byte("replica identity")
    if identity not in ("d", "n", "f", "i"):
        raise PgOutputError(f"Relation message: replica identity {identity!r}")
    count = r.int16("column count")
    if count < 0:
        raise PgOutputError(f"Relation message: negative column count {count}")
    columns = tuple(_relation_column(r) for _ in range(count))
    return Relation(oid, namespace or "pg_catalog", name, cast(ReplicaIdentity, identity),
                    columns)


def _update(r: _Reader) -> Update:
    oid = r.uint32("relation oid")
    marker = r.old_kind("KON")
    if marker == "N":
        return Update(oid, None, None, r.tuple_data())
    old = r.tuple_data()
    r.old_kind("N")
    return Update(oid, cast(OldTupleKind, marker), old, r.tuple_data())


def _truncate(r: _Reader) -> Truncate:
    count, options = r.int32("relation count"), r.int8("options")
    if count < 0:
        raise PgOutputError(f"Truncate message: negative relation count {count}")
    oids = tuple(r.uint32("relation oid") for _ in range(count))
    return Truncate(
        oids, bool(options & _TRUNCATE_CASCADE), bool(options & _TRUNCATE_RESTART_IDENTITY)
    )


def decode_message(data: bytes) -> Message:
    """Decode one pgoutput v1 message (one ``data`` value of the slot functions)."""
    if not data:
        raise PgOutputError("empty pgoutput message")
    if not isinstance(data, bytes):  # memoryview / bytearray from a driver
        data = bytes(data)
    kind = chr(data[0])
    r = _Reader(data, kind)
    match kind:
        case "B":
            return r.finish(Begin(r.lsn("final lsn"), r.timestamp("commit time"),
                                  r.uint32("xid")))
        case "C":
            return r.finish(Commit(r.int8("flags"), r.lsn("commit lsn"), r.lsn("end lsn"),
                                   r.timestamp("commit time")))
        case "O":
            return r.finish(Origin(r.lsn("origin commit lsn"), r.string("origin name")))
        case "R":
            return r.finish(_relation(r))
        case "Y":
            oid = r.uint32("type oid")
            return r.finish(CustomType(oid, r.string("namespace"), r.string("name")))
        case "I":
            oid = r.uint32("relation oid")
            r.old_kind("N")
            return r.finish(Insert(oid, r.tuple_data()))
        case "U":
            return r.finish(_update(r))
        case "D":
            oid = r.uint32("relation oid")
            marker = r.old_kind("KO")
            return r.finish(Delete(oid, cast(OldTupleKind, marker), r.tuple_data()))
        case "T":
            return r.finish(_truncate(r))
        case "M":
            transactional = bool(r.int8("flags") & 1)
            lsn, prefix = r.lsn("message lsn"), r.string("prefix")
            content = r.raw(r.int32("content length"), "content")
            return r.finish(LogicalMessage(transactional, lsn, prefix, content))
    raise PgOutputError(f"unknown or unsupported pgoutput v1 message type {kind!r}")


class RelationCache:
    """Remembers Relation (and Type) messages so tuples can be decoded into named values.

    One cache per slot reader, kept across calls of the slot function: a Relation sent
    again (each new decoding session, or after ALTER TABLE) replaces the one before.
    """

    __slots__ = ("relations", "types")

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, CustomType] = {}

    def observe(self, message: Message) -> None:
        """Record a Relation or Type message; other messages are ignored."""
        if isinstance(message, Relation):
            self.relations[message.oid] = message
        elif isinstance(message, CustomType):
            self.types[message.oid] = message

    def relation(self, oid: int) -> Relation:
        """The table with this OID; a change before its Relation message is an error."""
        try:
            return self.relations[oid]
        except KeyError:
            raise PgOutputError(f"change for relation {oid} before its Relation message") from None

    def decode_tuple(self, relation_oid: int, values: TupleData) -> dict[str, Any]:
        """Column name -> Python value; None for NULL, UNCHANGED_TOAST when not sent."""
        relation = self.relation(relation_oid)
        if len(values) != len(relation.columns):
            raise PgOutputError(
                f"{relation.namespace}.{relation.name}: tuple has {len(values)} columns, "
                f"relation has {len(relation.columns)}"
            )
        row: dict[str, Any] = {}
        for column, value in zip(relation.columns, values, strict=True):
            try:
                if value.kind == "b":
                    row[column.name] = decode_binary_value(column.type_oid, value.data)
                elif value.kind == "t":
                    row[column.name] = decode_text_value(column.type_oid, value.data)
                else:
                    row[column.name] = None if value.kind == "n" else UNCHANGED_TOAST
            except PgOutputError as error:
                raise PgOutputError(
                    f"{relation.namespace}.{relation.name}.{column.name}: {error}"
                ) from None
        return row


def lsn_to_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``), for logs and ``pg_lsn`` casts."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFF_FFFF:X}"


def lsn_from_text(text: str) -> int:
    """Parse ``16/B374D848`` into the 64-bit position; PgOutputError if malformed."""
    high, sep, low = text.partition("/")
    try:
        if not sep or not high or not low or len(high) > 8 or len(low) > 8:
            raise ValueError(text)
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise PgOutputError(f"not an LSN: {text!r}") from None
