"""Views every worker serves: health, Prometheus metrics and the model registry."""

from __future__ import annotations

from typing import Any

from edgewise.app.core.context import StageContext
from edgewise.models.registry import ModelRegistry


def define(ctx: StageContext, stages: list[str]) -> None:
    """Attach /healthz, /metrics and /api/models to the app."""
    registry = ModelRegistry(ctx.settings.models_dir)

    @ctx.app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": ctx.app.conf.id, "stages": stages})

    @ctx.app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(ctx.metrics.exposition(),
                         content_type="text/plain; version=0.0.4")

    @ctx.app.page("/api/models")
    async def models(web: Any, request: Any) -> Any:
        holder = getattr(ctx, "model_holder", None)
        serving = holder.meta.version if holder and holder.meta else None
        listing = []
        for name in registry.names():
            for version in registry.versions(name):
                meta = registry.meta(name, version).to_dict()
                meta["serving"] = name == ctx.settings.model_name and version == serving
                listing.append(meta)
        return web.json({"models": listing})
