"""The pure parts of the capture: when the slot may move, encodings, snapshot decisions."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from edgewise.agents.cdc.acks import AckTracker, advance_slot_after_ack
from edgewise.agents.cdc.capture import CdcCapture, encode_event
from edgewise.agents.cdc.envelope import ChangeEvent, cdc_topic_spec
from edgewise.agents.cdc.pgoutput import Relation, RelationColumn
from edgewise.agents.cdc.postgres import (
    CapturedTable,
    CdcSetupError,
    check_name,
    identity_problem,
    parse_table_list,
    qualified_name,
    quote_ident,
    redact_dsn,
)
from edgewise.agents.cdc.snapshot import needs_snapshot, snapshot_marker, snapshot_query
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.settings import Settings

# -- advance_slot_after_ack ----------------------------------------------------------------


def test_nothing_to_advance_without_commits_or_acks() -> None:
    assert advance_slot_after_ack([], 0) is None
    assert advance_slot_after_ack([(3, 100)], 2) is None


def test_advance_to_the_last_fully_acknowledged_commit() -> None:
    commits = [(2, 100), (5, 200), (9, 300)]
    assert advance_slot_after_ack(commits, 2) == 100
    assert advance_slot_after_ack(commits, 4) == 100
    assert advance_slot_after_ack(commits, 5) == 200
    assert advance_slot_after_ack(commits, 9) == 300


def test_commits_without_events_follow_the_commit_before_them() -> None:
    # a transaction whose changes produced no event (say a table we skip) ends at 3 too
    assert advance_slot_after_ack([(0, 50), (3, 100), (3, 120), (4, 130)], 3) == 120
    assert advance_slot_after_ack([(0, 50)], 0) == 50


def test_a_later_commit_never_skips_an_unacknowledged_earlier_one() -> None:
    assert advance_slot_after_ack([(5, 100), (6, 200)], 4) is None


# -- AckTracker --------------------------------------------------------------------------


async def test_tracker_counts_only_the_unbroken_prefix_of_acks() -> None:
    loop = asyncio.get_running_loop()
    tracker = AckTracker()
    futures = [loop.create_future() for _ in range(4)]
    tracker.add(futures[0])
    tracker.add(futures[1])
    tracker.commit(100)
    tracker.add(futures[2])
    tracker.add(futures[3])
    tracker.commit(200)
    futures[1].set_result(None)
    futures[3].set_result(None)
    await asyncio.sleep(0)
    assert tracker.acked == 0 and tracker.take_advance() is None
    futures[0].set_result(None)
    await asyncio.sleep(0)
    assert tracker.acked == 2 and tracker.take_advance() == 100
    assert list(tracker.commits) == [(4, 200)]
    futures[2].set_result(None)
    await tracker.wait_until(0)
    assert tracker.take_advance() == 200 and not tracker.commits
    assert tracker.peak_in_flight == 4


async def test_tracker_raises_a_failed_send_and_never_covers_it() -> None:
    loop = asyncio.get_running_loop()
    tracker = AckTracker()
    failed, later = loop.create_future(), loop.create_future()
    tracker.add(failed)
    tracker.add(later)
    tracker.commit(100)
    failed.set_exception(RuntimeError("broker said no"))
    later.set_result(None)
    with pytest.raises(RuntimeError, match="broker said no"):
        await tracker.wait_until(0)
    assert tracker.take_advance() is None


# -- small pure helpers ---------------------------------------------------------------------


def test_reconnect_delay_doubles_up_to_the_cap() -> None:
    settings = Settings(cdc_reconnect_max_seconds=1.0)
    backoff = Backoff(settings.reconnect_min_seconds, settings.cdc_reconnect_max_seconds,
                      jitter=0.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.attempts = 10_000
    assert backoff.next() == 1.0


def test_events_encode_as_payload_envelopes() -> None:
    value = {"payload": {"op": "c", "after": {"id": 1}}}
    key, body = encode_event(ChangeEvent("t", {"id": 1}, value))
    assert orjson.loads(key) == {"payload": {"id": 1}} and orjson.loads(body) == value
    assert encode_event(ChangeEvent("t", {"id": 1}, None)) == (key, None)  # tombstone
    assert encode_event(ChangeEvent("t", None, value))[0] is None  # truncate: no key


def test_change_topics_are_compacted() -> None:
    spec = cdc_topic_spec("p.public.items", Settings(cdc_partitions=8))
    assert (spec.partitions, spec.config["cleanup.policy"]) == (8, "compact")
    assert spec.config["max.message.bytes"] == str(4_000_000 + 65_536)


@pytest.mark.parametrize(("mode", "created", "completed", "expected"), [
    ("initial", True, False, True), ("initial", True, True, True),
    ("initial", False, True, False), ("initial", False, False, True),
    ("always", False, True, True), ("never", True, False, False),
])
def test_needs_snapshot(mode: str, created: bool, completed: bool, expected: bool) -> None:
    assert needs_snapshot(mode, created, completed) is expected  # type: ignore[arg-type]


def test_snapshot_markers_say_first_true_last_per_table_as_debezium() -> None:
    tables = [(t, i) for t, rows in enumerate((3, 2, 1)) for i in range(rows)]
    markers = [snapshot_marker(i == 0, n + 1 == len(tables) or tables[n + 1][0] != t,
                               t == 0, n + 1 == len(tables))
               for n, (t, i) in enumerate(tables)]
    assert markers == ["first", "true", "last_in_data_collection",
                       "first_in_data_collection", "last_in_data_collection", "last"]
    assert snapshot_marker(True, True, True, True) == "last"


def test_snapshot_query_quotes_every_name() -> None:
    relation = Relation(1, "My Schema", 'odd"name', "d", (
        RelationColumn("id", 23, -1, True), RelationColumn("Mixed Case", 25, -1, False)))
    assert snapshot_query(relation) == (
        'SELECT "id", "Mixed Case" FROM "My Schema"."odd""name"')


def test_table_lists_default_to_public() -> None:
    assert parse_table_list(" public.a, b ,,other.c") == [
        ("public", "a"), ("public", "b"), ("other", "c")]
    assert parse_table_list("") == []
    assert quote_ident('a"b') == '"a""b"'
    assert qualified_name("s", "t") == '"s"."t"'


def test_slot_and_publication_names_are_checked() -> None:
    assert check_name("slot", "edgewise_slot_1") == "edgewise_slot_1"
    for bad in ("Upper", "with-dash", "1starts_with_digit", "", "x" * 64):
        with pytest.raises(CdcSetupError, match="slot name"):
            check_name("slot", bad)


@pytest.mark.parametrize(("identity", "key", "problem"), [
    ("d", ("id",), False), ("f", ("id",), False), ("i", ("id",), False),
    ("d", (), True), ("n", ("id",), True),
])
def test_identity_problem(identity: str, key: tuple[str, ...], problem: bool) -> None:
    message = identity_problem(CapturedTable(1, "public", "t", identity, key))
    assert (message is not None) is problem
    if message:
        assert "\n" not in message and "ALTER TABLE public.t REPLICA IDENTITY FULL" in message


@pytest.mark.parametrize("identity", ["f", "i"])
def test_a_table_without_primary_key_is_refused_even_with_a_replica_identity(
        identity: str) -> None:
    """Its records would have no key, which a compacted change topic refuses."""
    message = identity_problem(CapturedTable(1, "public", "t", identity, ()))
    assert message == ("table public.t has no primary key, which CDC needs as the record "
                       "key of its compacted topic: run ALTER TABLE public.t ADD PRIMARY "
                       "KEY (...)")


def test_capture_refuses_to_start_without_a_database() -> None:
    with pytest.raises(CdcSetupError, match="EDGEWISE_CDC_DSN"):
        CdcCapture(Settings(), "127.0.0.1:9092")
    with pytest.raises(CdcSetupError, match="publication name"):
        CdcCapture(Settings(cdc_dsn="postgresql://x", cdc_publication="Bad-Name"), "x:1")



def test_passwords_stay_out_of_log_lines() -> None:
    assert redact_dsn("postgresql://app:s3cret@db:5432/shop") == "postgresql://app:***@db:5432/shop"
    assert redact_dsn("postgresql://app@db/shop") == "postgresql://app@db/shop"
    assert redact_dsn("postgresql://db/shop") == "postgresql://db/shop"
