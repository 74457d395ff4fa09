"""The correct stage's fold: a correction settles its review item (a tombstone in the review
table), a late copy of the item does not queue it again, taking it back queues it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.agents.correct import settle
from edgewise.app.core.corrections import CorrectionRequest, new_correction
from edgewise.app.core.settings import SettingsError, load_settings
from edgewise.app.run.factory import create_app
from edgewise.tables.corrections import CorrectionStore
from edgewise.tables.review_queue import ReviewQueue
from tests.unit.tables.test_review_queue import Clock, FakeTable, item

NOW = 1_800_000_000.0


def stage() -> tuple[ReviewQueue, CorrectionStore, FakeTable, FakeTable]:
    settings = load_settings(partitions=1)
    review_table, correction_table = FakeTable(), FakeTable()
    queue = ReviewQueue(review_table, settings, clock=Clock(NOW))
    store = CorrectionStore(correction_table, settings, clock=Clock(NOW))
    queue.settled = store.is_corrected
    return queue, store, review_table, correction_table


def test_a_correction_takes_the_item_out_through_a_tombstone() -> None:
    queue, store, review_table, _ = stage()
    queue.keep(item("s1", 0.3), 0)
    queue.keep(item("s2", 0.4), 0)
    record = new_correction(CorrectionRequest("s1", 5), queue.get("s1"), now=NOW)
    assert settle(store, queue, record, 0).action == "set"
    assert queue.get("s1") is None and review_table.tombstones == ["s1"]
    assert [i["id"] for i in queue.page(0, 10)[0]] == ["s2"]
    assert queue.page(0, 10)[1] == 1


def test_a_late_copy_of_a_corrected_item_is_not_queued_again() -> None:
    queue, store, review_table, _ = stage()
    queue.keep(item("s1", 0.3), 0)
    settle(store, queue, new_correction(CorrectionRequest("s1", 5), queue.get("s1"),
                                        now=NOW), 0)
    queue.keep(item("s1", 0.3, image_url="file:///x.png"), 0)  # the image sink's copy
    assert queue.get("s1") is None and queue.page(0, 10)[1] == 0
    assert "s1" not in review_table


def test_taking_a_correction_back_queues_the_item_again() -> None:
    queue, store, review_table, _ = stage()
    queue.keep(item("s1", 0.3), 0)
    first = new_correction(CorrectionRequest("s1", 5), queue.get("s1"), now=NOW)
    settle(store, queue, first, 0)
    back = new_correction(CorrectionRequest("s1", None), store.table["s1"], now=NOW + 1)
    assert settle(store, queue, back, 0).action == "retracted"
    assert queue.get("s1")["confidence"] == 0.3 and queue.page(0, 10)[1] == 1
    assert store.accuracy.models == {}


def test_the_queue_pages_by_margin_too() -> None:
    queue, _, _, _ = stage()
    queue.keep(item("a", 0.3, margin=0.2), 0)
    queue.keep(item("b", 0.5, margin=0.01), 0)
    queue.keep(item("c", 0.4, margin=0.1), 0)
    assert [i["id"] for i in queue.page_by_margin(0, 2)[0]] == ["b", "c"]
    assert [i["id"] for i in queue.page_by_margin(1, 5)[0]] == ["c", "a"]
    assert [i["id"] for i in queue.page(0, 3)[0]] == ["a", "c", "b"]


def test_the_stage_refuses_to_run_without_review_beside_it(tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path,
                             broker_profile="kafka")
    with pytest.raises(SettingsError, match="--stage review --stage correct"):
        create_app(settings, ["correct"], web_port=6066)
    app, _ = create_app(settings, ["correct", "review"], web_port=6066)  # any order
    assert "corrections" in app.tables and "review_queue" in app.tables
