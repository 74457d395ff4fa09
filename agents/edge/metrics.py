"""edge_metrics: the windows edges computed, added up across the edges of each site.

Edges send one metrics message per tumbling window (``tables.edge_windows``); this stage
keeps them per site and window in ``site_metrics`` (``tables.site_metrics``), so the hub
shows a site's fleet without ever seeing the events the windows summarise.
"""

from __future__ import annotations

from typing import Any

from edgewise.app.adapters.mqtt_payloads import parse_metrics_payload
from edgewise.app.core.context import StageContext
from edgewise.app.core.records import Origin
from edgewise.tables import site_metrics

STAGE = "edge_metrics"


def register(ctx: StageContext) -> None:
    """Attach the site table, its views and the edge_metrics agent to the app."""
    settings = ctx.settings
    table = site_metrics.define(ctx)
    source = ctx.names.edge_metrics

    def decode(raw: bytes) -> dict[str, Any]:
        return parse_metrics_payload(raw, settings.max_message_bytes,
                                     future_skew=settings.future_skew_seconds)

    @ctx.agent(ctx.topic(source), name="edgewise.edge_metrics", stage=STAGE)
    async def edge_metrics(stream: Any) -> None:
        async def handle(metrics: dict[str, Any], origin: Origin, raw: bytes) -> None:
            state, kept = site_metrics.merge_edge_window(
                table.get(metrics["site"]), metrics, settings.windows_kept,
                max_devices=settings.site_max_devices,
                max_device_age=settings.site_device_max_age_seconds)
            table[metrics["site"]] = state
            ctx.count(STAGE, samples=metrics["count"] if kept else 0)

        await ctx.each(stream, STAGE, source, decode, handle)
