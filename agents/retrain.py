"""retrain: after every ``retrain_every_corrections`` new corrections (and not more often
than ``retrain_min_interval_seconds``), a candidate is trained on the base data plus every
standing correction, gated against the served model, and promoted or kept as rejected.

The corrections topic is compacted and keyed by sample id, so reading it to its end gives
every sample's latest correction; the stage only counts records to know when to train.
Run it as one worker (``--stage retrain``): replicas would each count their partitions'
share. ``edgewise retrain`` runs the same training once, by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import orjson

from edgewise.app.core.context import StageContext
from edgewise.app.core.corrections import parse_correction
from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import Origin
from edgewise.app.core.settings import Settings
from edgewise.app.core.topic_reader import read_to_end
from edgewise.app.core.topics import TopicNames, bootstrap_of, run_sync
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError, record_decision
from edgewise.models.retrain import correction_rows, gate, latest_corrections, train_candidate

STAGE = "retrain"
log = logging.getLogger("edgewise.retrain")
_STATUS: weakref.WeakKeyDictionary[Any, RetrainStatus] = weakref.WeakKeyDictionary()


def status_for(app: Any) -> RetrainStatus | None:
    """The retrain stage's status in ``app``, when its worker runs the stage."""
    return _STATUS.get(app)


class NothingToLearn(RuntimeError):
    """No standing correction carries pixels the model can be trained on."""


@dataclass
class Retrained:
    """One retraining: the candidate's version, the decision and its grounds."""

    version: int
    decision: str
    reason: str
    against: int
    metrics: dict[str, Any]
    served_metrics: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_corrections(settings: Settings, on_total: Callable[[int], None] | None = None
                     ) -> tuple[list[dict[str, Any]], int]:
    """Every valid record of the corrections topic, and how many were refused."""

    async def collect() -> tuple[list[dict[str, Any]], int]:
        records, refused = [], 0
        topic = TopicNames(settings.topic_prefix).corrections
        async for message in read_to_end(bootstrap_of(settings.broker), topic,
                                         on_total=on_total):
            try:
                records.append(parse_correction(message.value or b"",
                                                settings.max_message_bytes,
                                                future_skew=settings.future_skew_seconds))
            except BadInput:
                refused += 1
        return records, refused

    return run_sync(collect())


def retrain_once(settings: Settings, records: list[dict[str, Any]], algorithm: str = "linear",
                 progress: Callable[[int], None] | None = None) -> Retrained:
    """Train a candidate on base data + the standing corrections, register it, record the
    decision, and promote it when it passes the gate."""
    registry = ModelRegistry(settings.models_dir)
    name = settings.model_name
    promotions = PromotionLog(registry, name)
    served_version = promotions.pin()  # before the candidate exists: it must not be served
    if served_version is None:
        raise RegistryError(f"no {name} model to retrain from; train one: edgewise train {name}")
    served, _ = registry.load(name, served_version)
    rows = correction_rows(latest_corrections(records))
    if not len(rows):
        raise NothingToLearn(f"no standing correction with digit pixels among {len(records)} "
                             "records")
    candidate = train_candidate(algorithm, rows, served, progress)
    meta = registry.register(name, candidate.model, training_data=candidate.data,
                             metrics={k: v for k, v in candidate.metrics.items()
                                      if v is not None}, algorithm=algorithm)
    promote, reason = gate(candidate.metrics, candidate.served_metrics, settings.retrain_margin)
    result = Retrained(meta.version, "promoted" if promote else "rejected", reason,
                       served_version, candidate.metrics, candidate.served_metrics,
                       candidate.data)
    record_decision(registry, name, meta.version, {**result.as_dict(), "at": time.time(),
                                                   "margin": settings.retrain_margin})
    if promote:
        promotions.promote(meta.version, reason)
    return result


@dataclass
class RetrainStatus:
    """What the stage is doing, for ``/api/retrain`` and the dashboard."""

    state: str = "waiting"
    since_last: int = 0
    last_started: float = 0.0
    runs: int = 0
    last: dict[str, Any] | None = None
    error: str = ""


def due(status: RetrainStatus, every: int, min_interval: float, now: float) -> bool:
    """Whether to train now: enough new corrections, long enough since the last run, and
    no run under way."""
    return (status.state != "training" and status.since_last >= every
            and now - status.last_started >= min_interval)


def register(ctx: StageContext) -> None:
    """Attach the retrain agent and ``/api/retrain``."""
    settings = ctx.settings
    status = RetrainStatus()
    _STATUS[ctx.app] = status
    source = ctx.names.corrections
    decode = partial(parse_correction, max_bytes=settings.max_message_bytes,
                     future_skew=settings.future_skew_seconds)

    def start_if_due() -> None:
        if due(status, settings.retrain_every_corrections,
               settings.retrain_min_interval_seconds, time.time()):
            status.state = "training"
            asyncio.get_running_loop().create_task(run())

    async def run() -> None:
        status.state, status.last_started, status.since_last = "training", time.time(), 0
        try:
            records, _ = await asyncio.to_thread(read_corrections, settings)
            result = await asyncio.to_thread(retrain_once, settings, records)
            status.last, status.error = result.as_dict(), ""
            log.warning("retrain: %s v%d %s (%s)", settings.model_name, result.version,
                        result.decision, result.reason)
            if result.decision == "promoted":
                update = {"model": settings.model_name, "version": result.version}
                await ctx.send(STAGE, ctx.names.model_updates, update["model"].encode(),
                               orjson.dumps(update), source)
        except (NothingToLearn, RegistryError, OSError) as exc:
            status.error = f"{type(exc).__name__}: {exc}"[:500]
            log.error("retrain: %s", status.error)
        finally:
            status.state = "waiting"
            status.runs += 1

    @ctx.agent(ctx.topic(source), name="edgewise.retrain", stage=STAGE)
    async def retrain(stream: Any) -> None:
        async def handle(record: dict[str, Any], origin: Origin, raw: bytes) -> None:
            if record.get("label") is not None:
                status.since_last += 1
                ctx.count(STAGE, samples=1)
            start_if_due()

        await ctx.each(stream, STAGE, source, decode, handle)

    @ctx.app.timer(1.0)
    async def after_the_interval() -> None:
        start_if_due()  # corrections that came within the interval are not forgotten

    @ctx.app.page("/api/retrain")
    async def retrain_view(web: Any, request: Any) -> Any:
        return web.json({**asdict(status), "every": settings.retrain_every_corrections,
                         "min_interval_seconds": settings.retrain_min_interval_seconds,
                         "margin": settings.retrain_margin})
