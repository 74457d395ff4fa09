"""The suite's fixtures live in ``tests/fixtures/``, registered here.

``make test`` runs the suite on two pytest-xdist workers, whole modules at a time (a
module's workers, brokers and browsers are started once, on one of them). The longest
modules are handed out first, so that neither worker is left with a long one at the end.
"""

from __future__ import annotations

from typing import Any

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.apache_kafka", "tests.fixtures.cdc",
                  "tests.fixtures.chromium"]

#: Modules by their time in the suite, longest first (measured; the rest follow in order).
LONGEST = ("test_chaos_replicas", "test_changelog_recovery", "test_chaos_counts", "test_bridge",
           "test_learning_loop", "test_consumer_lag", "test_workers", "test_cdc_recovery",
           "test_dashboard", "test_edge_outage", "test_demo", "test_shutdown",
           "test_kafka_failover", "test_dashboard_browser", "test_ingest_http", "test_sinks",
           "test_refs", "test_wheel", "test_cdc_pipeline", "test_cdc_vs_debezium")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    def rank(item: Any) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)  # stable: within a module, and among the rest, the order stays
