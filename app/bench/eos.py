"""``edgewise bench eos``: Faust's ``processing_guarantee="exactly_once"`` against the default
at-least-once, for the score stage alone, on Apache Kafka (Tansu has no transactions).

For each guarantee, on a single-node Apache Kafka started here (or ``--broker kafka://…``):
  (1) throughput draining a backlog of samples in batches of 32: from the worker's first
      sample counted until its ``/metrics`` count all, and until every prediction is
      readable by a ``read_committed`` consumer (transactions commit every commit interval);
  (2) duplicates under SIGKILL: the worker is SIGKILLed 3 times, each after a random number
      of samples counted in its life, and restarted; once every sample's prediction is
      readable, the predictions topic is read with ``isolation_level="read_committed"`` and
      the prediction rows of each input sample id are counted.
A guarantee whose worker crashes or hangs is reported with what happened, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from edgewise.app.bench.harness import start_stage_worker
from edgewise.app.bench.pipeline import backlog, scrape
from edgewise.app.core import broker_profile
from edgewise.app.core.settings import Settings, SettingsError
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch
from edgewise.app.services.apache_kafka import KafkaCluster
from edgewise.app.services.broker_ready import wait_for_broker
from edgewise.app.services.processes import free_port, log_tail, stop_process
from edgewise.models.digits import train_digits
from edgewise.models.registry import ModelRegistry

GUARANTEES = ("at_least_once", "exactly_once")
BATCH = 32
SAMPLES = 100_000
KILLS = 3
DRAIN_TIMEOUT = 300.0
#: a restarted worker waits for the killed member's session to expire (Faust's default)
RECOVERY_TIMEOUT = 420.0


class RunFailed(RuntimeError):
    """A worker crashed or hung: the figure is what happened."""


async def read_committed(bootstrap: str, topic: str) -> Counter[str]:
    """Prediction rows per sample id in ``topic``, as a ``read_committed`` consumer sees
    them up to the last stable offset of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    rows: Counter[str] = Counter()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # the last stable offsets under read_committed
        waiting = {tp for tp in tps if ends[tp] > 0}
        while waiting:
            for records in (await consumer.getmany(*waiting, timeout_ms=500)).values():
                for rec in records:
                    rows.update(decode_prediction_batch(rec.value, 1 << 30).ids)
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
    finally:
        await consumer.stop()
    return rows


def counted(port: int) -> float:
    try:
        return scrape(port)["samples"].get("score", 0.0)
    except OSError:
        return -1.0


class Run:
    """One guarantee's score worker on its own topics (restartable)."""

    def __init__(self, settings: Settings, url: str, bootstrap: str, models: Path, work: Path,
                 guarantee: str, tag: str) -> None:
        self.settings, self.url, self.bootstrap = settings, url, bootstrap
        self.models, self.guarantee = models, guarantee
        self.prefix = f"eos-{tag}-{guarantee.split('_')[0]}-{os.urandom(2).hex()}"
        self.log = work / f"{self.prefix}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        create_topics(bootstrap, topic_specs(settings.model_copy(
            update={"topic_prefix": self.prefix}), [f"{self.prefix}-score"]))
        self.predictions = TopicNames(self.prefix).predictions

    def fill(self, total: int) -> int:
        return backlog(self.settings, self.bootstrap, self.prefix, BATCH, total)

    def start(self) -> None:
        self.port = free_port()
        self.proc = start_stage_worker(
            self.settings, self.url, self.prefix, self.models, "digits", self.log, ["score"],
            self.port, extra_env={"EDGEWISE_PROCESSING_GUARANTEE": self.guarantee})

    def alive(self) -> None:
        """Raise RunFailed with the log's tail when the worker has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RunFailed(f"worker exited with {self.proc.returncode}: "
                            + " | ".join(self.errors()))

    def errors(self, lines: int = 4) -> list[str]:
        tail = log_tail(self.log, 400).splitlines()
        found = [t.strip() for t in tail if any(
            w in t for w in ("Error", "error", "Exception", "Traceback", "Fenced", "crash"))]
        return (found or tail)[-lines:]

    def wait_counted(self, at_least: float, timeout: float) -> float:
        """Wait until this worker life counted ``at_least`` samples; the time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if counted(self.port) >= at_least:
                return time.monotonic()
            time.sleep(0.05)
        raise RunFailed(f"hung: counted {counted(self.port):.0f} of {at_least:.0f} samples in "
                        f"{timeout:.0f}s; log: " + " | ".join(self.errors()))

    def wait_first(self, timeout: float) -> float:
        return self.wait_counted(1, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, 20)

    def wait_visible(self, total: int, timeout: float) -> tuple[float, Counter[str]]:
        """Wait until ``read_committed`` sees a prediction for ``total`` distinct ids."""
        deadline = time.monotonic() + timeout
        rows: Counter[str] = Counter()
        while time.monotonic() < deadline:
            self.alive()
            rows = asyncio.run(read_committed(self.bootstrap, self.predictions))
            if len(rows) >= total:
                return time.monotonic(), rows
            time.sleep(0.5)
        raise RunFailed(f"hung: {len(rows)} of {total} samples' predictions committed after "
                        f"{timeout:.0f}s; log: " + " | ".join(self.errors()))


def throughput(settings: Settings, url: str, bootstrap: str, models: Path, work: Path,
               guarantee: str, samples: int) -> dict[str, Any]:
    run = Run(settings, url, bootstrap, models, work, guarantee, "tput")
    total = run.fill(samples)
    out: dict[str, Any] = {"samples": total}
    try:
        run.start()
        first = run.wait_first(120)
        counted_at = run.wait_counted(total, DRAIN_TIMEOUT)
        visible_at, rows = run.wait_visible(total, 120)
        out.update(processed=total / max(counted_at - first, 1e-9),
                   committed=total / max(visible_at - first, 1e-9),
                   rows=sum(rows.values()))
    except RunFailed as exc:
        out["error"] = str(exc)[:600]
    finally:
        run.stop()
    return out


def under_kills(settings: Settings, url: str, bootstrap: str, models: Path, work: Path,
                guarantee: str, samples: int, rng: random.Random) -> dict[str, Any]:
    run = Run(settings, url, bootstrap, models, work, guarantee, "kill")
    total = run.fill(samples)
    out: dict[str, Any] = {"samples": total, "kills": 0}
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            run.start()
            # a random moment of the drain: after 5-30 % of the backlog counted in this life
            run.wait_counted(rng.uniform(0.05, 0.30) * total, RECOVERY_TIMEOUT)
            run.kill()
            out["kills"] += 1
        run.start()
        run.wait_visible(total, RECOVERY_TIMEOUT)
        time.sleep(3.0)  # whatever the last worker still commits
    except RunFailed as exc:
        out["error"] = str(exc)[:600]
    finally:
        run.stop()
    rows = asyncio.run(read_committed(bootstrap, run.predictions))
    out["seconds"] = time.monotonic() - started
    out["rows"] = sum(rows.values())
    out["missing"] = total - len(rows)
    out["duplicated"] = sum(1 for c in rows.values() if c > 1)
    out["extra"] = sum(c - 1 for c in rows.values() if c > 1)
    return out


def bench_eos(settings: Settings, samples: int, seed: int = 9) -> dict[str, Any]:
    """Throughput and duplicates under SIGKILL of both guarantees, on Apache Kafka."""
    samples = samples or SAMPLES
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="edgewise-eos-") as tmp, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        if settings.embedded:
            cluster = stack.enter_context(KafkaCluster(1, settings.kafka_cache_dir,
                                                       workdir=work / "kafka"))
            url, bootstrap, version = cluster.url, cluster.bootstrap, cluster.version
        else:
            url = settings.broker
            bootstrap = url.split("://", 1)[-1].replace(";", ",")
            version = "?"
            if broker_profile.is_embedded_cluster(wait_for_broker(bootstrap, 30)):
                raise SettingsError("bench eos needs Apache Kafka: Tansu has no transactions")
        settings = settings.model_copy(update={"broker": url, "broker_profile": "kafka"})
        trained = train_digits("linear")
        ModelRegistry(work / "models").register("digits", trained.model, algorithm="linear")
        models = work / "models"
        result: dict[str, Any] = {"broker": url, "version": version, "batch": BATCH}
        for guarantee in GUARANTEES:
            result[guarantee] = {
                "throughput": throughput(settings, url, bootstrap, models, work, guarantee,
                                         samples),
                "kills": under_kills(settings, url, bootstrap, models, work, guarantee,
                                     samples, rng),
            }
        return result


def _fig(value: Any, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def print_eos(r: dict[str, Any]) -> None:
    print(f"score stage alone, batches of {r['batch']}; Apache Kafka {r['version']} on "
          f"{r['broker']}")
    width = 16
    print(f"{'':34}" + "".join(f"{g:>{width}}" for g in GUARANTEES))
    lines = [
        ("samples/s, processed (metrics)", "throughput", "processed", ",.0f"),
        ("samples/s, readable (committed)", "throughput", "committed", ",.0f"),
        ("SIGKILLs during the drain", "kills", "kills", "d"),
        ("samples", "kills", "samples", ",d"),
        ("prediction rows (read_committed)", "kills", "rows", ",d"),
        ("samples missing", "kills", "missing", ",d"),
        ("samples predicted more than once", "kills", "duplicated", ",d"),
        ("extra prediction rows", "kills", "extra", ",d"),
        ("seconds, kills to all readable", "kills", "seconds", ",.0f"),
    ]
    for label, part, key, fmt in lines:
        print(f"{label:34}" + "".join(
            f"{_fig(r[g][part].get(key), fmt):>{width}}" for g in GUARANTEES))
    for g in GUARANTEES:
        for part in ("throughput", "kills"):
            if "error" in r[g][part]:
                print(f"{g} {part}: {r[g][part]['error']}")
