"""The commands that look at runs without changing them: trace, capture and flowlog (of a live
run, as root), status and matrix (through its control channel), list and clean (every run on the
machine, from their ledgers)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time

from rich.markup import escape
from rich.table import Table

from ..control import ControlError
from ..errors import KubevpcError
from ..evaluator.explain import lines as explain_lines, verdict_word
from ..evaluator.matrix import Cell, Matrix, parse_ports, tables
from ..ledger import Ledger, NotARun, check_run_name, clean_run, leftovers, list_runs, owner_alive, owner_pid, run_dir
from ..observe.capture import TARGETS_HELP, capture, devices
from ..observe.flowlog import dump_learned, live_records, read_counters, read_records
from ..observe.trace import trace
from ..planning import PROXY_OFF_LABELS
from ..rundir import RunDir
from .channel import control_client, control_command, control_options, control_parser
from .common import (EXIT_CHECKS, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, console, live_run, out, run_plan, say,
                     slb_health)
from .junit import check_path, matrix_suite
from .junit import write as write_junit
from .output import add_output, emit


def add_trace(sub) -> None:
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
    p.add_argument("-o", "--output", choices=("text", "table", "json", "yaml"), default="text",
                   help="text (default; table is the same), json or yaml")
    p.add_argument("--brief", action="store_true", help="leave out the tables and flows of each hop")


def add_capture(sub) -> None:
    p = sub.add_parser("capture", help="capture packets of a running scenario as pcapng with interface names",
                       description="Capture the packets of a running scenario at a target, as pcapng with one "
                       "named interface per device (Wireshark and tcpdump show where each packet was seen). "
                       "The capture is recorded in the run's ledger and ends with the run. Needs root. Exit "
                       "codes: 0 done; 2 bad usage; 3 no such run, or the capture failed.")
    p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run)")
    p.add_argument("target", metavar="TARGET", help="what to capture at: " + TARGETS_HELP)
    p.add_argument("-w", "--write", metavar="FILE", help="the pcapng file, or - for standard output (to pipe into "
                   "wireshark -k -i - or tcpdump -r -); required when standard output is a terminal")
    p.add_argument("-c", "--count", type=int, default=0, metavar="N", help="stop after N packets (default: no limit)")
    p.add_argument("-d", "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (default: no limit)")
    p.add_argument("-f", "--filter", default="", metavar="BPF", help="a tcpdump filter expression, e.g. 'udp port 4789'")


def add_flowlog(sub) -> None:
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


def add_clean(sub) -> None:
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


def add_list(sub) -> None:
    p = sub.add_parser("list", help="list runs known on this machine")
    add_output(p, help="table (default), json or yaml: each run's name, state, owner pid and resources")


def add_matrix(sub) -> None:
    p = control_parser(sub, "matrix", "probe the reachability matrix of a running scenario",
                       "Expected (from the scenario as it now is) and observed reachability between every pair of the "
                       "chosen endpoints and ports, probed in parallel. Exit 1 on any difference.")
    p.add_argument("--between", default="pods", metavar="LIST",
                   help="groups (pods, ecs, nodes, services), references or patterns, comma-separated (default: pods)")
    p.add_argument("--to", metavar="LIST", help="destinations, the same way (default: as --between)")
    p.add_argument("--ports", default="80", metavar="LIST", help="e.g. 80,81/udp (default: 80, TCP and UDP)")
    p.add_argument("--probe-timeout", type=float, default=1.0, metavar="S", help="per probe (default: 1 s)")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE: a test case per cell, "
                   "the evaluator's reason as a failure's message")
    control_options(p)


def add_status(sub) -> None:
    p = control_parser(sub, "status", "show a running scenario: the controller and every Service with its endpoints",
                       "Show the controller's status (bridges programmed, flows, groups, packet-ins, errors), every "
                       "Service with its ClusterIP, ports and endpoints, and each SLB's backends as its health checker sees them.")
    control_options(p)


def cmd_trace(args) -> int:
    try:
        port, _, proto = args.port.partition("/")
        if not port.isdigit() or not 1 <= int(port) <= 65535 or proto.lower() not in ("", "tcp", "udp"):
            raise KubevpcError(f"{args.port!r}: expected a port from 1 to 65535, optionally /tcp or /udp")
        run = live_run(args.run)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    try:
        plan = run_plan(run)
        health = slb_health(run)
        t = trace(plan, args.source, args.dest, int(port), proto.lower() or "tcp", health)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.output in ("json", "yaml"):
        emit({"run": run, "mode": plan.cluster.mode if plan.cluster else None, **t.as_dict()}, args.output)
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


def cmd_capture(args) -> int:
    try:
        if args.count < 0 or args.duration < 0:
            raise KubevpcError("--count and --duration take 0 (no limit) or more")
        if args.write is None and sys.stdout.isatty():
            raise KubevpcError("pcapng is binary: give -w FILE, or -w - to pipe it (e.g. into tcpdump -r - or "
                               "wireshark -k -i -)")
        run = live_run(args.run)
        devs = devices(run_plan(run), args.target)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    Ledger(run).record("process", os.getpid(), token="capture")     # stopped with the run, like its own processes
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    to_stdout = args.write in (None, "-")
    out = sys.stdout.buffer if to_stdout else open(args.write, "wb")
    say(f"capturing in run {run} on " + "; ".join(f"{d.name} ({d.what})" for d in devs)
         + (f", filter {args.filter!r}" if args.filter else "") + "; Ctrl-C ends")
    try:
        n = capture(devs, out, args.count, args.duration, args.filter, stop=lambda: bool(stopping), say=say)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_RUNTIME
    except BrokenPipeError:
        return EXIT_OK
    finally:
        if not to_stdout:
            out.close()
    say(f"{n} packet(s) written to {'standard output' if to_stdout else args.write}")
    return EXIT_OK


def cmd_flowlog(args) -> int:
    try:
        run = live_run(args.run)
        plan = run_plan(run)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if args.rules:
        return _rule_counters(run, plan, args.output)
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
    return _follow(run, RunDir(state).flowlog, keep, args.output)


def _rule_counters(run: str, plan, output: str) -> int:
    """`kubevpc flowlog --rules`: what each security group rule and NetworkPolicy flow matched."""
    health = slb_health(run)
    try:
        counters = read_counters(plan, health)
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_RUNTIME
    if output == "json":
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


def _follow(run: str, path: str, keep, output: str) -> int:
    """`kubevpc flowlog --follow`: the records written from now on, until the run ends or Ctrl-C."""
    offset = os.path.getsize(path) if os.path.exists(path) else 0
    say(f"following {path}; Ctrl-C ends")
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
                    if output == "json":
                        print(json.dumps(r), flush=True)
                    else:
                        out.print(_flowlog_line(r), markup=False, soft_wrap=True)
    except KeyboardInterrupt:
        return EXIT_OK
    say(f"run {run} has ended")
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


def cmd_clean(args) -> int:
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
            counts = clean_run(run, say)
            out.print(f"{run}: removed " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing left"))
    except NotARun as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
    return EXIT_OK


def cmd_list(args) -> int:
    runs = list_runs()
    if args.output != "table":
        emit({"runs": [{"name": run, "state": "running" if owner_alive(run) else "leftover",
                        "owner_pid": owner_pid(run), "resources": len(Ledger(run).entries())} for run in runs]},
             args.output)
        return EXIT_OK
    if not runs:
        out.print("no runs")
    for run in runs:
        n = len(Ledger(run).entries())
        out.print(f"{run}: {'running' if owner_alive(run) else 'leftover (kubevpc clean)'}, {n} resources")
    return EXIT_OK

@control_command
def cmd_matrix(args) -> int:
    try:
        ports = parse_ports([args.ports])
    except KubevpcError as exc:
        raise ControlError(str(exc), "usage") from None
    if args.junit:
        try:
            check_path(args.junit)
        except KubevpcError as exc:
            raise ControlError(str(exc), "usage") from None
    client = control_client(args)
    started = time.time()
    reply = client.request("matrix", args.between.split(","), [list(p) for p in ports],
                           args.to.split(",") if args.to else None, args.probe_timeout)
    doc = reply.result
    if args.junit:
        write_junit(args.junit, [matrix_suite(doc, f"run {client.run}", started, {"run": client.run})])
        say(f"JUnit report: {args.junit}")
    if args.output != "table":
        emit({"run": client.run, **doc}, args.output)
    else:
        cells = [Cell(**{k: v for k, v in c.items() if k != "differs"}) for c in doc["cells"]]
        m = Matrix(doc["sources"], doc["destinations"], [(p["port"], p["protocol"]) for p in doc["ports"]], cells,
                   doc["mode"], doc["probe_s"])
        for item in tables(m):
            out.print(item)
    return EXIT_CHECKS if doc["differences"] else EXIT_OK


@control_command
def cmd_status(args) -> int:
    d = control_client(args).call("describe")
    if args.output != "table":
        emit(d, args.output)
        return EXIT_OK
    for line in status_lines(d):
        out.print(line, markup=False)
    t = Table(title="Services")
    for col in ("service", "type", "ClusterIP", "ports", "ready endpoints", "not ready", "policies"):
        t.add_column(col, overflow="fold")
    for s in d["services"]:
        ports = ", ".join(f"{p['port']}/{p['protocol']}→{p['target_port']}"
                          + (f" :{p['node_port']}" if p["node_port"] else "") for p in s["ports"])
        eps = lambda ready: ", ".join(  # noqa: E731
            f"{e['name']} {e['ip']}" + (" (terminating)" if e.get("terminating") else "")
            for e in s["endpoints"] if e["ready"] is ready)
        policies = [f"affinity ClientIP {s['affinity_timeout']} s"] if s["session_affinity"] else []
        policies += [] if s.get("proxied", True) else [
            "kube-proxy off: labelled " + ", ".join(k for k in PROXY_OFF_LABELS if k in s.get("labels", {}))]
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


COMMANDS = {"trace": (add_trace, cmd_trace), "capture": (add_capture, cmd_capture), "flowlog": (add_flowlog, cmd_flowlog),
            "clean": (add_clean, cmd_clean), "list": (add_list, cmd_list), "matrix": (add_matrix, cmd_matrix),
            "status": (add_status, cmd_status)}
