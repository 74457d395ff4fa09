# edgewise: `make demo` runs the pipeline, `make test` runs the whole suite.
# Both create .venv, install the project with its extras (at the exact versions of
# deploy/constraints.txt, the ones the suite passed with) and the system packages it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := deploy/constraints.txt
# uv installs from the constraints in seconds (pip takes about a minute here)
UV_VERSION := 0.13.9
EXTRAS := cdc,edge,onnx,rocksdb,test
SYSTEM_TOOLS := mosquitto:mosquitto initdb:postgresql java:openjdk-17-jre-headless mvn:maven chromium:chromium
DURATION ?=
comma := ,

.PHONY: demo test sysdeps kafka venv lint bench clean upgrade-deps

$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "edgewise needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1)); set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# Bytecode written ahead: where PYTHONDONTWRITEBYTECODE is set, every process would
# otherwise compile what it imports from source (scikit-learn alone: 10 s a process here).
venv: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 app agents tables models tests > /dev/null

sysdeps:
	@bash deploy/sysdeps.sh $(SYSTEM_TOOLS)

# Apache Kafka's and Kafka Connect's (with Debezium) jars, resolved by Maven once into the
# cache (offline after), so tests never wait.
kafka: venv sysdeps
	@$(BIN)/edgewise broker --kafka --resolve-only

demo: venv
	$(BIN)/edgewise demo $(if $(DURATION),--duration $(DURATION),)

test: venv sysdeps kafka
	$(BIN)/ruff check app agents tables models tests
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=20 tests

bench: venv
	$(BIN)/edgewise bench score
	$(BIN)/edgewise bench latency
	$(BIN)/edgewise bench cdc

# Newest versions allowed by pyproject's floors, pinned again, installed, and the suite run.
upgrade-deps: venv
	$(BIN)/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
	  --python-version 3.11 --upgrade --annotation-style line \
	  --custom-compile-command 'make upgrade-deps' -o $(CONSTRAINTS)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	@touch $(STAMP)
	$(MAKE) test

clean:
	rm -rf $(VENV) .edgewise .pytest_cache
