# fraudstack: `make demo` runs the whole job end to end, `make test` runs every test.
# Both install what is missing first (a virtualenv in .venv; servers and tools into the cache).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py services/fraudstack/_treewalk.c | cksum | cut -d' ' -f1)

.PHONY: install tools test lint demo bench bench-stream bench-soak devstack-up devstack-down images clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py services/fraudstack/_treewalk.c
	@echo "==> installing fraudstack and its dependencies into $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# Go tools (helm, vegeta) and every deploy/*/build.sh (kube-apiserver, the node components
# and kubectl, CoreDNS, pause), built once into the cache; a cached binary returns at once.
tools: install
	@if [ -x deploy/tools.sh ]; then deploy/tools.sh; fi
	@for script in deploy/*/build.sh; do [ -x "$$script" ] && "$$script" >/dev/null || exit 1; done

# The code is checked before it is run: style, types and the layer contracts (pyproject.toml).
test: lint tools
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check services operator tests bench
	$(BIN)/ruff format --check services operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: install
	$(BIN)/fraudstack demo

bench: install tools
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/wakeup.py

bench-stream: install
	$(BIN)/python bench/stream.py

# Five minutes at 80 % of the inference maximum while the aggregator writes 1,000 events/s.
bench-soak: install tools
	$(BIN)/python bench/soak.py

# Every image the chart needs (the six roles, Redis, Kafka, Prometheus), built with podman from
# package registries alone; images/build.sh says how. IMAGES="serve operator" builds some,
# REGISTRY=host:port/path pushes them too. Not part of `make test`.
images:
	IMAGES="$(IMAGES)" REGISTRY="$(REGISTRY)" images/build.sh

devstack-up: install
	$(BIN)/fraudstack devstack up

devstack-down: install
	$(BIN)/fraudstack devstack down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
