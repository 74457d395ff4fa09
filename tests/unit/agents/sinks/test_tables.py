"""The sink tables' SQL: quoted names, the key and the time index, and an insert and an
upsert whose parameters are the ones ``sinks.columns`` makes."""

from __future__ import annotations

import random
import re

from edgewise.agents.sinks.columns import prediction_params, sample_params
from edgewise.agents.sinks.tables import predictions_table, qualified, samples_table
from tests.fixtures import hostile


def highest_parameter(sql: str) -> int:
    return max(int(n) for n in re.findall(r"\$(\d+)", sql))


def test_names_are_quoted_and_a_schema_is_created_with_the_table() -> None:
    assert qualified("results.predictions") == '"results"."predictions"'
    statements = predictions_table("results.predictions").create_statements()
    assert statements[0] == 'CREATE SCHEMA IF NOT EXISTS "results"'
    assert statements[1].startswith('CREATE TABLE IF NOT EXISTS "results"."predictions" (')
    assert statements[1].endswith("PRIMARY KEY (device, sample_id))")
    assert statements[2] == ('CREATE INDEX IF NOT EXISTS "predictions_sample_time_brin" ON '
                             '"results"."predictions" USING brin ("sample_time")')
    assert len(samples_table("samples").create_statements()) == 2  # no schema to make


def test_the_statements_take_exactly_the_parameters_the_columns_make() -> None:
    rng = random.Random(1)
    _, predictions = prediction_params([hostile.good_prediction_batch(rng)])
    _, samples = sample_params([hostile.good_sample_batch(rng)])
    for table, params, count in ((predictions_table("p"), predictions, 18),
                                 (samples_table("s"), samples, 17)):
        assert highest_parameter(table.insert) == highest_parameter(table.upsert) == count
        assert len(params) == count and table.upsert.startswith(table.insert)


def test_a_repeat_never_adds_a_row_and_an_older_scoring_never_wins() -> None:
    predictions = predictions_table("p").upsert
    assert "ON CONFLICT (device, sample_id) DO UPDATE" in predictions
    assert predictions.strip().endswith(
        "WHERE (t.scored_at, t.model_version) < (excluded.scored_at, excluded.model_version)")
    assert samples_table("s").upsert.strip().endswith(
        "ON CONFLICT (device, sample_id) DO NOTHING")
