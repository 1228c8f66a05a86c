"""The `kubevpc` command line. Library code raises; only this module exits.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or invalid scenario, 3 build or runtime error,
130 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import KubevpcError, ScenarioError
from .bench import perf as perf_bench

EXIT_OK, EXIT_CHECKS, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MODES = ("vxlan", "vpc-route", "eni")

# progress and errors: one line each, never wrapped by rich (logs and CI capture stderr, where
# rich would otherwise cut every line at 80 columns); a terminal wraps long lines itself
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _say(text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="scenario YAML file")
    p.add_argument("--mode", choices=MODES, help="override cluster.mode")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR", dest="allow_dirs",
                   help="a directory besides the scenario's own from which its `file:` references may be read "
                        "(may be given several times)")


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
    p.add_argument("--cli", action="store_true",
                   help="open the Mininet CLI after the checks (and serve the control channel until it ends)")
    p.add_argument("--keep", action="store_true",
                   help="keep the network up until Ctrl-C, serving the control channel (kubevpc ready, apply, ...)")
    p.add_argument("--no-checks", action="store_true", help="build only")
    p = sub.add_parser("check", help="build, run the checks (or probe the reachability matrix), print the "
                       "results, tear down")
    _scenario_args(p)
    _build_args(p)
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
    p = sub.add_parser("explain", help="why a connection would or would not work, as the chain the evaluator "
                       "followed (nothing is built)",
                       description="Explain one connection without building anything: the route table entry, "
                       "the security group rules (egress of the source, ingress of the destination), NAT and "
                       "EIPs, a Service's DNAT and its endpoints, NetworkPolicy, and the client address the "
                       "server sees, from kubevpc's evaluator (written independently of the flows). With "
                       "--matrix, the static reachability matrix instead. Exit codes: 0 it connects (or the "
                       "matrix printed); 1 it does not, or it depends on the endpoint; 2 bad usage or an "
                       "invalid scenario.")
    _scenario_args(p)
    p.add_argument("source", nargs="?", metavar="SRC", help="pod/<ns>/<name>, ecs/<name>, node/<name> or inet/<name>")
    p.add_argument("dest", nargs="?", metavar="DST",
                   help="an endpoint as SRC, svc/<ns>/<name> (ClusterIP), slb/<ns>/<name> (intranet SLB), "
                        "eip/<name>, node/<name> with a NodePort, or an address any of these hold")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]", help="e.g. 5432 or 53/udp (default protocol tcp)")
    p.add_argument("-o", "--output", choices=("text", "json", "table", "csv", "md", "dot"), default=None,
                   help="text (default) or json for one connection; table (default), json, csv, md or dot "
                        "for --matrix")
    m = p.add_argument_group("static reachability matrix (instead of one connection)")
    m.add_argument("--matrix", action="store_true", help="every pair of the chosen endpoints and ports, as the "
                   "evaluator expects them")
    m.add_argument("--between", default="pods", metavar="LIST", help="as `kubevpc check --matrix` (default: pods)")
    m.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    m.add_argument("--ports", default="80", metavar="LIST", help="e.g. 80,81/udp (default: 80, TCP and UDP)")
    p = sub.add_parser("trace", help="follow a connection's first packet through every bridge of a running "
                       "scenario (ofproto/trace on each), beside the evaluator's verdict",
                       description="Follow the first packet of a new connection through every bridge it really "
                       "crosses in a running scenario: the source's bridge, VXLAN encapsulation and the peer node "
                       "(vxlan mode), the vSwitches, the vRouter, the edge with its NAT, to the destination. Open "
                       "vSwitch's ofproto/trace does the work on each bridge; kubevpc carries conntrack states "
                       "and NAT from pass to pass and from bridge to bridge, and follows every bucket of a "
                       "Service's or SLB's select group. Each hop lists the tables and flows matched, with their "
                       "notes, and the decisions in words; the evaluator's verdict (kubevpc explain) is printed "
                       "beside, and a disagreement is flagged. Needs root. Exit codes: 0 delivered (every branch); "
                       "1 dropped or refused somewhere; 2 bad usage; 3 no such run, or it disagrees with the "
                       "evaluator.")
    p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run)")
    p.add_argument("source", metavar="SRC", help="pod/<ns>/<name>, ecs/<name>, node/<name> or inet/<name>")
    p.add_argument("dest", metavar="DST", help="an endpoint, svc/<ns>/<name>, slb/<ns>/<name>, eip/<name> or an address")
    p.add_argument("port", metavar="PORT[/PROTO]", help="e.g. 5432 or 53/udp (default protocol tcp)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="text (default) or json")
    p.add_argument("--brief", action="store_true", help="leave out the tables and flows of each hop")
    p = sub.add_parser("capture", help="capture packets of a running scenario as pcapng with interface names",
                       description="Capture the packets of a running scenario at a target, as pcapng with one "
                       "named interface per device (Wireshark and tcpdump show where each packet was seen). "
                       "The capture is recorded in the run's ledger and ends with the run. Needs root. Exit "
                       "codes: 0 done; 2 bad usage; 3 no such run, or the capture failed.")
    p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run)")
    p.add_argument("target", metavar="TARGET", help="what to capture at: " + capture_targets_help())
    p.add_argument("-w", "--write", metavar="FILE", help="the pcapng file, or - for standard output (to pipe into "
                   "wireshark -k -i - or tcpdump -r -); required when standard output is a terminal")
    p.add_argument("-c", "--count", type=int, default=0, metavar="N", help="stop after N packets (default: no limit)")
    p.add_argument("-d", "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (default: no limit)")
    p.add_argument("-f", "--filter", default="", metavar="BPF", help="a tcpdump filter expression, e.g. 'udp port 4789'")
    p = sub.add_parser("flowlog", help="the flow log of a running scenario (per ENI, as Alibaba Cloud VPC Flow "
                       "Logs), or its rule counters",
                       description="Print the flow log of a running scenario: a record per connection, direction "
                       "and ENI (ECS instances, nodes, eni-mode pods) with the fields of Alibaba Cloud VPC Flow "
                       "Logs: the ENI, its instance, vSwitch and VPC, source and destination address and port, "
                       "protocol, packets, bytes, start, end, and ACCEPT or REJECT as the ENI's security groups "
                       "decided. The vSwitches count every packet; a record is written when a connection has been "
                       "idle for the window (cloud.flowLogs.window, default 10 s), and every window while it "
                       "lasts. They are kept as JSON lines in the run's directory (flowlog.jsonl). --rules prints "
                       "instead what each security group rule and NetworkPolicy matched or dropped, from the "
                       "flows' own counters. Needs root. Exit codes: 0 done; 2 bad usage; 3 no such run.")
    p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="table (default) or json (a record per line; with --rules, one document)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing records as they are written, until "
                   "the run ends or Ctrl-C")
    p.add_argument("--active", action="store_true", help="also the connections still open, as they stand "
                   "(log-status ACTIVE: counts since the connection began, partly in written records already)")
    p.add_argument("--eni", metavar="ENI", help="only this ENI's records (eni-<instance> or eni-<ns>-<pod>)")
    p.add_argument("--action", choices=("ACCEPT", "REJECT"), type=str.upper, help="only records with this action")
    p.add_argument("--rules", action="store_true", help="the rule counters: packets and bytes per security group "
                   "rule and NetworkPolicy flow")
    p = sub.add_parser("graph", help="draw a scenario's or a run's network (nothing is built)",
                       description="Draw the network of a scenario file, or of a live run, from its plan: VPCs with "
                       "their vRouter, route table and vSwitches (zones, CIDRs), ECS instances and nodes with their "
                       "security groups, the pods on each node, Services, SLBs, NAT gateways, EIPs and the internet. "
                       "Formats: mermaid, dot, drawio, json; png and svg need Graphviz. --matrix draws an edge for "
                       "each connecting cell of the reachability matrix: expected for a scenario, probed for a run "
                       "that serves a control channel. Exit codes: 0 done; 2 bad usage or an invalid scenario.")
    p.add_argument("what", metavar="SCENARIO|RUN", help="a scenario file, or the name of a live run")
    p.add_argument("--mode", choices=MODES, help="override cluster.mode (a scenario file)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR", dest="allow_dirs",
                   help="as for validate")
    p.add_argument("-o", "--output", choices=("mermaid", "dot", "drawio", "json", "png", "svg"), default="mermaid",
                   help="format (default mermaid)")
    p.add_argument("-w", "--write", metavar="FILE", help="write to FILE instead of standard output")
    m = p.add_argument_group("reachability overlay")
    m.add_argument("--matrix", action="store_true", help="draw the connecting cells of the reachability matrix")
    m.add_argument("--between", default="pods", metavar="LIST", help="as `kubevpc check --matrix` (default: pods)")
    m.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    m.add_argument("--ports", default="80", metavar="LIST", help="e.g. 80,81/udp (default: 80, TCP and UDP)")
    p = sub.add_parser("clean", help="remove what crashed runs left behind (from their ledgers)",
                       description="Remove what runs left behind: exactly what each run's ledger lists (its "
                       "namespaces, bridges, links, processes and files), then its directory under "
                       "$KUBEVPC_STATE_DIR/runs (default /var/lib/kubevpc/runs). Without RUN, every leftover run: one whose owner process "
                       "(`kubevpc run`, a Lab) is gone. A live run is cleaned only with --force (or --all). "
                       "Exit codes: 0 done; 2 a RUN that is not a run's name, no such run, or a live run "
                       "without --force (nothing removed).")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (names as `kubevpc list` shows them)")
    p.add_argument("--force", action="store_true",
                   help="also live runs: their owner goes on, with its network gone (stop it with Ctrl-C instead "
                        "when you can)")
    p.add_argument("--all", action="store_true", help="every run, live ones too (the same as --force)")
    sub.add_parser("list", help="list runs known on this machine")
    p = sub.add_parser("perf", help="benchmark: iperf3, ping and connect times of every path and mode vs a raw veth")
    perf_bench.add_arguments(p)
    _control_parsers(sub)
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
    loaded = load(args.file, args.mode, args.allow_dirs)
    plan = make_plan(loaded, PLACEHOLDER_RUN)
    mode = plan.cluster.mode if plan.cluster else "no cluster"
    out.print(f"{args.file}: valid ({len(plan.vpcs)} VPC, {len(plan.vswitches)} vSwitches, "
              f"{len(plan.instances)} ECS, {len(plan.nodes)} nodes, {len(plan.pods)} pods, mode {mode})")
    return EXIT_OK


def cmd_plan(args) -> int:
    from .load import load
    from .plan import make_plan
    plan = make_plan(load(args.file, args.mode, args.allow_dirs), PLACEHOLDER_RUN)
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
    from controller.policy import SHARED, policy_flow_counts
    plan = make_plan(load(args.file, args.mode, args.allow_dirs), PLACEHOLDER_RUN)
    compiled = compile_plan(plan)
    if plan.network_policies:
        counts = policy_flow_counts(plan.network_policies, [f for fs in compiled.values() for f in fs.flows
                                                            if not args.bridge or fs.bridge.endswith(args.bridge)])
        print("# NetworkPolicy flows on the node bridges (conjunctive: peers + pods + ports + 1 per rule and node)")
        for key, n in counts.items():
            print(f"#   {'isolation and pass (shared)' if key == SHARED else key}: {n}")
    for name, fs in compiled.items():
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
                  "connect" if c.expect else "refuse", o.outcome, seen, o.why)
    out.print(t)
    n_bad = sum(not o.passed for o in outcomes)
    out.print(f"{len(outcomes) - n_bad} passed, {n_bad} failed; packet-ins to the controller: {packet_in}; "
              f"bring-up {lab.net.timings and sum(lab.net.timings.values()):.1f} s")
    return ok


def _build(args):
    from .lab import Lab
    lab = Lab(args.file, mode=args.mode, run=args.name, datapath=args.datapath, say=_say,
              allow_dirs=args.allow_dirs)
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
    lab = control = None
    try:
        lab = _build(args)
        ok = True if args.no_checks else _checks(lab, args.json)
        if args.cli or args.keep:
            control = _serve(lab)
        if args.cli:
            _mininet_cli(lab)
        elif args.keep:
            _say(f"up; namespaces are named {lab.run}-*: `ip netns exec {lab.run}-pod-<ns>_<pod> ...`; Ctrl-C ends")
            while True:
                time.sleep(3600)
        return EXIT_OK if ok else EXIT_CHECKS
    finally:
        _stop_serving(control)
        if lab is not None:
            _say("tearing down")
            counts = lab.down()
            _say("removed " + ", ".join(f"{v} {k}(s)" for k, v in counts.items() if v))


def cmd_check(args) -> int:
    args.cli = args.keep = args.no_checks = False
    if not args.matrix:
        return cmd_run(args)
    from .matrix import parse_ports, select, tables
    from .load import load
    from .plan import make_plan
    plan = make_plan(load(args.file, args.mode, args.allow_dirs), PLACEHOLDER_RUN)      # bad choices fail before building
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
        _say(f"probing {n} cells in parallel")
        m = lab.matrix(sources, ports, dests, timeout=args.timeout)
        if args.json:
            print(json.dumps({"run": lab.run, **m.as_dict()}, indent=1))
        else:
            for item in tables(m):
                out.print(item)
        return EXIT_CHECKS if m.differences else EXIT_OK
    finally:
        if lab is not None:
            _say("tearing down")
            lab.down()


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
            if first not in self.mn:          # (this also brings the endpoint addresses up to date)
                return super().default(line)
            if not args:
                return super().default(line)
            node = self.mn[first]
            node.sendCmd(" ".join(addresses.get(a, a) for a in args.split(" ")))
            self.waitForNode(node)

    class Net:
        """What Mininet's CLI needs from a network: hosts by name (several aliases each), read from
        the running plan at each use, so pods added or removed through the control channel come
        and go here too."""

        switches: list = []
        controllers: list = []

        @property
        def nameToNode(self) -> dict:
            return self._index()[0]

        @property
        def hosts(self) -> list:
            return self._index()[1]

        def _index(self) -> tuple[dict, list]:
            names, hosts = {}, []
            addresses.clear()
            for h in lab.plan.hosts:
                node = lab.net.hosts.get(h.key)
                if node is None:
                    continue
                hosts.append(node)
                for alias in {h.key, h.netns, h.name} | ({f"{h.namespace}/{h.name}"} if h.namespace else set()):
                    names.setdefault(alias, node)
                    addresses.setdefault(alias, h.ip)
            return names, hosts

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


def cmd_explain(args) -> int:
    from .explain import explain, lines, verdict_word
    from .load import load
    from .matrix import expected_matrix, parse_ports, render, select, tables
    from .plan import make_plan
    plan = make_plan(load(args.file, args.mode, args.allow_dirs), PLACEHOLDER_RUN)
    mode = plan.cluster.mode if plan.cluster else "no cluster"
    try:
        if args.matrix:
            if args.source or args.dest or args.port:
                raise KubevpcError("--matrix takes no SRC, DST or PORT: choose endpoints with --between and --to")
            if args.output == "text":
                raise KubevpcError("-o text is for one connection; --matrix prints table, json, csv, md or dot")
            sources = select(plan, args.between.split(","))
            dests = select(plan, args.to.split(",")) if args.to else sources
            m = expected_matrix(plan, sources, dests, parse_ports([args.ports]))
            if (args.output or "table") == "table":
                for item in tables(m):
                    out.print(item)
            else:
                sys.stdout.write(render(m, args.output))
            return EXIT_OK
        if not (args.source and args.dest and args.port):
            raise KubevpcError("expected SRC DST PORT[/PROTO] (for example pod/default/web-0 ecs/ecs-db 5432/tcp), "
                               "or --matrix")
        if args.output not in (None, "text", "json"):
            raise KubevpcError(f"-o {args.output} is for --matrix; one connection prints text or json")
        port, _, proto = args.port.partition("/")
        if not port.isdigit() or not 1 <= int(port) <= 65535 or proto.lower() not in ("", "tcp", "udp"):
            raise KubevpcError(f"{args.port!r}: expected a port from 1 to 65535, optionally /tcp or /udp")
        e = explain(plan, args.source, args.dest, int(port), proto.lower() or "tcp")
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.output == "json":
        print(json.dumps({"file": args.file, "mode": mode, **e.as_dict()}, indent=1))
    else:
        out.print(f"{e.source} → {e.dest} {e.port}/{e.proto} in {args.file} (mode {mode}): "
                  f"{verdict_word(e.allowed).upper()}: {e.reason}", markup=False, soft_wrap=True)
        for line in lines(e):
            out.print(line, markup=False, soft_wrap=True)
    return EXIT_OK if e.allowed else EXIT_CHECKS


def cmd_trace(args) -> int:
    from .explain import lines as explain_lines, verdict_word
    from .rundir import RunDir
    from .trace import trace
    try:
        port, _, proto = args.port.partition("/")
        if not port.isdigit() or not 1 <= int(port) <= 65535 or proto.lower() not in ("", "tcp", "udp"):
            raise KubevpcError(f"{args.port!r}: expected a port from 1 to 65535, optionally /tcp or /udp")
        run = _live_run(args.run)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    try:
        plan = _run_plan(run)
        try:
            with open(RunDir.of(run).status, encoding="utf-8") as fh:
                health = json.load(fh).get("slb_health")
        except (OSError, ValueError):
            health = None
        t = trace(plan, args.source, args.dest, int(port), proto.lower() or "tcp", health)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.output == "json":
        print(json.dumps({"run": run, "mode": plan.cluster.mode if plan.cluster else None, **t.as_dict()}, indent=1))
    else:
        for line in trace_lines(t, run, plan, brief=args.brief):
            out.print(line, markup=False, soft_wrap=True)
        if t.expected is not None:
            out.print(f"evaluator: {verdict_word(t.expected.allowed).upper()}: {t.expected.reason}", markup=False,
                      soft_wrap=True)
            if not args.brief:
                for line in explain_lines(t.expected, "  "):
                    out.print(line, markup=False, soft_wrap=True)
        out.print(f"DISAGREES with the evaluator: {t.disagreement}" if t.disagreement else
                  "the trace agrees with the evaluator", markup=False, soft_wrap=True)
    if t.disagreement:
        return EXIT_RUNTIME
    return EXIT_OK if all(x.outcome == "delivered" for x in t.leaves()) else EXIT_CHECKS


def trace_lines(t, run: str, plan, brief: bool = False, indent: str = "") -> list[str]:
    """A trace as text: a header, then each hop (its bridge, the packet as it entered, the tables
    and flows, the decisions, where it went), a branch per bucket indented under it."""
    lines = []
    if not indent:
        lines.append(f"trace of {t.source} → {t.dest} {t.port}/{t.proto} in run {run} "
                     f"(mode {plan.cluster.mode if plan.cluster else '-'}): the first packet of a new connection")
    for i, h in enumerate(t.hops, 1):
        lines.append(f"{indent}[{i}] {h.role} {' → '.join(h.bridges) or h.bridge}, in port {h.in_port}: {h.packet}")
        if not brief:
            lines += [f"{indent}      {x}" for x in h.tables]
        lines += [f"{indent}    • {d}" for d in h.decisions]
        lines.append(f"{indent}    → {h.outcome}")
    for b in t.branches:
        lines.append(f"{indent}  branch: {b.via}")
        lines += trace_lines(b.trace, run, plan, brief, indent + "    ")
    if not t.branches:
        lines.append(f"{indent}result: {t.outcome.upper()}: {t.reason}")
    return lines


def capture_targets_help() -> str:
    from .capture import TARGETS_HELP
    return TARGETS_HELP


def _live_run(run: str | None) -> str:
    """The named run, checked to be a live run's name; or the one live run."""
    from .ledger import check_run_name, list_runs, owner_alive
    if run is None:
        live = [r for r in list_runs() if owner_alive(r)]
        if len(live) != 1:
            raise KubevpcError(f"{len(live)} live runs ({', '.join(live) or 'none'}): name one")
        return live[0]
    check_run_name(run)
    if not owner_alive(run):
        raise KubevpcError(f"no live run named {run} (`kubevpc list` shows the runs)")
    return run


def _run_plan(run: str):
    from .plan import Plan
    from .rundir import RunDir
    try:
        with open(RunDir.of(run).plan, encoding="utf-8") as fh:
            return Plan.model_validate_json(fh.read())
    except OSError as exc:
        raise KubevpcError(f"cannot read run {run}'s plan: {exc.strerror} (root only)") from None


def cmd_capture(args) -> int:
    from .capture import capture, devices
    from .ledger import Ledger
    try:
        if args.count < 0 or args.duration < 0:
            raise KubevpcError("--count and --duration take 0 (no limit) or more")
        if args.write is None and sys.stdout.isatty():
            raise KubevpcError("pcapng is binary: give -w FILE, or -w - to pipe it (e.g. into tcpdump -r - or "
                               "wireshark -k -i -)")
        run = _live_run(args.run)
        devs = devices(_run_plan(run), args.target)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    Ledger(run).record("process", os.getpid(), token="capture")     # stopped with the run, like its own processes
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    to_stdout = args.write in (None, "-")
    out = sys.stdout.buffer if to_stdout else open(args.write, "wb")
    _say(f"capturing in run {run} on " + "; ".join(f"{d.name} ({d.what})" for d in devs)
         + (f", filter {args.filter!r}" if args.filter else "") + "; Ctrl-C ends")
    try:
        n = capture(devs, out, args.count, args.duration, args.filter, stop=lambda: bool(stopping), say=_say)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_RUNTIME
    except BrokenPipeError:
        return EXIT_OK
    finally:
        if not to_stdout:
            out.close()
    _say(f"{n} packet(s) written to {'standard output' if to_stdout else args.write}")
    return EXIT_OK


def cmd_flowlog(args) -> int:
    from .flowlog import FLOWLOG_FILE, dump_learned, live_records, read_counters, read_records
    from .ledger import owner_alive, run_dir
    from .rundir import RunDir
    try:
        run = _live_run(args.run)
        plan = _run_plan(run)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.rules:
        try:
            with open(RunDir.of(run).status, encoding="utf-8") as fh:
                health = json.load(fh).get("slb_health")
        except (OSError, ValueError):
            health = None
        try:
            counters = read_counters(plan, health)
        except KubevpcError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            return EXIT_RUNTIME
        if args.output == "json":
            print(json.dumps([dataclasses.asdict(c) for c in counters], indent=1))
            return EXIT_OK
        t = Table(title=f"rule counters of run {run} (a security group rule counts the first packet of each "
                        "connection it decides; a drop, every packet it drops)")
        for col in ("kind", "rule", "action", "bridge", "packets", "bytes"):
            t.add_column(col, overflow="fold", justify="right" if col in ("packets", "bytes") else "left")
        shown = sorted((c for c in counters if c.packets), key=lambda c: (-c.packets, c.kind, c.name))
        for c in shown:
            t.add_row(c.kind, c.name, c.action, c.bridge, str(c.packets), str(c.bytes))
        t.caption = f"{len(counters) - len(shown)} rule flows matched nothing (-o json lists every one)"
        out.print(t)
        return EXIT_OK
    if not plan.flow_log_window:
        console.print(f"flow logs are off in run {run} (cloud.flowLogs.enabled: false); --rules still works")
        return EXIT_OK

    def keep(r: dict) -> bool:
        return (args.eni is None or r.get("eni-id") == args.eni) and (args.action is None or r.get("action") == args.action)

    state = run_dir(run)
    try:
        records = [r for r in read_records(state) if keep(r)]
        live = [r for r in live_records(plan, dump_learned(plan)) if keep(r)] if args.active or not args.follow else []
    except (OSError, KubevpcError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_RUNTIME
    shown = records + (live if args.active else [])
    if args.output == "json":
        for r in shown:
            print(json.dumps(r))
    else:
        _flowlog_table(shown, f"flow log of run {run} (window {plan.flow_log_window} s)")
        if not args.active and not args.follow:
            out.print(f"{len(live)} direction(s) of open connections not yet in a record (--active lists them)",
                      markup=False)
    if not args.follow:
        return EXIT_OK
    path = os.path.join(state, FLOWLOG_FILE)
    offset = os.path.getsize(path) if os.path.exists(path) else 0
    _say(f"following {path}; Ctrl-C ends")
    try:
        while owner_alive(run):
            time.sleep(0.5)
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                continue
            if size < offset:          # rotated
                offset = 0
            with open(path, encoding="utf-8") as fh:
                fh.seek(offset)
                chunk = fh.read()
            complete = chunk[:chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if keep(r):
                    if args.output == "json":
                        print(json.dumps(r), flush=True)
                    else:
                        out.print(_flowlog_line(r), markup=False, soft_wrap=True)
    except KeyboardInterrupt:
        return EXIT_OK
    _say(f"run {run} has ended")
    return EXIT_OK


def _flowlog_line(r: dict) -> str:
    proto = {6: "tcp", 17: "udp", 1: "icmp"}.get(r["protocol"], str(r["protocol"]))
    src = r["srcaddr"] + (f":{r['srcport']}" if r["srcport"] else "")
    dst = r["dstaddr"] + (f":{r['dstport']}" if r["dstport"] else "")
    span = time.strftime("%H:%M:%S", time.localtime(r["start"])) + "-" + time.strftime("%H:%M:%S", time.localtime(r["end"]))
    first = " (first packet's bytes uncounted)" if r.get("first-packet-bytes") else ""
    return (f"{span} {r['eni-id']} {r['direction']:>3} {proto} {src} → {dst} {r['packets']} packets "
            f"{r['bytes']} bytes{first} {r['action']} {r['log-status']}")


def _flowlog_table(records: list[dict], title: str) -> None:
    t = Table(title=title)
    for col in ("start-end", "ENI", "vm", "dir", "proto", "source", "destination", "packets", "bytes", "action",
                "status"):
        t.add_column(col, overflow="fold", justify="right" if col in ("packets", "bytes") else "left")
    for r in records:
        proto = {6: "tcp", 17: "udp", 1: "icmp"}.get(r["protocol"], str(r["protocol"]))
        t.add_row(time.strftime("%H:%M:%S", time.localtime(r["start"])) + "-"
                  + time.strftime("%H:%M:%S", time.localtime(r["end"])), r["eni-id"], r["vm-id"], r["direction"],
                  proto, r["srcaddr"] + (f":{r['srcport']}" if r["srcport"] else ""),
                  r["dstaddr"] + (f":{r['dstport']}" if r["dstport"] else ""),
                  str(r["packets"]) + ("*" if r.get("first-packet-bytes") else ""), str(r["bytes"]), r["action"],
                  r["log-status"])
    t.caption = "* the first packet is counted in packets, not in bytes" if any(
        r.get("first-packet-bytes") for r in records) else None
    out.print(t)


def cmd_graph(args) -> int:
    from .graph import build, render
    from .ledger import RUN_NAME
    from .matrix import expected_matrix, parse_ports, select
    try:
        if os.path.exists(args.what) or not RUN_NAME.match(args.what):
            from .load import load
            from .plan import make_plan
            plan, run = make_plan(load(args.what, args.mode, args.allow_dirs), PLACEHOLDER_RUN), None
        else:
            run = _live_run(args.what)
            plan = _run_plan(run)
        matrix = None
        if args.matrix:
            sources = select(plan, args.between.split(","))
            dests = select(plan, args.to.split(",")) if args.to else sources
            ports = parse_ports([args.ports])
            matrix = _probed_matrix(run, sources, dests, ports) or expected_matrix(plan, sources, dests, ports)
        data = render(build(plan, matrix), args.output)
    except KubevpcError as exc:
        if isinstance(exc, ScenarioError):
            raise
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.write:
        with open(args.write, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        _say(f"wrote {args.output} to {args.write}")
    elif isinstance(data, bytes):
        if sys.stdout.isatty():
            console.print(f"[red]error:[/red] -o {args.output} is binary: give -w FILE")
            return EXIT_USAGE
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data)
    return EXIT_OK


def _probed_matrix(run: str | None, sources: list, dests: list, ports: list):
    """The run's probed matrix through its control channel; None when it does not serve one."""
    if run is None:
        return None
    from .control import ControlClient, ControlError
    from .matrix import Cell, Matrix
    try:
        doc = ControlClient(run).call("matrix", sources, [list(p) for p in ports], dests, 1.0)
    except ControlError:
        return None
    cells = [Cell(**{k: v for k, v in c.items() if k != "differs"}) for c in doc["cells"]]
    return Matrix(doc["sources"], doc["destinations"], ports, cells, doc["mode"], doc["probe_s"])


def cmd_clean(args) -> int:
    from .ledger import NotARun, check_run_name, clean_run, leftovers, list_runs, owner_alive, owner_pid
    force = args.force or args.all
    try:
        for run in args.runs:               # every name is checked before anything is removed
            check_run_name(run)
            if run not in list_runs():
                raise NotARun(f"no run named {run} (`kubevpc list` shows the runs)")
            if owner_alive(run) and not force:
                raise NotARun(f"run {run} is live: its owner, pid {owner_pid(run)}, still runs; end it (Ctrl-C, "
                              f"or SIGTERM) and it tears down itself, or `kubevpc clean --force {run}`")
        runs = args.runs or list(leftovers(include_live=force))
        if not runs:
            out.print("nothing to clean")
            return EXIT_OK
        for run in runs:
            counts = clean_run(run, _say)
            out.print(f"{run}: removed " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing left"))
    except NotARun as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
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


# ------------------------------------------------------------------ changing a running scenario
CONTROL_EPILOG = ("RUN is the run's name (see `kubevpc list`). It may be left out when exactly one live run "
                  "serves a control channel, as `kubevpc run FILE --keep` or `--cli` does once its checks are "
                  "done. Exit codes: 0 done; 2 bad usage: bad arguments, an invalid manifest, or a change the "
                  "planner rejects (nothing changed); 3 no such run, a run that does not serve, or a request the "
                  "run could not carry out (an unknown pod or Service, a change not programmed in time).")


def _control_parsers(sub) -> None:
    """The subcommands that change a running scenario through its control channel (kubevpc/control.py)."""
    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description, epilog=CONTROL_EPILOG)
        p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run that serves)")
        return p

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the run's answer as JSON on stdout")
        p.add_argument("--timeout", type=float, default=150.0, metavar="S",
                       help="seconds to wait for the run's answer (default 150)")

    p = add("ready", "mark a pod ready or not ready in a running scenario",
            "Mark a pod ready or not ready, as its readiness probe would. The Services' endpoints, select "
            "groups, DNS answers (headless) and SLB backends (eni mode) follow; the pod keeps running. "
            "Prints what changed and how long the controller took to program it.")
    p.add_argument("pod", metavar="POD", help="pod/<namespace>/<name> or pod/<name> (namespace default)")
    p.add_argument("state", metavar="true|false", choices=("true", "false"), help="ready (true) or not ready (false)")
    common(p)
    p = add("apply", "create or replace Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods and "
            "Deployments in a running scenario",
            "Create or replace the objects of YAML files (one or more documents each) in a running scenario, "
            "as `kubectl apply -f` does. A Service keeps its ClusterIP and NodePorts unless the file sets them. "
            "New pods (a new Pod or Deployment, more replicas) are started and join Services once their server "
            "listens; pods that go are removed once no flow sends to them. A running pod keeps its node, address "
            "and ports: changing those is refused. The files are checked as the scenario loader checks "
            "manifests before the run is asked anything.")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="a manifest file; may be given several times")
    common(p)
    p = add("delete", "delete a Service, a NetworkPolicy, an Ingress, a Pod or a Deployment from a running scenario",
            "Delete an object from a running scenario. A Service's ClusterIP and NodePorts stop being served "
            "(the other Services keep theirs); a NetworkPolicy's rules stop applying; an Ingress's hosts and "
            "paths leave the ingress controllers' NGINX configuration; a Pod (or every pod of a Deployment) "
            "leaves the Services' endpoints, then its namespace, veth and processes are removed. A pod of a "
            "Deployment is not deleted alone: scale the Deployment.")
    p.add_argument("object", metavar="OBJECT", help="KIND/<namespace>/<name> or KIND/<name> (namespace default), "
                   "KIND one of svc, netpol, ingress, pod, deploy")
    common(p)
    p = add("scale", "set the number of replicas of a Deployment in a running scenario, as kubectl scale",
            "Set a Deployment's replicas. Its pods are named <deployment>-<index>: scaling up starts the next "
            "indexes (placed round-robin over the nodes by index, each with a new address), scaling down removes "
            "the highest ones. Services, DNS, SLB backends and NetworkPolicy follow.")
    p.add_argument("deployment", metavar="DEPLOYMENT", help="deploy/<namespace>/<name> or deploy/<name>")
    p.add_argument("--replicas", type=int, required=True, metavar="N", help="the number of pods wanted (0 or more)")
    common(p)
    for name, verb in (("stop-server", "stop"), ("start-server", "start")):
        p = add(name, f"{verb} the server of a pod or ECS instance, or a node's health check server",
                f"{verb.capitalize()} what runs in an endpoint: its server (connections to it are refused while "
                "it is stopped), or with --program nodehealth a node's kube-proxy health check server (SLB "
                "health checks against the node fail while it is stopped)." +
                (" Waits until it listens again." if verb == "start" else ""))
        p.add_argument("endpoint", metavar="ENDPOINT",
                       help="pod/<namespace>/<name>, pod/<name>, ecs/<name> or node/<name>")
        p.add_argument("--program", choices=("server", "nodehealth"), default="server",
                       help="which program (default: server)")
        common(p)
    p = add("label", "set or remove labels of a pod or a namespace in a running scenario, as kubectl label",
            "Set (KEY=VALUE) or remove (KEY-) labels of a pod or a namespace. Service endpoints and "
            "NetworkPolicy (pod and namespace selectors) follow.")
    p.add_argument("target", metavar="TARGET", help="pod/<namespace>/<name> or namespace/<name>")
    p.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-", help="labels to set, or to remove (KEY-)")
    common(p)
    p = add("matrix", "probe the reachability matrix of a running scenario",
            "Expected (from the scenario as it now is) and observed reachability between every pair of the "
            "chosen endpoints and ports, probed in parallel. Exit 1 on any difference.")
    p.add_argument("--between", default="pods", metavar="LIST",
                   help="groups (pods, ecs, nodes, services), references or patterns, comma-separated (default: pods)")
    p.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    p.add_argument("--ports", default="80", metavar="LIST", help="e.g. 80,81/udp (default: 80, TCP and UDP)")
    p.add_argument("--probe-timeout", type=float, default=1.0, metavar="S", help="per probe (default: 1 s)")
    common(p)
    p = add("status", "show a running scenario: the controller and every Service with its endpoints",
            "Show the controller's status (bridges programmed, flows, groups, packet-ins, errors), every "
            "Service with its ClusterIP, ports and endpoints, and each SLB's backends as its health checker sees them.")
    common(p)


def _control_command(fn):
    """Run a control subcommand: the run's errors become messages and exit codes."""
    import functools

    @functools.wraps(fn)
    def wrapper(args) -> int:
        from rich.markup import escape

        from .control import ControlError
        try:
            return fn(args)
        except ControlError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            for p in exc.problems:         # one line each, never wrapped, as the scenario loader's
                sys.stderr.write(f"  {p}\n")
            return EXIT_USAGE if exc.kind == "usage" else EXIT_RUNTIME
    return wrapper


def _client(args):
    from .control import ControlClient
    return ControlClient(args.run, timeout=args.timeout)


def _changed(client, headline: str, reply, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"run": client.run, "result": reply.result, "changes": list(reply.changes),
                          "took_s": round(reply.took_s, 4)}, indent=1))
        return EXIT_OK
    out.print(f"{headline} (run {client.run})", markup=False)
    for line in reply.changes:
        out.print(f"  {line}", markup=False)
    times = reply.result if isinstance(reply.result, dict) else {}
    if "flows_updated_s" in times:
        if not reply.changes:
            out.print("  no Service changed")
        flows, cached = times["flows_updated_s"], times.get("datapath_s", 0.0)
        out.print(f"flows programmed in {flows * 1000:.0f} ms ({flows:.2f} of kube-proxy's 1 s minimum sync "
                  f"period), in the datapath's flow cache in {cached * 1000:.0f} ms")
        if times.get("controller"):
            out.print(f"note: since the last change, {times['controller']}", markup=False)
    else:
        out.print(f"done in {reply.took_s * 1000:.0f} ms")
    return EXIT_OK


@_control_command
def cmd_ready(args) -> int:
    ready = args.state == "true"
    client = _client(args)
    reply = client.request("set_ready", args.pod, ready)
    return _changed(client, f"{args.pod} marked {'ready' if ready else 'not ready'}", reply, args.json)


@_control_command
def cmd_apply(args) -> int:
    from .control import read_manifests
    try:
        objects = read_manifests(args.filename)
    except ScenarioError as exc:
        console.print(f"[red]invalid manifest[/red] ({len(exc.problems)} problem(s)); nothing was applied:")
        for p in exc.problems:
            sys.stderr.write(f"  {p}\n")
        return EXIT_USAGE
    client = _client(args)
    reply = client.request("apply", *objects, origin=", ".join(args.filename))
    return _changed(client, f"applied {len(objects)} object(s) from {', '.join(args.filename)}", reply, args.json)


@_control_command
def cmd_delete(args) -> int:
    from .control import DELETERS, ControlError
    kind, _, name = args.object.partition("/")
    if kind not in DELETERS or not name:
        raise ControlError(f"cannot delete {args.object!r}: expected " +
                           " or ".join(f"{k}/<namespace>/<name>, {k}/<name>" for k in DELETERS), "usage")
    client = _client(args)
    reply = client.request(DELETERS[kind], args.object)
    return _changed(client, f"{args.object} deleted", reply, args.json)


@_control_command
def cmd_scale(args) -> int:
    from .control import ControlError
    if args.replicas < 0:
        raise ControlError(f"--replicas {args.replicas}: expected 0 or more", "usage")
    client = _client(args)
    reply = client.request("scale", args.deployment, args.replicas)
    return _changed(client, f"{args.deployment} scaled to {args.replicas}", reply, args.json)


def label_changes(items: list[str], error) -> dict[str, str | None]:
    """`KEY=VALUE` sets, `KEY-` removes, as `kubectl label` reads them."""
    key_value = [item.split("=", 1) if "=" in item else (item[:-1], None) if item.endswith("-") else ("", None)
                 for item in items]
    for item, (key, _) in zip(items, key_value):
        if not key:
            raise error(f"label {item!r}: expected KEY=VALUE to set or KEY- to remove", "usage")
    return dict(key_value)


@_control_command
def cmd_label(args) -> int:
    from .control import ControlError
    if args.run and "/" in args.run:            # no RUN given: argparse took the target for it
        args.labels, args.target, args.run = [args.target, *args.labels], args.run, None
    client = _client(args)
    reply = client.request("label", args.target, label_changes(args.labels, ControlError))
    return _changed(client, f"{args.target} labelled {' '.join(args.labels)}", reply, args.json)


@_control_command
def cmd_matrix(args) -> int:
    from .control import ControlError
    from .matrix import Cell, Matrix, parse_ports, tables
    try:
        ports = parse_ports([args.ports])
    except KubevpcError as exc:
        raise ControlError(str(exc), "usage") from None
    client = _client(args)
    reply = client.request("matrix", args.between.split(","), [list(p) for p in ports],
                           args.to.split(",") if args.to else None, args.probe_timeout)
    doc = reply.result
    if args.json:
        print(json.dumps({"run": client.run, **doc}, indent=1))
    else:
        cells = [Cell(**{k: v for k, v in c.items() if k != "differs"}) for c in doc["cells"]]
        m = Matrix(doc["sources"], doc["destinations"], [(p["port"], p["protocol"]) for p in doc["ports"]], cells,
                   doc["mode"], doc["probe_s"])
        for item in tables(m):
            out.print(item)
    return EXIT_CHECKS if doc["differences"] else EXIT_OK


@_control_command
def cmd_stop_server(args) -> int:
    client = _client(args)
    reply = client.request("stop_server", args.endpoint, program=args.program)
    return _changed(client, f"the {args.program} of {args.endpoint} stopped", reply, args.json)


@_control_command
def cmd_start_server(args) -> int:
    client = _client(args)
    reply = client.request("start_server", args.endpoint, program=args.program)
    return _changed(client, f"the {args.program} of {args.endpoint} started and listening", reply, args.json)


@_control_command
def cmd_status(args) -> int:
    d = _client(args).call("describe")
    if args.json:
        print(json.dumps(d, indent=1))
        return EXIT_OK
    for line in status_lines(d):
        out.print(line, markup=False)
    t = Table(title="Services")
    for col in ("service", "type", "ClusterIP", "ports", "ready endpoints", "not ready", "policies"):
        t.add_column(col, overflow="fold")
    for s in d["services"]:
        ports = ", ".join(f"{p['port']}/{p['protocol']}→{p['target_port']}"
                          + (f" :{p['node_port']}" if p["node_port"] else "") for p in s["ports"])
        eps = lambda ready: ", ".join(f"{e['name']} {e['ip']}"  # noqa: E731
                                      for e in s["endpoints"] if e["ready"] is ready)
        policies = [f"affinity ClientIP {s['affinity_timeout']} s"] if s["session_affinity"] else []
        policies += [f"{k} Local" for k in ("external", "internal") if s[f"{k}_traffic_policy"] == "Local"]
        t.add_row(s["key"], s["type"] + (" headless" if s["headless"] else ""), s["cluster_ip"] or "-", ports or "-",
                  eps(True) or "-", eps(False) or "-", "; ".join(policies) or "-")
    out.print(t)
    if d["slbs"]:
        t = Table(title="SLBs (backend status as the health checker last wrote it; in rotation as the "
                        "controller's plan has it)")
        for col in ("SLB", "VIP", "listener", "backend", "sends to", "status", "in rotation"):
            t.add_column(col, overflow="fold")
        for slb in d["slbs"]:
            for li in slb["listeners"]:
                for b in li["backends"]:
                    rotation = {True: "yes", False: "no"}.get(b.get("in_rotation"), "-")
                    t.add_row(slb["service"], slb["vip"], f"{li['port']}/{li['protocol']}", b["id"],
                              f"{b['ip']}:{b['port']}", b["status"], rotation)
        out.print(t)
    return EXIT_OK


def status_lines(d: dict) -> list[str]:
    """The head of `kubevpc status`: the run, the controller as the run sees it (running, dead or
    restarted), the bridges as Open vSwitch reports their connections, servers that do not run,
    and connections the controller refused."""
    st = d["controller"]
    bridges = st.get("bridges", {})
    connected = d.get("connected") or {}
    programmed = sum(1 for b in bridges.values()
                     if b.get("programmed") and b.get("plan_version") == st.get("plan_version"))
    sup = st.get("supervisor", {})
    alive = st.get("alive", True)
    head = f"controller pid {sup.get('pid', st.get('pid', '-'))}" + ("" if alive else " NOT RUNNING")
    lines = [f"run {d['run']}: {d['file']}, mode {d['mode'] or '-'}"]
    if d.get("controller_problem"):
        lines.append(f"controller: {d['controller_problem']}")
    lines.append(f"{head}, plan v{st.get('plan_version', 0)}: {programmed} of {len(bridges)} bridges programmed"
                 + (f", {sum(connected.values())} of {len(connected)} connected (as Open vSwitch last reported)"
                    if connected else "")
                 + f", {sum(b.get('flows', 0) for b in bridges.values())} flows, "
                 f"{sum(b.get('groups', 0) for b in bridges.values())} groups, "
                 f"{sum(b.get('packet_in', 0) for b in bridges.values())} packet-ins, "
                 f"errors: {'; '.join(st.get('errors', [])) or 'none'}")
    for r in st.get("refused", []):
        lines.append(f"REFUSED at {time.strftime('%H:%M:%S', time.localtime(r['time']))}: a connection from pid "
                     f"{r['pid']} (uid {r['uid']}) claiming datapath {r['dpid']}: {r['why']}")
    drops = d.get("drops") or {}
    if drops.get("error"):
        lines.append(f"drops: not read ({drops['error']})")
    for c in drops.get("top", []):
        lines.append(f"drop: {c['kind']} {c['name']}: {c['packets']} packets, {c['bytes']} bytes (on {c['bridge']})")
    down = [s for s in d.get("servers", []) if s["state"] != "running"]
    if down:
        lines.append(f"servers not running ({len(down)} of {len(d['servers'])}): " + "; ".join(
            f"{s['endpoint']} {s['program']} pid {s['pid']} {s['state']}" + (f" ({s['how']})" if s["how"] else "")
            for s in down))
    return lines


def _serve(lab):
    from .control import serve
    return serve(lab, _say)


def _stop_serving(control) -> None:
    if control is None:
        return
    try:
        control.stop()
    except KeyboardInterrupt:      # a second Ctrl-C must not skip the teardown that follows
        pass


CONTROL_COMMANDS = {"ready": cmd_ready, "apply": cmd_apply, "delete": cmd_delete, "label": cmd_label,
                    "matrix": cmd_matrix, "scale": cmd_scale, "stop-server": cmd_stop_server,
                    "start-server": cmd_start_server, "status": cmd_status}


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "flows": cmd_flows, "run": cmd_run, "check": cmd_check,
            "explain": cmd_explain, "trace": cmd_trace, "capture": cmd_capture, "graph": cmd_graph,
            "flowlog": cmd_flowlog,
            "clean": cmd_clean, "list": cmd_list, "perf": perf_bench.cmd_perf}
COMMANDS.update(CONTROL_COMMANDS)

if __name__ == "__main__":
    sys.exit(main())
