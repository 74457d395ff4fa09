"""``edgewise edge``, ``edgewise bridge`` and ``edgewise model-update``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from edgewise.app.cli.common import settings_from
from edgewise.app.core.settings import Settings


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main(stop)``; SIGTERM and Ctrl-C set ``stop`` so it can finish cleanly."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cmd_edge(args: argparse.Namespace) -> int:
    from edgewise.agents.edge.device import EdgeOptions, run_edge
    from edgewise.agents.edge.sources import EdgeSourceError
    from edgewise.app.cli.common import CliError
    from edgewise.models.registry import RegistryError

    settings = settings_from(args, device_id=args.device_id, site=args.site, geo=args.geo,
                         edge_rate=args.rate, edge_batch_size=args.batch_size)
    _logging(settings)
    options = EdgeOptions(
        source=args.source, detect=args.detect, score_at=args.score_at, count=args.count,
        duration=args.duration, drain_timeout=args.drain_timeout,
        spool_path=Path(args.spool) if args.spool else None, run_id=args.run_id)
    print(f"edgewise edge {settings.site}/{settings.device_id}: {args.source}, detect "
          f"{args.detect}, scoring at the {args.score_at}; MQTT {settings.mqtt_url}",
          file=sys.stderr, flush=True)
    try:
        report = _run_until_signal(lambda stop: run_edge(settings, options, stop))
    except (EdgeSourceError, RegistryError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(orjson.dumps(report).decode(), flush=True)
    return 0 if report["drained"] or not args.count else 3


def cmd_bridge(args: argparse.Namespace) -> int:
    from edgewise.agents.edge.bridge import Bridge
    from edgewise.app.adapters.model_signing import SigningRefused
    from edgewise.app.cli.common import CliError
    from edgewise.app.run.runner import broker_for

    settings = settings_from(args)
    _logging(settings)
    try:
        Bridge(settings)  # refuses here, before a broker is started, without a signing key
    except SigningRefused as exc:
        raise CliError(str(exc)) from None
    with broker_for(settings, []) as settings:
        bridge = Bridge(settings)
        print(f"edgewise bridge: MQTT {settings.mqtt_url} <-> Kafka {settings.broker} "
              f"(topics {settings.topic_prefix}-*)", file=sys.stderr, flush=True)
        _run_until_signal(bridge.run)
    print(orjson.dumps(bridge.stats.as_dict()).decode(), flush=True)
    return 0


def announce_model_version(settings: Settings, update: dict[str, Any]) -> None:
    """Send ``update`` ({model, version[, site, device]}) on the model-updates topic: score
    workers refresh from the registry, bridges sign the version and ship it to the edges
    (with no version, the promoted one)."""
    from aiokafka import AIOKafkaProducer

    from edgewise.app.core import broker_profile
    from edgewise.app.core.topics import TopicNames, bootstrap_of
    from edgewise.app.run.runner import broker_for

    async def send(settings: Settings) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_of(settings.broker),
                                    **broker_profile.producer_options(settings))
        await producer.start()
        try:
            await producer.send_and_wait(TopicNames(settings.topic_prefix).model_updates,
                                         orjson.dumps(update), key=update["model"].encode())
        finally:
            await producer.stop()

    with broker_for(settings, []) as ready:
        asyncio.run(send(ready))


def cmd_model_update(args: argparse.Namespace) -> int:
    """Announce a model version on the model-updates topic (score workers and edges)."""
    settings = settings_from(args)
    update = {k: v for k, v in (("model", args.model or settings.model_name),
                                ("version", args.version), ("site", args.site),
                                ("device", args.device)) if v is not None}
    announce_model_version(settings, update)
    print(f"announced {orjson.dumps(update).decode()}", file=sys.stderr)
    return 0


def add_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Attach the edge commands to the ``edgewise`` parser."""
    p = add("edge", cmd_edge, "run an edge device: capture, detect or score, publish over MQTT",
            broker=False)
    p.add_argument("--device-id", help="this device's id (default: settings device_id)")
    p.add_argument("--site", help="this device's site (default: settings site)")
    p.add_argument("--source", default="digits",
                   help="camera:N, video:PATH, images:DIR, faces-sample or digits")
    p.add_argument("--detect", choices=["faces", "digits"], default="digits")
    p.add_argument("--mqtt", help="mqtt://host:port (default: settings mqtt_url)")
    p.add_argument("--score-at", choices=["edge", "hub"], default="edge",
                   help="score here and send predictions, or send raw samples to the hub")
    p.add_argument("--count", type=int, default=0, help="stop after N digits or frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--rate", type=float, help="digits or frames per second")
    p.add_argument("--batch-size", type=int, help="digits per message")
    p.add_argument("--geo", help="'lat,lon' of the device")
    p.add_argument("--spool", help="store-and-forward file (default: in data_dir)")
    p.add_argument("--drain-timeout", type=float, default=60.0,
                   help="seconds to wait for the spool to drain when the source ends")
    p.add_argument("--run-id", help="id part that makes this run's sample ids unique")
    p = add("bridge", cmd_bridge, "move MQTT messages to Kafka and model updates to the edges")
    p.add_argument("--mqtt", help="mqtt://host:port (default: settings mqtt_url)")
    p = add("model-update", cmd_model_update,
            "announce a registered model version to score workers and edges")
    p.add_argument("--model", help="model name (default: settings model_name)")
    p.add_argument("--version", type=int, help="version (default: the promoted one)")
    p.add_argument("--site", help="only this site's edges")
    p.add_argument("--device", help="only this device (with --site)")
