"""Edge window metrics added up across the edges of a site, and their views.

``site_metrics`` is keyed by site (the key the bridge gives metrics messages, so the table
is co-partitioned with its topic). Each value holds, per window start, the latest metrics
of each device: a replayed or resent window *replaces* that device's entry, so the sums are
idempotent without remembering message ids. Totals across devices are computed when a view
asks, from those entries.

Value layout (JSON)::

    {"windows": {"<start>": {"<device>": metrics}}, "devices": {"<device>": last seen},
     "newest": <newest window start>, "late": <windows older than the kept ones>}

Lateness: the newest ``kept`` window starts are kept; a window older than all of them is
counted in ``late`` and dropped (the edge's own clock decides which window is which).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust
from aiohttp import web as aioweb

from edgewise.app.core.context import StageContext, json_schema

TABLE = "site_metrics"
DEVICE_FIELDS = ("window_end", "frames", "count", "scored", "low", "conf_sum", "conf_min",
                 "conf_max", "labels", "detect", "model", "dropped")


def merge_edge_window(state: dict[str, Any] | None, metrics: dict[str, Any], kept: int
                      ) -> tuple[dict[str, Any], bool]:
    """Put one device's window into a site's state; (state, True when it was kept)."""
    state = state or {"windows": {}, "devices": {}, "newest": 0.0, "late": 0}
    start = float(metrics["window_start"])
    key = repr(start)
    windows = state["windows"]
    if key not in windows and len(windows) >= kept and start < min(map(float, windows)):
        state["late"] += 1
        return state, False
    windows.setdefault(key, {})[metrics["device"]] = {f: metrics[f] for f in DEVICE_FIELDS}
    state["newest"] = max(state["newest"], start)
    state["devices"][metrics["device"]] = {
        "last_window": max(start, state["devices"].get(metrics["device"], {}).get(
            "last_window", 0.0)),
        "model": metrics["model"], "detect": metrics["detect"], "dropped": metrics["dropped"],
    }
    for old in sorted(windows, key=float)[:-kept]:
        del windows[old]
    return state, True


def window_totals(per_device: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One window across a site's devices: counts, labels, confidence summary."""
    labels: Counter[str] = Counter()
    total = dict.fromkeys(("frames", "count", "scored", "low"), 0)
    conf_sum = 0.0
    mins, maxes = [], []
    for metrics in per_device.values():
        for name in total:
            total[name] += metrics[name]
        labels.update(metrics["labels"])
        conf_sum += metrics["conf_sum"]
        if metrics["conf_min"] is not None:
            mins.append(metrics["conf_min"])
        if metrics["conf_max"] is not None:
            maxes.append(metrics["conf_max"])
    return {
        **total, "devices": len(per_device),
        "mean_confidence": round(conf_sum / total["scored"], 4) if total["scored"] else None,
        "min_confidence": min(mins) if mins else None,
        "max_confidence": max(maxes) if maxes else None,
        "labels": dict(sorted(labels.items())),
    }


def site_windows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The kept windows of a site, newest first, with totals and each device's part."""
    out = []
    for key in sorted(state["windows"], key=float, reverse=True):
        per_device = state["windows"][key]
        end = max(m["window_end"] for m in per_device.values())
        out.append({"start": float(key), "end": end, "total": window_totals(per_device),
                    "devices": dict(sorted(per_device.items()))})
    return out


def define(ctx: StageContext) -> faust.Table:
    """Create the table and attach ``/api/sites`` and ``/api/sites/{site}/windows``."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="edge window metrics per site, per window and device",
    )

    @ctx.app.page("/api/sites")
    async def sites(web: Any, request: Any) -> Any:
        listing = [{"site": site, "devices": sorted(state["devices"]),
                    "newest_window": state["newest"], "late": state["late"],
                    "windows": f"/api/sites/{site}/windows"}
                   for site, state in sorted(table.items())]
        return web.json({"sites": listing, "partitions": "this worker's"})

    @ctx.app.page("/api/sites/{site}/windows")
    @ctx.app.table_route(table=table, match_info="site")
    async def windows(web: Any, request: Any, site: str) -> Any:
        state = table.get(site)
        if state is None:
            raise aioweb.HTTPNotFound(text=f"no edge metrics for site {site}")
        return web.json({"site": site, "devices": state["devices"], "late": state["late"],
                         "windows": site_windows(state)})

    return table
