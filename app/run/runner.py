"""Running things: the broker (embedded or not), a worker with chosen stages, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import faust
from faust.exceptions import AlreadyConfiguredWarning

from edgewise.app.core import broker_profile
from edgewise.app.core.metrics import Totals
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import bootstrap_of, create_topics, topic_specs
from edgewise.app.run.factory import STAGES, app_id_for, create_app
from edgewise.app.services.broker_ready import wait_for_broker
from edgewise.app.services.embedded_broker import EmbeddedBroker, free_port
from edgewise.models.registry import ModelRegistry

log = logging.getLogger("edgewise.worker")


@contextlib.contextmanager
def broker_for(settings: Settings, app_ids: list[str]) -> Iterator[Settings]:
    """Settings pointing at a ready broker: an embedded Tansu (started here) or the Kafka
    configured, with the broker profile resolved (``auto`` detects Tansu).

    Every topic the given apps need is created up front, with explicit configs.
    """
    if settings.embedded:
        with EmbeddedBroker(log_path=None) as broker:
            create_topics(broker.bootstrap, topic_specs(settings, app_ids))
            yield settings.model_copy(update={"broker": broker.url,
                                              "broker_profile": "embedded"})
        return
    bootstrap = bootstrap_of(settings.broker)
    cluster_id = wait_for_broker(bootstrap, timeout=30)
    if settings.broker_profile == "auto":
        detected = "embedded" if broker_profile.is_embedded_cluster(cluster_id) else "kafka"
        settings = settings.model_copy(update={"broker_profile": detected})
    create_topics(bootstrap, topic_specs(settings, app_ids))
    yield settings


def ensure_model(settings: Settings, out: Any = sys.stderr) -> None:
    """Train and register the digits model when the registry has none (first run)."""
    registry = ModelRegistry(settings.models_dir)
    if registry.latest(settings.model_name) is not None:
        return
    if settings.model_name != "digits":
        return  # the score stage will say clearly that the model is missing
    from edgewise.models.digits import train_digits

    print("no digits model yet: training one (about a second)…", file=out)
    trained = train_digits("linear")
    meta = registry.register("digits", trained.model, training_data=trained.training_data,
                             metrics={"accuracy": trained.accuracy}, algorithm="linear")
    print(f"registered digits v{meta.version}, held-out accuracy {trained.accuracy:.3f}",
          file=out)


class BoundedShutdownWorker(faust.Worker):
    """A Faust worker that is gone within ``shutdown_seconds`` of SIGTERM or Ctrl-C.

    Faust drains its agents' buffers before it stops, and under load that can take minutes
    (or hang in ``wait_empty``). On a stop signal the app's ``stream_wait_empty`` is turned
    off (a rebalance keeps waiting, so no agent writes for a partition it lost), so a stop
    does not wait for buffered input, and a watchdog ends the process if the stop still
    overruns: nothing is lost, since an input is only committed once its outputs were
    acknowledged, and whatever was not committed is simply read again.
    """

    shutdown_seconds: float = 8.0

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if self._signal_stop_time:
            return super()._schedule_shutdown(signal)  # a second signal: already stopping
        apps = worker_apps(self)
        with warnings.catch_warnings():  # Faust warns of a setting changed late; the stop
            warnings.simplefilter("ignore", AlreadyConfiguredWarning)  # reads it afresh
            for app in apps:  # a stop no longer waits for buffered input to drain;
                app.conf.stream_wait_empty = False  # a rebalance still does (stale writes)
        start_shutdown_watchdog(self.shutdown_seconds)
        self._signal_stop_time = self.loop.time()

        async def settle_then_stop() -> None:
            for app in apps:
                await settle_in_flight(app, min(SETTLE_SECONDS, self.shutdown_seconds / 4))
            await self._stop_on_signal(signal)

        self._signal_stop_future = asyncio.ensure_future(settle_then_stop(), loop=self.loop)


def worker_apps(worker: faust.Worker) -> list[faust.App]:
    """The Faust apps a worker runs: its own (``worker.app``; Faust keeps it out of
    ``worker.services``) and any app among the services."""
    apps = [worker.app] if getattr(worker, "app", None) is not None else []
    return apps + [s for s in worker.services
                   if getattr(s, "conf", None) is not None and s not in apps]


#: How long a stop waits for the gatherings agents are working on (then commits them).
SETTLE_SECONDS = 2.0
#: How long a demo with a duration waits past it for an edge nothing came from yet.
EDGE_GRACE_SECONDS = 40.0


async def settle_in_flight(app: faust.App, seconds: float) -> None:
    """Before a stop: hand agents no more input, drop what waits in their buffers (it is
    read again), let the gatherings they are working on finish within ``seconds``, and
    commit them. Faust would cancel the agents first and commit after, so a gathering that
    was processed but not acknowledged (its outputs sent, its table written) would be read
    again by the next worker and, for a stage without a dedupe, written out twice."""
    consumer = app.consumer
    try:
        consumer.stop_flow()
        app.flow_control.suspend()
        app.flow_control.clear()
        await asyncio.wait_for(consumer.wait_empty(), seconds)
        # past a commit already under way (edgewise's consumer, which create_app always uses)
        await asyncio.wait_for(consumer.commit_processed(), seconds)
    except TimeoutError:
        with contextlib.suppress(Exception):  # what finished, at least
            await asyncio.wait_for(consumer.commit_processed(), seconds)
    except Exception as exc:  # the stop goes on: what is not committed is read again
        log.warning("worker: settling before the stop failed: %r", exc)


def start_shutdown_watchdog(seconds: float) -> None:
    """End this process ``seconds`` from now if it is still running (children die with it:
    they were started with the parent-death signal)."""

    def expire() -> None:
        print(f"edgewise: the worker did not stop within {seconds:g}s; exiting now "
              "(uncommitted input is read again by the next worker)", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _worker(app: faust.App, settings: Settings) -> faust.Worker:
    worker = BoundedShutdownWorker(app, loglevel=settings.log_level.upper(), quiet=True,
                                   redirect_stdouts=False, stdout=sys.stderr)
    worker.shutdown_seconds = settings.shutdown_seconds
    worker.spinner = None  # its cursor codes would mangle --json output and logs
    return worker


def run_app_until_stopped(app: faust.App, settings: Settings) -> None:
    """Run a Faust worker in this process until Ctrl-C, SIGTERM or a stop request."""
    worker = _worker(app, settings)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise WorkerFailed(f"the worker stopped with an error (exit {exc.code}); "
                               "its log above says why") from None


class WorkerFailed(RuntimeError):
    """The Faust worker crashed; its own log has the details."""


def stop_this_process() -> None:
    """Ask the running worker to shut down cleanly, as Ctrl-C would."""
    os.kill(os.getpid(), signal.SIGINT)


def run_worker(settings: Settings, stages: list[str], simulate_total: int = 0) -> None:
    """``edgewise worker``: the chosen stages as their own worker and consumer group."""
    if "score" in stages:
        ensure_model(settings)
    app_id = app_id_for(settings, stages)
    with broker_for(settings, [app_id]) as settings:
        url = settings.broker
        port = settings.web_port or free_port(settings.web_host)
        app, ctx = create_app(settings, stages, web_port=port, simulate_total=simulate_total)
        print(f"edgewise worker {app_id}: stages {', '.join(stages)}; broker {url}; "
              f"views http://{settings.web_host}:{port}/healthz", file=sys.stderr, flush=True)
        run_app_until_stopped(app, settings)


def summary(totals: Totals, elapsed: float) -> dict[str, Any]:
    """The demo's summary figures."""
    return {
        "seconds": round(elapsed, 1),
        "samples": totals.samples_sent,
        "predictions": totals.predictions,
        "accuracy": round(totals.correct / totals.labelled, 4) if totals.labelled else None,
        "low_confidence": totals.low_confidence,
        "low_confidence_rate": round(totals.low_confidence / totals.routed_seen, 4)
        if totals.routed_seen else None,
        "dead_letters": totals.dead_letters,
        "dead_letter_reasons": dict(totals.dead_letter_reasons),
        "per_device": dict(sorted(totals.per_device.items())),
    }


def summary_line(s: dict[str, Any]) -> str:
    acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
    return (f"[{s['seconds']:6.1f}s] samples {s['samples']:>8}  predictions "
            f"{s['predictions']:>8}  accuracy {acc}  low-confidence {s['low_confidence']:>6}  "
            f"dead letters {s['dead_letters']}")


def run_demo(settings: Settings, duration: float | None, as_json: bool) -> dict[str, Any]:
    """``edgewise demo``: embedded broker, every stage in one worker, simulated devices."""
    ensure_model(settings)
    app_id = app_id_for(settings, list(STAGES))
    started = time.monotonic()
    with broker_for(settings, [app_id]) as settings:
        url = settings.broker
        port = settings.web_port or free_port(settings.web_host)
        app, ctx = create_app(settings, list(STAGES), web_port=port)
        base = f"http://{settings.web_host}:{port}"
        print(f"edgewise demo: broker {url}\n  dashboard {base}/\n"
              f"  station  {base}/review\n  devices  {base}/api/devices\n"
              f"  windows  {base}/api/devices/device-000/windows?kind=tumbling\n"
              f"  review   {base}/api/review?limit=20\n  accuracy {base}/api/evaluation\n"
              f"  models   {base}/api/models\n"
              f"  metrics  {base}/metrics\n  health   {base}/healthz\n"
              f"Ctrl-C stops{'' if duration is None else f', or after {duration:g}s'}.",
              file=sys.stderr, flush=True)
        live = sys.stderr.isatty()

        @app.timer(1.0)
        async def report() -> None:
            line = summary_line(summary(ctx.metrics.totals, time.monotonic() - started))
            print(("\r" + line) if live else line, end="" if live else "\n",
                  file=sys.stderr, flush=True)

        from edgewise.app.run.demo_edge import edge_fleet  # MQTT, bridge and edge processes

        with edge_fleet(settings, app, ctx.metrics) as fleet:
            if duration is not None:
                @app.task
                async def stop_after() -> None:
                    await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))
                    # a slow machine may not have started an edge yet: the summary would
                    # have nothing of it, so the demo waits for it (boundedly, and says so)
                    deadline = time.monotonic() + EDGE_GRACE_SECONDS
                    if fleet.silent():
                        print(f"edgewise demo: waiting up to {EDGE_GRACE_SECONDS:g} s for "
                              f"edge {', '.join(fleet.silent())}", file=sys.stderr)
                    while fleet.silent() and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    stop_this_process()

            print(f"  edges    {', '.join(d for d, _ in fleet.edges)} over {fleet.mqtt} "
                  f"({fleet.settings.mqtt_url}); sites {base}/api/sites", file=sys.stderr)
            run_app_until_stopped(app, settings)
    result = summary(ctx.metrics.totals, time.monotonic() - started)
    result["edge"] = fleet.summary()
    if live:
        print(file=sys.stderr)
    print(summary_line(result), file=sys.stderr)
    return result
