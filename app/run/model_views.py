"""Promotion and rollback from the dashboard: ``POST /api/models/promote`` with
``{"version": N}`` and ``POST /api/models/rollback`` with ``{}`` (both need the token when
one is configured, like every write). The registry's promotion log changes, and the version
is announced on model-updates, so score workers swap at once and bridges tell the edges.

Answers: 200 with the version now served; 400 with the reason for a bad body; 404 for a
version that is not registered (or fails its checks); 409 when there is nothing to roll
back to; 413 for a body over 1 KiB.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from faust.web import View

from edgewise.app.core.bounds import MAX_MODEL_VERSION, is_int
from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput, json_object
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError

MAX_BODY_BYTES = 1024


def parse_promotion(body: bytes, needs_version: bool) -> int | None:
    """The version a promotion asks for (None for a rollback); BadInput otherwise."""
    doc = json_object(body or b"{}", "request")
    allowed = {"version"} if needs_version else set()
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise BadInput("unknown_field", f"unknown field(s) {', '.join(k[:40] for k in unknown)}")
    if not needs_version:
        return None
    version = doc.get("version")
    if not is_int(version) or not 1 <= version <= MAX_MODEL_VERSION:
        raise BadInput("bad_version", f"version must be a whole number 1..{MAX_MODEL_VERSION}, "
                                      f"not {str(version)[:40]}")
    return int(version)


def define(ctx: StageContext) -> None:
    """Attach the promotion views."""
    settings = ctx.settings
    promotions = PromotionLog(ModelRegistry(settings.models_dir), settings.model_name)
    one_at_a_time = asyncio.Lock()  # two threads would write the log's one staging file

    async def change(web: Any, request: Any, promote: bool) -> Any:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return web.json({"status": 413, "error": "oversize"}, status=413)
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return web.json({"status": 413, "error": "oversize"}, status=413)
        try:
            version = parse_promotion(body, needs_version=promote)
        except BadInput as exc:
            return web.json({"status": 400, "error": exc.reason, "detail": exc.detail},
                            status=400)
        try:
            # the check loads the model: seconds (skops imports all of scikit-learn the
            # first time) that must not stall the stages sharing this event loop
            async with one_at_a_time:
                if version is not None:
                    served = await asyncio.to_thread(promotions.promote, version,
                                                     "promoted from the dashboard")
                else:
                    served = await asyncio.to_thread(promotions.rollback,
                                                     "rolled back from the dashboard")
        except RegistryError as exc:
            status = 404 if promote else 409
            return web.json({"status": status, "error": "refused", "detail": str(exc)},
                            status=status)
        update = {"model": settings.model_name, "version": served}
        sent = await ctx.topic(ctx.names.model_updates).send(
            key=settings.model_name.encode(), value=orjson.dumps(update))
        await sent
        return web.json({"served": served, "model": settings.model_name})

    @ctx.app.page("/api/models/promote")
    class Promote(View):
        """POST {"version": N}: serve that version."""

        async def post(self, request: Any) -> Any:
            return await change(self.web, request, promote=True)

    @ctx.app.page("/api/models/rollback")
    class Rollback(View):
        """POST {}: serve the previously promoted version again."""

        async def post(self, request: Any) -> Any:
            return await change(self.web, request, promote=False)
