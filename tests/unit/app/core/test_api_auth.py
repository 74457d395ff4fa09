"""The API token: writes need it when one is configured, reads only when asked to."""

from __future__ import annotations

from edgewise.app.core.api_auth import (
    auth_headers,
    presented_token,
    read_allowed,
    token_accepted,
    write_allowed,
)
from edgewise.app.core.settings import load_settings


def test_no_token_configured_leaves_everything_open() -> None:
    settings = load_settings()
    assert write_allowed(settings, {}) and read_allowed(settings, {})
    assert auth_headers(settings) == {}


def test_a_configured_token_is_needed_for_writes_only() -> None:
    settings = load_settings(api_token="s3cret")
    assert not write_allowed(settings, {})
    assert not write_allowed(settings, {"Authorization": "Bearer wrong"})
    assert not write_allowed(settings, {"Authorization": "Basic s3cret"})
    assert write_allowed(settings, {"Authorization": "Bearer s3cret"})
    assert write_allowed(settings, {"X-Edgewise-Token": "s3cret"})
    assert read_allowed(settings, {})
    assert auth_headers(settings) == {"Authorization": "Bearer s3cret"}


def test_reads_need_the_token_when_configured_so() -> None:
    settings = load_settings(api_token="s3cret", api_token_reads=True)
    assert not read_allowed(settings, {})
    assert read_allowed(settings, {"Authorization": "bearer s3cret"})


def test_an_empty_or_partial_token_never_matches() -> None:
    assert presented_token({"Authorization": "Bearer "}) == ""
    assert not token_accepted("abc", {"Authorization": "Bearer "})
    assert not token_accepted("abc", {"X-Edgewise-Token": "ab"})
    assert token_accepted("", {})
