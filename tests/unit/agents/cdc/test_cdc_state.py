"""Which tables a start snapshots: new slots, unfinished snapshots, tables added later."""

from __future__ import annotations

from edgewise.agents.cdc.snapshot import tables_to_snapshot
from edgewise.agents.cdc.state import snapshot_record, snapshotted_tables

TABLES = ["public.a", "public.b"]


def test_the_record_lists_every_snapshotted_table() -> None:
    record = snapshot_record(100, 5, {"public.b", "public.a"})
    assert record["tables"] == ["public.a", "public.b"]
    assert snapshotted_tables(record, TABLES + ["public.c"]) == {"public.a", "public.b"}


def test_no_completed_snapshot_covers_nothing_and_an_old_record_covers_all() -> None:
    assert snapshotted_tables(None, TABLES) == set()
    assert snapshotted_tables({"snapshot": "started"}, TABLES) == set()
    old = {"snapshot": "completed", "slot_lsn": 1, "rows": 3}  # written before "tables"
    assert snapshotted_tables(old, TABLES) == set(TABLES)


def test_a_table_added_to_an_existing_slot_is_snapshotted_alone() -> None:
    assert tables_to_snapshot("initial", False, {"public.a"}, TABLES) == ["public.b"]
    assert tables_to_snapshot("initial", False, set(TABLES), TABLES) == []
    assert tables_to_snapshot("initial", False, set(), TABLES) == TABLES  # died halfway


def test_modes() -> None:
    assert tables_to_snapshot("initial", True, set(TABLES), TABLES) == TABLES
    assert tables_to_snapshot("always", False, set(TABLES), TABLES) == TABLES
    assert tables_to_snapshot("never", True, set(), TABLES) == []
