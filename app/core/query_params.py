"""Query parameters of the HTTP views, checked: a bad one is a 400 with the reason."""

from __future__ import annotations

from typing import Any

from aiohttp import web as aioweb


def whole_number(request: Any, name: str, default: str, low: int, high: int) -> int:
    """``request.query[name]`` (or ``default``) as an int within ``low..high``; 400 else."""
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise aioweb.HTTPBadRequest(text=f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise aioweb.HTTPBadRequest(text=f"{name} must be {low}..{high}")
    return value
