"""Workers' view URLs: telling one's own from a peer's (Faust's canonical URLs)."""

from __future__ import annotations

from typing import Any

from yarl import URL


def url_ident(url: Any) -> tuple[str, int]:
    """(host, port) of a worker URL, as Faust's router compares them."""
    parsed = url if isinstance(url, URL) else URL(str(url))
    host = (parsed.host if parsed.scheme else parsed.path) or ""
    return host, int(parsed.port or 80)


def same_worker(a: Any, b: Any) -> bool:
    """True when two URLs name the same worker."""
    return url_ident(a) == url_ident(b)


def base_url(url: Any) -> str:
    """``scheme://host:port`` of a worker URL, without a trailing slash."""
    return str(url).rstrip("/")
