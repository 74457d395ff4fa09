"""The sink bench's input and its table: frames the stages' boundaries accept, ids unique
across the run, and one line per figure with every broker's column and the bar."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.app.bench.sink import BAR_ROWS_PER_S, FRAME_ROWS, bench_frames, print_sink
from edgewise.app.core.boundary import Boundary
from edgewise.app.core.prediction_wire import encode_prediction_batch
from edgewise.app.core.records import TABULAR
from edgewise.app.core.wire import encode_sample_batch


def test_the_bench_rows_are_frames_the_sinks_take() -> None:
    predictions, samples = bench_frames(FRAME_ROWS * 2 + 10, "run1")
    assert [len(b) for b in predictions] == [FRAME_ROWS, FRAME_ROWS, 10]
    boundary = Boundary()
    ids = []
    for prediction, sample in zip(predictions, samples, strict=True):
        decoded = boundary.predictions(encode_prediction_batch(prediction))
        archived = boundary.samples(encode_sample_batch(sample))
        assert decoded.kind == archived.kind == TABULAR and decoded.ids == archived.ids
        assert archived.pixels.shape[1] == 13 and np.isnan(archived.pixels).any()
        ids += decoded.ids
    assert len(set(ids)) == len(ids) and all(i.startswith("run1-") for i in ids)


def test_the_table_has_a_column_per_broker_and_the_bar(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    figures = {"writer": 90_000.0, "sink_predictions": 80_000.0, "sink_samples": 70_000.0,
               "naive": 2_000.0}
    print_sink([("Tansu", figures), ("Apache Kafka", {k: v / 2 for k, v in figures.items()})])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "Tansu" in lines[1] and "Apache Kafka" in lines[1] and "bar" in lines[1]
    rows = {line.split("  ")[0]: line.split() for line in lines[2:]}
    assert rows["sink_predictions"][-3:] == ["80,000", "40,000", f"{BAR_ROWS_PER_S:,}"]
    assert rows["sink_samples"][-3:] == ["70,000", "35,000", f"{BAR_ROWS_PER_S:,}"]
    assert rows["writer alone (no broker)"][-3:] == ["90,000", "45,000", "-"]
