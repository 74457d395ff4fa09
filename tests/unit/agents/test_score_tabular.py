"""The score stage serving a tabular model: rows with missing values are scored in batches
(the imputer fills them), and a batch the served model was not made for is dead-lettered
with its reason (another kind, the wrong width, a missing value where the schema forbids
one), the stage carrying on."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from edgewise.agents import score
from edgewise.app.core.records import TABULAR, SampleBatch
from edgewise.app.core.wire import decode_prediction_batch, encode_sample_batch
from edgewise.models import tabular
from edgewise.models.registry import ModelRegistry
from tests.fixtures import hostile
from tests.fixtures.stages import build_stage, next_value


@pytest.fixture(scope="module")
def tabular_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tabular-models")
    trained = tabular.train_tabular(tabular.bundled("wine", 0.2), trees=10,
                                    required=("alcohol",))
    ModelRegistry(root).register("tabular", trained.model, kind=TABULAR,
                                 input_schema=trained.schema)
    return root


def rows_batch(values: np.ndarray, device: str = "sensor-1") -> SampleBatch:
    n = len(values)
    return SampleBatch(device, TABULAR, [hostile.fresh_id(device) for _ in range(n)],
                       np.full(n, time.time() - 1.0), np.full(n, -1, dtype=np.int32),
                       values.astype(np.float32))


async def test_tabular_rows_are_scored_and_batches_it_cannot_take_dead_lettered(
        tabular_models: Path, tmp_path: Path) -> None:
    run = build_stage(score.register, "edgewise.score", tmp_path, ["unit-predictions"],
                      models_dir=tabular_models, model_name="tabular",
                      score_take_within=0.001)
    wine = tabular.bundled("wine", 0.3, seed=4)
    good = wine.x[:20].copy()
    good[:, 0] = np.nan_to_num(good[:, 0], nan=13.0)  # alcohol is required
    required_missing = good.copy()
    required_missing[3, 0] = np.nan
    bad = [(rows_batch(required_missing), "missing_not_allowed"),
           (rows_batch(good[:, :12]), "wrong_shape"),
           (hostile.good_sample_batch(random.Random(2)), "wrong_kind")]
    async with run.agent.test_context() as agent:
        for batch, reason in bad:
            await agent.put(encode_sample_batch(batch))
            letter = orjson.loads(await next_value(run.dead))
            assert (letter["stage"], letter["reason"]) == ("score", reason), letter["detail"]
        batch = rows_batch(good)
        await agent.put(encode_sample_batch(batch))
        scored = decode_prediction_batch(await next_value(run.outputs["unit-predictions"]),
                                         hostile.MAX_BYTES)
    assert scored.kind == TABULAR and scored.ids == batch.ids
    assert np.array_equal(scored.pixels, batch.pixels, equal_nan=True)
    assert np.isnan(scored.pixels).any() and set(scored.labels) <= {0, 1, 2}
    assert (scored.model, scored.model_version) == ("tabular", 1)
