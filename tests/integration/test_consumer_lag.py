"""Consumer lag read from the broker, on Tansu and on Apache Kafka: a backlog left while the
score worker is down shows in ``edgewise status`` exactly, in the restarted worker's
``/metrics``, and falls to zero once the worker has drained it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.cli.status import status_json as status_json_of
from edgewise.app.core.consumer_lag import read_groups
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import encode_sample_batch
from tests.fixtures.apache_kafka import BrokerUnderTest
from tests.fixtures.kafka import EDGEWISE, WorkerProcess, env_for, produce, start_worker, wait_until

pytestmark = pytest.mark.integration

BACKLOG = 600
LAG_LINE = re.compile(r'^edgewise_consumer_lag\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def status(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEWISE, "status", "--interval", "0.5", *extra],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=90)


def status_json(env: dict[str, str]) -> dict[str, Any]:
    done = status(env, "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def group_of(view: dict[str, Any], group: str) -> dict[str, Any] | None:
    return next((g for g in view["groups"] if g["group"] == group), None)


def group_now(bootstrap: str, group: str) -> dict[str, Any] | None:
    """What ``edgewise status --json`` says of one group, read in this process (the waits
    ask often; the command itself is run where its output is checked)."""
    found = asyncio.run(read_groups(bootstrap, [group]))
    return next((status_json_of(g) for g in found if g.group == group), None)


def metrics_lag(worker: WorkerProcess) -> dict[tuple[str, str, str, str], float]:
    found = {}
    for match in LAG_LINE.finditer(worker.get("/metrics")):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        key = (labels["group"], labels["stage"], labels["topic"], labels["partition"])
        found[key] = float(match.group("value"))
    return found


def send_batches(bootstrap: str, topic: str, count: int, seed: int) -> None:
    sim = DigitSimulator(devices=8, batch_size=4, hard_share=0.2, seed=seed)
    batches = [sim.next_batch() for _ in range(count)]
    asyncio.run(produce(bootstrap, topic,
                        [(b.device.encode(), encode_sample_batch(b)) for b in batches]))


def test_lag_from_the_broker_shows_a_backlog_and_falls_to_zero_once_drained(
    broker: BrokerUnderTest, models_dir: Path, tmp_path: Path, unique_prefix: str
) -> None:
    settings = Settings(models_dir=models_dir, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    group = f"{unique_prefix}-score"
    create_topics(broker.bootstrap, topic_specs(settings, [group]))
    env = env_for(settings, broker.url, unique_prefix)
    samples = TopicNames(unique_prefix).samples
    worker = start_worker(env, ["score"], tmp_path / "w1.log")
    try:
        send_batches(broker.bootstrap, samples, 40, seed=1)  # every partition gets offsets
        wait_until("the group committed on all four partitions",
                   lambda: (g := group_now(broker.bootstrap, group)) and len(
                       [p for p in g["partitions"] if p["topic"] == samples]) == 4
                   and g["lag"] == 0, 90, tolerate=(KafkaError,))
        running = wait_until("the worker as the group's one member",
                             lambda: (g := group_of(status_json(env), group))
                             and g["members"] == 1 and g, 30)
        if broker.name == "kafka":  # Faust's assignment, decoded from DescribeGroups
            assert sum(running["owned"].values()) >= 4, running["owned"]
        else:  # Tansu's DescribeGroups carries no member assignments
            assert running["owned"] is None
    finally:
        worker.stop()

    send_batches(broker.bootstrap, samples, BACKLOG, seed=2)  # nobody consumes meanwhile
    view = group_of(status_json(env), group)
    assert view is not None
    assert view["lag"] == BACKLOG, view
    assert {p["partition"] for p in view["partitions"] if p["lag"]} == {0, 1, 2, 3}
    table = status(env)
    assert table.returncode == 0, table.stderr
    (row,) = [line.split() for line in table.stdout.splitlines() if f" {group} " in line]
    assert row[0] == "score" and row[5] == str(BACKLOG), table.stdout

    worker = start_worker(env, ["score"], tmp_path / "w2.log")
    try:
        readings = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lag = {k: v for k, v in metrics_lag(worker).items() if k[2] == samples}
            readings.append(sum(lag.values()) if lag else None)
            if lag and sum(lag.values()) == 0:
                break
            time.sleep(0.3)
        seen = [r for r in readings if r is not None]
        assert seen and max(seen) > 0, readings
        assert max(seen) <= BACKLOG and seen[-1] == 0, readings
        assert {k[:2] for k in lag} == {(group, "score")}
        assert {k[3] for k in lag} == {"0", "1", "2", "3"}
        drained = group_of(status_json(env), group)
        assert drained is not None and drained["lag"] == 0, drained
        dashboard = worker.get("/api/local/dashboard")
        assert dashboard["metrics"]["consumer_lag"][group] == {
            f"{samples}[{p}]": 0.0 for p in range(4)}
    finally:
        worker.stop()
