"""The dashboard and the correction station: their pages (plain HTML, CSS and JavaScript
from ``app/run/static``, nothing fetched from elsewhere), and the fleet views they read,
answered by any worker for all of them (``app.run.fanout``).

- ``/`` the dashboard, ``/review`` the correction station, ``/static/<file>`` their files;
- ``/api/local/dashboard`` this worker's part; ``/api/dashboard`` every worker's, merged;
- ``/api/fleet/review`` the review queue of every partition, least confident (or smallest
  margin) first; ``/api/fleet/review/{id}/image`` an item's image from whichever worker
  holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web as aioweb

from edgewise.app.core.api_auth import auth_headers
from edgewise.app.core.context import StageContext
from edgewise.app.core.peers import base_url, same_worker
from edgewise.app.core.query_params import whole_number
from edgewise.app.run.dashboard import local_part, merge_dashboard
from edgewise.app.run.fanout import (
    answered,
    ask_peers,
    group_urls,
    merge_review,
    parts,
    peer_list,
)
from edgewise.app.run.lag_export import export_for
from edgewise.tables import review_queue

STATIC = Path(__file__).with_name("static")
#: The only files served, with their types: nothing else under the folder is reachable.
STATIC_FILES = {"dashboard.html": "text/html", "station.html": "text/html",
                "dashboard.js": "application/javascript", "station.js": "application/javascript",
                "charts.js": "application/javascript", "common.js": "application/javascript",
                "style.css": "text/css"}
PAGES = {"/": "dashboard.html", "/review": "station.html"}
MAX_FLEET_PAGE = 500


def static_file(name: str) -> tuple[bytes, str]:
    """A page's file and its content type; KeyError for anything not listed."""
    content_type = STATIC_FILES[name]
    return (STATIC / name).read_bytes(), content_type


def define(ctx: StageContext, stages: list[str]) -> None:
    """Attach the pages and the fleet views to the app."""
    app, settings = ctx.app, ctx.settings

    def own() -> str:
        return base_url(app.conf.canonical_url)

    def workers() -> list[str]:
        try:
            members = group_urls(app.router.tables_metadata())
        except Exception:  # before the first assignment the assignor knows nobody
            members = []
        return peer_list(own(), members, settings.peers)

    async def fetch(url: str, timeout: float) -> tuple[int, bytes]:
        async with app.http_client.get(
                url, headers=auth_headers(settings),
                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.read()

    for path, name in PAGES.items():
        def page_view(name: str = name) -> Any:
            async def page(web: Any, request: Any) -> Any:
                body, content_type = static_file(name)
                return web.bytes(body, content_type=content_type)
            page.__name__ = f"page_{name.split('.')[0]}"
            return page
        app.page(path)(page_view())

    @app.page("/static/{name}")
    async def static(web: Any, request: Any, name: str) -> Any:
        try:
            body, content_type = static_file(name)
        except KeyError:
            raise aioweb.HTTPNotFound(text=f"no file {name[:80]}") from None
        return web.bytes(body, content_type=content_type)

    @app.page("/api/local/dashboard")
    async def local_dashboard(web: Any, request: Any) -> Any:
        await export_for(ctx, stages).refresh()
        return web.json(local_part(ctx, stages))

    @app.page("/api/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        await export_for(ctx, stages).refresh()
        answers = await ask_peers(workers(), own(), "/api/local/dashboard",
                                  lambda: local_part(ctx, stages), fetch,
                                  settings.fanout_timeout_seconds)
        view = merge_dashboard(parts(answers), settings)
        view.update(answered(answers))
        return web.json(view)

    @app.page("/api/fleet/review")
    async def fleet_review(web: Any, request: Any) -> Any:
        limit = whole_number(request, "limit", "50", 1, MAX_FLEET_PAGE)
        offset = whole_number(request, "offset", "0", 0, 10_000)
        order = request.query.get("order", "confidence")
        if order not in review_queue.ORDERS:
            raise aioweb.HTTPBadRequest(
                text=f"order must be one of {', '.join(review_queue.ORDERS)}")
        queue = review_queue.queue_for(app)

        def local() -> Any:
            if queue is None:
                return None
            items, queued = (queue.page_by_margin if order == "margin" else queue.page)(
                0, offset + limit)
            return {"items": items, "queued": queued, "evicted": queue.evicted}

        path = f"/api/review?offset=0&limit={offset + limit}&order={order}"
        answers = await ask_peers(workers(), own(), path, local, fetch,
                                  settings.fanout_timeout_seconds)
        view = merge_review(answers, offset, limit, order)
        for item in view["items"]:
            item["image"] = f"/api/fleet/review/{item['id']}/image"
        return web.json(view)

    @app.page("/api/fleet/review/{item_id}/image")
    async def fleet_review_image(web: Any, request: Any, item_id: str) -> Any:
        queue = review_queue.queue_for(app)
        try:  # straight to the owner: Faust's own forwarding reads bodies as text
            owner = base_url(app.router.key_store(review_queue.TABLE, item_id))
        except (KeyError, LookupError):  # no assignment known, or no review table here
            owner = own()
        if queue is not None and same_worker(owner, own()):
            return web.bytes(await queue.image(item_id), content_type="image/png")
        try:
            status, body = await fetch(f"{owner}/api/review/{quote(item_id, safe='')}/image",
                                       settings.fanout_timeout_seconds)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise aioweb.HTTPServiceUnavailable(
                text=f"the worker holding {item_id[:80]} did not answer: "
                     f"{type(exc).__name__}") from None
        if status != 200:
            raise aioweb.HTTPNotFound(text=f"no image for review item {item_id[:80]}")
        return web.bytes(body, content_type="image/png")
