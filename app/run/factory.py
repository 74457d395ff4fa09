"""The Faust app factory: one app with the chosen stages, configured from the settings."""

from __future__ import annotations

import fcntl
import importlib
import re
from pathlib import Path
from typing import IO

import faust

from edgewise.app.core import broker_profile
from edgewise.app.core.context import StageContext, StringKeyedTable
from edgewise.app.core.deliveries import DeliveryGuard
from edgewise.app.core.settings import Settings, SettingsError
from edgewise.app.core.topics import TopicNames
from edgewise.app.run import views

#: The digits pipeline's stages, in topology order: what ``edgewise demo`` runs.
STAGES = (
    "simulate", "score", "route", "review", "correct", "retrain", "aggregate", "evaluate",
    "image_sink", "edge_metrics",
)

#: Every stage a worker can run, and the module whose ``register(ctx)`` attaches it.
#: What each reads and writes: README.md, "Topology".
STAGE_MODULES: dict[str, str] = {
    "simulate": "edgewise.agents.simulate",
    "score": "edgewise.agents.score",
    "route": "edgewise.agents.route",
    "review": "edgewise.agents.review",
    "correct": "edgewise.agents.correct",  # after review: it settles review's items
    "retrain": "edgewise.agents.retrain",
    "aggregate": "edgewise.agents.aggregate",
    "cdc": "edgewise.agents.cdc.capture",
    "cdc_transform": "edgewise.agents.cdc.transform",
    "evaluate": "edgewise.agents.evaluate",
    "ingest_http": "edgewise.agents.ingest_http",  # POST /api/ingest: tabular rows
    "refs": "edgewise.agents.refs",  # images by reference: S3 objects, the image directory
    "sink_predictions": "edgewise.agents.sinks.predictions",  # into PostgreSQL
    "sink_samples": "edgewise.agents.sinks.samples",
    "image_sink": "edgewise.agents.edge.image_sink",
    "edge_metrics": "edgewise.agents.edge.metrics",
}


#: Faust store URLs of the ``store`` setting (rocksdb needs the ``rocksdb`` extra: rocksdict);
#: memory is Faust's, showing only the active partitions (``app.run.memory_store``).
STORES = {"memory": "edgewise-memory://", "rocksdb": "rocksdb://"}


_HELD: list[IO[str]] = []  # the data-directory locks this process holds, for its life


def hold_data_dir(path: Path) -> None:
    """Claim ``path`` for this worker: RocksDB opens each table partition for one process
    only, and a second worker on the same directory would crash at its first assignment."""
    handle = open(path / ".worker.lock", "a+")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SettingsError(f"{path} is in use by another worker; with store=rocksdb give "
                            "each worker its own EDGEWISE_DATA_DIR") from None
    _HELD.append(handle)


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
    unknown = sorted(set(stages) - set(STAGE_MODULES))
    if unknown:
        raise ValueError(
            f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGE_MODULES)}")
    app_id = app_id_for(settings, stages)
    if settings.embedded:
        raise ValueError("create_app needs a broker URL; start one with runner.broker_for")
    if settings.processing_guarantee == "exactly_once" and settings.embedded_profile:
        raise SettingsError("processing_guarantee exactly_once needs Apache Kafka: "
                            "Tansu has no transactions")
    # always edgewise's transport: its consumer is what commits only after acknowledgements
    url = re.sub(r"^(aiokafka|kafka|edgewise)://", "edgewise://", settings.broker)
    data_dir = Path(settings.data_dir) / app_id
    data_dir.mkdir(parents=True, exist_ok=True)
    if settings.store == "rocksdb":
        hold_data_dir(data_dir)
    app = faust.App(
        app_id, broker=url, store=STORES[settings.store], value_serializer="raw",
        key_serializer="raw", table_standby_replicas=settings.table_standby_replicas,
        topic_partitions=settings.partitions, web_enabled=True,
        web_bind=settings.web_host, web_host=settings.web_host,
        web_port=web_port if web_port is not None else settings.web_port,
        datadir=str(data_dir), autodiscover=False, web_in_thread=False,
        consumer_auto_offset_reset="earliest", Table=StringKeyedTable,
        processing_guarantee=settings.processing_guarantee,
        **broker_profile.faust_options(settings),
    )
    app.edgewise_fetch_wait_ms = broker_profile.fetch_wait_ms(settings)  # read by app.transport
    app.edgewise_idempotent = broker_profile.idempotent_producers(settings)
    app.edgewise_guard = DeliveryGuard()  # read by app.transport before every commit
    app.sensors.add(app.edgewise_guard)
    ctx = StageContext(app=app, settings=settings, names=TopicNames(settings.topic_prefix))
    ctx.simulate_total = simulate_total
    for stage in STAGE_MODULES:  # topology order, whatever order they were asked in
        if stage in stages:
            importlib.import_module(STAGE_MODULES[stage]).register(ctx)
    views.define(ctx, stages)
    return app, ctx
