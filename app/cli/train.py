"""``edgewise train``: train, print held-out accuracy, register a new version."""

from __future__ import annotations

import sys

from tqdm import tqdm

from edgewise.app.core.settings import Settings
from edgewise.models.digits import TRAIN_STEPS, train_digits
from edgewise.models.registry import ModelRegistry


def train_command(settings: Settings, model: str, algorithm: str, from_topic: str | None) -> int:
    """Train ``model`` with a progress bar and register it; returns the exit code."""
    if from_topic:
        from edgewise.agents.cdc.train import train_from_topic

        return train_from_topic(settings, model, algorithm, from_topic)
    with tqdm(total=TRAIN_STEPS, desc=f"training {model} ({algorithm})", unit="step",
              file=sys.stderr) as bar:
        trained = train_digits(algorithm, progress=bar.update)
    registry = ModelRegistry(settings.models_dir)
    meta = registry.register(model, trained.model, training_data=trained.training_data,
                             metrics={"accuracy": trained.accuracy}, algorithm=algorithm)
    print(f"held-out accuracy {trained.accuracy:.4f} on {trained.training_data['test_rows']} "
          f"digits; registered {meta.name} v{meta.version} ({meta.sha256[:12]}) in "
          f"{settings.models_dir}")
    return 0
