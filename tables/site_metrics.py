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

Bounds, so a site's record never grows with its fleet's history: a device not heard from
for ``max_device_age`` seconds (by the hub's clock, ``seen_at``, so a skewed edge clock
cannot age the others out) leaves the site, and so do the longest silent beyond
``max_devices``; if the record is still over ``MAX_RECORD_BYTES`` (a few devices with
many labels), more of the longest silent go, and last the oldest windows. Each eviction is
counted in ``evicted``; the site's record is rewritten whole, so the changelog holds no
trace of an evicted device.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import faust
import orjson
from aiohttp import web as aioweb

from edgewise.app.core.context import StageContext, json_schema

TABLE = "site_metrics"
DEVICE_FIELDS = ("window_end", "frames", "count", "scored", "low", "conf_sum", "conf_min",
                 "conf_max", "labels", "detect", "model", "dropped")
#: The largest site record: well under any broker's limit (a device's window with the most
#: labels a metrics payload may carry is ~45 KB, so one always fits).
MAX_RECORD_BYTES = 65_536


def merge_edge_window(state: dict[str, Any] | None, metrics: dict[str, Any], kept: int,
                      max_devices: int = 64, max_device_age: float = 3600.0,
                      now: float | None = None, max_bytes: int = MAX_RECORD_BYTES,
                      ) -> tuple[dict[str, Any], bool]:
    """Put one device's window into a site's state, then apply the bounds (module
    docstring); (state, True when the window was kept)."""
    now = time.time() if now is None else now
    state = state or {"windows": {}, "devices": {}, "newest": 0.0, "late": 0}
    state.setdefault("evicted", 0)
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
        "seen_at": now,
    }
    for old in sorted(windows, key=float)[:-kept]:
        del windows[old]
    evict_devices(state, metrics["device"], max_devices, max_device_age, now, max_bytes)
    return state, True


def evict_devices(state: dict[str, Any], current: str, max_devices: int,
                  max_device_age: float, now: float, max_bytes: int) -> None:
    """Drop devices past their age, then beyond the count, then while the record is over
    ``max_bytes`` (never ``current``, whose window just came; for it, its oldest windows)."""
    devices = state["devices"]
    by_silence = sorted((d for d in devices if d != current),
                        key=lambda d: devices[d].get("seen_at", now))
    cutoff = now - max_device_age
    gone = [d for d in by_silence if devices[d].get("seen_at", now) < cutoff]
    rest = by_silence[len(gone):]
    over = len(devices) - len(gone) - max_devices
    if over > 0:
        gone += rest[:over]
        rest = rest[over:]
    for device in gone:
        _drop_device(state, device)
    while len(orjson.dumps(state)) > max_bytes:
        if rest:
            _drop_device(state, rest.pop(0))
        elif len(state["windows"]) > 1:
            del state["windows"][min(state["windows"], key=float)]
            state["evicted"] += 1
        else:
            break


def _drop_device(state: dict[str, Any], device: str) -> None:
    del state["devices"][device]
    for key in list(state["windows"]):
        state["windows"][key].pop(device, None)
        if not state["windows"][key]:
            del state["windows"][key]
    state["evicted"] += 1


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
                    "evicted": state.get("evicted", 0),
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
