"""``edgewise bench score|latency|cdc|pipeline|eos|loop|ingest|scale``: each prints its figures
side by side.

score, latency, cdc, pipeline, ingest and scale (and loop, on Tansu unless ``--broker``
says otherwise) run once per broker ``--broker`` names (see
:mod:`edgewise.app.bench.brokers`: by default Tansu and, when java is there, a local Apache
Kafka) and print the brokers side by side in one table. ``cdc --vs debezium`` runs
edgewise's capture and Debezium's on one Apache Kafka instead; eos needs Apache Kafka too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from edgewise.app.bench import brokers
from edgewise.app.core.settings import Settings


def per_broker(settings: Settings, choice: str | None,
               measure: Callable[[Settings], Any]) -> list[tuple[str, Any]]:
    """``measure`` on each broker of ``choice``, each broker up only for its own run."""
    runs = []
    for broker in brokers.plan(choice):
        with brokers.running(broker, settings) as on:
            runs.append((broker.label, measure(on)))
    return runs


def single_kafka(settings: Settings, choice: str | None) -> brokers.BenchBroker:
    """The one Apache Kafka a Kafka-only bench runs on (started here unless a URL)."""
    if choice and choice.startswith("kafka://"):
        return brokers.plan(choice)[0]
    if choice in (None, "auto", "kafka"):
        return brokers.plan("kafka")[0]
    raise brokers.BrokerChoiceError(f"--broker {choice}: this bench needs Apache Kafka "
                                    "(--broker kafka or kafka://host:port)")


def bench_command(settings: Settings, what: str, args: argparse.Namespace,
                  choice: str | None = None) -> int:
    """Entry point of ``edgewise bench``; ``choice`` is ``--broker`` (when it is not given,
    a Kafka URL configured in ``EDGEWISE_BROKER`` or the config file is the choice)."""
    if choice is None and not settings.embedded:
        choice = settings.broker
    if what == "eos":
        from edgewise.app.bench.eos import bench_eos, print_eos

        if choice and choice.startswith("kafka://"):
            settings = settings.model_copy(update={"broker": choice})
        print_eos(bench_eos(settings, args.samples))
        return 0
    if what == "cdc" and getattr(args, "vs", None) == "debezium":
        from edgewise.app.bench.cdc import ROWS
        from edgewise.app.bench.cdc_vs_debezium import (
            bench_cdc_vs_debezium,
            print_cdc_vs_debezium,
        )

        rows = args.samples or ROWS
        kafka = single_kafka(settings, choice)
        with brokers.running(kafka, settings) as on:
            results = bench_cdc_vs_debezium(on, rows)
        print_cdc_vs_debezium(results, rows, kafka.label, settings.cdc_partitions,
                              settings.cdc_poll_seconds)
        return 0
    if what == "score":
        from edgewise.app.bench.score import bench_score, print_score

        print_score(per_broker(settings, choice, lambda on: bench_score(on, args.samples)))
        return 0
    if what == "loop":
        from edgewise.app.bench.loop import LoopFailed, bench_loop, print_loop

        if args.corrections < 1:
            raise brokers.BrokerChoiceError("--corrections must be at least 1")
        try:
            print_loop(per_broker(settings, choice or "tansu",
                                  lambda on: bench_loop(on, args.corrections)))
        except LoopFailed as exc:
            print(f"edgewise bench loop: {exc}", file=sys.stderr)
            return 1
        return 0
    if what == "ingest":
        from edgewise.app.bench.ingest import bench_ingest, print_ingest

        print_ingest(per_broker(settings, choice, bench_ingest))
        return 0
    if what == "scale":
        from edgewise.app.bench.scale import bench_scale, print_scale

        print_scale(per_broker(settings, choice, bench_scale))
        return 0
    if what == "pipeline":
        from edgewise.app.bench.pipeline import bench_pipeline, print_pipeline

        print_pipeline(per_broker(settings, choice,
                                  lambda on: bench_pipeline(on, args.samples)))
        return 0
    if what == "cdc":
        from edgewise.app.bench.cdc import ROWS, bench_cdc, print_cdc

        rows = args.samples or ROWS
        print_cdc(per_broker(settings, choice, lambda on: bench_cdc(on, rows)), rows,
                  settings.cdc_partitions)
        return 0
    from edgewise.app.bench.latency import bench_latency, print_latency

    print_latency(per_broker(settings, choice,
                             lambda on: bench_latency(on, args.rate, args.seconds)), args.rate)
    return 0
