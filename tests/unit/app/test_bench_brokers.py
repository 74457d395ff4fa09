"""``edgewise bench --broker``: which brokers a bench runs on, and the tables it prints."""

from __future__ import annotations

import pytest

from edgewise.app.bench.brokers import BrokerChoiceError, plan
from edgewise.app.bench.cdc import print_cdc
from edgewise.app.bench.cdc_vs_debezium import print_cdc_vs_debezium
from edgewise.app.bench.latency import print_latency
from edgewise.app.bench.loop import print_loop
from edgewise.app.bench.pipeline import print_pipeline
from edgewise.app.bench.score import print_score


def specs(choice: str | None, java: bool) -> list[str]:
    return [b.spec for b in plan(choice, java_available=java)]


def test_the_default_is_both_brokers_when_java_is_there() -> None:
    assert specs(None, java=True) == ["tansu", "kafka"]
    assert specs("auto", java=False) == ["tansu"]


@pytest.mark.parametrize(("choice", "expected"), [
    ("tansu", ["tansu"]), ("embedded", ["tansu"]), ("kafka", ["kafka"]),
    ("both", ["tansu", "kafka"]), ("kafka://10.0.0.1:9092", ["kafka://10.0.0.1:9092"]),
])
def test_named_choices(choice: str, expected: list[str]) -> None:
    assert specs(choice, java=False) == expected


def test_a_broker_plan_says_which_profile() -> None:
    tansu, kafka = plan("both")
    assert (tansu.profile, kafka.profile) == ("embedded", "kafka")


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(BrokerChoiceError, match="kafka://host:port"):
        plan("redpanda")


def test_two_brokers_print_in_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    score = [{"model": "linear", "ceiling": 1e6, "ceiling_big": 2e6, "naive": 2e3,
              "edgewise": 2e5}]
    print_score([("Tansu", score), ("Apache Kafka", score)])
    latency = [{"fetch_wait_ms": w, "measured": 100, "scored_p50": 1.0, "scored_p99": 2.0,
                "received_p50": 3.0, "received_p99": 4.0} for w in (20, 1500)]
    print_latency([("Tansu", latency), ("Apache Kafka", latency)], 1000)
    cdc = [{"label": label, "copy": 1.0, "snapshot": 2.0, "stream": 6000.0, "cpu": 9.0}
           for label in ("one record per batch", "batched")]
    print_cdc([("Tansu", cdc), ("Apache Kafka", cdc)], 100, 8)
    pipeline = {"throughput": [{"batch": 32, "samples": 1, "pipeline": 1.0,
                                "score_alone": 2.0, "bar": 3}], "per_event": 4.0,
                "latency": [{"rate": 1000, "sent": 1, "p50": None, "p99": 2.0,
                             "largest_record": {"device_windows": 5}}]}
    print_pipeline([("Tansu", pipeline), ("Apache Kafka", pipeline)])
    vs = {"start": 1.0, "snapshot": 2.0, "stream": 3.0, "p50": 4.0, "p99": 5.0, "bytes": 6.0}
    print_cdc_vs_debezium([vs, vs, vs], 10, "Apache Kafka", 8, 0.05)
    out = capsys.readouterr().out
    assert out.count("Apache Kafka") >= 5 and out.count("Tansu") >= 4
    assert "Debezium" in out


def test_the_loop_prints_each_replica_the_bar_and_accuracy_per_version(
        capsys: pytest.CaptureFixture[str]) -> None:
    run = {"corrections": 50, "trained": 0.4, "promoted": 0.41, "replicas": [0.9, 31.0],
           "shadow": {"samples": 512},
           "bar": 30.0, "accuracy": {"digits:1": {"accuracy": 0.872, "count": 2060},
                                     "digits:2": {"accuracy": 0.879, "count": 2400}}}
    print_loop([("Tansu", run), ("Apache Kafka", {**run, "replicas": [0.5, 0.6],
                                                  "accuracy": {}})])
    out = capsys.readouterr().out
    assert "50 corrections" in out and "31.00 MISSED" in out and "0.60 ok" in out
    assert "0.879 (2400)" in out and "replica 2 serving it" in out
    assert "shadow samples scored" in out and "512" in out


def test_the_scale_table_shows_each_replica_count_per_replica_and_linear(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgewise.app.bench.scale import print_scale

    def run(one: float) -> dict:
        return {what: {n: {"rate": one * (1 + 0.5 * (n - 1)), "per_replica":
                           one * (1 + 0.5 * (n - 1)) / n, "fill": 9e5} for n in (1, 2, 3)}
                for what in ("score", "pipeline")}

    print_scale([("Tansu", run(100_000.0)), ("Apache Kafka", run(50_000.0))])
    out = capsys.readouterr().out
    assert "cores" in out and "score x3 samples/s" in out and "pipeline x2 samples/s" in out
    assert "200,000" in out  # 3 replicas on Tansu
    assert "300,000" in out  # linear: 3 x one
    assert "66,667" in out  # per replica of 3
    assert "900,000" in out  # the fill rate
