"""This worker's consumer lag in ``/metrics`` (``edgewise_consumer_lag{group,stage,topic,
partition}``) and in the dashboard: its consumer group's committed offsets against the end
offsets, read from the broker when a view asks (at most every ``MIN_INTERVAL`` seconds), so
every replica of a group reports the same figures as ``edgewise status`` and the KEDA scaler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edgewise.app.core.consumer_lag import read_groups
from edgewise.app.core.context import StageContext
from edgewise.app.core.topics import bootstrap_of

log = logging.getLogger("edgewise")

MIN_INTERVAL = 2.0
#: A broker slower than this to answer leaves the last figures in place.
READ_TIMEOUT = 5.0


class LagExport:
    """Reads the group's lag into the gauge; a failed read keeps the last figures and is
    logged once until a read succeeds again."""

    def __init__(self, ctx: StageContext, stages: list[str]) -> None:
        self.gauge = ctx.metrics.consumer_lag
        self.bootstrap = bootstrap_of(ctx.settings.broker)
        self.group = ctx.app.conf.id
        # its inputs carry the topic prefix, its changelogs the app id
        self.topics = (ctx.settings.topic_prefix, ctx.app.conf.id)
        self.stage = "+".join(stages)
        self.read_at = 0.0
        self.lock = asyncio.Lock()
        self.failing = False

    async def refresh(self) -> None:
        async with self.lock:
            if time.monotonic() - self.read_at < MIN_INTERVAL:
                return
            self.read_at = time.monotonic()
            try:
                groups = await asyncio.wait_for(
                    read_groups(self.bootstrap, [self.group], READ_TIMEOUT,
                                topic_prefixes=self.topics), READ_TIMEOUT)
            except Exception as exc:  # the views keep answering while the broker is away
                if not self.failing:
                    log.warning("consumer lag of %s not read: %s: %s", self.group,
                                type(exc).__name__, exc)
                self.failing = True
                return
            self.failing = False
            self.gauge.clear()
            for group in groups:
                for p in group.partitions:
                    self.gauge.labels(group.group, self.stage, p.topic,
                                      str(p.partition)).set(p.lag)


def export_for(ctx: StageContext, stages: list[str]) -> LagExport:
    """The app's one exporter (made on first use)."""
    app: Any = ctx.app
    if getattr(app, "edgewise_lag_export", None) is None:
        app.edgewise_lag_export = LagExport(ctx, stages)
    return app.edgewise_lag_export
