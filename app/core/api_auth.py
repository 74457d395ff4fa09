"""The token the HTTP views ask for: always for writes when one is configured, for reads
too when ``api_token_reads`` is set.

The token travels as ``Authorization: Bearer <token>`` (or ``X-Edgewise-Token``, for tools
that cannot set Authorization); it is compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from edgewise.app.core.settings import Settings

TOKEN_HEADER = "X-Edgewise-Token"


def presented_token(headers: Mapping[str, str]) -> str:
    """The token a request carries, or ''."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get(TOKEN_HEADER, "").strip()


def token_accepted(expected: str, headers: Mapping[str, str]) -> bool:
    """True when no token is configured, or the request carries it."""
    if not expected:
        return True
    given = presented_token(headers)
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def write_allowed(settings: Settings, headers: Mapping[str, str]) -> bool:
    """A write endpoint may proceed."""
    return token_accepted(settings.api_token.get_secret_value(), headers)


def read_allowed(settings: Settings, headers: Mapping[str, str]) -> bool:
    """A read endpoint may proceed: open unless ``api_token_reads`` asks for the token."""
    return not settings.api_token_reads or write_allowed(settings, headers)


def auth_headers(settings: Settings) -> dict[str, str]:
    """Headers a worker sends to its peers (they share the configuration)."""
    token = settings.api_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}
