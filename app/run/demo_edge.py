"""The edge side of ``edgewise demo``: a local MQTT broker, the bridge inside the demo's
worker, and real ``edgewise edge`` processes publishing through them.

The demo's edges: one digits device scoring at the edge (predictions and window metrics
travel up), and, when the sample portraits are installed, one camera detecting faces
(crops go to the image store). Edges start once the bridge holds its subscription, so
the broker keeps every message for it from the first. When the demo stops, the edges stop
first and the bridge forwards what they sent last (each edge's final window metrics) before
it goes; the edges also die with the demo if it is killed. Model
commands are signed: with no ``model_signing_key`` configured the demo makes one for its
bridge and edges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
from pydantic import SecretStr

from edgewise.agents.edge.bridge import Bridge
from edgewise.agents.edge.sources import EdgeSourceError, sample_portraits
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.settings import Settings
from edgewise.app.services.mqtt_broker import local_mqtt_broker
from edgewise.app.services.processes import die_with_parent

EDGEWISE = str(Path(sys.executable).with_name("edgewise"))
DIGITS_EDGE = ("edge-digits", ["--source", "digits", "--detect", "digits", "--score-at",
                               "edge", "--rate", "40", "--batch-size", "8"])
CAMERA_EDGE = ("camera-1", ["--source", "faces-sample", "--detect", "faces", "--rate", "1"])
#: What the bridge forwards first from each demo edge: the demo runs until it has seen it.
FIRST_KIND = {"edge-digits": "prediction", "camera-1": "face"}
# The demo's stop has EDGEWISE_SHUTDOWN_SECONDS (8 s) in all, the worker's own settling and
# commit included: the edges and the bridge get at most 2.5 + 1 + 1.5 s of it.
EDGE_STOP_SECONDS = 2.5  # an edge sends its last window and exits within this (~0.5 s)...
EDGE_KILL_SECONDS = 1.0  # ...or is killed
BRIDGE_IDLE_SECONDS = 0.3  # the bridge has forwarded the edges' last messages: none for this
BRIDGE_DRAIN_SECONDS = 1.5  # at most this long

log = logging.getLogger(__name__)


def demo_edges() -> list[tuple[str, list[str]]]:
    """The edges the demo runs: the camera only when its sample portraits are installed."""
    try:
        sample_portraits()
    except EdgeSourceError:
        return [DIGITS_EDGE]
    return [DIGITS_EDGE, CAMERA_EDGE]


class EdgeFleet:
    """The bridge (a task of the demo worker) and the edge processes it serves."""

    def __init__(self, settings: Settings, mqtt: str, workdir: Path,
                 metrics: StageMetrics | None = None) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.bridge = Bridge(settings, metrics)
        self.edges = demo_edges()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_dir = Path(settings.data_dir) / "edges"
        self.workdir = workdir  # the edges' spools: fresh for every demo

    def attach(self, app: faust.App) -> None:
        """Run the bridge in the app, then start the edges once it has subscribed."""

        @app.task
        async def edge_side() -> None:
            bridge = asyncio.create_task(self.bridge.run(asyncio.Event()))
            try:
                await self.bridge.subscribed.wait()
                self.start_edges()
                await bridge
            finally:  # the worker stops its tasks; the bridge goes with this one
                bridge.cancel()

        @app.on_before_shutdown.connect
        async def edges_first(app: faust.App, **kwargs: Any) -> None:
            """The edges stop before the bridge: their last windows and what they still
            queued are forwarded and counted, not left behind on the MQTT broker."""
            try:
                await asyncio.to_thread(self.stop, EDGE_STOP_SECONDS, EDGE_KILL_SECONDS)
                if not await self.bridge.quiet(BRIDGE_IDLE_SECONDS, BRIDGE_DRAIN_SECONDS):
                    log.warning("demo: the bridge still had messages in flight when it "
                                "stopped; the MQTT broker keeps them")
            except Exception:  # the rest of the stop goes on
                log.exception("demo: stopping the edges failed")

    def start_edges(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "EDGEWISE_MQTT_URL": self.settings.mqtt_url,
               "EDGEWISE_MODEL_SIGNING_KEY": self.settings.model_signing_key.get_secret_value(),
               "EDGEWISE_ALLOW_UNSIGNED_MODELS": str(self.settings.allow_unsigned_models),
               "EDGEWISE_MODELS_DIR": str(self.settings.models_dir),
               "EDGEWISE_DATA_DIR": str(self.workdir), "EDGEWISE_SITE": "demo-site"}
        for device, args in self.edges:
            with open(self.log_dir / f"{device}.log", "ab") as log:
                self.processes.append(subprocess.Popen(
                    [EDGEWISE, "edge", "--device-id", device, *args], env=env,
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent))

    def stop(self, timeout: float = 10.0, kill_wait: float = 5.0) -> None:
        """SIGTERM each edge by PID; SIGKILL the ones that do not exit within ``timeout``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("demo: edge %s did not stop in %.1f s; killed", process.pid, timeout)
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(kill_wait)

    def silent(self) -> list[str]:
        """The edges nothing was forwarded from yet (one loads its model first: seconds)."""
        forwarded = self.bridge.stats.forwarded
        return [device for device, _ in self.edges if not forwarded[FIRST_KIND[device]]]

    def summary(self) -> dict[str, Any]:
        """What went through MQTT and the bridge, for the demo summary."""
        stats = self.bridge.stats.as_dict()
        return {"mqtt": self.mqtt, "edges": [device for device, _ in self.edges],
                "bridged": stats["forwarded_total"], "bridge": stats}


@contextlib.contextmanager
def edge_fleet(settings: Settings, app: faust.App, metrics: StageMetrics | None = None
               ) -> Iterator[EdgeFleet]:
    """A local MQTT broker, the bridge and the demo's edges, for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="edgewise-demo-") as workdir, \
            local_mqtt_broker(Path(workdir) / "mqtt") as (url, implementation):
        update: dict[str, Any] = {"mqtt_url": url}
        if not settings.model_signing_key.get_secret_value():  # the demo's own key
            update["model_signing_key"] = SecretStr(os.urandom(32).hex())
        fleet = EdgeFleet(settings.model_copy(update=update), implementation,
                          Path(workdir), metrics)
        fleet.attach(app)
        try:
            yield fleet
        finally:
            fleet.stop()
