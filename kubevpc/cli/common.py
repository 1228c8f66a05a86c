"""What the commands share: the two consoles, the exit codes, the arguments that name a scenario
and a build, and a scenario's plan, or a live run's."""
from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console

from ..errors import KubevpcError
from ..ledger import check_run_name, list_runs, owner_alive
from ..rundir import RunDir
from ..scenario.load import load
from ..planning import Plan, make_plan, plan_warnings
from .output import add_output
from .verbose import debug

EXIT_OK, EXIT_CHECKS, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MODES = ("vxlan", "vpc-route", "eni")
PLACEHOLDER_RUN = "kvxxxx"     # as long as the longest run name, so name lengths are checked as in a run

# progress and errors: one line each, never wrapped by rich (logs and CI capture stderr, where
# rich would otherwise cut every line at 80 columns); a terminal wraps long lines itself
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def say(text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")


def scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="scenario YAML file")
    p.add_argument("--mode", choices=MODES, help="override cluster.mode")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR", dest="allow_dirs",
                   help="a directory besides the scenario's own from which its `file:` references may be read "
                        "(may be given several times)")


def build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="the run's name, a prefix of everything created (1-6 of [a-z0-9]; default random)")
    p.add_argument("--datapath", choices=("netdev", "system"),
                   help="Open vSwitch datapath (default: kernel if the openvswitch module is loaded, else userspace)")
    add_output(p, json_alias=True)


def scenario_plan(file: str, mode: str | None, allow_dirs) -> Plan:
    """The plan of a scenario file, nothing built (run names as long as a run's). The objects it
    skips (kinds that do not touch the network), and what the plan holds that ACK does not act on
    (a NetworkPolicy selecting an exclusive-ENI pod), are told on stderr, one line each."""
    t0 = time.monotonic()
    loaded = load(file, mode, allow_dirs)
    for w in loaded.warnings:
        sys.stderr.write(f"warning: {w}\n")
    t1 = time.monotonic()
    plan = make_plan(loaded, PLACEHOLDER_RUN)
    for w in plan_warnings(loaded, plan):     # what ACK accepts and does not act on (kubevpc/planning/unenforced.py)
        sys.stderr.write(f"warning: {w}\n")
    debug("%s: read and checked in %.0f ms, planned in %.0f ms (%d hosts, %d bridges)", file, (t1 - t0) * 1000,
          (time.monotonic() - t1) * 1000, len(plan.hosts), len(plan.bridges))
    return plan


def live_run(run: str | None) -> str:
    """The named run, checked to be a live run's name; or the one live run."""
    if run is None:
        live = [r for r in list_runs() if owner_alive(r)]
        if len(live) != 1:
            raise KubevpcError(f"{len(live)} live runs ({', '.join(live) or 'none'}): name one")
        return live[0]
    check_run_name(run)
    if not owner_alive(run):
        raise KubevpcError(f"no live run named {run} (`kubevpc list` shows the runs)")
    return run


def run_plan(run: str) -> Plan:
    try:
        with open(RunDir.of(run).plan, encoding="utf-8") as fh:
            return Plan.model_validate_json(fh.read())
    except OSError as exc:
        raise KubevpcError(f"cannot read run {run}'s plan: {exc.strerror} (root only)") from None


def slb_health(run: str) -> dict | None:
    """The SLB health the run's controller last wrote to its status (None when it cannot be read)."""
    try:
        with open(RunDir.of(run).status, encoding="utf-8") as fh:
            return json.load(fh).get("slb_health")
    except (OSError, ValueError):
        return None
