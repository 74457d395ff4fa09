"""What the writer gives up on (the rows' own fault: dead-lettered) and what it waits out
(the database away, a timeout, a privilege missing: written again with backoff)."""

from __future__ import annotations

import asyncpg
import pytest

from edgewise.agents.sinks.writer import refused_for_the_rows


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.NumericValueOutOfRangeError("value out of range"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
    asyncpg.exceptions.CheckViolationError("violates check constraint"),
    asyncpg.exceptions.NotNullViolationError("null value in column"),
    asyncpg.exceptions.DataError("data exception"),
])
def test_errors_about_the_rows_are_refusals(error: Exception) -> None:
    assert refused_for_the_rows(error)


def test_a_value_asyncpg_cannot_encode_is_a_refusal() -> None:
    errors = [cls for cls in vars(asyncpg.exceptions).values()
              if isinstance(cls, type) and issubclass(cls, asyncpg.InterfaceError)
              and issubclass(cls, ValueError)]
    assert errors, "asyncpg's client-side data error"
    assert all(refused_for_the_rows(cls("invalid input")) for cls in errors)


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.AdminShutdownError("terminating connection"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.InsufficientPrivilegeError("permission denied"),
    asyncpg.exceptions.UndefinedTableError("relation does not exist"),
    asyncpg.exceptions.SerializationError("could not serialize"),
    asyncpg.exceptions.DiskFullError("no space left"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ConnectionRefusedError(111, "Connect call failed"),
    TimeoutError(),
])
def test_everything_else_is_waited_out(error: Exception) -> None:
    assert not refused_for_the_rows(error)
