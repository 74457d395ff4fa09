"""retrain: after every ``retrain_every_corrections`` new corrections (and not more often
than ``retrain_min_interval_seconds``), a candidate is trained on the base data plus every
standing correction and gated against the served model on held-out data; one that passes
is scored in shadow beside it on ``shadow_samples`` live samples (the score workers send
tallies to the shadow topic, its predictions go nowhere) and gated again on the stream;
it is promoted, or kept as rejected with the reason.

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
from edgewise.app.core.shadow import ShadowTally, parse_tally, shadow_summary, stream_figures
from edgewise.app.core.topic_reader import read_to_end
from edgewise.app.core.topics import TopicNames, bootstrap_of, run_sync
from edgewise.models.registry import (
    ModelRegistry,
    PromotionLog,
    RegistryError,
    read_decision,
    record_decision,
)
from edgewise.models.retrain import correction_rows, gate, latest_corrections, train_candidate

STAGE = "retrain"
DIGITS = "digits"
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
                 progress: Callable[[int], None] | None = None,
                 shadow_samples: int | None = None) -> Retrained:
    """Train a candidate on base data + the standing corrections, register it and gate it
    on the held-out sets. One that fails is rejected; one that passes goes into shadow for
    ``shadow_samples`` live samples (the settings' by default), or is promoted at once when
    that is 0. The decision is recorded either way."""
    registry = ModelRegistry(settings.models_dir)
    name = settings.model_name
    promotions = PromotionLog(registry, name)
    served_version = promotions.pin()  # before the candidate exists: it must not be served
    if served_version is None:
        raise RegistryError(f"no {name} model to retrain from; train one: edgewise train {name}")
    served, served_meta = registry.load(name, served_version)
    if served_meta.kind != DIGITS:  # corrections carry digit pixels; candidates are digits
        raise RegistryError(f"retraining from corrections trains digits models; {name} "
                            f"v{served_version} is a {served_meta.kind} model")
    rows = correction_rows(latest_corrections(records))
    if not len(rows):
        raise NothingToLearn(f"no standing correction with digit pixels among {len(records)} "
                             "records")
    candidate = train_candidate(algorithm, rows, served, progress)
    meta = registry.register(name, candidate.model, training_data=candidate.data,
                             metrics={k: v for k, v in candidate.metrics.items()
                                      if v is not None}, algorithm=algorithm)
    passed, reason = gate(candidate.metrics, candidate.served_metrics, settings.retrain_margin)
    shadow = settings.shadow_samples if shadow_samples is None else shadow_samples
    decision = "rejected" if not passed else "shadow" if shadow else "promoted"
    if decision == "shadow":
        reason = f"held-out: {reason}; in shadow for {shadow} live samples"
    result = Retrained(meta.version, decision, reason, served_version, candidate.metrics,
                       candidate.served_metrics, candidate.data)
    record_decision(registry, name, meta.version, {**result.as_dict(), "at": time.time(),
                                                   "margin": settings.retrain_margin})
    if decision == "promoted":
        promotions.promote(meta.version, reason)
    elif decision == "shadow":
        promotions.start_shadow(meta.version, shadow)
    return result


def decide_shadow(settings: Settings, entry: dict[str, Any], total: ShadowTally | None,
                  timed_out: bool = False) -> Retrained:
    """Promote or reject the candidate in shadow on what it did on the live stream (not
    worse than the served model by more than the margin), record why, end the shadow."""
    registry = ModelRegistry(settings.models_dir)
    name, version = settings.model_name, int(entry["version"])
    promotions = PromotionLog(registry, name)
    earlier = read_decision(registry, name, version) or {}
    seen = total or ShadowTally(name, version, int(entry["against"] or 0))
    mine, served = stream_figures(seen)
    if timed_out:
        passed, reason = False, (f"shadow saw {seen.samples} of {entry['samples']} samples "
                                 f"in {settings.shadow_timeout_seconds:g} s")
    else:
        passed, reason = gate(mine, served, settings.retrain_margin)
        if mine["stream_accuracy"] is None:
            reason = f"no true label among {seen.samples} shadow samples; held-out only"
        reason = f"shadow on {seen.samples} samples: {reason}"
    result = Retrained(version, "promoted" if passed else "rejected", reason,
                       int(entry["against"] or 0),
                       {**earlier.get("metrics", {}), **mine},
                       {**earlier.get("served_metrics", {}), **served},
                       earlier.get("data", {}))
    record_decision(registry, name, version, {
        **result.as_dict(), "at": time.time(), "margin": settings.retrain_margin,
        "held_out": earlier.get("reason", ""), "shadow": shadow_summary(seen, entry["samples"])})
    if passed:
        promotions.promote(version, reason)
    promotions.end_shadow(version)
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
    shadow: dict[str, Any] | None = None


def due(status: RetrainStatus, every: int, min_interval: float, now: float) -> bool:
    """Whether to train now: enough new corrections, long enough since the last run, and
    no run under way nor a candidate in shadow."""
    return (status.state == "waiting" and status.since_last >= every
            and now - status.last_started >= min_interval)


class Shadowing:
    """The candidate in shadow and the tallies counted for it since this stage started
    (a restarted stage counts again from where its group's offsets stand)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.promotions = PromotionLog(ModelRegistry(settings.models_dir), settings.model_name)
        self.entry: dict[str, Any] | None = None
        self.total: ShadowTally | None = None

    def reload(self) -> dict[str, Any] | None:
        """Read the promotion log's shadow entry; a new candidate starts from zero."""
        entry = self.promotions.shadow()
        if entry is None or self.entry is None or entry["version"] != self.entry["version"]:
            self.total = None
        self.entry = entry
        return entry

    def add(self, one: ShadowTally) -> bool:
        """Count a tally of the candidate against the version it is shadowing; True when
        it has seen enough samples."""
        entry = self.entry
        if entry is None or one.version != entry["version"] or one.against != entry["against"]:
            return False
        self.total = one if self.total is None else self.total + one
        return self.total.samples >= entry["samples"]

    def timed_out(self, now: float) -> bool:
        return (self.entry is not None
                and now - float(self.entry["since"]) > self.settings.shadow_timeout_seconds)

    def summary(self) -> dict[str, Any] | None:
        if self.entry is None:
            return None
        total = self.total or ShadowTally(self.settings.model_name, self.entry["version"],
                                          int(self.entry["against"] or 0))
        return {**shadow_summary(total, self.entry["samples"]), "since": self.entry["since"]}


def register(ctx: StageContext) -> None:
    """Attach the retrain agent, the shadow tally agent and ``/api/retrain``."""
    settings = ctx.settings
    status = RetrainStatus()
    _STATUS[ctx.app] = status
    shadowing = Shadowing(settings)
    looking = asyncio.Lock()
    source = ctx.names.corrections
    decode = partial(parse_correction, max_bytes=settings.max_message_bytes,
                     future_skew=settings.future_skew_seconds)

    async def announce(version: int) -> None:
        update = {"model": settings.model_name, "version": version}
        await ctx.send(STAGE, ctx.names.model_updates, update["model"].encode(),
                       orjson.dumps(update), source)

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
            if result.decision != "rejected":  # score workers serve it, or shadow it
                await announce(result.version)
        except (NothingToLearn, RegistryError, OSError) as exc:
            status.error = f"{type(exc).__name__}: {exc}"[:500]
            log.error("retrain: %s", status.error)
        finally:
            status.state = "waiting"
            status.runs += 1
            await look_at_shadow()

    async def look_at_shadow(done: bool = False) -> None:
        """Follow the promotion log's shadow entry; decide when enough was seen or the time
        is up (one look at a time: a candidate is decided once)."""
        async with looking:
            await look(done)

    async def look(done: bool) -> None:
        try:
            entry = await asyncio.to_thread(shadowing.reload)
            if entry is not None and (done or shadowing.timed_out(time.time())):
                result = await asyncio.to_thread(decide_shadow, settings, entry,
                                                 shadowing.total, not done)
                status.last, status.error = result.as_dict(), ""
                log.warning("retrain: %s v%d %s (%s)", settings.model_name, result.version,
                            result.decision, result.reason)
                await announce(result.version)
                entry = await asyncio.to_thread(shadowing.reload)
        except (RegistryError, OSError) as exc:
            status.error = f"{type(exc).__name__}: {exc}"[:500]
            log.error("retrain: %s", status.error)
        status.shadow = shadowing.summary()
        if status.state != "training":
            status.state = "shadow" if shadowing.entry is not None else "waiting"

    @ctx.agent(ctx.topic(source), name="edgewise.retrain", stage=STAGE)
    async def retrain(stream: Any) -> None:
        async def handle(record: dict[str, Any], origin: Origin, raw: bytes) -> None:
            if record.get("label") is not None:
                status.since_last += 1
                ctx.count(STAGE, samples=1)
            start_if_due()

        await ctx.each(stream, STAGE, source, decode, handle)

    @ctx.agent(ctx.topic(ctx.names.shadow), name="edgewise.shadow", stage=STAGE)
    async def shadow(stream: Any) -> None:
        async def handle(one: ShadowTally, origin: Origin, raw: bytes) -> None:
            if shadowing.add(one):
                await look_at_shadow(done=True)
            status.shadow = shadowing.summary()

        await ctx.each(stream, STAGE, ctx.names.shadow, parse_tally, handle)

    @ctx.app.timer(1.0)
    async def after_the_interval() -> None:
        if status.state != "training":
            await look_at_shadow()
        start_if_due()  # corrections that came within the interval are not forgotten

    @ctx.app.page("/api/retrain")
    async def retrain_view(web: Any, request: Any) -> Any:
        return web.json({**asdict(status), "every": settings.retrain_every_corrections,
                         "min_interval_seconds": settings.retrain_min_interval_seconds,
                         "margin": settings.retrain_margin,
                         "shadow_samples": settings.shadow_samples})
