"""Database commands: ``edgewise db load digits`` and ``edgewise cdc``.

``edgewise cdc`` runs the capture on its own (the same loop the ``cdc`` worker stage runs),
so it can be stopped, killed and restarted independently of the workers that read its
topics; SIGTERM or Ctrl-C stop it after the events in flight are acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from edgewise.app.cli.common import CliError, settings_from

PROGRESS_SECONDS = 5.0


def cmd_db(args: argparse.Namespace) -> int:
    import asyncpg
    from tqdm import tqdm

    from edgewise.agents.cdc.db_load import load_digits, splits_for
    from edgewise.agents.cdc.postgres import redact_dsn

    settings = settings_from(args, cdc_dsn=args.dsn)
    if not settings.cdc_dsn:
        raise CliError("no database: pass --dsn postgresql://user@host:5432/db "
                       "(or set EDGEWISE_CDC_DSN)")
    bars: list[Any] = []

    def progress(table: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=f"COPY {table}", unit="row", file=sys.stderr)
        bars.append(bar)
        return bar.update

    try:
        loaded = asyncio.run(load_digits(settings.cdc_dsn, splits_for(args.split), args.schema,
                                         args.table, args.repeat, progress))
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot load into {redact_dsn(settings.cdc_dsn)}: {exc}") from None
    finally:
        for bar in bars:
            bar.close()
    for table, rows in loaded.items():
        print(f"loaded {rows} rows into {table}")
    return 0


def status_line(stats: Any) -> str:
    """One line of what a running capture has done so far."""
    from edgewise.agents.cdc.pgoutput import lsn_to_text

    slot = "-" if stats.advanced_lsn is None else lsn_to_text(stats.advanced_lsn)
    return (f"cdc: snapshot {stats.snapshot_rows} rows; {stats.changes} changes in "
            f"{stats.transactions} transactions; {stats.events} events produced; "
            f"slot at {slot}; reconnects {stats.reconnects}; dead letters {stats.dead_letters}")


async def run_capture(settings: Any, progress_seconds: float = PROGRESS_SECONDS) -> None:
    """Capture until SIGTERM or SIGINT, printing a status line now and then."""
    from edgewise.agents.cdc.capture import CdcCapture
    from edgewise.agents.cdc.postgres import redact_dsn
    from edgewise.app.core.topics import bootstrap_of

    capture = CdcCapture(settings, bootstrap_of(settings.broker))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def report() -> None:
        await capture.ready.wait()  # a setup error stays the only line printed
        print(f"edgewise cdc: streaming {redact_dsn(settings.cdc_dsn)} slot "
              f"{settings.cdc_slot} -> "
              f"{settings.broker} topics {settings.cdc_topic_prefix}.<schema>.<table>",
              file=sys.stderr, flush=True)
        while True:
            await asyncio.sleep(progress_seconds)
            print(status_line(capture.stats), file=sys.stderr, flush=True)

    reporter = asyncio.create_task(report())
    try:
        await capture.run(stop)
    finally:
        reporter.cancel()
    print(status_line(capture.stats), file=sys.stderr, flush=True)


def cmd_cdc(args: argparse.Namespace) -> int:
    from edgewise.agents.cdc.postgres import CdcSetupError
    from edgewise.app.run.runner import broker_for

    overrides = {"cdc_dsn": args.dsn, "cdc_tables": args.tables, "cdc_slot": args.slot,
                 "cdc_publication": args.publication, "cdc_snapshot_mode": args.snapshot_mode,
                 "cdc_topic_prefix": args.topic_prefix}
    settings = settings_from(args, **overrides)
    with broker_for(settings, []) as settings:
        started = time.monotonic()
        try:
            asyncio.run(run_capture(settings, args.progress_seconds))
        except CdcSetupError as exc:
            raise CliError(str(exc)) from None
        print(f"edgewise cdc: stopped after {time.monotonic() - started:.1f}s",
              file=sys.stderr)
    return 0


def add_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``db`` and ``cdc`` subcommands."""
    p = add("db", cmd_db, "database helpers: load the digits into PostgreSQL", broker=False)
    db_sub = p.add_subparsers(dest="db_command", required=True)
    load = db_sub.add_parser("load", help="create tables and COPY a data set in",
                             description="create <table>_train / <table>_test and COPY rows")
    load.add_argument("dataset", choices=["digits"])
    load.add_argument("--dsn", help="postgresql://user@host:port/db (or EDGEWISE_CDC_DSN)")
    load.add_argument("--split", choices=["train", "test", "both"], default="both")
    load.add_argument("--schema", default="public")
    load.add_argument("--table", default="digits", help="table name stem (default: digits)")
    load.add_argument("--repeat", type=int, default=1, help="load the set N times, new ids")

    p = add("cdc", cmd_cdc, "capture PostgreSQL changes into Kafka (Debezium envelopes)")
    p.add_argument("--dsn", help="postgresql://user@host:port/db (or EDGEWISE_CDC_DSN)")
    p.add_argument("--tables", help="schema.table list, comma-separated (default: all)")
    p.add_argument("--slot", help="replication slot (default: EDGEWISE_CDC_SLOT)")
    p.add_argument("--publication", help="publication (default: EDGEWISE_CDC_PUBLICATION)")
    p.add_argument("--snapshot-mode", choices=["initial", "never", "always"])
    p.add_argument("--topic-prefix", help="CDC topic prefix (default: EDGEWISE_CDC_TOPIC_PREFIX)")
    p.add_argument("--progress-seconds", type=float, default=PROGRESS_SECONDS,
                   help="seconds between status lines")
