# Two commands on a fresh machine (as root): `make demo` deploys the example app as staging and production to the
# local bench host; `make test` runs every test tier. Both run `make setup` first.
SHELL := /bin/bash
PY := .venv/bin/python

# Local, offline Pulumi: state in the project's .pulumi-state (ignored by git), a documented passphrase for local
# stacks, no update checks, no plugin downloads.
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
export PULUMI_CONFIG_PASSPHRASE ?= shipyard-local
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true
export PULUMI_PYTHON_CMD := $(CURDIR)/.venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup test unit demo demo-down bench-up bench-down benchmark

setup:
	@scripts/setup.sh

# TEST_CURRENT_DOCKERD=1: `make test` runs the integration and e2e tiers a second time with the bench's hosts on the
# current Docker Engine that `make setup` builds (SHIPYARD_BENCH_DOCKERD=current), which refuses clients that pin an
# API version older than 1.44. Off until the product negotiates the version.
TEST_CURRENT_DOCKERD ?= 0

test: setup
	$(PY) -m pytest
ifeq ($(TEST_CURRENT_DOCKERD),1)
	SHIPYARD_BENCH_DOCKERD=current $(PY) -m pytest tests/integration tests/e2e
endif

unit: setup
	$(PY) -m pytest tests/unit

demo: setup
	@scripts/demo.sh

demo-down: setup
	@scripts/demo.sh down

bench-up: setup
	$(PY) -m tests.bench up

bench-down:
	$(PY) -m tests.bench down
