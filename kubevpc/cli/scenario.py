"""The commands about a scenario file, nothing built: validate, plan, flows, explain, graph (graph
also draws a live run's plan)."""
from __future__ import annotations

import os
import sys

from rich.markup import escape
from rich.table import Table

from controller.compile import compile_plan
from controller.policy import SHARED, policy_flow_counts

from ..control import ControlClient, ControlError
from ..errors import KubevpcError, ScenarioError
from ..evaluator.explain import explain, lines, verdict_word
from ..evaluator.matrix import (
    Cell,
    Matrix,
    expected_matrix,
    parse_ports,
    select,
    tables,
)
from ..evaluator.matrix import render as render_matrix
from ..k8s.bandwidth import describe_bits
from ..ledger import RUN_NAME
from ..observe.graph import build, render
from .common import (
    EXIT_CHECKS,
    EXIT_OK,
    EXIT_USAGE,
    MODES,
    console,
    live_run,
    out,
    run_plan,
    say,
    scenario_args,
    scenario_plan,
)
from .output import add_output, emit


def add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a scenario without building anything")
    scenario_args(p)
    add_output(p, help="table (default: one line), json or yaml: ok, the counts, and each problem (file, line, "
               "path, value, expected)")


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="print the address plan of a scenario without building it")
    scenario_args(p)
    add_output(p, json_alias=True, help="table (default), json or yaml: the whole plan")


def add_flows(sub) -> None:
    p = sub.add_parser("flows", help="print the flows the controller would install, in ovs-ofctl syntax")
    scenario_args(p)
    p.add_argument("--bridge", help="only this bridge (role or name suffix, e.g. vs0, n1, vr0)")
    add_output(p, help="table (default: ovs-ofctl syntax), json or yaml: per bridge, its flows (table, priority, "
               "cookie, match, actions, feature, note) and groups")


def add_explain(sub) -> None:
    p = sub.add_parser("explain", help="why a connection would or would not work, as the chain the evaluator "
                       "followed (nothing is built)",
                       description="Explain one connection without building anything: the route table entry, "
                       "the security group rules (egress of the source, ingress of the destination), NAT and "
                       "EIPs, a Service's DNAT and its endpoints, NetworkPolicy, and the client address the "
                       "server sees, from kubevpc's evaluator (written independently of the flows). With "
                       "--matrix, the static reachability matrix instead. Exit codes: 0 it connects (or the "
                       "matrix printed); 1 it does not, or it depends on the endpoint; 2 bad usage or an "
                       "invalid scenario.")
    scenario_args(p)
    p.add_argument("source", nargs="?", metavar="SRC", help="pod/<ns>/<name>, ecs/<name>, node/<name> or inet/<name>")
    p.add_argument("dest", nargs="?", metavar="DST",
                   help="an endpoint as SRC, svc/<ns>/<name> (ClusterIP), slb/<ns>/<name> (intranet SLB), "
                        "eip/<name>, node/<name> with a NodePort, or an address any of these hold (IPv6 too, "
                        "in a dual-stack scenario)")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]", help="e.g. 5432 or 53/udp (default protocol tcp)")
    p.add_argument("-6", dest="family", action="store_const", const=6, default=4,
                   help="to DST's IPv6 address (dual stack; an IPv6 literal DST implies it)")
    p.add_argument("-o", "--output", choices=("table", "text", "json", "yaml", "csv", "md", "dot"), default=None,
                   help="table (default; text is the same), json or yaml for one connection; "
                   "table (default), json, yaml, csv, md or dot for --matrix")
    m = p.add_argument_group("static reachability matrix (instead of one connection)")
    m.add_argument("--matrix", action="store_true", help="every pair of the chosen endpoints and ports, as the "
                   "evaluator expects them")
    m.add_argument("--between", default="pods", metavar="LIST", help="as `kubevpc check --matrix` (default: pods)")
    m.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    m.add_argument("--ports", default="80", metavar="LIST", help="e.g. 80,81/udp (default: 80, TCP and UDP)")


def add_graph(sub) -> None:
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


def cmd_validate(args) -> int:
    try:
        plan = scenario_plan(args.file, args.mode, args.allow_dirs)
    except ScenarioError as exc:
        if args.output != "table":      # the document on stdout; the problems on stderr too, as always
            emit(validation(args.file, None, exc.problems), args.output)
        raise
    if args.output != "table":
        emit(validation(args.file, plan, []), args.output)
        return EXIT_OK
    mode = plan.cluster.mode if plan.cluster else "no cluster"
    out.print(f"{args.file}: valid ({len(plan.vpcs)} VPC, {len(plan.vswitches)} vSwitches, "
              f"{len(plan.instances)} ECS, {len(plan.nodes)} nodes, {len(plan.pods)} pods, mode {mode})")
    return EXIT_OK


def validation(file: str, plan, problems: list) -> dict:
    """`kubevpc validate -o json|yaml`: ok, the mode, what the scenario holds, and every problem
    with where it is (file, line, dotted path), the value and what was expected."""
    return {"file": file, "ok": plan is not None,
            "mode": (plan.cluster.mode if plan.cluster else None) if plan is not None else None,
            "counts": None if plan is None else {
                "vpcs": len(plan.vpcs), "vswitches": len(plan.vswitches), "instances": len(plan.instances),
                "nodes": len(plan.nodes), "pods": len(plan.pods), "services": len(plan.services)},
            "problems": [{"file": p.file, "line": p.line, "path": p.path, "value": p.value, "expected": p.expected}
                         for p in problems]}


def cmd_plan(args) -> int:
    plan = scenario_plan(args.file, args.mode, args.allow_dirs)
    if args.output == "json":
        print(plan.model_dump_json(indent=1))       # byte for byte what --json always printed
        return EXIT_OK
    if args.output == "yaml":
        emit(plan.model_dump(mode="json"), "yaml")
        return EXIT_OK
    for table in (_address_table(args.file, plan), _bandwidth_table(plan), _route_table(plan), _peering_table(plan),
                  _eip_table(plan), _nat_table(plan)):
        if table is not None:
            out.print(table)
    return EXIT_OK


def _table(title: str, *cols: str) -> Table:
    t = Table(title=title)
    for col in cols:
        t.add_column(col)
    return t


def _address_table(file: str, plan) -> Table:
    """Every host's address, gateway, MAC, vSwitch, node and groups (and IPv6 address when any has one)."""
    dual = any(h.ipv6 for h in plan.hosts)
    t = _table(f"address plan of {file} ({plan.cluster.mode if plan.cluster else 'no cluster'})", "endpoint",
               "address", *(("IPv6",) if dual else ()), "gateway", "MAC", "on", "node", "security groups")
    for h in plan.hosts:
        t.add_row(h.key, f"{h.ip}/{h.prefixlen}", *((h.ipv6 or "-",) if dual else ()), h.gateway, h.mac,
                  h.vswitch or ("host network" if h.host_network else "-"), h.node or "-",
                  ",".join(h.security_groups) or "-")
    return t


def _bandwidth_table(plan) -> Table | None:
    shaped = [h for h in plan.pods if h.ingress_bandwidth or h.egress_bandwidth]
    if not shaped:
        return None
    t = _table("pod bandwidth limits (kubernetes.io/ingress-bandwidth, egress-bandwidth)", "pod", "ingress", "egress")
    for h in shaped:
        t.add_row(h.key, describe_bits(h.ingress_bandwidth) if h.ingress_bandwidth else "-",
                  describe_bits(h.egress_bandwidth) if h.egress_bandwidth else "-")
    return t


def _route_table(plan) -> Table:
    t = _table("route tables", "VPC", "table", "destination", "kind", "next hop")
    for v in plan.vpcs:
        for name, routes in (("system", v.routes + v.routes6),
                             *((f"{rt.name} ({', '.join(rt.vswitches)})", rt.routes) for rt in v.route_tables)):
            for r in routes:
                t.add_row(v.name, name, r.destination, r.kind, r.next_hop or "local")
    return t


def _peering_table(plan) -> Table | None:
    if not plan.peerings:
        return None
    t = _table("peering connections", "name", "VPCs", "vRouter ports")
    for p in plan.peerings:
        t.add_row(p.name, " <-> ".join(p.vpcs), f"{p.ports[0]}, {p.ports[1]} (ofport {p.ofport})")
    return t


def _eip_table(plan) -> Table | None:
    if not plan.eips:
        return None
    t = _table("EIPs", "name", "address", "bound to", "private address")
    for e in plan.eips:
        t.add_row(e.name, e.ip, f"{e.bound} {e.target}" if e.bound else "nothing", e.private_ip or "-")
    return t


def _nat_table(plan) -> Table | None:
    """Each NAT gateway's SNAT and DNAT entries."""
    if not plan.nat_gateways:
        return None
    t = _table("NAT gateways", "gateway", "entry", "translates", "to")
    for g in plan.nat_gateways:
        for e in g.snat:
            t.add_row(g.name, "SNAT", f"{e.what} ({e.source})", e.public_ip)
        for d in g.dnat:
            port = "" if d.protocol == "any" else f":{d.internal_port}"
            t.add_row(g.name, f"DNAT {d.name}", d.what.removeprefix(f"DNAT entry {d.name} "),
                      f"{d.target or 'nothing now'} ({d.internal_ip}{port})" if d.internal_ip else "nothing now")
    return t


def cmd_flows(args) -> int:
    plan = scenario_plan(args.file, args.mode, args.allow_dirs)
    compiled = compile_plan(plan)
    if args.output != "table":
        emit(flows_document(args.file, plan, compiled, args.bridge), args.output)
        return EXIT_OK
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


def flows_document(file: str, plan, compiled: dict, only: str | None) -> dict:
    """`kubevpc flows -o json|yaml`: per bridge, its flows as records in the order `flows` prints
    them (cookie, match and actions in ovs-ofctl syntax) and its select groups."""
    bridges = []
    for name, fs in compiled.items():
        if only and not name.endswith(only):
            continue
        b = plan.bridge(name)
        flows = sorted(fs.flows, key=lambda f: (f.table, -f.priority, f.key_text()))
        bridges.append({"name": name, "role": b.role, "owner": b.owner, "flows": [
            {"table": f.table, "priority": f.priority, "cookie": f"{f.cookie:#x}", "match": f.match_ofctl(),
             "actions": f.actions_ofctl(), "feature": f.feature, "note": f.note} for f in flows],
            "groups": [{"group_id": g.group_id, "type": "select", "note": g.note, "buckets": [
                {"weight": bk.weight, "actions": ",".join(a.ofctl() for a in bk.actions)} for bk in g.buckets]}
                for _, g in sorted(fs.groups.items())]})
    doc = {"file": file, "mode": plan.cluster.mode if plan.cluster else None, "bridges": bridges}
    if plan.network_policies:
        counts = policy_flow_counts(plan.network_policies, [f for fs in compiled.values() for f in fs.flows
                                                            if not only or fs.bridge.endswith(only)])
        doc["networkpolicy_flows"] = {("shared" if k == SHARED else k): n for k, n in counts.items()}
    return doc


def cmd_explain(args) -> int:
    plan = scenario_plan(args.file, args.mode, args.allow_dirs)
    mode = plan.cluster.mode if plan.cluster else "no cluster"
    try:
        if args.matrix:
            if args.source or args.dest or args.port:
                raise KubevpcError("--matrix takes no SRC, DST or PORT: choose endpoints with --between and --to")
            if args.output == "text":
                raise KubevpcError("-o text is for one connection; --matrix prints table, json, yaml, csv, md or dot")
            sources = select(plan, args.between.split(","))
            dests = select(plan, args.to.split(",")) if args.to else sources
            m = expected_matrix(plan, sources, dests, parse_ports([args.ports]))
            if (args.output or "table") == "table":
                for item in tables(m):
                    out.print(item)
            elif args.output == "yaml":
                emit(m.as_dict(), "yaml")
            else:
                sys.stdout.write(render_matrix(m, args.output))
            return EXIT_OK
        if not (args.source and args.dest and args.port):
            raise KubevpcError("expected SRC DST PORT[/PROTO] (for example pod/default/web-0 ecs/ecs-db 5432/tcp), "
                               "or --matrix")
        if args.output not in (None, "table", "text", "json", "yaml"):
            raise KubevpcError(f"-o {args.output} is for --matrix; one connection prints table (text), json or yaml")
        port, _, proto = args.port.partition("/")
        if not port.isdigit() or not 1 <= int(port) <= 65535 or proto.lower() not in ("", "tcp", "udp"):
            raise KubevpcError(f"{args.port!r}: expected a port from 1 to 65535, optionally /tcp or /udp")
        e = explain(plan, args.source, args.dest, int(port), proto.lower() or "tcp", args.family)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.output in ("json", "yaml"):
        emit({"file": args.file, "mode": mode, **e.as_dict()}, args.output)
    else:
        out.print(f"{e.source} → {e.dest} {e.port}/{e.proto} in {args.file} (mode {mode}): "
                  f"{verdict_word(e.allowed).upper()}: {e.reason}", markup=False, soft_wrap=True)
        for line in lines(e):
            out.print(line, markup=False, soft_wrap=True)
    return EXIT_OK if e.allowed else EXIT_CHECKS


def cmd_graph(args) -> int:
    try:
        if os.path.exists(args.what) or not RUN_NAME.match(args.what):
            plan, run = scenario_plan(args.what, args.mode, args.allow_dirs), None
        else:
            run = live_run(args.what)
            plan = run_plan(run)
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
        say(f"wrote {args.output} to {args.write}")
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
    try:
        doc = ControlClient(run).call("matrix", sources, [list(p) for p in ports], dests, 1.0)
    except ControlError:
        return None
    cells = [Cell(**{k: v for k, v in c.items() if k != "differs"}) for c in doc["cells"]]
    return Matrix(doc["sources"], doc["destinations"], ports, cells, doc["mode"], doc["probe_s"])


COMMANDS = {"validate": (add_validate, cmd_validate), "plan": (add_plan, cmd_plan), "flows": (add_flows, cmd_flows),
            "explain": (add_explain, cmd_explain), "graph": (add_graph, cmd_graph)}
