"""Benchmark (not a test): the reachability matrix of 100 pods on one port, 100 x 100 cells (the
9,900 pairs and each pod to itself), next to plain Mininet's pingall over as many hosts, measured
in the same run.

    make bench-matrix        # or: python -m kubevpc.bench.matrix --pods 100 --repeat 3

The scenario is generated (matrix_scenario): the bring-up benchmark's VPC and four nodes, the pods
in two namespaces, a and b, half each, all serving TCP 8080; a NetworkPolicy lets into b only
b's own pods, so a quarter of the cells (a to b) are refused by the policy and their probes run
out their deadline, as in a real matrix (--no-policy: every cell connects).

Each repetition is `Lab.matrix(["pods"], [(8080, "tcp")])`, what `kubevpc matrix` runs: the
evaluator's expectation of every cell, every cell probed from one process (kubevpc.probeloop:
each probe's socket made in its source's namespace, paced, a deadline a probe: --probe-timeout,
1 s as for `kubevpc matrix`), and the comparison. KUBEVPC_PROBE=per-source measures the way
before issue 21 (a probe process in each source namespace, every cell of a source at once);
KUBEVPC_PROBE_CAP and KUBEVPC_PROBE_WINDOW other pacings (kubevpc/lab/probing.py). The table's
title says which was measured. Reported: the whole matrix's time, the probing's, cells per second, and the cells
that differ from the evaluator (any makes the target not met: a fast wrong matrix is no matrix).

The reference: plain Mininet with as many hosts (--mininet-hosts; 0 leaves it out) on one
userspace Open vSwitch switch in standalone mode, and its pingAll, which pings one pair at a time
(about 160 s for 100 hosts here); pairs per second, and what the matrix's cells would take at
that pace.

Issue 21's target: 100 x 100 pods on one port within 10 s.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import yaml
from rich.console import Console
from rich.table import Table

from kubevpc.bench.bringup import generated_scenario
from kubevpc.bench.verdicts import AT_MOST, Verdict, judge, table as verdict_table
from kubevpc.lab import Lab
from kubevpc.lab.probing import probe_settings

MODES = ("vxlan", "vpc-route", "eni")
PORT = 8080
TARGET_S = 10.0                 # issue 21: 100 x 100 pods on one port
NAMESPACES = ("a", "b")


def matrix_scenario(pods: int, mode: str = "vxlan", policy: bool = True) -> dict:
    """`pods` pods (Deployment web in namespaces a and b, half each) on the bring-up benchmark's
    four nodes, serving TCP 8080; with `policy`, b admits only its own pods."""
    doc = generated_scenario(pods, 4)
    doc["name"] = f"matrix{pods}"
    doc["cluster"]["mode"] = mode
    manifests: list[dict] = []
    for i, ns in enumerate(NAMESPACES):
        replicas = pods // 2 + (pods % 2 if i == 0 else 0)
        manifests += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"side": ns}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
             "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                      "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                          {"name": "c", "ports": [{"name": "http", "containerPort": PORT}]}]}}}}]
    if policy:
        manifests.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                          "metadata": {"name": "only-b", "namespace": "b"},
                          "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}})
    doc["manifests"] = manifests
    return doc


# ------------------------------------------------------------------------------- measuring
def measure_matrix(lab: Lab, timeout: float) -> dict:
    """One matrix of every pod to every pod on PORT, timed whole and its probing alone."""
    t0 = time.monotonic()
    m = lab.matrix(["pods"], [(PORT, "tcp")], timeout=timeout)
    total = time.monotonic() - t0
    wrong = m.differences
    return {"cells": len(m.cells), "pairs": sum(1 for c in m.cells if c.source != c.dest), "total_s": total,
            "probe_s": m.probe_s, "connect": sum(1 for c in m.cells if c.observed),
            "expected_connect": sum(1 for c in m.cells if c.expected), "differ": len(wrong),
            "differ_examples": [f"{c.source} -> {c.dest}: expected {'connect' if c.expected else 'refuse'}, "
                                f"observed {c.outcome}" for c in wrong[:5]]}


def mininet_pingall(hosts: int) -> dict:
    """Plain Mininet: `hosts` hosts on one userspace switch in standalone mode (no controller), and
    its pingAll, timed: one `ping -c1` at a time, from every host to every other."""
    from mininet.net import Mininet
    from mininet.node import OVSSwitch
    from mininet.topo import Topo
    switch = functools.partial(OVSSwitch, datapath="user", failMode="standalone")
    topo = Topo()
    sw = topo.addSwitch("kvm0", dpid="0000000000006b6d")    # a name and dpid nothing else here uses
    for i in range(1, hosts + 1):
        topo.addLink(topo.addHost(f"h{i}"), sw)
    net = Mininet(topo=topo, switch=switch, controller=None, autoSetMacs=True, build=False, waitConnected=False)
    try:
        net.build()
        net.start()
        t0 = time.monotonic()
        loss = net.pingAll()
        took = time.monotonic() - t0
    finally:
        net.stop()
    pairs = hosts * (hosts - 1)
    return {"hosts": hosts, "pairs": pairs, "pingall_s": took, "pairs_per_s": pairs / took if took else None,
            "loss_percent": loss}


# ------------------------------------------------------------------------------- judging
def summary(runs: list[dict]) -> dict:
    """Medians of the repetitions, the slowest, and every differing cell counted."""
    total = statistics.median(r["total_s"] for r in runs)
    return {"cells": runs[0]["cells"], "pairs": runs[0]["pairs"], "total_s": total, "max_s": max(r["total_s"] for r in runs),
            "probe_s": statistics.median(r["probe_s"] for r in runs), "cells_per_s": runs[0]["cells"] / total,
            "differ": sum(r["differ"] for r in runs)}


def verdicts(pods: int, s: dict | None, ref: dict | None) -> list[Verdict]:
    """Issue 21's target: the whole matrix of `pods` x `pods` on one port within 10 s, with
    Mininet's sequential pingall as the reference of the same run."""
    target = f"reachability matrix, {pods} x {pods} pods on one port ({pods * (pods - 1):,} pairs), <= 10 s"
    if s is None:
        return [judge(target, None, TARGET_S)]
    shown = (f"{s['total_s']:.1f} s (max {s['max_s']:.1f}; {s['cells_per_s']:.0f} cells/s; "
             f"probing {s['probe_s']:.1f} s)")
    reference = "-"
    if ref and ref.get("pairs_per_s"):
        reference = (f"plain Mininet pingall, {ref['hosts']} hosts: {ref['pairs_per_s']:.0f} pairs/s, "
                     f"{ref['pingall_s']:.0f} s; these {s['cells']:,} cells would take {s['cells'] / ref['pairs_per_s']:.0f} s "
                     f"({s['cells_per_s'] / ref['pairs_per_s']:.1f}x faster here)")
    why = f"{s['differ']} cell(s) differ from the evaluator" if s["differ"] else ""
    return [judge(target, s["total_s"], TARGET_S, AT_MOST, shown, reference, why)]


# ---------------------------------------------------------------------------------- running
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kubevpc.bench.matrix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100, help="pods in the generated scenario (default 100)")
    ap.add_argument("--mode", choices=MODES, default="vxlan", help="pod network mode (default vxlan)")
    ap.add_argument("--repeat", type=int, default=3, help="matrices probed; medians are reported (default 3)")
    ap.add_argument("--probe-timeout", type=float, default=1.0, metavar="S",
                    help="each probe's deadline, as `kubevpc matrix --probe-timeout` (default 1 s)")
    ap.add_argument("--no-policy", action="store_true", help="no NetworkPolicy: every cell connects")
    ap.add_argument("--mininet-hosts", type=int, metavar="N",
                    help="hosts of the plain Mininet reference (default: as many as pods; 0: no reference)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not 2 <= args.pods <= 1000:
        ap.error("--pods must be between 2 and 1000")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if not 0 < args.probe_timeout <= 30:
        ap.error("--probe-timeout must be more than 0 and at most 30 s")
    if args.mininet_hosts is None:
        args.mininet_hosts = args.pods
    if args.mininet_hosts != 0 and not 2 <= args.mininet_hosts <= 1000:
        ap.error("--mininet-hosts must be 0 (no reference) or between 2 and 1000")
    return args


def runs_table(runs: list[dict], args) -> Table:
    t = Table(title=f"reachability matrix, {args.pods} pods on {PORT}/tcp, mode {args.mode}, "
                    f"probe deadline {args.probe_timeout:g} s, probes {probing_shown()}", title_justify="left")
    for col in ("run", "cells", "connect (expected)", "whole s", "probing s", "cells/s", "differ"):
        t.add_column(col, justify="right")
    for i, r in enumerate(runs, 1):
        t.add_row(str(i), f"{r['cells']:,}", f"{r['connect']:,} ({r['expected_connect']:,})", f"{r['total_s']:.2f}",
                  f"{r['probe_s']:.2f}", f"{r['cells'] / r['total_s']:.0f}", str(r["differ"] or ""))
    return t


def probing_shown() -> str:
    """How the probes ran: one process (with its pacing) or one a source."""
    mode, cap, window = probe_settings()
    return f"from one process (cap {cap}, window {window:g} s)" if mode == "one" else "a process a source"


def run(args, say) -> dict:
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="kubevpc-matrix-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(matrix_scenario(args.pods, args.mode, not args.no_policy), fh, sort_keys=False)
    mode, cap, window = probe_settings()
    out: dict = {"pods": args.pods, "mode": args.mode, "probe_timeout": args.probe_timeout, "runs": [],
                 "probing": {"mode": mode, "cap": cap, "window": window}}
    try:
        with Lab(path, mode=args.mode) as lab:
            say(f"up: {args.pods} pods, mode {args.mode}, in {lab.timings['up']:.1f} s")
            for i in range(args.repeat):
                out["runs"].append(measure_matrix(lab, args.probe_timeout))
                r = out["runs"][-1]
                say(f"matrix {i + 1}/{args.repeat}: {r['cells']} cells in {r['total_s']:.2f} s "
                    f"(probing {r['probe_s']:.2f} s), {r['differ']} differ")
                for line in r["differ_examples"]:
                    say(f"  differs: {line}")
    finally:
        os.unlink(path)
    if args.mininet_hosts:
        say(f"plain Mininet: {args.mininet_hosts} hosts, pingall (one pair at a time)")
        out["mininet"] = mininet_pingall(args.mininet_hosts)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("python -m kubevpc.bench.matrix: needs root (it builds the scenario and Mininet)")
    from mininet.log import setLogLevel
    setLogLevel("warning")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    say = lambda s: err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {s}")  # noqa: E731
    out = run(args, say)
    out["summary"] = summary(out["runs"])
    judged = verdicts(args.pods, out["summary"], out.get("mininet"))
    out["targets"] = [v.as_dict() for v in judged]
    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    con.print(runs_table(out["runs"], args))
    if out.get("mininet"):
        m = out["mininet"]
        con.print(f"plain Mininet, {m['hosts']} hosts: pingall {m['pairs']:,} pairs in {m['pingall_s']:.1f} s, "
                  f"{m['pairs_per_s']:.0f} pairs/s, {m['loss_percent']:g}% lost")
    con.print(verdict_table(judged, "issue 21's target, this run"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
