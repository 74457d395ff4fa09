"""Debezium envelopes from decoded changes: value encodings, keys, ops, tombstones."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from edgewise.agents.cdc.debezium_values import (
    UNAVAILABLE_VALUE,
    column_json,
    json_value,
    relation_encoders,
    row_json,
    shortest_float32,
)
from edgewise.agents.cdc.envelope import (
    CaptureSource,
    ChangeEvent,
    ChangePosition,
    change_events,
    delete_events,
    event_key,
    insert_event,
    snapshot_event,
    topic_for,
    truncate_event,
    update_events,
)
from edgewise.agents.cdc.pgoutput import (
    UNCHANGED_TOAST,
    ColumnValue,
    Delete,
    Insert,
    Relation,
    RelationCache,
    RelationColumn,
    Truncate,
    Update,
)
from edgewise.agents.cdc.pgoutput_values import PgInterval

SOURCE = CaptureSource(name="edge", db="plant", version="9.9")
COMMITTED = datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=UTC)
POSITION = ChangePosition(lsn=5000, tx_id=777, commit_time=COMMITTED, last_commit_lsn=4000)
SENSORS = Relation(16384, "public", "sensors", "d", (
    RelationColumn("site", 25, -1, is_key=True),
    RelationColumn("id", 23, -1, is_key=True),
    RelationColumn("reading", 701, -1, is_key=False),
))
ROW = {"site": "north", "id": 1, "reading": 0.5}


def test_topic_for() -> None:
    assert topic_for("edge", "public", "sensors") == "edge.public.sensors"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, None), (True, True), (7, 7), (0.25, 0.25), ("zürich", "zürich"),
        (Decimal("-12.3400"), "-12.3400"), (Decimal("1E-7"), "0.0000001"),
        (Decimal("1E+3"), "1000"), (Decimal("NaN"), "NAN"),
        (Decimal("Infinity"), "POSITIVE_INFINITY"), (Decimal("-Infinity"), "NEGATIVE_INFINITY"),
        (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
        (b"\x00\x01\xff", "AAH/"), (memoryview(b"hi"), "aGk="), (b"", ""),
        (date(1970, 1, 2), 1), (date(1969, 12, 31), -1),
        (datetime(1970, 1, 1, 0, 0, 1, 5), 1_000_005),  # timestamp: µs since epoch
        (COMMITTED, "2024-05-01T12:30:00.250000Z"),  # timestamptz: ISO in UTC, 6 digits
        (datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
         "2024-05-01T12:30:00.000000Z"),
        (datetime(2024, 5, 1, 12, 30, 0, 1, tzinfo=UTC), "2024-05-01T12:30:00.000001Z"),
        (datetime(10, 1, 1, 0, 0, 10, tzinfo=UTC), "0010-01-01T00:00:10.000000Z"),
        (PgInterval(1, 2, 3), 2_629_800_000_000 + 2 * 86_400_000_000 + 3),
        (time(1, 0, 0, 7), 3_600_000_007), (timedelta(seconds=2, microseconds=3), 2_000_003),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (UNCHANGED_TOAST, UNAVAILABLE_VALUE),
        ([1, b"\x01"], [1, "AQ=="]), ({"a": date(1970, 1, 11)}, {"a": 10}),
    ],
)
def test_json_value(value: Any, encoded: Any) -> None:
    assert json_value(value) == encoded
    orjson.dumps(json_value(value))


@pytest.mark.parametrize(
    ("value", "type_oid", "modifier", "encoded"),
    [
        (struct.unpack(">f", struct.pack(">f", 1.1))[0], 700, -1, 1.1),  # real: as Java
        (struct.unpack(">f", struct.pack(">f", -3.4e38))[0], 700, -1, -3.4e38),
        (float("nan"), 700, -1, "NaN"),
        (datetime(2024, 5, 1, 12, 30, 0, 123456), 1114, 3, 1714566600123),  # timestamp(3): ms
        (datetime(2024, 5, 1, 12, 30, 0, 123456), 1114, -1, 1714566600123456),
        (datetime(1969, 12, 31, 23, 59, 59, 999000), 1114, 3, -1),
        (COMMITTED, 1184, 0, "2024-05-01T12:30:00Z"),  # timestamptz(0): no fraction
        (COMMITTED, 1184, 3, "2024-05-01T12:30:00.250Z"),
        (time(8, 15, 0, 123000), 1083, 3, 29_700_123),  # time(3): ms
        (time(8, 15, 0, 123000), 1083, -1, 29_700_123_000),
        ([struct.unpack(">f", struct.pack(">f", 0.1))[0], None], 1021, -1, [0.1, None]),
        ([Decimal("1.50")], 1231, -1, ["1.50"]),
        (UNCHANGED_TOAST, 25, -1, UNAVAILABLE_VALUE),
    ],
)
def test_column_json_follows_the_column_type(value: Any, type_oid: int, modifier: int,
                                             encoded: Any) -> None:
    assert column_json(value, type_oid, modifier) == encoded


def test_shortest_float32_reads_back_as_the_same_float() -> None:
    for number in (0.1, 1e-45, 3.4028234e38, 123456.789, -7.0):
        single = struct.unpack(">f", struct.pack(">f", number))[0]
        assert struct.pack(">f", shortest_float32(single)) == struct.pack(">f", single)


def test_a_relations_encoders_are_made_once() -> None:
    assert relation_encoders(SENSORS) is relation_encoders(SENSORS)
    twin = Relation(SENSORS.oid, "public", "sensors", "d", SENSORS.columns)
    assert relation_encoders(twin) is not relation_encoders(SENSORS)  # by object, not value


def test_rows_are_typed_by_their_relation() -> None:
    relation = Relation(1, "public", "r", "d", (
        RelationColumn("id", 23, -1, is_key=True), RelationColumn("at", 1114, 3, is_key=False)))
    row = {"id": 1, "at": datetime(1970, 1, 1, 0, 0, 1, 500)}
    assert row_json(row, relation) == {"id": 1, "at": 1000}
    assert row_json(row) == {"id": 1, "at": 1_000_500}


def test_key_is_the_flagged_columns_by_default() -> None:
    assert event_key(SENSORS, ROW) == {"site": "north", "id": 1}
    assert event_key(SENSORS, ROW, ["id"]) == {"id": 1}


def test_full_and_nothing_identity_are_keyless_unless_told_the_primary_key() -> None:
    full = Relation(1, "public", "t", "f", tuple(
        RelationColumn(c.name, c.type_oid, -1, is_key=True) for c in SENSORS.columns))
    nothing = Relation(1, "public", "t", "n", tuple(
        RelationColumn(c.name, c.type_oid, -1, is_key=False) for c in SENSORS.columns))
    assert event_key(full, ROW) is None and event_key(nothing, ROW) is None
    assert event_key(full, ROW, ["site", "id"]) == {"site": "north", "id": 1}


def payload(event: ChangeEvent) -> dict[str, Any]:
    assert event.value is not None
    orjson.dumps(event.value)
    return event.value["payload"]


def test_insert_event_shape() -> None:
    event = insert_event(SOURCE, SENSORS, ROW, POSITION, processed_ms=123)
    assert event.topic == "edge.public.sensors" and event.key == {"site": "north", "id": 1}
    assert payload(event) == {
        "before": None,
        "after": ROW,
        "source": {
            "version": "9.9", "connector": "postgresql", "name": "edge",
            "ts_ms": 1714566600250, "snapshot": "false", "db": "plant",
            "sequence": '["4000","5000"]', "ts_us": 1714566600250000,
            "ts_ns": 1714566600250000000, "schema": "public", "table": "sensors",
            "txId": 777, "lsn": 5000, "xmin": None, "origin": None, "origin_lsn": None,
        },
        "transaction": None,
        "op": "c",
        "ts_ms": 123, "ts_us": 123_000, "ts_ns": 123_000_000,
    }


def test_processing_time_defaults_to_now() -> None:
    before = datetime.now(UTC).timestamp() * 1000
    stamped = payload(insert_event(SOURCE, SENSORS, ROW, POSITION))["ts_ms"]
    assert before - 1 <= stamped <= datetime.now(UTC).timestamp() * 1000 + 1


def test_sequence_without_a_previous_commit() -> None:
    first = ChangePosition(lsn=10, tx_id=1, commit_time=COMMITTED)
    assert payload(insert_event(SOURCE, SENSORS, ROW, first))["source"]["sequence"] == (
        '[null,"10"]')


def test_update_keeps_the_key_and_carries_before_when_known() -> None:
    after = {**ROW, "reading": 0.75}
    (plain,) = update_events(SOURCE, SENSORS, None, after, POSITION)
    assert plain.key == {"site": "north", "id": 1}
    assert (payload(plain)["op"], payload(plain)["before"]) == ("u", None)
    (full,) = update_events(SOURCE, SENSORS, ROW, after, POSITION)
    assert payload(full)["before"] == ROW and payload(full)["after"] == after


def test_update_that_changes_the_key_is_delete_tombstone_create() -> None:
    old_key_row = {"site": "north", "id": 1, "reading": None}
    after = {**ROW, "id": 2}
    deleted, tombstone, created = update_events(SOURCE, SENSORS, old_key_row, after, POSITION)
    assert (deleted.key, payload(deleted)["op"]) == ({"site": "north", "id": 1}, "d")
    assert payload(deleted)["before"] == old_key_row
    assert tombstone == ChangeEvent("edge.public.sensors", {"site": "north", "id": 1}, None)
    assert (created.key, payload(created)["op"]) == ({"site": "north", "id": 2}, "c")


def test_delete_is_followed_by_a_tombstone() -> None:
    deleted, tombstone = delete_events(SOURCE, SENSORS, ROW, POSITION)
    assert payload(deleted)["op"] == "d" and payload(deleted)["after"] is None
    assert tombstone.topic == deleted.topic and tombstone.key == deleted.key
    assert tombstone.value is None


def test_truncate_event_has_no_key_and_no_rows() -> None:
    event = truncate_event(SOURCE, SENSORS, POSITION)
    assert event.key is None
    assert (payload(event)["op"], payload(event)["before"], payload(event)["after"]) == (
        "t", None, None)


def test_snapshot_read_of_a_plain_row() -> None:
    row = {"site": "south", "id": 9, "reading": Decimal("1.50")}
    event = snapshot_event(SOURCE, SENSORS, row, POSITION, snapshot="first")
    assert event.key == {"site": "south", "id": 9}
    assert payload(event)["op"] == "r"
    assert payload(event)["after"] == {"site": "south", "id": 9, "reading": "1.50"}
    assert payload(event)["source"]["snapshot"] == "first"


def column(kind: str, data: bytes = b"") -> ColumnValue:
    return ColumnValue(kind, data)  # type: ignore[arg-type]


def test_change_events_decode_pgoutput_messages() -> None:
    cache = RelationCache()
    cache.observe(SENSORS)
    cache.observe(Relation(16390, "ops", "alarms", "d", ()))
    row = (column("t", b"north"), column("b", struct.pack(">i", 1)), column("u"))
    (created,) = change_events(Insert(16384, row), cache, SOURCE, POSITION)
    assert payload(created)["after"] == {"site": "north", "id": 1, "reading": UNAVAILABLE_VALUE}
    (updated,) = change_events(Update(16384, None, None, row), cache, SOURCE, POSITION)
    assert payload(updated)["op"] == "u"
    deleted, tombstone = change_events(Delete(16384, "K", row), cache, SOURCE, POSITION,
                                       key_columns={16384: ["id"]})
    assert deleted.key == tombstone.key == {"id": 1}
    # a truncate has no key a compacted topic would take: skipped, as Debezium does
    assert change_events(Truncate((16384, 16390), False, False), cache, SOURCE, POSITION) == []
