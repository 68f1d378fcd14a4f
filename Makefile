# BeadHub: `make run` starts a hub, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The hub's data: BEADHUB_DATA_DIR when set, as for beadhub serve itself.
DATA_DIR ?= $(or $(BEADHUB_DATA_DIR),.beadhub)
SUM := $(shell cat pyproject.toml setup.py 2>/dev/null | cksum | cut -d' ' -f1)
# What is installed, by the checksum of the packaging files: the runtime
# alone (`make run`), or with the test and dev tools (everything else).
RUNTIME := $(VENV)/.runtime-$(SUM)
DEV := $(VENV)/.dev-$(SUM)

.PHONY: install install-runtime run test fuzz lint format bench docker-up docker-down clean clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install -q -e .
	rm -f $(VENV)/.runtime-*
	touch $@

$(DEV): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.runtime-* $(VENV)/.dev-*
	touch $@ $(RUNTIME)

install-runtime: $(RUNTIME)

install: $(DEV)

run: install-runtime
	$(VENV)/bin/beadhub serve --data-dir '$(DATA_DIR)'

test: install
	scripts/test-deps.sh
	$(PY) -m pytest

# The seeded fuzz tests for minutes instead of seconds (BEADHUB_FUZZ_SEED
# picks another sequence; tests/fuzzing.py).
fuzz: install
	BEADHUB_FUZZ_SECONDS=$${BEADHUB_FUZZ_SECONDS:-120} BEADHUB_FUZZ_EXAMPLES=$${BEADHUB_FUZZ_EXAMPLES:-100} \
		$(PY) -m pytest -q tests/test_fuzz.py tests/test_openapi_fuzz.py

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

# Never the hub's data: that is clean-data's, which asks first.
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/mcp_requester/node_modules

clean-data:
	@if [ ! -e '$(DATA_DIR)' ]; then echo "no $(DATA_DIR) here: nothing to delete"; exit 0; fi; \
	if command -v flock >/dev/null && [ -e '$(DATA_DIR)/hub.lock' ] \
	    && ! flock -n '$(DATA_DIR)/hub.lock' true; then \
	  echo "a hub is running on $(DATA_DIR): stop it first"; exit 1; fi; \
	printf 'Delete %s, every project, agent and message the hub stored there? [y/N] ' '$(DATA_DIR)'; \
	read answer; \
	case "$$answer" in [yY]|[yY][eE][sS]) rm -rf '$(DATA_DIR)' && echo "deleted $(DATA_DIR)";; \
	  *) echo "kept $(DATA_DIR)";; esac
