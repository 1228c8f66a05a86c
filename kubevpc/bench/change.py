"""Benchmark (not a test): how fast a running scenario follows a change, and how fast an SLB
fails over, on tests/e2e/data/services.yaml in each pod network mode.

    make bench-change        # or: python -m kubevpc.bench.change --mode eni --repeat 10 --json

Changes, each repeated --repeat times: a pod marked not ready and ready again (`set_ready`), a
Service's selector changed and changed back, its session affinity switched off and on again
(`apply`), `set_ready` through the control channel, as `kubevpc ready` sends it, and the web
Deployment scaled from 2 to 3 replicas and back (`scale`). For each: the time until the
controller had programmed every bridge (barrier replies), and until Open vSwitch's revalidators
had brought the datapath's flow cache up to date, as the Lab measures them; compared with
kube-proxy's 1 s minimum sync period (`--iptables-min-sync-period`). Scaling up is timed from
the moment the new pod listens (how long it took to get there is a row of its own, as the
kubelet's part would be); scaling down also reports how long removing the pod took once no flow
sent to it.

Three more changes move traffic, and probes see when it really moves (kubevpc/bench/follow.py:
a new connection every 10 ms from client-1, each with its own deadline): a NetworkPolicy that
denies client-1's egress (probes to the web pod on another node stop connecting), the same
policy deleted (they connect again), and web-1 marked not ready (probes to the Service web stop
reaching it). The time from the change until the probes behave the new way is "datapath
follows"; a change they do not follow within 5 s is a failure.

The run ends with issue 21's targets judged (kubevpc/bench/verdicts.py): change to flows
programmed, p99 of every change of the mode, at most 100 ms; change to datapath follows, p99
of the three changes above, at most 150 ms. A change that failed makes its target not met.

SLB failover, repeated --failovers times: a backend's health check target stops (a node's
kube-proxy health check server for the Local-policy SLB web-lb-local, or in eni mode the pod
web-0's server behind web-lb). Measured from the stop until the health checker's state file says
`unhealthy`, and until no vSwitch of the VPC has the backend in the listener's select group;
then how long the restart took until it listened, and from then until `healthy` and until it
is back in every group.
The targets are unhealthy-threshold x interval + interval (and healthy-threshold x interval +
interval for recovery), read from the SLB's plan.

The machine has 2 cores shared with whatever else runs: read the spread, not only the medians.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

from controller.pipeline import VSWITCH
from kubevpc.bench.follow import Follower, connects, not_answered_by
from kubevpc.bench.verdicts import AT_MOST, Verdict, judge, ms, percentile, table as verdict_table
from kubevpc.control import ControlClient, serve
from kubevpc.errors import KubevpcError
from kubevpc.lab import Lab

SCENARIO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e", "data",
                                         "services.yaml"))
MODES = ("vxlan", "vpc-route", "eni")
KUBE_PROXY_MIN_SYNC_S = 1.0
POLL_S = 0.01
FLOWS_TARGET_S = 0.100          # issue 21: change -> flows programmed, p99
FOLLOWS_TARGET_S = 0.150        # issue 21: change -> datapath follows, p99

EMPTY = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
         "spec": {"selector": {"app": "nothing"}, "ports": [{"name": "tcp", "port": 80},
                                                           {"name": "udp", "port": 53, "protocol": "UDP"}]}}
DENY_EGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "bench-follow", "namespace": "default"},
               "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}}
STICKY = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
          "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3}},
                   "ports": [{"port": 80, "targetPort": 8080}]}}


def with_spec(obj: dict, **spec) -> dict:
    return {**obj, "spec": {**obj["spec"], **spec}}


def without(obj: dict, *keys: str) -> dict:
    return {**obj, "spec": {k: v for k, v in obj["spec"].items() if k not in keys}}


# ------------------------------------------------------------------------------------ changes
def measure_changes(lab: Lab, repeat: int, say) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """({measurement: [{"flows_updated_s": ..., "datapath_s": ...}, ...]}, {measurement: [errors]}).
    A change that fails (the controller did not program it in time) is counted, and the run's logs
    are kept (see keep_logs); the others go on."""
    rows: dict[str, list[dict]] = {}
    failed: dict[str, list[str]] = {}
    server = serve(lab)
    client = ControlClient(lab.run, timeout=60)

    def via_channel(ready: bool) -> dict:
        t0 = time.monotonic()
        result = client.set_ready("pod/web-1", ready)
        return {**result, "answer_s": time.monotonic() - t0}
    steps = [("set_ready false", lambda: lab.set_ready("pod/web-1", False)),
             ("set_ready true", lambda: lab.set_ready("pod/web-1", True)),
             ("apply: selector changed", lambda: lab.apply(with_spec(EMPTY, selector={"app": "web"}))),
             ("apply: selector changed back", lambda: lab.apply(EMPTY)),
             ("apply: affinity off", lambda: lab.apply(without(STICKY, "sessionAffinity", "sessionAffinityConfig"))),
             ("apply: affinity on", lambda: lab.apply(STICKY)),
             ("set_ready via control channel", lambda: via_channel(False)),
             ("set_ready via control channel", lambda: via_channel(True)),
             ("scale web 2 -> 3", lambda: lab.scale("deploy/default/web", 3)),
             ("scale web 3 -> 2", lambda: lab.scale("deploy/default/web", 2)),
             *follow_steps(lab)]
    try:
        for i in range(repeat):
            say(f"  changes {i + 1}/{repeat}")
            for name, step in steps:
                try:
                    rows.setdefault(name, []).append(result := step())
                    if result.get("follow_error"):
                        say(f"  {name}: {result['follow_error']}")
                except KubevpcError as exc:
                    failed.setdefault(name, []).append(str(exc))
                    say(f"  {name} failed: {exc}; logs kept in {keep_logs(lab)}")
    finally:
        if server is not None:
            server.stop()
    return rows, failed


def follow_steps(lab: Lab) -> list[tuple[str, object]]:
    """The changes that move traffic, each with probes from client-1 that see when it moves
    (kubevpc/bench/follow.py): a policy denying client-1's egress to the web pod on another node,
    deleted again, and web-1 taken out of the Service web (then put back, unprobed)."""
    client = lab.host("pod/client-1")
    far = next(h for h in lab.plan.pods if h.app == "server" and h.labels.get("app") == "web"
               and h.node != client.node)
    gone = lab.host("pod/web-1")
    to_pod = lambda: Follower(lab, client.key, far.ip, 8080)  # noqa: E731
    to_service = lambda: Follower(lab, client.key, lab.service("web").cluster_ip, 80)  # noqa: E731
    return [(f"follow: policy denies client-1 -> {far.name}",
             lambda: to_pod().measure(lambda: lab.apply(DENY_EGRESS), connects(before=True))),
            (f"follow: policy deleted, client-1 -> {far.name}",
             lambda: to_pod().measure(lambda: lab.delete("netpol/default/bench-follow"), connects(before=False))),
            ("follow: web-1 not ready, client-1 -> Service web",
             lambda: to_service().measure(lambda: lab.set_ready(gone.key, False), not_answered_by(gone.name))),
            ("web-1 ready again", lambda: lab.set_ready(gone.key, True))]


def keep_logs(lab: Lab) -> str:
    """Copy the run's controller log, status and plan out of its directory, which teardown removes."""
    where = os.path.join(tempfile.gettempdir(), f"kubevpc-bench-{lab.run}")
    os.makedirs(where, exist_ok=True)
    for path in (lab.net.rundir.controller_log, lab.net.rundir.status, lab.net.rundir.plan, lab.net.rundir.servers_log):
        try:
            shutil.copy(path, where)
        except OSError:
            pass
    return where


# ----------------------------------------------------------------------------------- failover
def failover_case(lab: Lab):
    """(SLB plan, backend, endpoint to stop, program) for this mode."""
    if lab.plan.cluster.mode == "eni":          # the pods are the backends
        service, backend, endpoint, program = "default/web-lb", "pod/default/web-0", "pod/web-0", "server"
    else:                                       # the nodes are, judged by their health check port (policy Local)
        service, backend, endpoint, program = "default/web-lb-local", "node-1", "node/node-1", "nodehealth"
    slb = next(s for s in lab.plan.slbs if s.service == service)
    listener = slb.listeners[0]
    b = next(b for b in listener.backends if b.id == backend)
    return slb, listener, b, endpoint, program


def checker_status(lab: Lab, slb, listener, b) -> str:
    try:
        with open(lab.net.rundir.slb_state(slb.service), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return "unknown"
    return doc.get("listeners", {}).get(listener.name, {}).get(f"{b.ip}:{b.check_port}", {}).get("status", "unknown")


BUCKET = re.compile(r"set_field:(0x[0-9a-f]+|\d+)->reg2,set_field:(0x[0-9a-f]+|\d+)->reg3")


def ofctl(*args: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


def in_groups(lab: Lab, slb, listener, b) -> tuple[bool, ...]:
    """Per vSwitch bridge of the SLB's VPC: does the listener's select group send to the backend?
    The group is the one the listener's flow (VIP and port, in the vSwitch's SLB table) points to;
    without a healthy backend that flow drops and there is no group."""
    vpc = lab.plan.vswitch(slb.vswitch).vpc
    want = (int(ipaddress.IPv4Address(b.ip)), b.port)
    listener_flow = re.compile(rf"nw_dst={re.escape(slb.vip)}\b.*tp_dst={listener.port}\b.*group:(\d+)")
    out = []
    for v in lab.plan.vswitches:
        if v.vpc != vpc:
            continue
        m = listener_flow.search(ofctl("dump-flows", v.bridge, f"table={VSWITCH.table('slb')}"))
        if m is None:
            out.append(False)
            continue
        group = next((line for line in ofctl("dump-groups", v.bridge).splitlines()
                      if f"group_id={m.group(1)}," in line), "")
        out.append(any((int(ip, 0), int(port, 0)) == want for ip, port in BUCKET.findall(group)))
    return tuple(out)


def wait_until(what: str, test, deadline: float, t0: float) -> float:
    """Seconds from t0 until test() holds; fails after the deadline (seconds from now)."""
    end = time.monotonic() + deadline
    while not test():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {deadline:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic() - t0


def measure_failover(lab: Lab, repeat: int, say) -> tuple[dict[str, list[float]], dict]:
    slb, listener, b, endpoint, program = failover_case(lab)
    check = slb.check
    interval = float(check["interval"])
    targets = {"down": check["unhealthy_threshold"] * interval + interval,
               "up": check["healthy_threshold"] * interval + interval}
    info = {"slb": slb.service, "listener": listener.name, "backend": b.id, "stopped": f"{program} of {endpoint}",
            "check": check, "target_down_s": targets["down"], "target_up_s": targets["up"]}
    status = lambda: checker_status(lab, slb, listener, b)  # noqa: E731
    rows: dict[str, list[float]] = {}
    wait_until("the backend healthy and in every group before the first stop",
               lambda: status() == "healthy" and all(in_groups(lab, slb, listener, b)), 30, time.monotonic())
    for i in range(repeat):
        say(f"  failover {i + 1}/{repeat}: stopping the {program} of {endpoint}")
        t0 = time.monotonic()
        lab.stop_server(endpoint, program)
        marks: dict[str, float] = {}

        def down() -> bool:
            if "unhealthy" not in marks and status() == "unhealthy":
                marks["unhealthy"] = time.monotonic() - t0
            if "out" not in marks and not any(in_groups(lab, slb, listener, b)):
                marks["out"] = time.monotonic() - t0
            return len(marks) == 2
        wait_until("failover", down, targets["down"] + 15, t0)
        t1 = time.monotonic()
        lab.start_server(endpoint, program)       # returns once it listens
        t2 = time.monotonic()
        marks_up: dict[str, float] = {}

        def up() -> bool:
            if "healthy" not in marks_up and status() == "healthy":
                marks_up["healthy"] = time.monotonic() - t2
            if "in" not in marks_up and all(in_groups(lab, slb, listener, b)):
                marks_up["in"] = time.monotonic() - t2
            return len(marks_up) == 2
        wait_until("recovery", up, targets["up"] + 15, t2)
        for name, value in (("stop -> checker says unhealthy", marks["unhealthy"]),
                            ("stop -> out of every select group", marks["out"]),
                            ("start -> listening again", t2 - t1),
                            ("listening -> checker says healthy", marks_up["healthy"]),
                            ("listening -> back in every select group", marks_up["in"])):
            rows.setdefault(name, []).append(value)
    return rows, info


# ------------------------------------------------------------------------------------- report
def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    if not s:
        return {"n": 0, "median": None, "p90": None, "min": None, "max": None}
    p90 = statistics.quantiles(s, n=10, method="inclusive")[8] if len(s) > 1 else s[0]
    return {"n": len(s), "median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1]}


FIELDS = (("pods_started_s", "new pod listening"), ("flows_updated_s", "flows programmed"),
          ("datapath_s", "datapath flow cache"), ("follows_s", "datapath follows (probes)"),
          ("pods_removed_s", "old pod removed"), ("answer_s", "answer to the client"))


def _change_rows(name: str, samples: list[dict], failed: int) -> list[dict]:
    """The rows of one change: a row a measurement it has. A change whose probes did not see the
    datapath follow (follows_s None) counts as failed in that row."""
    rows = []
    for field, label in FIELDS:
        values = [x[field] for x in samples if x.get(field) is not None]
        unfollowed = sum(1 for x in samples if field in x and x[field] is None)
        timed = field in ("flows_updated_s", "datapath_s")
        if field == "follows_s" and (values or unfollowed):
            rows.append({"measurement": f"{name}: {label}", **stats(values), "failed": failed + unfollowed,
                         "target_s": FOLLOWS_TARGET_S, "target": "issue 21: p99 150 ms"})
        elif values or (failed and timed):
            rows.append({"measurement": f"{name}: {label}", **stats(values), "failed": failed,
                         "target_s": KUBE_PROXY_MIN_SYNC_S if timed or field == "answer_s" else 0,
                         "target": "kube-proxy min sync 1 s" if timed or field == "answer_s" else "-"})
    return rows


def summarize(results: dict) -> dict:
    """Per mode: rows of statistics, each with its target."""
    out = {}
    for mode, r in results.items():
        rows = []
        for name in dict.fromkeys([*r["changes"], *r["failed"]]):
            rows += _change_rows(name, r["changes"].get(name, []), len(r["failed"].get(name, [])))
        for name, values in r["failover"].items():
            target = r["failover_info"]["target_down_s" if name.startswith("stop") else "target_up_s"]
            rows.append({"measurement": f"SLB {name}", **stats(values), "failed": 0, "target_s": target,
                         "target": "-" if name == "start -> listening again" else "threshold x interval + interval"})
        out[mode] = rows
    return out


def verdicts(results: dict) -> list[Verdict]:
    """Issue 21's targets per mode: every change's time to flows programmed (p99 <= 100 ms), and
    the probed changes' time until the datapath follows (p99 <= 150 ms). A failed change, or one
    whose probes never saw the new behaviour, makes its target not met whatever the others gave."""
    out = []
    for mode, r in results.items():
        samples = [x for xs in r["changes"].values() for x in xs]
        failed = sum(len(v) for v in r["failed"].values())
        flows = [x["flows_updated_s"] for x in samples if x.get("flows_updated_s") is not None]
        probed = [x for x in samples if "follows_s" in x]
        follows = [x["follows_s"] for x in probed if x["follows_s"] is not None]
        unfollowed = len(probed) - len(follows)
        failed_probed = sum(len(v) for k, v in r["failed"].items() if k.startswith("follow:"))
        out.append(_p99(f"{mode}: change -> flows programmed, p99 <= 100 ms", flows, FLOWS_TARGET_S,
                        f"{failed} change(s) failed" if failed else ""))
        why = "; ".join(x for x in (f"{unfollowed} not followed within the deadline" if unfollowed else "",
                                    f"{failed_probed} probed change(s) failed" if failed_probed else "") if x)
        out.append(_p99(f"{mode}: change -> datapath follows (probes), p99 <= 150 ms", follows, FOLLOWS_TARGET_S, why))
    return out


def _p99(target: str, values: list[float], limit: float, why_not: str) -> Verdict:
    p99 = percentile(values, 99)
    shown = f"{ms(p99)} (median {ms(statistics.median(values))}, n={len(values)})" if values else "-"
    return judge(target, p99, limit, AT_MOST, shown, why_not=why_not)


def print_table(summary: dict, results: dict, repeat: int, failovers: int) -> None:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    for mode, rows in summary.items():
        info = results[mode]["failover_info"]
        t = Table(title=f"{mode}: change to flows ({repeat} repetitions) and SLB failover ({failovers}); "
                        f"{info['stopped']} ({info['slb']}, interval {info['check']['interval']} s, "
                        f"thresholds {info['check']['unhealthy_threshold']}/{info['check']['healthy_threshold']})")
        for col in ("measurement", "n", "failed", "median ms", "p90 ms", "min ms", "max ms", "target ms",
                    "median / target"):
            t.add_column(col, justify="left" if col == "measurement" else "right")
        for row in rows:
            ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
            ratio = f"{row['median'] / row['target_s']:.2f}" if row["target"] != "-" and row["n"] else "-"
            t.add_row(row["measurement"], str(row["n"]), str(row["failed"] or ""), ms(row["median"]), ms(row["p90"]),
                      ms(row["min"]), ms(row["max"]), ms(row["target_s"]) if row["target"] != "-" else "-", ratio)
        console.print(t)
    console.print("targets: changes against kube-proxy's 1 s minimum sync period; SLB failover against "
                  "unhealthy-threshold x interval + interval, recovery against healthy-threshold x interval + "
                  "interval. A noisy 2-core machine: the spread matters as much as the median.")
    console.print(verdict_table(verdicts(results), "issue 21's targets, this run"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubevpc.bench.change", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, action="append", help="only this mode (may repeat; default: all three)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions of each change (default 5)")
    ap.add_argument("--failovers", type=int, default=3, help="repetitions of the SLB failover (default 3)")
    ap.add_argument("--scenario", default=SCENARIO, help="a scenario with the Services of tests/e2e/data/services.yaml")
    ap.add_argument("--json", action="store_true", help="print the samples and statistics as JSON instead of tables")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root")
    if args.repeat < 1 or args.failovers < 1:
        ap.error("--repeat and --failovers must be at least 1")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    say = lambda s: err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {s}")  # noqa: E731
    results = {}
    for mode in args.mode or MODES:
        lab = Lab(args.scenario, mode=mode)
        say(f"{mode}: building {args.scenario} (run {lab.run})")
        try:
            lab.up()
            say(f"{mode}: up in {lab.timings['up']:.1f} s")
            changes, failed = measure_changes(lab, args.repeat, say)
            failover, info = measure_failover(lab, args.failovers, say)
            results[mode] = {"changes": changes, "failed": failed, "failover": failover, "failover_info": info,
                             "up_s": lab.timings["up"]}
        finally:
            lab.down()
    summary = summarize(results)
    if args.json:
        print(json.dumps({"scenario": args.scenario, "repeat": args.repeat, "failovers": args.failovers,
                          "results": results, "summary": summary,
                          "targets": [v.as_dict() for v in verdicts(results)]}, indent=1))
    else:
        print_table(summary, results, args.repeat, args.failovers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
