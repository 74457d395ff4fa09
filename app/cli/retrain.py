"""``edgewise retrain``, ``edgewise promote VERSION`` and ``edgewise rollback``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson
from tqdm import tqdm

from edgewise.app.cli.common import CliError, settings_from
from edgewise.app.cli.edge import announce_model_version
from edgewise.app.core.settings import Settings
from edgewise.models.digits import TRAIN_STEPS
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError


def _announce(settings: Settings, version: int, announce: bool) -> None:
    if announce and not settings.embedded:
        announce_model_version(settings, {"model": settings.model_name, "version": version})


def cmd_retrain(args: argparse.Namespace) -> int:
    """Train a candidate on base data + corrections, gate it, promote it or reject it."""
    from edgewise.agents.retrain import NothingToLearn, read_corrections, retrain_once

    settings = settings_from(args, retrain_margin=args.margin)
    if args.shadow_samples is not None and args.shadow_samples < 0:
        raise CliError(f"--shadow-samples must be 0 or more, not {args.shadow_samples}")
    if settings.embedded:
        raise CliError("retrain reads the corrections topic: give --broker kafka://…")
    with tqdm(desc="reading corrections", unit="rec", file=sys.stderr) as bar:
        records, refused = read_corrections(settings, on_total=lambda n: setattr(bar, "total", n))
        bar.update(len(records) + refused)
    try:
        with tqdm(total=TRAIN_STEPS, desc=f"training {settings.model_name} candidate",
                  unit="step", file=sys.stderr) as bar:
            result = retrain_once(settings, records, args.algorithm, progress=bar.update,
                                  shadow_samples=args.shadow_samples)
    except (NothingToLearn, RegistryError) as exc:
        raise CliError(str(exc)) from None
    print(orjson.dumps({**result.as_dict(), "refused_records": refused},
                       option=orjson.OPT_INDENT_2).decode())
    print(f"{settings.model_name} v{result.version} {result.decision}: {result.reason}",
          file=sys.stderr)
    if result.decision == "shadow":
        print("the retrain stage (--stage retrain) promotes or rejects it after the shadow",
              file=sys.stderr)
    if result.decision != "rejected":
        _announce(settings, result.version, not args.no_announce)
    return 3 if result.decision == "rejected" else 0


def cmd_promote(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    promotions = PromotionLog(ModelRegistry(settings.models_dir), settings.model_name)
    try:
        version = promotions.promote(args.version, args.reason or "promoted by hand")
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    print(f"{settings.model_name} v{version} promoted", file=sys.stderr)
    _announce(settings, version, not args.no_announce)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    promotions = PromotionLog(ModelRegistry(settings.models_dir), settings.model_name)
    try:
        version = promotions.rollback(args.reason or "rolled back by hand")
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    print(f"{settings.model_name} rolled back to v{version}", file=sys.stderr)
    _announce(settings, version, not args.no_announce)
    return 0


def add_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Attach the model-lifecycle commands to the ``edgewise`` parser."""
    p = add("retrain", cmd_retrain, "train a candidate on base data + corrections; shadow it "
            "and promote it only if not worse (exit 3 when rejected)")
    p.add_argument("--algorithm", choices=["linear", "forest"], default="linear")
    p.add_argument("--margin", type=float, help="allowed loss of accuracy (default: "
                   "settings retrain_margin)")
    p.add_argument("--shadow-samples", type=int, metavar="N", help="live samples to score it "
                   "on in shadow before the decision; 0: promote on the held-out sets alone "
                   "(default: settings shadow_samples)")
    p.add_argument("--no-announce", action="store_true", help="do not announce a promotion")
    for name, func, what in (("promote", cmd_promote, "serve a registered version"),
                             ("rollback", cmd_rollback, "serve again the previously promoted "
                              "version")):
        p = add(name, func, what)
        if name == "promote":
            p.add_argument("version", type=int)
        p.add_argument("--reason", help="recorded in the promotion log")
        p.add_argument("--no-announce", action="store_true",
                       help="do not announce on model-updates (score workers still follow "
                       "the registry)")
