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
# Open vSwitch datapath of `make scenario`: system (kernel) or netdev (userspace); empty: kubevpc chooses
DATAPATH ?=
# `make vm` / `make vm-test`: ACCEL=kvm|tcg (default: KVM when a test boot works), VM_STEPS=e2e-services,perf
ACCEL    ?=
VM_STEPS ?=
# arguments of `kubevpc perf`, e.g. PERF=--quick or PERF="scenarios/default.yaml --modes eni"
PERF     ?=
# arguments of bench-matrix, e.g. MATRIX="--pods 50 --mininet-hosts 30" (python -m kubevpc.bench.matrix --help)
MATRIX   ?=
# arguments of bench-scale, e.g. SCALE="--upto 3000" or SCALE="--sizes 100,1000 --repeat 3"
SCALE    ?=

RUN_FLAGS := $(if $(strip $(MODE)),--mode $(strip $(MODE))) \
             $(if $(filter 1,$(CLI)),--cli) \
             $(if $(filter 1,$(KEEP)),--keep) \
             $(if $(strip $(DATAPATH)),--datapath $(strip $(DATAPATH)))
VM_FLAGS  := $(if $(strip $(ACCEL)),--accel $(strip $(ACCEL)))

.PHONY: help install venv scenario test unit e2e validate docs-cli check clean distclean bench-up bench-change perf bench-scale bench-netpol bench-matrix matrix vm vm-test vm-clean

help: ## list the targets
	@echo "usage: make TARGET [SCENARIO=scenarios/default.yaml] [MODE=...] [CLI=1] [KEEP=1] [DATAPATH=system|netdev]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## install everything (root): apt packages, Open vSwitch, .venv, /usr/local/bin/kubevpc
	@bash scripts/install.sh

venv: ## make only the Python virtual environment .venv (no root needed)
	@bash scripts/install.sh --python-only

scenario: install ## run SCENARIO (MODE=... --mode, CLI=1 --cli, KEEP=1 --keep, DATAPATH=... --datapath)
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

docs-cli: venv ## rewrite docs/cli.md, every command and option, from the parser (python -m kubevpc.cli.reference)
	$(PY) -m kubevpc.cli.reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

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

bench-change: install ## change-to-flows and datapath-follows times, SLB failover; verdicts on issue 21's targets
	$(PY) -m kubevpc.bench.change

perf: install ## iperf3, ping and connect times of every path and mode, raw veth reference (PERF=--quick)
	$(strip $(KUBEVPC) perf $(PERF))

bench-scale: install ## bring-up, teardown, memory, flows for 10-500 pods vs plain Mininet (SCALE="--upto 3000")
	$(strip $(PY) -m kubevpc.bench.scale $(SCALE))

bench-netpol: venv ## NetworkPolicy compile time and flows for 10-1000 policies (as root: LIVE=1 times changes)
	$(PY) -m kubevpc.bench.netpol $(if $(filter 1,$(LIVE)),--live)

bench-matrix: install ## reachability matrix of 100 x 100 pods vs plain Mininet's pingall (MATRIX=args)
	$(strip $(PY) -m kubevpc.bench.matrix $(MATRIX))

vm: venv ## (root) build the VM image: Debian 12, kernel datapath, scripts/install.sh; cached (ACCEL=kvm|tcg)
	$(strip $(PY) -m kubevpc.vm build $(VM_FLAGS))

vm-test: vm ## (root) boot the VM; on the kernel datapath: make scenario x3, an e2e subset, perf (VM_STEPS=...)
	$(strip $(PY) -m kubevpc.vm test $(VM_FLAGS) $(if $(strip $(VM_STEPS)),--steps $(strip $(VM_STEPS))))

vm-clean: venv ## (root) remove what crashed VM sessions left (qemu, build directories, unfinished images)
	$(PY) -m kubevpc.vm clean
