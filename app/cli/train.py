"""``edgewise train``: train, print held-out accuracy, register a new version."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from edgewise.app.cli.common import CliError
from edgewise.app.core.records import TABULAR
from edgewise.app.core.settings import Settings
from edgewise.models import tabular
from edgewise.models.digits import TRAIN_STEPS, train_digits
from edgewise.models.registry import ModelRegistry, RegistryError


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


def train_tabular_command(settings: Settings, args: argparse.Namespace) -> int:
    """``edgewise train tabular``: imputer and forest on a CSV's rows or a bundled dataset
    with values blanked, registered with its input schema through the chosen adapter."""
    if args.trees < 1:
        raise CliError("--trees must be at least 1")
    if bool(args.csv) != bool(args.label):
        raise CliError("--csv and --label go together (the CSV and its label column)")
    try:
        if args.csv:
            data = tabular.read_csv(args.csv, args.label, args.missing or 0.0)
        else:
            missing = tabular.DEFAULT_MISSING if args.missing is None else args.missing
            data = tabular.bundled(args.dataset, missing)
        if data.ignored:
            print(f"not features (reserved names): {', '.join(data.ignored)}", file=sys.stderr)
        with tqdm(total=tabular.TRAIN_STEPS, desc=f"training {args.name} ({args.trees} trees)",
                  unit="step", file=sys.stderr) as bar:
            trained = tabular.train_tabular(data, args.trees, tuple(args.required),
                                            progress=bar.update)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    registry = ModelRegistry(settings.models_dir)
    try:
        meta = registry.register(args.name, trained.model, training_data=trained.training_data,
                                 metrics={"accuracy": trained.accuracy},
                                 algorithm="imputer+forest", adapter=args.adapter,
                                 kind=TABULAR, input_schema=trained.schema)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    summary = trained.training_data
    print(f"held-out accuracy {trained.accuracy:.4f} on {summary['test_rows']} rows "
          f"({summary['features']} features, {summary['missing_share']:.0%} missing); "
          f"registered {meta.name} v{meta.version} ({meta.adapter}, {meta.sha256[:12]}) in "
          f"{settings.models_dir}")
    return 0
