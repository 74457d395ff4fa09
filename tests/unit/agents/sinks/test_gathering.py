"""The sink loop's pieces: transactions cut between messages, never inside one, and a
stage without a database URL refused at start in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.agents.sinks.gathering import in_transactions
from edgewise.app.core.settings import SettingsError, load_settings
from edgewise.app.run.factory import create_app


def test_messages_are_grouped_into_transactions_within_the_row_limit() -> None:
    parts = [(b"a", [0] * 3), (b"b", [0] * 3), (b"c", [0] * 5), (b"d", [0] * 1),
             (b"e", [0] * 2)]
    groups = in_transactions(parts, 6)  # type: ignore[arg-type]
    assert [[raw for raw, _ in group] for group in groups] == [[b"a", b"b"], [b"c", b"d"],
                                                               [b"e"]]
    big = in_transactions([(b"x", [0] * 9), (b"y", [0])], 6)  # type: ignore[arg-type]
    assert [[raw for raw, _ in group] for group in big] == [[b"x"], [b"y"]]
    assert in_transactions([], 6) == []


@pytest.mark.parametrize("stage", ["sink_predictions", "sink_samples"])
@pytest.mark.parametrize("dsn,says", [("", "set EDGEWISE_SINK_DSN"),
                                      ("mysql://db", "must start with postgresql://")])
def test_a_sink_without_a_postgresql_url_refuses_to_start(
        stage: str, dsn: str, says: str, tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path,
                             broker_profile="kafka", sink_dsn=dsn)
    with pytest.raises(SettingsError, match=says) as refused:
        create_app(settings, [stage], web_port=6066)
    assert stage in str(refused.value) and "\n" not in str(refused.value)


def test_a_sink_with_a_url_registers_on_the_topic_it_reads(tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path,
                             broker_profile="kafka", sink_dsn="postgresql://u@127.0.0.1:1/db")
    app, ctx = create_app(settings, ["sink_predictions", "sink_samples"], web_port=6066)
    topics = {name: agent.channel.get_topic_name() for name, agent in app.agents.items()}
    assert topics["edgewise.sink_predictions"] == ctx.names.predictions
    assert topics["edgewise.sink_samples"] == ctx.names.samples
