"""edge: one edge device. Capture, detect faces or score digits, publish over MQTT.

``edgewise edge`` needs no Kafka. It reads frames or digits from its source, and either
scores at the edge (digits through a registry model, faces through the Haar cascade) and
sends predictions, face crops and window metrics up, or, with ``--score-at hub``, sends
the raw samples for the hub's score stage (the same ``predict_batches`` code). Everything
goes through the store-and-forward link (``app.mqtt_link``), so a broker outage costs
nothing but disk. Model updates arrive as MQTT commands and are applied without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgewise.agents.edge.sources import (
    DigitSource,
    EdgeSourceError,
    SourceSpec,
    open_frames,
    parse_source,
)
from edgewise.app.adapters.image_decoding import frame_to_digit
from edgewise.app.adapters.model_signing import CommandLedger, require_signing_key, verify_command
from edgewise.app.adapters.mqtt_link import SpoolPublisher
from edgewise.app.adapters.mqtt_payloads import (
    FACE_MODEL,
    FACE_MODEL_VERSION,
    FaceMessage,
    ModelCommand,
    encode_metrics,
    parse_geo,
    parse_model_command,
    with_header_fields,
)
from edgewise.app.adapters.mqtt_topics import (
    EDGE_KINDS,
    check_root,
    check_segment,
    command_subscriptions,
    edge_topic,
    mqtt_address,
)
from edgewise.app.adapters.spool import Spool
from edgewise.app.core.backoff import Backoff
from edgewise.app.core.frames import KIND_PREDICTIONS, KIND_SAMPLES, BadInput
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import encode_prediction_batch, encode_sample_batch
from edgewise.models.faces import Face, crop_face, detect_faces, encode_png
from edgewise.models.model_sync import install_version
from edgewise.models.registry import ModelRegistry, PromotionLog, RegistryError
from edgewise.models.review_rule import route_low_confidence
from edgewise.models.scoring import ModelHolder, predict_batches
from edgewise.tables.edge_windows import EdgeWindows, WindowTally

log = logging.getLogger("edgewise.edge")
STOP_GRACE_SECONDS = 2.0
Message = tuple[str, bytes]


@dataclass(frozen=True)
class EdgeOptions:
    """The command-line choices of one edge run (the rest comes from Settings)."""

    source: str = "digits"
    detect: Literal["digits", "faces"] = "digits"
    score_at: Literal["edge", "hub"] = "edge"
    count: int = 0  # digits or frames to handle; 0: until the source ends or a stop
    duration: float | None = None
    drain_timeout: float = 30.0
    spool_path: Path | None = None
    run_id: str | None = None


class EdgeDevice:
    """Turns what the source gives into MQTT messages; keeps the window and the model."""

    def __init__(self, settings: Settings, options: EdgeOptions, spec: SourceSpec) -> None:
        root = check_root(settings.mqtt_root)
        self.site = check_segment(settings.site, "site")
        self.device = check_segment(settings.device_id, "device")
        if options.detect == "faces" and not spec.gives_frames:
            raise EdgeSourceError("--detect faces needs a frame source (camera, video, images, "
                                  "faces-sample), not digits")
        if options.detect == "faces" and options.score_at == "hub":
            raise EdgeSourceError("face detection runs at the edge; --score-at hub is for digits")
        self.settings = settings
        self.options = options
        self.topics = {kind: edge_topic(root, self.site, self.device, kind)
                       for kind in EDGE_KINDS}
        self.geo = parse_geo(settings.geo)
        self.header = {"site": self.site, **({"geo": self.geo} if self.geo else {})}
        self.windows = EdgeWindows(settings.edge_window_seconds)
        self.closed: list[WindowTally] = []  # windows closed, metrics not yet queued
        self.run = options.run_id or os.urandom(3).hex()
        self.sequence = 0
        self.counts = {"samples": 0, "frames": 0, "faces": 0, "messages": 0, "commands": 0}
        self.registry = ModelRegistry(settings.models_dir)
        self.holder: ModelHolder | None = None
        self.refused: Counter[str] = Counter()  # model commands refused, by reason
        self.signing_key = b""
        self.ledger: CommandLedger | None = None
        if options.detect == "digits" and options.score_at == "edge":
            self.signing_key = require_signing_key(settings, "an edge scoring at the edge")
            self.ledger = CommandLedger(
                Path(settings.data_dir) / f"edge-{self.site}-{self.device}.commands.json")
            self.holder = ModelHolder(self.registry, settings.model_name)
            if not self.holder.refresh():
                raise RegistryError(f"no model '{settings.model_name}' in {settings.models_dir}; "
                                    f"train one: edgewise train {settings.model_name}")

    def next_ids(self, n: int) -> list[str]:
        """Stable, unique ids: device, run, sequence (so replays are recognised)."""
        first, self.sequence = self.sequence, self.sequence + n
        return [f"{self.device}-{self.run}-{first + i}" for i in range(n)]

    @property
    def model_label(self) -> str:
        if self.options.detect == "faces":
            return f"{FACE_MODEL}:{FACE_MODEL_VERSION}"
        if self.holder is not None and self.holder.meta is not None:
            return f"{self.holder.meta.name}:{self.holder.meta.version}"
        return ""

    def digit_messages(self, pixels: np.ndarray, labels: np.ndarray, now: float) -> list[Message]:
        """One sample frame (scoring at the hub) or one prediction frame (at the edge)."""
        n = len(pixels)
        batch = SampleBatch(self.device, "digits", self.next_ids(n), np.full(n, now),
                            labels.astype(np.int32), pixels.astype(np.uint8))
        self.counts["samples"] += n
        if self.holder is None:
            self.closed += self.windows.add(now, count=n)
            frame = with_header_fields(encode_sample_batch(batch), KIND_SAMPLES, self.header)
            return [(self.topics["sample"], frame)]
        assert self.holder.meta is not None
        scored = predict_batches(self.holder.model, self.holder.meta, [batch],
                                 self.settings.top_k, now=time.time())[0]
        low = route_low_confidence(scored.confidence, scored.margins(),
                                   self.settings.low_confidence, self.settings.min_margin)
        self.closed += self.windows.add(now, count=n, labels=scored.labels,
                                        confidence=scored.confidence, low=low)
        frame = with_header_fields(encode_prediction_batch(scored), KIND_PREDICTIONS, self.header)
        return [(self.topics["prediction"], frame)]

    def face_messages(self, frame: np.ndarray, faces: list[Face], now: float) -> list[Message]:
        """One face message per face found (crop as PNG, box, confidence, model)."""
        height, width = frame.shape[:2]
        ids = self.next_ids(len(faces))
        confidence = np.array([f.confidence for f in faces], dtype=np.float64)
        low = route_low_confidence(confidence, 2 * confidence - 1,
                                   self.settings.low_confidence, self.settings.min_margin)
        self.closed += self.windows.add(now, frames=1, count=len(faces),
                                        labels=np.ones(len(faces), int),
                                        confidence=confidence, low=low)
        self.counts["frames"] += 1
        self.counts["faces"] += len(faces)
        out = []
        for face_id, face in zip(ids, faces, strict=True):
            message = FaceMessage(
                id=face_id, site=self.site, device=self.device, timestamp=now,
                confidence=round(face.confidence, 6), box=(face.x, face.y, face.w, face.h),
                frame_size=(width, height), png=encode_png(crop_face(frame, face)), geo=self.geo)
            out.append((self.topics["face"], message.encode()))
        return out

    def metrics_due(self, now: float, dropped: int, final: bool = False) -> list[Message]:
        """Metrics of the windows that closed by ``now`` (all of them when ``final``)."""
        closed, self.closed = self.closed, []
        closed += self.windows.flush() if final else self.windows.due(now)
        return self.metrics_messages(closed, dropped)

    def metrics_messages(self, closed: list[WindowTally], dropped: int) -> list[Message]:
        """One metrics message per closed window."""
        return [(self.topics["metrics"], encode_metrics({
            **tally.fields(), "site": self.site, "device": self.device,
            "detect": self.options.detect, "model": self.model_label, "dropped": dropped,
            "geo": self.geo, "sent_at": time.time(),
        })) for tally in closed]

    async def apply_command(self, topic: str, payload: bytes) -> None:
        """A model update from the hub: check its signature and that it is not older than
        the last one applied, install it in the local registry, promote it there, swap.

        A refused command is logged and counted by reason (``refused`` in the report);
        the version served stays."""
        self.counts["commands"] += 1
        try:
            command = parse_model_command(payload, self.settings.max_message_bytes)
        except BadInput as exc:
            self.refused[exc.reason] += 1
            log.warning("edge: ignored a bad command on %s: %s", topic, exc)
            return
        name, version = command.meta.get("name"), command.meta.get("version")
        if self.holder is None or self.ledger is None or name != self.settings.model_name:
            log.info("edge: model update for %s does not apply to this edge", name)
            return
        try:
            verify_command(command, self.signing_key, topic)
            self.ledger.check(command)
        except BadInput as exc:
            self.refused[exc.reason] += 1
            log.error("edge: refused model command %s v%s on %s: %s", name, version, topic,
                      exc)
            return
        try:
            await asyncio.to_thread(self.install, command)
            swapped = await asyncio.to_thread(self.holder.refresh)
        except RegistryError as exc:
            self.refused["registry"] += 1
            log.error("edge: refused model update %s v%s: %s", name, version, exc)
            return
        self.ledger.record(command)
        if swapped:
            log.warning("edge: now scoring with %s", self.model_label)

    def install(self, command: ModelCommand) -> None:
        """Install the command's version and serve it here: the edge follows what the hub
        promoted, back to an older version on a rollback."""
        install_version(self.registry, command.meta, command.artifact)
        name, version = str(command.meta["name"]), int(command.meta["version"])
        promotions = PromotionLog(self.registry, name)
        if promotions.served() != version:  # a registry shared with the hub: already so
            promotions.promote(version, f"model command issued at {command.issued_ms} ms")


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def produce(device: EdgeDevice, spec: SourceSpec, link: SpoolPublisher,
                  stop: asyncio.Event) -> None:
    """Read the source at ``edge_rate`` and queue the messages, until done or stopped."""
    options, settings = device.options, device.settings
    started = time.monotonic()
    deadline = None if options.duration is None else started + options.duration
    handled = 0
    frames = None if not spec.gives_frames else open_frames(spec)
    digits = DigitSource(settings.hard_share) if frames is None else None
    while not stop.is_set() and (not options.count or handled < options.count):
        if deadline is not None and time.monotonic() >= deadline:
            break
        now = time.time()
        if digits is not None:
            n = settings.edge_batch_size
            n = min(n, options.count - handled) if options.count else n
            messages = device.digit_messages(*digits.take(n), now)
        else:
            frame = await asyncio.to_thread(next, frames, None)
            if frame is None:
                break
            n = 1
            if options.detect == "faces":
                faces = await asyncio.to_thread(detect_faces, frame)
                messages = device.face_messages(frame, faces, now)
            else:
                messages = device.digit_messages(frame_to_digit(frame)[None],
                                                 np.array([-1]), now)
        handled += n
        messages += device.metrics_due(time.time(), link.spool.dropped)
        if messages:
            link.put_many(messages)
            device.counts["messages"] += len(messages)
        await _pause(stop, started + handled / settings.edge_rate - time.monotonic())


class LinkFailed(RuntimeError):
    """The MQTT link stopped for good (not an outage, which it rides out by itself)."""


def raise_link_failure(link_task: asyncio.Task[None]) -> None:
    """Raise LinkFailed for a link task that has ended: it should run until cancelled."""
    if link_task.cancelled():
        raise LinkFailed("the MQTT link task was cancelled")
    error = link_task.exception()
    raise LinkFailed(f"the MQTT link stopped: {error!r}") from error


async def supervised(work: Coroutine[Any, Any, None], link_task: asyncio.Task[None]) -> None:
    """Run ``work`` while the link runs; if the link dies first, stop ``work`` and raise.

    Without this the edge would keep spooling for a link that no longer drains, and only
    notice at the very end.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, link_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the link died first, or we are being cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise_link_failure(link_task)
    task.result()


async def run_edge(settings: Settings, options: EdgeOptions,
                   stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run one edge until its source ends, ``count`` is reached or ``stop`` is set; then
    send the last window and wait (up to ``drain_timeout``) for the spool to drain."""
    stop = stop or asyncio.Event()
    spec = parse_source(options.source)
    device = EdgeDevice(settings, options, spec)
    host, port = mqtt_address(settings.mqtt_url)
    spool_path = options.spool_path or (
        Path(settings.data_dir) / f"edge-{device.site}-{device.device}.spool")
    spool = Spool(spool_path, max_items=settings.spool_max_items,
                  max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)
    client_id = settings.mqtt_client_id or f"edgewise-edge-{device.site}-{device.device}"
    link = SpoolPublisher(
        spool, host, port, client_id, keepalive=settings.mqtt_keepalive,
        backoff=Backoff(settings.reconnect_min_seconds, settings.reconnect_max_seconds),
        subscriptions=command_subscriptions(settings.mqtt_root, device.site, device.device),
        on_message=device.apply_command, max_payload_bytes=settings.max_message_bytes)
    link_task = asyncio.create_task(link.run(), name="edgewise-edge-link")
    drained = False
    try:
        await supervised(produce(device, spec, link, stop), link_task)
        last = device.metrics_due(time.time(), spool.dropped, final=True)
        if last:
            link.put_many(last)
            device.counts["messages"] += len(last)
        if stop.is_set():  # asked to stop: a moment for the last window, the rest stays queued
            drained = await link.wait_drained(STOP_GRACE_SECONDS)
        else:  # the source is done: wait for the spool to drain, unless asked to stop
            drain = asyncio.create_task(link.wait_drained(options.drain_timeout))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({drain, stopped, link_task},
                               return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            drained = drain.done() and drain.result()
            drain.cancel()
        if link_task.done():
            raise_link_failure(link_task)  # a fatal link error (not an outage) surfaces here
    finally:
        if not link_task.done():
            link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_task
        report = {
            "device": device.device, "site": device.site, "run": device.run,
            **device.counts, "published": link.stats.published, "queued": len(spool),
            "dropped": spool.dropped, "connects": link.stats.connects,
            "disconnects": link.stats.disconnects, "drained": drained,
            "undecodable": link.stats.undecodable, "oversize": link.stats.oversize,
            "model": device.model_label, "refused": dict(device.refused),
        }
        spool.close()
    return report
