"""Shadow tallies: what a candidate scored beside the served model did on the same samples,
counted from real predictions and checked as strictly as every record."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.core.frames import BadInput
from edgewise.app.core.shadow import (
    ShadowTally,
    parse_tally,
    shadow_summary,
    stream_figures,
    tally,
)
from edgewise.models.registry import ModelRegistry
from edgewise.models.scoring import predict_batches
from tests.unit.agents.test_score_stage import digit_batch, small_model


def test_a_tally_counts_both_models_on_the_labelled_samples(models_dir: Path,
                                                           tmp_path: Path) -> None:
    served_model, served_meta = ModelRegistry(models_dir).load("digits")
    registry = ModelRegistry(tmp_path)
    weak_meta = registry.register("digits", small_model(0.0001))
    weak = registry.load("digits", weak_meta.version)[0]
    batches = [digit_batch("cam-a", 150, 0), digit_batch("cam-b", 100, 300)]
    batches[1].labels[:40] = -1  # 40 samples without a true label
    mine = predict_batches(served_model, served_meta, batches, 3)
    theirs = predict_batches(weak, weak_meta, batches, 1)
    one = tally(mine, theirs)
    assert (one.model, one.version, one.against) == ("digits", weak_meta.version,
                                                     served_meta.version)
    assert (one.samples, one.labelled) == (250, 210)
    expected = sum(int((t.labels[m.true_labels >= 0] == m.true_labels[m.true_labels >= 0]).sum())
                   for m, t in zip(mine, theirs, strict=True))
    assert one.correct == expected and one.served_correct > one.correct
    assert one.agree == sum(int((m.labels == t.labels).sum())
                            for m, t in zip(mine, theirs, strict=True))
    assert parse_tally(one.encode()) == one
    total = one + one
    assert (total.samples, total.correct) == (500, 2 * one.correct)
    candidate, served = stream_figures(total)
    assert candidate["stream_accuracy"] == pytest.approx(one.correct / 210)
    assert served["stream_accuracy"] == pytest.approx(one.served_correct / 210)
    summary = shadow_summary(total, 1000)
    assert (summary["samples"], summary["needed"]) == (500, 1000)
    assert summary["agreement"] == pytest.approx(one.agree / 250)
    with pytest.raises(ValueError):
        tally(mine, theirs[:1])


def test_no_label_gives_no_stream_accuracy() -> None:
    candidate, served = stream_figures(ShadowTally("digits", 2, 1, samples=30, agree=30))
    assert candidate == served == {"stream_accuracy": None}


GOOD = {"model": "digits", "version": 2, "against": 1, "samples": 10, "labelled": 8,
        "correct": 7, "served_correct": 6, "agree": 9}


@pytest.mark.parametrize(("change", "reason"), [
    ({"samples": -1}, "bad_count"), ({"samples": 1.5}, "bad_count"),
    ({"labelled": 11}, "bad_count"), ({"correct": 9}, "bad_count"),
    ({"agree": 11}, "bad_count"), ({"samples": True}, "bad_count"),
    ({"samples": 10**12}, "bad_count"), ({"version": 0}, "bad_model"),
    ({"against": "1"}, "missing_field"), ({"model": "../x"}, "bad_model"),
    ({"extra": 1}, "bad_field"),
])
def test_a_bad_tally_is_refused_with_its_reason(change: dict, reason: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_tally(orjson.dumps({**GOOD, **change}))
    assert refused.value.reason == reason


def test_an_oversize_or_non_object_tally_is_refused() -> None:
    with pytest.raises(BadInput):
        parse_tally(b"[" * 5000)
    with pytest.raises(BadInput):
        parse_tally(b"[1, 2]")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.dictionaries(st.sampled_from(sorted(GOOD) + ["x"]),
                                                 st.integers(-5, 20) | st.none() | st.text(
                                                     max_size=5)).map(orjson.dumps))
def test_any_bytes_give_a_tally_or_a_bad_input(data: bytes) -> None:
    try:
        parsed = parse_tally(data)
    except BadInput:
        return
    assert parsed.labelled <= parsed.samples and parsed.correct <= parsed.labelled
