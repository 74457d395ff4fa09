"""The status table: rows from two readings of the broker, and their rendering."""

from __future__ import annotations

from collections import Counter

import pytest

from edgewise.app.cli.main import EXIT_USAGE, main
from edgewise.app.cli.status import COLUMNS, render_table, status_rows
from edgewise.app.core.consumer_lag import GroupLag, PartitionLag
from edgewise.app.services.processes import free_port


def reading(committed: tuple[int, int], end: tuple[int, int], owned: dict | None,
            group: str = "edgewise-score") -> GroupLag:
    return GroupLag(group, "Stable", 2, [PartitionLag("edgewise-samples", p, committed[p], 0,
                                                      end[p]) for p in (0, 1)], owned)


def test_rows_carry_stage_replicas_lag_rates_and_the_stages_dead_letters() -> None:
    first = [reading((10, 20), (50, 50), {"a": 1, "b": 1})]
    second = [reading((30, 40), (60, 70), {"a": 1, "b": 1}),
              GroupLag("edgewise-correct-review", "Empty", 0, [], {}),
              GroupLag("someone-else", "Stable", 1, [], None)]
    dead = Counter({"score": 3, "review": 1, "correct": 2, "route": 9})
    rows = {r.group: r for r in status_rows(first, second, 2.0, "edgewise", dead)}
    score = rows["edgewise-score"]
    assert (score.stage, score.replicas, score.partitions, score.lag) == ("score", 2, 2, 60)
    assert score.owned == "1,1"
    assert score.processed_per_second == (70 - 30) / 2.0
    assert score.arriving_per_second == (130 - 100) / 2.0
    assert score.dead_letters == 3
    review = rows["edgewise-correct-review"]
    assert review.stage == "correct+review" and review.dead_letters == 3 and review.owned == "-"
    other = rows["someone-else"]
    assert other.stage == "-" and other.dead_letters is None and other.owned == "?"


def test_a_group_new_since_the_first_reading_has_no_rate() -> None:
    (row,) = status_rows([], [reading((5, 5), (9, 9), None)], 1.0, "edgewise", Counter())
    assert row.processed_per_second == 0 and row.arriving_per_second == 0 and row.lag == 8


def test_table_has_a_header_and_aligned_columns() -> None:
    rows = status_rows([], [reading((0, 0), (12345, 1), {"a": 2}),
                            reading((0, 0), (1, 1), {}, group="edgewise-route")],
                       1.0, "edgewise", Counter({"route": 7}))
    text = render_table(rows).splitlines()
    assert text[0].split() == [c for c in " ".join(COLUMNS).split()]
    assert len(text) == 3
    lag_end = text[0].index("lag") + len("lag")
    assert text[1][:lag_end].endswith("2") and text[2][:lag_end].endswith("12346")
    assert text[1].startswith("route") and text[1].rstrip().endswith("7")


def test_a_broker_that_does_not_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["status", "--broker", f"kafka://127.0.0.1:{port}"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgewise: error: the broker at"), err
