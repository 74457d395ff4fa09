"""The ``edgewise`` command line. Errors are one clear line, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

import orjson

from edgewise.app.cli.common import CliError, settings_from
from edgewise.app.core.settings import SettingsError, describe

EXIT_USAGE = 2

#: Modules adding their own subcommands with ``add_commands(sub, add)``, where ``add(name,
#: func, help, broker=True)`` creates a subparser whose ``func(args) -> int`` runs it.
COMMAND_MODULES: tuple[str, ...] = (
    "edgewise.app.cli.db",
    "edgewise.app.cli.edge",
    "edgewise.app.cli.generate",
    "edgewise.app.cli.retrain",
    "edgewise.app.cli.status",
)


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.json:
        print(orjson.dumps(settings.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return 0
    for name, value, env, doc in describe(settings):
        print(f"{name:22} = {value!s:28} # {env}: {doc}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import time

    from edgewise.app.core.topics import create_topics, topic_specs
    from edgewise.app.services.apache_kafka import KafkaCluster, kafka_classpath
    from edgewise.app.services.embedded_broker import EmbeddedBroker

    settings = settings_from(args)
    if args.resolve_only:
        from edgewise.app.services.kafka_connect import connect_classpath

        print(f"Apache Kafka jars in {kafka_classpath(settings.kafka_cache_dir)}")
        print(f"Kafka Connect and Debezium jars in {connect_classpath(settings.kafka_cache_dir)}")
        return 0
    if args.kafka and args.port:
        raise CliError("--port is for the embedded broker; Apache Kafka takes free ports")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    broker: EmbeddedBroker | KafkaCluster
    if args.kafka:
        broker = KafkaCluster(args.nodes, settings.kafka_cache_dir)
        what = f"Apache Kafka {broker.version}, {args.nodes} KRaft node(s)"
    else:
        broker = EmbeddedBroker(port=args.port)
        what = "embedded broker (Tansu)"
    with broker:
        create_topics(broker.bootstrap, topic_specs(settings, args.app_id or []))
        print(f"EDGEWISE_BROKER={broker.url}", flush=True)
        pids = broker.pids if isinstance(broker, KafkaCluster) else [broker.pid]
        print(f"{what}, pid {', '.join(map(str, pids))}, on {broker.url}; Ctrl-C stops it",
              file=sys.stderr, flush=True)
        try:
            while not stop["now"] and broker.is_running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edgewise.app.cli.train import train_command

    if args.model == "tabular":
        from edgewise.app.cli.train import train_tabular_command

        return train_tabular_command(settings_from(args), args)
    return train_command(settings_from(args), args.model, args.algorithm, args.from_topic)


def cmd_demo(args: argparse.Namespace) -> int:
    from edgewise.app.run.runner import run_demo

    overrides = {"devices": args.devices, "rate": args.rate}
    result = run_demo(settings_from(args, **overrides), args.duration, args.json)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from edgewise.app.run.factory import STAGE_MODULES
    from edgewise.app.run.runner import run_worker

    unknown = sorted(set(args.stage) - set(STAGE_MODULES))
    if unknown:
        raise CliError(
            f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGE_MODULES)}")
    settings = settings_from(args, web_port=args.web_port)
    run_worker(settings, args.stage, simulate_total=args.samples)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from edgewise.app.cli.tail import tail

    return tail(settings_from(args), args.topic, args.limit, args.follow)


def cmd_bench(args: argparse.Namespace) -> int:
    from edgewise.app.bench.brokers import BrokerChoiceError
    from edgewise.app.bench.command import bench_command

    choice, args.broker = args.broker, None  # not a settings value: a bench's own choice
    try:
        return bench_command(settings_from(args), args.what, args, choice)
    except BrokerChoiceError as exc:
        raise CliError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgewise", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (or EDGEWISE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            broker: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if broker:
            p.add_argument("--broker", help="kafka://host:port, or 'embedded' (default)")
        return p

    p = add("config", cmd_config, "print the effective configuration")
    p.add_argument("--json", action="store_true")
    p = add("broker", cmd_broker, "run the embedded broker (or Apache Kafka) on its own",
            broker=False)
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--kafka", action="store_true",
                   help="Apache Kafka (KRaft, needs java; jars resolved by mvn once)")
    p.add_argument("--nodes", type=int, default=1, choices=[1, 3], help="--kafka: nodes")
    p.add_argument("--resolve-only", action="store_true",
                   help="resolve Apache Kafka's and Kafka Connect's (with Debezium) jars "
                        "into the cache and exit")
    p.add_argument("--app-id", action="append", help="also create this app's table topics")
    p = add("train", cmd_train, "train a model and register a new version")
    p.add_argument("model", choices=["digits", "tabular"])
    p.add_argument("--algorithm", choices=["linear", "forest"], default="linear",
                   help="digits: the estimator")
    p.add_argument("--from-topic", help="digits: train from a topic instead of the bundled data")
    p.add_argument("--csv", help="tabular: rows from this CSV file (a header row)")
    p.add_argument("--label", help="tabular: the CSV's label column")
    p.add_argument("--dataset", choices=["wine", "breast_cancer"], default="wine",
                   help="tabular: the scikit-learn dataset used without --csv")
    p.add_argument("--missing", type=float,
                   help="tabular: share of values blanked at random (default 0.2 for the "
                        "dataset, 0 for a CSV)")
    p.add_argument("--trees", type=int, default=100, help="tabular: trees of the forest")
    p.add_argument("--required", action="append", default=[],
                   help="tabular: a feature that may not be missing (repeatable)")
    p.add_argument("--adapter", default="skops",
                   help="tabular: how the version is stored and served: skops (default), "
                        "onnx (exported with skl2onnx), or an installed plug-in's name")
    p.add_argument("--name", default="tabular", help="tabular: the registered model's name")
    p = add("demo", cmd_demo, "run the whole pipeline with simulated devices")
    p.add_argument("--duration", type=float, help="stop after this many seconds from the "
                   "start (up to 40 s more while an edge has sent nothing yet)")
    p.add_argument("--json", action="store_true", help="print a final JSON summary")
    p.add_argument("--devices", type=int, help="simulated devices")
    p.add_argument("--rate", type=float, help="samples per second, all devices")
    p = add("worker", cmd_worker, "run chosen stages as their own worker")
    p.add_argument("--stage", action="append", required=True, help="stage (repeatable)")
    p.add_argument("--web-port", type=int, help="port of the views (default: free)")
    p.add_argument("--samples", type=int, default=0, help="simulate: stop after N samples")
    p = add("tail", cmd_tail, "print a topic's messages")
    p.add_argument("topic")
    p.add_argument("--limit", type=int, default=0, help="stop after N messages")
    p.add_argument("--follow", action="store_true", help="keep waiting for new messages")
    p = add("bench", cmd_bench, "benchmarks that print figures side by side", broker=False)
    p.add_argument("what", choices=["score", "latency", "cdc", "pipeline", "eos", "loop",
                                    "ingest", "scale"])
    p.add_argument("--broker", metavar="BROKER",
                   help="tansu (embedded), kafka (a local Apache Kafka started here), "
                        "kafka://host:port, both (side by side), or auto (default: both "
                        "when java is on PATH, else tansu)")
    p.add_argument("--vs", choices=["debezium"],
                   help="cdc: Debezium's connector in Kafka Connect beside edgewise's capture")
    p.add_argument("--samples", type=int, default=0, help="samples per measurement")
    p.add_argument("--rate", type=float, default=1000.0, help="latency: samples per second")
    p.add_argument("--seconds", type=float, default=10.0, help="latency: run length")
    p.add_argument("--corrections", type=int, default=50,
                   help="loop: corrections that trigger the retraining (N)")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub, add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgewise`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (SettingsError, CliError) as exc:
        print(f"edgewise: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # one line for the person; details with EDGEWISE_DEBUG=1
        if os.environ.get("EDGEWISE_DEBUG"):
            raise
        print(f"edgewise: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
