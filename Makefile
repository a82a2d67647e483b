# One entry point for people and CI: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# what serving needs (`pip install -e .`): make run, make migrate
RUN_STAMP := $(VENV)/.run-stamp
# everything, the dev extras too (`pip install -e '.[dev]'`): tests, lint, tools
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test test-fast lint openapi bench migrate clean

define make_venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
endef

$(RUN_STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# the full install covers serving too, so a later `make run` installs nothing
$(STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(RUN_STAMP) $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/csjd migrate
	$(BIN)/csjd serve --host $(HOST) --port $(PORT)

migrate: $(RUN_STAMP)
	$(BIN)/csjd migrate

lint: $(STAMP)
	$(BIN)/ruff check app tests bench alembic
	$(BIN)/ruff format --check app tests bench alembic
	$(BIN)/mypy

# Two workers: most of the suite's time is real processes waiting on real time.
# Then, one at a time: the schema fuzz (its items, one per API operation, share
# one test id, and the workers would keep only one of them) and the tests marked
# `alone`, which measure a race or a footprint, or stop the Postgres server the
# others share, and want the machine to themselves.
FUZZ_SCHEMA := tests/fuzz/test_api_schema.py

test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile --ignore=$(FUZZ_SCHEMA) -m "not alone"
	$(BIN)/pytest -q $(FUZZ_SCHEMA)
	$(BIN)/pytest -q -m alone

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

openapi: $(RUN_STAMP)
	$(BIN)/python -m app.openapi > openapi.yaml

# Generated clients for users, from the committed openapi.yaml, by the pinned
# generators: the csjd_client package in clients/python/out, and the `paths`
# types for openapi-fetch in clients/typescript/src/generated. tests/clients
# generates and drives the same two against a real gateway.
.PHONY: clients
clients: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/openapi-python-client generate --path openapi.yaml \
		--config clients/python/config.yaml --output-path clients/python/out --overwrite
	cd clients/typescript && npm ci --no-audit --no-fund && npm run generate

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
