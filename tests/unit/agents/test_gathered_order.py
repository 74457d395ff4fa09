"""A device's batches of two model versions interleaved in one gathering (two score
replicas mid-swap) are all counted by aggregate and evaluate: each folds them in offset
order, so none is taken for a replay of a later one.

The real agents under Faust's ``test_context()``: three batches put before the stage
reads, so one ``take`` gathers them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.agents import aggregate, evaluate
from edgewise.app.core.wire import encode_prediction_batch
from tests.fixtures import hostile
from tests.fixtures.stages import build_stage


def interleaved(rng: random.Random) -> list[Any]:
    """v1, v2, v1 of one device, every sample labelled (evaluate counts labelled ones)."""
    batches = []
    for version in (1, 2, 1):
        batch = hostile.good_prediction_batch(rng, device="cam-1", n=4)
        batches.append(dataclasses.replace(
            batch, model_version=version,
            true_labels=np.abs(batch.true_labels).astype(np.int32)))
    return batches


@pytest.mark.parametrize("stage, register, agent_name", [
    ("aggregate", aggregate.register, "edgewise.aggregate"),
    ("evaluate", evaluate.register, "edgewise.evaluate"),
])
async def test_interleaved_model_versions_of_one_device_are_all_counted(
    tmp_path: Path, stage: str, register: Any, agent_name: str,
) -> None:
    run = build_stage(register, agent_name, tmp_path, fold_take_within=0.5)
    batches = interleaved(random.Random(3))
    async with run.agent.test_context() as agent:
        for batch in batches:
            await agent.put(encode_prediction_batch(batch), wait=False)
        expected = sum(len(b) for b in batches)
        for _ in range(100):
            if run.samples_counted(stage) >= expected:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more comes: none is counted twice either
    assert run.samples_counted(stage) == expected
