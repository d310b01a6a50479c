# Set-up and entry points. `make run` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint services mlflow-ui flwr-run
setup: $(STAMP)

# torch first and explicitly: letting pip choose may pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[sim,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python main.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the tests start real services: Debian's redis-server (scripts/install-redis.sh, first time)
services:
	@scripts/install-redis.sh

test: lint services
	$(BIN)/pytest -q $(PYTEST_ARGS)

mlflow-ui: $(STAMP)
	$(BIN)/python scripts/start_mlflow_ui.py

# `flwr run .` on Flower's managed local SuperLink: Flower starts flower-superlink by name, so the
# venv's bin goes first on PATH; no per-run dependency install
flwr-run: $(STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
	  $(BIN)/flwr run . --stream --federation-config num-supernodes=2 \
	  --run-config "$$($(BIN)/python -m flame.settings --run-config)" $(ARGS)
