"""The suite's fixtures live in ``tests/fixtures/``, registered here."""

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.apache_kafka", "tests.fixtures.cdc",
                  "tests.fixtures.chromium"]
