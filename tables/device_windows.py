"""The per-device window table and its views.

``device_windows`` is keyed by device id (the key of the predictions topic, so the table is
co-partitioned with its source) and changelog-backed: a restarted worker rebuilds it from
``<app id>-device_windows-changelog``. Beside each device's record it holds that device's
id chunks (``tables.seen_ids``), which the views skip. Views for a device are answered by
the worker that owns the device's partition (``table_route``).
"""

from __future__ import annotations

from typing import Any

import faust
from aiohttp import web as aioweb

from edgewise.app.core.context import StageContext, json_schema
from edgewise.tables.seen_ids import is_chunk_key, went_back
from edgewise.tables.windows import WindowSpec, window_view

TABLE = "device_windows"


def window_spec(ctx: StageContext) -> WindowSpec:
    s = ctx.settings
    return WindowSpec(s.tumbling_seconds, s.hopping_seconds, s.hopping_step_seconds,
                      s.windows_kept, s.window_max_models, s.window_max_labels,
                      s.table_record_max_bytes)


def define(ctx: StageContext) -> faust.Table:
    """Create the table and attach its views."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="windowed prediction statistics per device and model version",
    )
    table.stale = went_back  # a dropped worker's late write never rebuilds a device
    spec = window_spec(ctx)

    @ctx.app.page("/api/devices")
    async def devices(web: Any, request: Any) -> Any:
        listing = []
        for device, state in sorted(table.items()):
            if is_chunk_key(device):
                continue
            listing.append({
                "device": device, "newest": state.get("newest"), "late": state.get("late", 0),
                "replayed": state.get("replayed", 0),
                "evicted_windows": state.get("evicted_windows", 0),
                "windows": f"/api/devices/{device}/windows",
            })
        return web.json({"devices": listing, "worker": ctx.app.conf.id,
                         "partitions": "this worker's"})

    @ctx.app.page("/api/devices/{device}/windows")
    @ctx.app.table_route(table=table, match_info="device")
    async def device_windows(web: Any, request: Any, device: str) -> Any:
        kind = request.query.get("kind", "tumbling")
        if kind not in ("tumbling", "hopping"):
            raise aioweb.HTTPBadRequest(text="kind must be tumbling or hopping")
        state = None if is_chunk_key(device) else table.get(device)
        if state is None:
            raise aioweb.HTTPNotFound(text=f"no windows for device {device}")
        size = spec.tumbling if kind == "tumbling" else spec.hopping
        windows = window_view(state, kind, size)
        return web.json({
            "device": device, "kind": kind, "size_seconds": size,
            "step_seconds": spec.tumbling if kind == "tumbling" else spec.step,
            "late": state.get("late", 0), "replayed": state.get("replayed", 0),
            "current": [w for w in windows if w["current"]],
            "closed": [w for w in windows if not w["current"]],
        })

    return table
