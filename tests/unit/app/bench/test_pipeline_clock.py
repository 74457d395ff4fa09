"""When the pipeline benchmark's clock stops: every stage done, review included."""

from __future__ import annotations

from edgewise.app.bench.pipeline import stage_counts


def test_review_counts_as_done_only_once_it_kept_every_routed_item() -> None:
    scraped = {"samples": {"score": 1000.0, "route": 1000.0, "review": 30.0,
                           "aggregate": 1000.0, "evaluate": 1000.0}, "routed": 60.0}
    assert stage_counts(scraped)["review"] == 500.0  # half its items: half the samples
    scraped["samples"]["review"] = 60.0
    assert stage_counts(scraped) == scraped["samples"] | {"review": 1000.0}


def test_review_is_not_done_while_route_is_behind() -> None:
    scraped = {"samples": {"route": 400.0, "review": 20.0}, "routed": 20.0}
    assert stage_counts(scraped)["review"] == 400.0  # every item so far, of 400 samples
    assert stage_counts({"samples": {"route": 0.0, "review": 0.0}, "routed": 0.0}) == {
        "route": 0.0, "review": 0.0}
