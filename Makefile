# BeadHub: `make run` starts a hub, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint format bench docker-up docker-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/beadhub serve

test: install
	scripts/test-deps.sh
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check hub protocol tests
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix hub protocol tests
	$(VENV)/bin/ruff format hub protocol tests

bench: install
	scripts/test-deps.sh
	$(PY) -m tests.bench

docker-up:
	docker compose -f docker/compose.yml up -d --build

docker-down:
	docker compose -f docker/compose.yml down -v

clean:
	rm -rf $(VENV) .beadhub .pytest_cache .mypy_cache .ruff_cache
