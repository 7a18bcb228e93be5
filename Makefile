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

.PHONY: setup test unit demo demo-down bench-up bench-down benchmark faults sdk

setup:
	@scripts/setup.sh

# Every tier, each module's tests in a random order (the seed is printed; SHIPYARD_TEST_SEED=<n> repeats it), on
# bench hosts like new servers: the current Docker Engine that `make setup` builds, nothing pulled, a non-root SSH
# user, Docker Hub's images from the bench's stand-in, the operator's own Docker login on the deploying side. Then a
# sample of tests each run alone in a fresh pytest (no test depends on another); then a compatibility pass of the
# integration tier and the deploy, accessory and upgrade tests on Debian's Docker Engine 20.10
# (SHIPYARD_BENCH_DOCKERD=debian) - the upgrade from the oldest release runs only there: it pinned API 1.41, which
# current engines refuse. TEST_OLD_DOCKERD=0 skips that pass. Each pass ends with its slowest tests: the suite's
# time is what every change waits for.
TEST_OLD_DOCKERD ?= 1
OLDEST_UPGRADE := tests/e2e/test_upgrade.py::test_a_destination_deployed_by_an_earlier_release_previews_with_no_change

test: setup
	SHIPYARD_TEST_SEED=$${SHIPYARD_TEST_SEED:-random} $(PY) -m pytest --durations=40 --deselect $(OLDEST_UPGRADE)
	$(PY) -m tests.alone 2
ifeq ($(TEST_OLD_DOCKERD),1)
	SHIPYARD_BENCH_DOCKERD=debian $(PY) -m pytest --durations=15 tests/integration tests/e2e/test_deploy.py \
	  tests/e2e/test_accessories.py $(OLDEST_UPGRADE)
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

# The plugin's Python SDK (sdk/python), generated from its schema: run after changing the schema.
sdk: setup
	@scripts/gen-sdk.sh

# this project, Kamal 2.11 and the primitive floor side by side on the bench profile `bench` (run it on a quiet machine;
# about 15 minutes on 2 cores); BENCHMARK_ARGS=--help for its options
benchmark: setup
	$(PY) scripts/benchmark.py $(BENCHMARK_ARGS)

# a randomized fault run on the bench profile `bench`: FAULTS_ARGS="--runs N --seed S" (about 20 minutes for 50)
faults: setup
	$(PY) scripts/fault_run.py $(FAULTS_ARGS)
