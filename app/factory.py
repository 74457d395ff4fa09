"""The Faust app factory: one app with the chosen stages, configured from the settings."""

from __future__ import annotations

from pathlib import Path

import faust

from edgewise.app import profile, views
from edgewise.app.context import StageContext
from edgewise.app.settings import Settings
from edgewise.app.topics import TopicNames

#: Stages in topology order; see app/topology.py for what each reads and writes.
STAGES = ("simulate", "score", "route", "review", "aggregate")


def app_id_for(settings: Settings, stages: list[str]) -> str:
    """All stages share the base id (the demo); a subset gets its own consumer group."""
    if sorted(stages) == sorted(STAGES) or not stages:
        return settings.app_id
    return f"{settings.app_id}-{'-'.join(sorted(stages))}"


def create_app(
    settings: Settings, stages: list[str] | None = None,
    web_port: int | None = None, simulate_total: int = 0,
) -> tuple[faust.App, StageContext]:
    """A Faust app running ``stages`` (all by default) against ``settings.broker``."""
    stages = list(stages or STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    app_id = app_id_for(settings, stages)
    if settings.embedded:
        raise ValueError("create_app needs a broker URL; start one with runner.broker_for")
    url = settings.broker.replace("kafka://", "edgewise://", 1)
    data_dir = Path(settings.data_dir) / app_id
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id, broker=url, store="memory://", value_serializer="raw", key_serializer="raw",
        topic_partitions=settings.partitions, web_enabled=True,
        web_bind=settings.web_host, web_host=settings.web_host,
        web_port=web_port if web_port is not None else settings.web_port,
        datadir=str(data_dir), autodiscover=False, web_in_thread=False,
        consumer_auto_offset_reset="earliest", **profile.faust_options(settings),
    )
    app.edgewise_fetch_wait_ms = profile.fetch_wait_ms(settings)  # read by app.transport
    ctx = StageContext(app=app, settings=settings, names=TopicNames(settings.topic_prefix))
    from edgewise.agents import aggregate, review, route, score, simulate

    if "score" in stages:
        score.register(ctx)
    if "route" in stages:
        route.register(ctx)
    if "review" in stages:
        review.register(ctx)
    if "aggregate" in stages:
        aggregate.register(ctx)
    if "simulate" in stages:
        simulate.register(ctx, total=simulate_total)
    views.define(ctx, stages)
    return app, ctx
