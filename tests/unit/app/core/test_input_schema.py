"""The input schema of a tabular model: what it refuses to be, and what rows it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.app.core.frames import BadInput
from edgewise.app.core.input_schema import Feature, InputSchema, check_schema_value

SCHEMA = InputSchema((Feature("temp"), Feature("count", "integer", False),
                      Feature("door_open", "boolean")))


def test_a_schema_round_trips_through_its_json_form() -> None:
    assert InputSchema.from_dict(SCHEMA.to_dict()) == SCHEMA
    assert SCHEMA.names == ["temp", "count", "door_open"]


@pytest.mark.parametrize("doc", [
    None, [], {"features": []}, {"features": [{"name": "id"}]},
    {"features": [{"name": "a"}, {"name": "a"}]}, {"features": [{"name": ""}]},
    {"features": [{"name": "a", "type": "text"}]}, {"features": [{"name": "a", "unit": 1}]},
    {"features": [{"name": "a", "missing": "yes"}]}, {"features": [{"name": 7}]},
    {"features": [{"name": f"f{i}"} for i in range(257)]},
])
def test_a_schema_that_makes_no_sense_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        InputSchema.from_dict(doc)


def reason(rows: list[list[float]]) -> str:
    with pytest.raises(BadInput) as caught:
        SCHEMA.check_rows(np.array(rows, dtype=np.float32))
    return caught.value.reason


def test_rows_are_held_to_the_schema() -> None:
    SCHEMA.check_rows(np.array([[np.nan, 3, 1], [1.5, 0, np.nan]], dtype=np.float32))
    assert reason([[1, np.nan, 1]]) == "missing_not_allowed"
    assert reason([[1, 2.5, 1]]) == "bad_feature"
    assert reason([[1, 2, 2]]) == "bad_feature"
    assert reason([[1, 2]]) == "wrong_shape"


@pytest.mark.parametrize("feature,value,why", [
    (Feature("count", "integer", False), None, "missing_not_allowed"),
    (Feature("temp"), True, "bad_feature"), (Feature("temp"), "3", "bad_feature"),
    (Feature("temp"), [3], "bad_feature"), (Feature("count", "integer"), 2.5, "bad_feature"),
    (Feature("door_open", "boolean"), 1, "bad_feature"),
])
def test_one_value_says_what_is_wrong(feature: Feature, value: object, why: str) -> None:
    with pytest.raises(BadInput) as caught:
        check_schema_value(feature, value)
    assert caught.value.reason == why
