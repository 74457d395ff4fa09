"""What every command shares: the one-line error type and settings from flags."""

from __future__ import annotations

import argparse
from typing import Any

from edgewise.app.core.settings import Settings, load_settings


class CliError(RuntimeError):
    """A problem the user can fix; printed as one line."""


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings, with ``--broker`` and ``--mqtt`` (when a command has them and they were
    given) and ``overrides`` above the environment and the ``--config`` file."""
    if getattr(args, "broker", None):
        overrides["broker"] = args.broker
    if getattr(args, "mqtt", None):
        overrides["mqtt_url"] = args.mqtt
    return load_settings(getattr(args, "config", None), **overrides)
