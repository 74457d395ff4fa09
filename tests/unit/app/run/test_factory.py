"""Every app runs on edgewise's transport, whatever scheme the broker URL has: its consumer
is what commits an offset only after what it caused was acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.app.core.deliveries import DeliveryGuard
from edgewise.app.core.settings import load_settings
from edgewise.app.run.factory import create_app
from edgewise.app.run.transport import Transport


@pytest.mark.parametrize("scheme", ["kafka", "aiokafka", "edgewise"])
def test_every_broker_scheme_gets_the_guarded_transport(scheme: str, tmp_path: Path) -> None:
    settings = load_settings(broker=f"{scheme}://127.0.0.1:1", data_dir=tmp_path,
                             broker_profile="kafka")
    app, _ = create_app(settings, ["route"], web_port=6066)  # not started: any port
    assert [url.scheme for url in app.conf.broker] == ["edgewise"]
    assert app.transport.__class__ is Transport
    assert isinstance(app.edgewise_guard, DeliveryGuard)
