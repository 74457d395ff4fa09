"""Settings: defaults, environment, TOML file, their precedence, and one-line errors.

The contract (app/settings.py): keyword arguments beat ``EDGEWISE_<FIELD>`` variables,
which beat the TOML file, which beats the defaults; anything unknown or invalid is one
readable line in a SettingsError; ``describe`` documents every field.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgewise.app.core.settings import Settings, SettingsError, describe, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGEWISE_* variable of the surrounding shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("EDGEWISE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def write_toml(tmp_path: Path):
    def write(text: str, name: str = "edgewise.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def assert_one_line(error: SettingsError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# -- defaults ---------------------------------------------------------------------------


def test_every_field_takes_its_declared_default() -> None:
    settings = load_settings()
    for name, field in Settings.model_fields.items():
        assert getattr(settings, name) == field.default, name


def test_defaults_describe_the_one_machine_demo() -> None:
    settings = load_settings()
    assert settings.broker == "embedded"
    assert settings.embedded and settings.embedded_profile
    assert settings.partitions == 4
    assert settings.data_dir == Path(".edgewise")
    assert settings.models_dir == Path(".edgewise/models")


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.partitions = 8  # type: ignore[misc]


# -- environment ------------------------------------------------------------------------


def test_environment_overrides_defaults_with_typed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEWISE_PARTITIONS", "8")
    monkeypatch.setenv("EDGEWISE_LOW_CONFIDENCE", "0.4")
    monkeypatch.setenv("EDGEWISE_MODELS_DIR", "/srv/models")
    monkeypatch.setenv("EDGEWISE_BROKER", "kafka://hub:9092")
    settings = load_settings()
    assert settings.partitions == 8
    assert settings.low_confidence == pytest.approx(0.4)
    assert settings.models_dir == Path("/srv/models")
    assert settings.broker == "kafka://hub:9092"
    assert not settings.embedded


def test_broker_profile_can_mark_a_kafka_url_as_tansu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWISE_BROKER", "kafka://tansu:9092")
    monkeypatch.setenv("EDGEWISE_BROKER_PROFILE", "embedded")
    settings = load_settings()
    assert not settings.embedded
    assert settings.embedded_profile


def test_unknown_environment_variable_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWISE_PARTITON", "3")  # misspelt
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert_one_line(caught.value, "EDGEWISE_PARTITON")


def test_config_and_debug_variables_are_not_unknown(
    monkeypatch: pytest.MonkeyPatch, write_toml
) -> None:
    monkeypatch.setenv("EDGEWISE_CONFIG", str(write_toml("partitions = 2\n")))
    monkeypatch.setenv("EDGEWISE_DEBUG", "1")
    assert load_settings().partitions == 2


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("EDGEWISE_PARTITIONS", "abc", "partitions"),
        ("EDGEWISE_PARTITIONS", "0", "partitions"),
        ("EDGEWISE_LOG_LEVEL", "loud", "log_level"),
        ("EDGEWISE_BROKER", "http://hub:9092", "broker"),
        ("EDGEWISE_HARD_SHARE", "1.5", "hard_share"),
    ],
)
def test_invalid_environment_value_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert_one_line(caught.value, "invalid configuration", field, repr(value))
    assert caught.value.__suppress_context__  # no pydantic traceback chained underneath


def test_lower_case_variable_is_either_ignored_or_beats_the_file(
    monkeypatch: pytest.MonkeyPatch, write_toml
) -> None:
    """pydantic-settings matches names case-insensitively; load_settings only upper case.

    Whatever edgewise decides (ignore ``edgewise_partitions`` or honour it), it must decide
    the same way with and without a config file.
    """
    monkeypatch.setenv("edgewise_partitions", "7")
    without_file = load_settings().partitions
    with_file = load_settings(write_toml("partitions = 9\n")).partitions
    assert (without_file, with_file) in {(4, 9), (7, 7)}


# -- TOML file --------------------------------------------------------------------------


def test_toml_file_values_are_read(write_toml) -> None:
    path = write_toml('partitions = 6\nmodels_dir = "/data/models"\nlow_confidence = 0.5\n')
    settings = load_settings(path)
    assert settings.partitions == 6
    assert settings.models_dir == Path("/data/models")
    assert settings.low_confidence == 0.5


def test_toml_file_may_use_an_edgewise_table(write_toml) -> None:
    path = write_toml('[edgewise]\ntopic_prefix = "plant-7"\ndevices = 12\n')
    settings = load_settings(str(path))
    assert settings.topic_prefix == "plant-7"
    assert settings.devices == 12


def test_config_file_named_by_environment(monkeypatch: pytest.MonkeyPatch, write_toml) -> None:
    monkeypatch.setenv("EDGEWISE_CONFIG", str(write_toml('app_id = "from-file"\n')))
    assert load_settings().app_id == "from-file"


def test_unknown_key_in_file_is_one_line_error(write_toml) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write_toml('colour = "blue"\n'))
    assert_one_line(caught.value, "unknown setting 'colour'")


def test_invalid_value_in_file_is_one_line_error(write_toml) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write_toml("top_k = 0\n"))
    assert_one_line(caught.value, "top_k", "(got 0)")


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "absent.toml")
    assert_one_line(caught.value, "config file not found", "absent.toml")


def test_broken_toml_is_one_line_error(write_toml) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write_toml("partitions 6\n"))
    assert_one_line(caught.value, "not valid TOML")


# -- precedence -------------------------------------------------------------------------


def test_keyword_beats_environment_beats_file(
    monkeypatch: pytest.MonkeyPatch, write_toml
) -> None:
    path = write_toml("partitions = 9\ndevices = 9\nbatch_size = 9\n")
    monkeypatch.setenv("EDGEWISE_PARTITIONS", "7")
    monkeypatch.setenv("EDGEWISE_DEVICES", "7")
    settings = load_settings(path, partitions=5)
    assert settings.partitions == 5  # keyword over environment and file
    assert settings.devices == 7  # environment over file
    assert settings.batch_size == 9  # file over default


def test_keyword_none_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWISE_PARTITIONS", "7")
    assert load_settings(partitions=None).partitions == 7


def test_unknown_keyword_is_one_line_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(partitons=3)
    assert_one_line(caught.value, "unknown setting 'partitons'")


def test_several_problems_share_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(partitions=0, top_k=0)
    assert_one_line(caught.value, "partitions", "top_k", "; ")


# -- describe ---------------------------------------------------------------------------


def test_describe_documents_every_field() -> None:
    settings = load_settings(partitions=3)
    rows = describe(settings)
    assert [row[0] for row in rows] == list(Settings.model_fields)
    for name, value, variable, doc in rows:
        assert value == getattr(settings, name)
        assert variable == f"EDGEWISE_{name.upper()}"
        assert doc.strip(), f"{name} has no documentation"
        assert "\n" not in doc
    assert ("partitions", 3) in [(row[0], row[1]) for row in rows]


def test_future_skew_defaults_to_half_the_window_horizon() -> None:
    settings = load_settings()
    assert settings.window_horizon_seconds == 6 * 10.0
    assert settings.future_skew_seconds == 30.0
    wide = load_settings(tumbling_seconds=60, hopping_step_seconds=60, edge_window_seconds=60,
                         windows_kept=10)
    assert wide.future_skew_seconds == 300.0
    assert load_settings(max_future_skew_seconds=5).future_skew_seconds == 5.0


def test_future_skew_beyond_the_horizon_is_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(max_future_skew_seconds=61)
    assert str(caught.value) == (
        "invalid configuration: max_future_skew_seconds must be -1 or in (0, 60]: a clock "
        "further ahead would push every other device's windows out")
    with pytest.raises(SettingsError):
        load_settings(max_future_skew_seconds=0)


@pytest.mark.parametrize("name", ["edgewise_predictions", "results.predictions", "_t1"])
def test_sink_tables_take_plain_names(name: str) -> None:
    assert load_settings(sink_predictions_table=name).sink_predictions_table == name


@pytest.mark.parametrize("name", ["Predictions", "a.b.c", "1table", "p; DROP TABLE x", "",
                                  "a" * 64, 'p"'])
def test_a_sink_table_that_is_not_a_plain_name_is_one_line(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(sink_samples_table=name)
    assert_one_line(caught.value, "sink_samples_table", "lower-case letters")


def test_the_sink_dsn_is_a_secret() -> None:
    settings = load_settings(sink_dsn="postgresql://me:hunter2@db/results")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(describe(settings))
    assert settings.sink_dsn.get_secret_value().endswith("@db/results")


def test_refs_read_the_image_buckets_named_or_else_the_image_store_s() -> None:
    assert load_settings(s3_bucket="images").allowed_buckets == {"images"}
    named = load_settings(refs_buckets="uploads, scans.2026 ,")
    assert named.allowed_buckets == {"uploads", "scans.2026"}
    with pytest.raises(SettingsError) as caught:
        load_settings(refs_buckets="ok,Not_A_Bucket")
    assert_one_line(caught.value, "refs_buckets", "Not_A_Bucket")
