"""Who may do what: writes need the token when one is set, reads only when configured so,
and the pages and health stay open (the pages' scripts send the token themselves)."""

from __future__ import annotations

import pytest

from edgewise.app.core.settings import load_settings
from edgewise.app.run.views import request_allowed

TOKEN = {"Authorization": "Bearer t0k"}


@pytest.mark.parametrize("method,path,headers,reads_closed,allowed", [
    ("POST", "/api/corrections", {}, False, False),
    ("POST", "/api/corrections", TOKEN, False, True),
    ("DELETE", "/api/anything", {}, False, False),
    ("GET", "/api/dashboard", {}, False, True),
    ("GET", "/api/dashboard", {}, True, False),
    ("GET", "/api/dashboard", TOKEN, True, True),
    ("GET", "/", {}, True, True),
    ("GET", "/review", {}, True, True),
    ("GET", "/static/station.js", {}, True, True),
    ("GET", "/healthz", {}, True, True),
    ("POST", "/healthz", {}, True, False),
])
def test_token_rules(method: str, path: str, headers: dict[str, str], reads_closed: bool,
                     allowed: bool) -> None:
    settings = load_settings(api_token="t0k", api_token_reads=reads_closed)
    assert request_allowed(settings, method, path, headers) is allowed


def test_without_a_token_configured_every_request_is_allowed() -> None:
    settings = load_settings()
    assert request_allowed(settings, "POST", "/api/corrections", {})
