"""Views every worker serves: health, Prometheus metrics, the model registry, the dashboard
and the correction station; and the token check in front of all of them."""

from __future__ import annotations

from typing import Any

from aiohttp import web as aioweb

from edgewise.app.core.api_auth import read_allowed, write_allowed
from edgewise.app.core.context import StageContext
from edgewise.app.run import dashboard_views, lag_export, model_views
from edgewise.models.registry import ModelRegistry, PromotionLog, read_decision

#: Always open: health checks, and the pages themselves (their scripts send the token).
OPEN_PATHS = frozenset({"/healthz", *dashboard_views.PAGES})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def request_allowed(settings: Any, method: str, path: str, headers: Any) -> bool:
    """Writes need the token when one is configured; reads only when ``api_token_reads``."""
    if method.upper() not in READ_METHODS:
        return write_allowed(settings, headers)
    if path in OPEN_PATHS or path.startswith("/static/"):
        return True
    return read_allowed(settings, headers)


def token_middleware(settings: Any) -> Any:
    """The aiohttp middleware answering 401 to a request without the token it needs."""

    @aioweb.middleware
    async def require_token(request: Any, handler: Any) -> Any:
        if not request_allowed(settings, request.method, request.path, request.headers):
            return aioweb.json_response(
                {"status": 401, "error": "unauthorized",
                 "detail": "this endpoint needs the API token (Authorization: Bearer ...)"},
                status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return require_token


def define(ctx: StageContext, stages: list[str]) -> None:
    """Attach /healthz, /metrics, /api/models, the dashboard and the token check."""
    registry = ModelRegistry(ctx.settings.models_dir)
    ctx.app.web.web_app.middlewares.append(token_middleware(ctx.settings))
    dashboard_views.define(ctx, stages)
    model_views.define(ctx)

    @ctx.app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": ctx.app.conf.id, "stages": stages})

    @ctx.app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        await lag_export.export_for(ctx, stages).refresh()
        return web.bytes(ctx.metrics.exposition(),
                         content_type="text/plain; version=0.0.4")

    @ctx.app.page("/api/models")
    async def models(web: Any, request: Any) -> Any:
        holder = getattr(ctx, "model_holder", None)
        serving = holder.meta.version if holder and holder.meta else None
        listing = []
        for name in registry.names():
            promoted = PromotionLog(registry, name).served()
            for version in registry.versions(name):
                meta = registry.meta(name, version).to_dict()
                meta["serving"] = name == ctx.settings.model_name and version == serving
                meta["promoted"] = version == promoted
                meta["decision"] = read_decision(registry, name, version)
                listing.append(meta)
        return web.json({"models": listing})
