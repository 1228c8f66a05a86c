"""The `kubevpc` command line. Library code raises; only this module exits.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or invalid scenario, 3 build or runtime error,
130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from rich.console import Console
from rich.table import Table

from .errors import KubevpcError, ScenarioError

EXIT_OK, EXIT_CHECKS, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MODES = ("vxlan", "vpc-route", "eni")

console = Console(stderr=True, highlight=False)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _say(text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="scenario YAML file")
    p.add_argument("--mode", choices=MODES, help="override cluster.mode")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="the run's name, a prefix of everything created (1-6 of [a-z0-9]; default random)")
    p.add_argument("--datapath", choices=("netdev", "system"),
                   help="Open vSwitch datapath (default: kernel if the openvswitch module is loaded, else userspace)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kubevpc", description="Emulate the container networking of managed "
                                 "Kubernetes in a cloud VPC with namespaces, Open vSwitch and os-ken.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = sub.add_parser("validate", help="check a scenario without building anything")
    _scenario_args(p)
    p = sub.add_parser("plan", help="print the address plan of a scenario without building it")
    _scenario_args(p)
    p.add_argument("--json", action="store_true", help="the whole plan as JSON")
    p = sub.add_parser("flows", help="print the flows the controller would install, in ovs-ofctl syntax")
    _scenario_args(p)
    p.add_argument("--bridge", help="only this bridge (role or name suffix, e.g. vs0, n1, vr0)")
    p = sub.add_parser("run", help="build, check, optionally open the Mininet CLI, tear down")
    _scenario_args(p)
    _build_args(p)
    p.add_argument("--cli", action="store_true", help="open the Mininet CLI after the checks")
    p.add_argument("--keep", action="store_true", help="keep the network up until Ctrl-C")
    p.add_argument("--no-checks", action="store_true", help="build only")
    p = sub.add_parser("check", help="build, run the checks, print the results, tear down")
    _scenario_args(p)
    _build_args(p)
    p = sub.add_parser("clean", help="remove what crashed runs left behind (from their ledgers)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs")
    p.add_argument("--all", action="store_true", help="also runs whose owner process is still alive")
    sub.add_parser("list", help="list runs known on this machine")
    return ap


PLACEHOLDER_RUN = "kvxxxx"     # as long as the longest run name, so name lengths are checked as in a run


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)      # `kubevpc flows FILE | head` ends quietly
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except ScenarioError as exc:
        console.print(f"[red]invalid scenario[/red] ({len(exc.problems)} problem(s)); nothing was built:")
        for p in exc.problems:      # one line each, never wrapped, so they can be grepped
            sys.stderr.write(f"  {p}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("interrupted")
        return EXIT_INTERRUPTED
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True)
        return EXIT_RUNTIME


# ------------------------------------------------------------------------------------- commands
def cmd_validate(args) -> int:
    from .load import load
    from .plan import make_plan
    loaded = load(args.file, args.mode)
    plan = make_plan(loaded, PLACEHOLDER_RUN)
    mode = plan.cluster.mode if plan.cluster else "no cluster"
    out.print(f"{args.file}: valid ({len(plan.vpcs)} VPC, {len(plan.vswitches)} vSwitches, "
              f"{len(plan.instances)} ECS, {len(plan.nodes)} nodes, {len(plan.pods)} pods, mode {mode})")
    return EXIT_OK


def cmd_plan(args) -> int:
    from .load import load
    from .plan import make_plan
    plan = make_plan(load(args.file, args.mode), PLACEHOLDER_RUN)
    if args.json:
        print(plan.model_dump_json(indent=1))
        return EXIT_OK
    t = Table(title=f"address plan of {args.file} ({plan.cluster.mode if plan.cluster else 'no cluster'})")
    for col in ("endpoint", "address", "gateway", "MAC", "on", "node", "security groups"):
        t.add_column(col)
    for h in plan.hosts:
        t.add_row(h.key, f"{h.ip}/{h.prefixlen}", h.gateway, h.mac, h.vswitch or "-", h.node or "-",
                  ",".join(h.security_groups) or "-")
    out.print(t)
    rt = Table(title="route tables")
    for col in ("VPC", "destination", "kind", "next hop"):
        rt.add_column(col)
    for v in plan.vpcs:
        for r in v.routes:
            rt.add_row(v.name, r.destination, r.kind, r.next_hop or "local")
    out.print(rt)
    return EXIT_OK


def cmd_flows(args) -> int:
    from controller.compile import compile_plan
    from .load import load
    from .plan import make_plan
    plan = make_plan(load(args.file, args.mode), PLACEHOLDER_RUN)
    for name, fs in compile_plan(plan).items():
        if args.bridge and not name.endswith(args.bridge):
            continue
        b = plan.bridge(name)
        print(f"# bridge {name} ({b.role} {b.owner}): {len(fs.flows)} flows, {len(fs.groups)} groups")
        for line in fs.groups_ofctl():
            print(line)
        for line in fs.ofctl():
            print(line)
    return EXIT_OK


def _report(outcomes, lab, as_json: bool) -> bool:
    ok = all(o.passed for o in outcomes)
    status = lab.status()
    packet_in = sum(b.get("packet_in", 0) for b in status.get("bridges", {}).values())
    if as_json:
        print(json.dumps({"run": lab.run, "mode": lab.plan.cluster.mode if lab.plan.cluster else None,
                          "datapath": lab.net.datapath.kind, "passed": ok, "packet_in": packet_in,
                          "timings": {k: round(v, 3) for k, v in lab.net.timings.items()},
                          "checks": [o.as_dict() for o in outcomes]}, indent=1))
        return ok
    t = Table(title=f"checks of {lab.file} — mode {lab.plan.cluster.mode if lab.plan.cluster else '-'}, "
                    f"run {lab.run}, {lab.net.datapath.kind} datapath")
    for col in ("", "check", "path", "expected", "observed", "server saw", "why"):
        t.add_column(col, overflow="fold")
    for o in outcomes:
        c = o.check
        mark = "[green]✓[/green]" if o.passed else "[red]✗[/red]"
        seen = o.client or "-"
        if o.connected and c.seen_source and o.client != c.seen_source:
            seen = f"[red]{o.client} (expected {c.seen_source})[/red]"
        t.add_row(mark, "declared" if c.declared else c.title, f"{c.source} → {c.dest} {c.port}/{c.proto}",
                  "connect" if c.expect else "refuse", o.outcome, seen, c.reason)
    out.print(t)
    n_bad = sum(not o.passed for o in outcomes)
    out.print(f"{len(outcomes) - n_bad} passed, {n_bad} failed; packet-ins to the controller: {packet_in}; "
              f"bring-up {lab.net.timings and sum(lab.net.timings.values()):.1f} s")
    return ok


def _build(args):
    from .lab import Lab
    lab = Lab(args.file, mode=args.mode, run=args.name, datapath=args.datapath, say=_say)
    _say(f"run {lab.run}: building {args.file} in mode {lab.plan.cluster.mode if lab.plan.cluster else '-'}")
    # SIGTERM ends the run like Ctrl-C, so teardown happens
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    lab.up()
    return lab


def _checks(lab, as_json: bool) -> bool:
    from .checks import declared_checks, default_checks, run_checks
    checks = default_checks(lab.plan) + declared_checks(lab.plan)
    _say(f"probing {len(checks)} paths in parallel")
    outcomes = run_checks(lab, checks)
    return _report(outcomes, lab, as_json)


def cmd_run(args) -> int:
    lab = None
    try:
        lab = _build(args)
        ok = True if args.no_checks else _checks(lab, args.json)
        if args.cli:
            _mininet_cli(lab)
        elif args.keep:
            _say(f"up; namespaces are named {lab.run}-*: `ip netns exec {lab.run}-pod-<ns>_<pod> ...`; Ctrl-C ends")
            while True:
                time.sleep(3600)
        return EXIT_OK if ok else EXIT_CHECKS
    finally:
        if lab is not None:
            _say("tearing down")
            counts = lab.down()
            _say("removed " + ", ".join(f"{v} {k}(s)" for k, v in counts.items() if v))


def cmd_check(args) -> int:
    args.cli = args.keep = args.no_checks = False
    return cmd_run(args)


def _mininet_cli(lab) -> None:
    from mininet.cli import CLI

    addresses = {}

    class KubevpcCLI(CLI):
        identchars = CLI.identchars + "-./"

        def default(self, line):
            """`<endpoint> <command>`: run the command in that namespace, other endpoint names
            in the command replaced by their addresses (Mininet's own substitution needs Mininet
            links, which kubevpc does not use)."""
            first, args, line = self.parseline(line)
            if first not in self.mn:
                return super().default(line)
            if not args:
                return super().default(line)
            node = self.mn[first]
            node.sendCmd(" ".join(addresses.get(a, a) for a in args.split(" ")))
            self.waitForNode(node)

    class Net:
        """What Mininet's CLI needs from a network: hosts by name (several aliases each)."""

        def __init__(self):
            self.nameToNode = {}
            self.hosts = []
            self.switches = []
            self.controllers = []
            for h in lab.plan.hosts:
                node = lab.net.hosts[h.key]
                self.hosts.append(node)
                for alias in {h.key, h.netns, h.name} | ({f"{h.namespace}/{h.name}"} if h.namespace else set()):
                    self.nameToNode.setdefault(alias, node)
                    addresses.setdefault(alias, h.ip)

        def __getitem__(self, key):
            return self.nameToNode[key]

        def __contains__(self, key):
            return key in self.nameToNode

        def __iter__(self):
            return iter(self.nameToNode)

        def values(self):
            return self.hosts

    console.print("Mininet CLI: `web-0 ping ecs-db`, `node-1 ip route`, `default/web-0 traceroute -n ecs-db`. "
                  "exit or Ctrl-D ends the run.")
    KubevpcCLI(Net())


def cmd_clean(args) -> int:
    from .ledger import clean_run, leftovers
    runs = args.runs or list(leftovers(include_live=args.all))
    if not runs:
        out.print("nothing to clean")
        return EXIT_OK
    for run in runs:
        counts = clean_run(run, _say)
        out.print(f"{run}: removed " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing left"))
    return EXIT_OK


def cmd_list(args) -> int:
    from .ledger import Ledger, list_runs, owner_alive
    runs = list_runs()
    if not runs:
        out.print("no runs")
    for run in runs:
        n = len(Ledger(run).entries())
        out.print(f"{run}: {'running' if owner_alive(run) else 'leftover (kubevpc clean)'}, {n} resources")
    return EXIT_OK


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "flows": cmd_flows, "run": cmd_run, "check": cmd_check,
            "clean": cmd_clean, "list": cmd_list}

if __name__ == "__main__":
    sys.exit(main())
