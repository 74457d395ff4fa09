"""``processing_guarantee``: a setting handed to Faust, refused where there are no transactions."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.app.core.settings import SettingsError, load_settings
from edgewise.app.run.factory import create_app


def test_exactly_once_is_refused_on_tansu(tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:9", broker_profile="embedded",
                             processing_guarantee="exactly_once", data_dir=tmp_path)
    with pytest.raises(SettingsError, match="Tansu has no transactions"):
        create_app(settings, ["route"])


def test_the_guarantee_reaches_faust(tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:9", broker_profile="kafka",
                             processing_guarantee="exactly_once", data_dir=tmp_path)
    app, _ = create_app(settings, ["route"], web_port=6066)
    assert app.conf.processing_guarantee.value == "exactly_once"


def test_at_least_once_is_the_default() -> None:
    assert load_settings().processing_guarantee == "at_least_once"
