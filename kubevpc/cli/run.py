"""The commands that build a scenario: run (build, check, optionally serve the control channel and
open the Mininet CLI, tear down) and check (build, check or probe the reachability matrix, tear
down)."""
from __future__ import annotations

import os
import signal
import time

from rich.table import Table

from ..control import serve
from ..errors import KubevpcError
from ..evaluator.checks import declared_checks, default_checks
from ..evaluator.matrix import parse_ports, select, tables
from ..lab import Lab
from ..lab.checks import run_checks
from . import verbose
from .common import (EXIT_CHECKS, EXIT_OK, EXIT_USAGE, build_args, console, out, say, scenario_args,
                     scenario_plan)
from .junit import check_path, check_suite, error_suite, matrix_suite
from .junit import write as write_junit
from .output import emit


def add_run(sub) -> None:
    p = sub.add_parser("run", help="build, check, optionally open the Mininet CLI, tear down")
    scenario_args(p)
    build_args(p)
    p.add_argument("--cli", action="store_true",
                   help="open the Mininet CLI after the checks (and serve the control channel until it ends)")
    p.add_argument("--keep", action="store_true",
                   help="keep the network up until Ctrl-C, serving the control channel (kubevpc ready, apply, ...)")
    p.add_argument("--no-checks", action="store_true",
                   help="build, run no checks (with --keep or --cli, to use the network yourself)")


def add_check(sub) -> None:
    p = sub.add_parser("check", help="build, run the checks (or probe the reachability matrix), print the "
                       "results, tear down")
    scenario_args(p)
    build_args(p)
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE: a test case per check "
                   "(or matrix cell), the evaluator's reason as a failure's message, for CI systems")
    m = p.add_argument_group("reachability matrix (instead of the default checks)")
    m.add_argument("--matrix", action="store_true", help="expected (from the scenario) and observed reachability "
                   "between every pair of endpoints and ports, probed in parallel; exit 1 on any difference")
    m.add_argument("--between", default="pods", metavar="LIST",
                   help="comma-separated groups (pods, ecs, nodes, services), references (pod/x/a, svc/x/web, "
                        "ecs/db, node/node-1) or patterns (pod/x/*); default: pods")
    m.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    m.add_argument("--ports", default="80", metavar="LIST",
                   help="e.g. 80,81/udp: a bare port means TCP and UDP (default: 80)")
    m.add_argument("--timeout", type=float, default=1.0, metavar="S", help="per probe (default: 1 s)")
    m.add_argument("--family", type=int, choices=(4, 6), default=4,
                   help="6: the IPv6 matrix of a dual-stack scenario (IPv6 addresses, Services' IPv6 ClusterIPs)")


def _report(outcomes, lab, fmt: str) -> bool:
    ok = all(o.passed for o in outcomes)
    status = lab.status()
    packet_in = sum(b.get("packet_in", 0) for b in status.get("bridges", {}).values())
    if fmt != "table":
        emit({"run": lab.run, "mode": lab.plan.cluster.mode if lab.plan.cluster else None,
              "datapath": lab.net.datapath.kind, "passed": ok, "packet_in": packet_in,
              "timings": {k: round(v, 3) for k, v in lab.net.timings.items()},
              "checks": [o.as_dict() for o in outcomes]}, fmt)
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
                  "connect" if c.expect else "refuse", o.outcome, seen, o.why)
    out.print(t)
    n_bad = sum(not o.passed for o in outcomes)
    out.print(f"{len(outcomes) - n_bad} passed, {n_bad} failed; packet-ins to the controller: {packet_in}; "
              f"bring-up {lab.net.timings and sum(lab.net.timings.values()):.1f} s")
    return ok


def _build(args):
    lab = Lab(args.file, mode=args.mode, run=args.name, datapath=args.datapath, say=say,
              allow_dirs=args.allow_dirs)
    say(f"run {lab.run}: building {args.file} in mode {lab.plan.cluster.mode if lab.plan.cluster else '-'}")
    verbose.follow_controller(lab.run)
    # SIGTERM ends the run like Ctrl-C, so teardown happens
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    lab.up()
    return lab


def _checks(lab, fmt: str, junit_file: str | None = None) -> bool:
    checks = default_checks(lab.plan) + declared_checks(lab.plan)
    say(f"probing {len(checks)} paths in parallel")
    started, t0 = time.time(), time.monotonic()
    outcomes = run_checks(lab, checks)
    if junit_file:
        mode = lab.plan.cluster.mode if lab.plan.cluster else ""
        write_junit(junit_file, [check_suite(outcomes, lab.file, mode, time.monotonic() - t0, started,
                                             {"run": lab.run, "datapath": lab.net.datapath.kind})])
        say(f"JUnit report: {junit_file}")
    return _report(outcomes, lab, fmt)


def cmd_run(args) -> int:
    lab = control = None
    try:
        lab = _build(args)
        ok = True if args.no_checks else _checks(lab, args.output, getattr(args, "junit", None))
        if args.cli or args.keep:
            control = serve_control(lab)
        if args.cli:
            mininet_cli(lab)
        elif args.keep:
            say(f"up; namespaces are named {lab.run}-*: `ip netns exec {lab.run}-pod-<ns>_<pod> ...`; Ctrl-C ends")
            while True:
                time.sleep(3600)
        return EXIT_OK if ok else EXIT_CHECKS
    finally:
        stop_serving(control)
        if lab is not None:
            say("tearing down")
            counts = lab.down()
            say("removed " + ", ".join(f"{v} {k}(s)" for k, v in counts.items() if v))


def cmd_check(args) -> int:
    args.cli = args.keep = args.no_checks = False
    if not args.junit:
        return _check(args)
    try:
        check_path(args.junit)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_USAGE
    started, t0 = time.time(), time.monotonic()
    try:
        return _check(args)
    except KubevpcError as exc:      # CI reads the report: a build that failed is a case in error
        if not os.path.exists(args.junit) or os.path.getmtime(args.junit) < started:
            write_junit(args.junit, [error_suite("matrix" if args.matrix else "check", args.file, args.mode or "",
                                                 str(exc), time.monotonic() - t0, started)])
        raise


def _check(args) -> int:
    if not args.matrix:
        return cmd_run(args)
    plan = scenario_plan(args.file, args.mode, args.allow_dirs)      # bad choices fail before building
    sources, dests = args.between.split(","), args.to.split(",") if args.to else None
    try:
        ports = parse_ports([args.ports])
        n = len(select(plan, sources)) * len(select(plan, dests or sources)) * len(ports)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_USAGE
    lab = None
    try:
        lab = _build(args)
        say(f"probing {n} cells in parallel")
        started = time.time()
        m = lab.matrix(sources, ports, dests, timeout=args.timeout, family=args.family)
        if args.junit:
            write_junit(args.junit, [matrix_suite(m.as_dict(), lab.file, started,
                                                  {"run": lab.run, "datapath": lab.net.datapath.kind})])
            say(f"JUnit report: {args.junit}")
        if args.output != "table":
            emit({"run": lab.run, **m.as_dict()}, args.output)
        else:
            for item in tables(m):
                out.print(item)
        return EXIT_CHECKS if m.differences else EXIT_OK
    finally:
        if lab is not None:
            say("tearing down")
            lab.down()


def mininet_cli(lab) -> None:
    """Mininet's CLI over the running scenario's namespaces, until exit or Ctrl-D."""
    from mininet.cli import CLI       # Mininet's CLI: only `kubevpc run --cli` needs it

    addresses: dict[str, str] = {}
    console.print("Mininet CLI: `web-0 ping ecs-db`, `node-1 ip route`, `default/web-0 traceroute -n ecs-db`. "
                  "exit or Ctrl-D ends the run.")
    _kubevpc_cli(CLI, addresses)(MininetHosts(lab, addresses))


def _kubevpc_cli(CLI, addresses: dict[str, str]):
    """Mininet's CLI class, taught kubevpc's endpoint names."""
    class KubevpcCLI(CLI):
        identchars = CLI.identchars + "-./"

        def default(self, line):
            """`<endpoint> <command>`: run the command in that namespace, other endpoint names
            in the command replaced by their addresses (Mininet's own substitution needs Mininet
            links, which kubevpc does not use)."""
            first, args, line = self.parseline(line)
            if first not in self.mn:          # (this also brings the endpoint addresses up to date)
                return super().default(line)
            if not args:
                return super().default(line)
            node = self.mn[first]
            node.sendCmd(" ".join(addresses.get(a, a) for a in args.split(" ")))
            self.waitForNode(node)
    return KubevpcCLI


class MininetHosts:
    """What Mininet's CLI needs from a network: hosts by name (several aliases each), read from
    the running plan at each use, so pods added or removed through the control channel come
    and go here too. `addresses` is filled with each alias's address as it goes."""

    switches: list = []
    controllers: list = []

    def __init__(self, lab, addresses: dict[str, str]):
        self.lab, self.addresses = lab, addresses

    @property
    def nameToNode(self) -> dict:
        return self._index()[0]

    @property
    def hosts(self) -> list:
        return self._index()[1]

    def _index(self) -> tuple[dict, list]:
        names, hosts = {}, []
        self.addresses.clear()
        for h in self.lab.plan.hosts:
            node = self.lab.net.hosts.get(self.lab.plan.network_host(h).key)    # host network: the node's
            if node is None:
                continue
            if node not in hosts:
                hosts.append(node)
            for alias in {h.key, h.netns, h.name} | ({f"{h.namespace}/{h.name}"} if h.namespace else set()):
                names.setdefault(alias, node)
                self.addresses.setdefault(alias, h.ip)
        return names, hosts

    def __getitem__(self, key):
        return self.nameToNode[key]

    def __contains__(self, key):
        return key in self.nameToNode

    def __iter__(self):
        return iter(self.nameToNode)

    def values(self):
        return self.hosts


def serve_control(lab):
    return serve(lab, say)


def stop_serving(control) -> None:
    if control is None:
        return
    try:
        control.stop()
    except KeyboardInterrupt:      # a second Ctrl-C must not skip the teardown that follows
        pass


COMMANDS = {"run": (add_run, cmd_run), "check": (add_check, cmd_check)}
