# kubevpc: make targets. `make` alone lists them.
#
# Everything runs from the virtual environment .venv (made by /usr/bin/python3 with
# --system-site-packages, so that Debian's mininet package is importable).
# Targets that need the whole environment (root, Open vSwitch, apt packages) depend
# on `install`; those that need only Python depend on `venv`. Both run
# scripts/install.sh, which is quiet when there is nothing to do.

SHELL         := /bin/bash
.DEFAULT_GOAL := help

PY       := .venv/bin/python
KUBEVPC  := .venv/bin/kubevpc
SCENARIO ?= scenarios/default.yaml
MODE     ?=
CLI      ?=
KEEP     ?=
# arguments of `kubevpc perf`, e.g. PERF=--quick or PERF="scenarios/default.yaml --modes eni"
PERF     ?=
# arguments of bench-scale, e.g. SCALE="--upto 3000" or SCALE="--sizes 100,1000 --repeat 3"
SCALE    ?=

RUN_FLAGS := $(if $(strip $(MODE)),--mode $(strip $(MODE))) \
             $(if $(filter 1,$(CLI)),--cli) \
             $(if $(filter 1,$(KEEP)),--keep)

.PHONY: help install venv scenario test unit e2e validate check clean distclean bench-up bench-change perf bench-scale bench-netpol matrix

help: ## list the targets
	@echo "usage: make TARGET [SCENARIO=scenarios/default.yaml] [MODE=...] [CLI=1] [KEEP=1]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## install everything (root): apt packages, Open vSwitch, .venv, /usr/local/bin/kubevpc
	@bash scripts/install.sh

venv: ## make only the Python virtual environment .venv (no root needed)
	@bash scripts/install.sh --python-only

scenario: install ## run SCENARIO (MODE=... --mode, CLI=1 --cli, KEEP=1 --keep)
	$(strip $(KUBEVPC) run $(SCENARIO) $(RUN_FLAGS))

test: install ## unit tests, then end-to-end tests (both run; fails if either fails)
	@rc=0; \
	echo "$(PY) -m pytest -q tests/unit"; $(PY) -m pytest -q tests/unit || rc=1; \
	echo "$(PY) -m pytest -q tests/e2e"; $(PY) -m pytest -q tests/e2e || rc=1; \
	exit $$rc

unit: venv ## unit tests only (no root, no apt packages needed)
	$(PY) -m pytest -q tests/unit

e2e: install ## end-to-end tests only (root, real namespaces and Open vSwitch)
	$(PY) -m pytest -q tests/e2e

validate: venv ## check SCENARIO's file against the schema (kubevpc validate)
	$(KUBEVPC) validate $(SCENARIO)

matrix: install ## build SCENARIO (default: the NetworkPolicy demo), probe the reachability matrix, tear down
	$(strip $(KUBEVPC) check $(if $(filter scenarios/default.yaml,$(SCENARIO)),scenarios/netpol.yaml,$(SCENARIO)) \
		--matrix --ports 80,81 $(if $(MODE),--mode $(MODE)))

check: install ## build SCENARIO, run the checks, tear down (MODE=... overrides the mode)
	$(strip $(KUBEVPC) check $(SCENARIO) $(if $(MODE),--mode $(MODE)))

clean: install ## remove leftovers of crashed runs (namespaces, bridges, processes); keeps .venv
	$(KUBEVPC) clean

distclean: ## clean, then remove .venv and the /usr/local/bin/kubevpc link to it
	@if [ -x $(KUBEVPC) ]; then echo "$(KUBEVPC) clean"; $(KUBEVPC) clean; fi
	@if [ "$$(readlink /usr/local/bin/kubevpc 2>/dev/null)" = "$(CURDIR)/.venv/bin/kubevpc" ]; then \
		echo "rm -f /usr/local/bin/kubevpc"; rm -f /usr/local/bin/kubevpc; fi
	rm -rf .venv

bench-up: install ## bring up the benchmark topology (python -m kubevpc.bench.bringup)
	$(PY) -m kubevpc.bench.bringup

bench-change: install ## change-to-flows times and SLB failover (python -m kubevpc.bench.change)
	$(PY) -m kubevpc.bench.change

perf: install ## iperf3, ping and connect times of every path and mode, raw veth reference (PERF=--quick)
	$(strip $(KUBEVPC) perf $(PERF))

bench-scale: install ## bring-up, teardown, memory, flows for 10-500 pods vs plain Mininet (SCALE="--upto 3000")
	$(strip $(PY) -m kubevpc.bench.scale $(SCALE))

bench-netpol: venv ## NetworkPolicy compile time and flows for 10-1000 policies (as root: LIVE=1 times changes)
	$(PY) -m kubevpc.bench.netpol $(if $(filter 1,$(LIVE)),--live)
