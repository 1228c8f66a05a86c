"""Benchmark (not a test): NetworkPolicy compile time and flow count for 10, 100 and 1000 policies
over 100 pods, next to what the same rules would cost as plain flows (the cross product of peers,
pods and ports); and, with --live, the time from a policy change to flows programmed on a running
scenario, next to kube-proxy's 1 s minimum sync period as a yardstick.

    make bench-netpol                    # or: python -m kubevpc.bench.netpol --live
    python -m kubevpc.bench.netpol --policies 10,100,1000 --pods 100 --repeat 3 --json out.json

The policies are generated from a fixed seed, so every run compiles the same set: a mix of
pod-selector, namespace-selector, AND, ipBlock-with-except, named-port and endPort rules, in
both directions, the kinds the upstream tests exercise.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

import yaml
from rich.console import Console
from rich.table import Table

from controller.compile import compile_plan, node_policy_flows, paused_gc, policy_endpoints
from controller.policy import _peer_networks, _port_matches, policy_flow_counts  # noqa: PLC2701 (the compiler's own parts)
from kubevpc.bench.bringup import generated_scenario
from kubevpc.evaluator.netpol import selects
from kubevpc.lab import Lab
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

NAMESPACES = 10
APPS = 5


def world(pods: int, nodes: int = 4, mode: str = "vpc-route") -> dict:
    """`pods` pods over NAMESPACES namespaces (labelled team, env) and `nodes` nodes, serving
    TCP 80 (named http), 81, and UDP 53 (named dns)."""
    namespaces = [{"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": f"ns{i}", "labels": {"team": f"t{i % 3}", "env": "prod" if i % 2 else "dev"}}}
                  for i in range(NAMESPACES)]
    per_ns = -(-pods // NAMESPACES)
    deployments = []
    left = pods
    for i in range(NAMESPACES):
        replicas = min(per_ns, left)
        left -= replicas
        if replicas <= 0:
            break
        for a in range(APPS):
            n = replicas // APPS + (1 if a < replicas % APPS else 0)
            if not n:
                continue
            deployments.append({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": f"app{a}", "namespace": f"ns{i}"},
                                "spec": {"replicas": n, "selector": {"matchLabels": {"app": f"a{a}"}},
                                         "template": {"metadata": {"labels": {"app": f"a{a}",
                                                                              "tier": ("web", "api", "db")[a % 3]}},
                                                      "spec": {"containers": [{"name": "c", "ports": [
                                                          {"name": "http", "containerPort": 80},
                                                          {"containerPort": 81},
                                                          {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}}}})
    doc = generated_scenario(pods, nodes)       # the bring-up benchmark's VPC, vSwitches and nodes
    doc["name"] = f"netpol{pods}"
    doc["cluster"]["mode"] = mode
    doc["manifests"] = namespaces + deployments
    return doc


def policies(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ns = f"ns{rnd.randrange(NAMESPACES)}"
        kind = i % 6
        target = ({}, {"matchLabels": {"tier": rnd.choice(["web", "api", "db"])}},
                  {"matchLabels": {"app": f"a{rnd.randrange(APPS)}"}})[rnd.randrange(3)]
        ports = [{"port": rnd.choice([80, 81])}]
        if kind == 0:
            rule = {"from": [{"podSelector": {"matchLabels": {"tier": rnd.choice(["web", "api"])}}}], "ports": ports}
        elif kind == 1:
            rule = {"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{rnd.randrange(3)}"}}}],
                    "ports": [{"port": "http"}]}
        elif kind == 2:
            rule = {"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]}]},
                "podSelector": {"matchLabels": {"app": f"a{rnd.randrange(APPS)}"}}}], "ports": ports}
        elif kind == 3:
            rule = {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"10.244.{rnd.randrange(4)}.0/24"]}},
                             {"ipBlock": {"cidr": "192.168.0.0/16"}}]}
        elif kind == 4:
            rule = {"from": [{"podSelector": {}}], "ports": [{"port": 8000, "endPort": 8100 + rnd.randrange(900)},
                                                             {"protocol": "UDP", "port": "dns"}]}
        else:
            out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": {"name": f"p{i}", "namespace": ns},
                        "spec": {"podSelector": target, "policyTypes": ["Egress"], "egress": [
                            {"to": [{"namespaceSelector": {"matchLabels": {"team": f"t{rnd.randrange(3)}"}}}],
                             "ports": [{"port": 80}, {"protocol": "UDP", "port": 53}]}]}})
            continue
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"p{i}", "namespace": ns},
                    "spec": {"podSelector": target, "ingress": [rule]}})
    return out


def _write(doc: dict) -> str:
    fh = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    with fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    return fh.name


def product_cost(plan) -> int:
    """What the same policies would cost without conjunctive match: per rule and node, one flow
    per (selected local pod, peer address, port match)."""
    endpoints = policy_endpoints(plan)
    total = 0
    for node in plan.nodes:
        local = [p for p in plan.pods if p.node == node.name]
        for pol in plan.network_policies:
            for side in ("Ingress", "Egress"):
                if side not in pol.spec.types:
                    continue
                m = sum(1 for p in local if selects(pol, p))
                for rule in pol.spec.rules(side):
                    n = len(_peer_networks(rule.peers, pol.metadata.namespace, endpoints, plan.namespaces)) \
                        if rule.peers else 1
                    k = sum(len(_port_matches(p.protocol, p.port if not isinstance(p.port, str) else None,
                                              p.endPort, "")) for p in rule.ports) or 1
                    total += m * max(n, 1) * k
    return total


def compile_case(pods: int, n: int, repeat: int) -> dict:
    doc = world(pods)
    doc["manifests"] += policies(n)
    path = _write(doc)
    try:
        plan = make_plan(load(path), "kvnp")
    finally:
        os.unlink(path)
    times, policy_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        compiled = compile_plan(plan)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        memo: dict = {}                 # as compile_plan does: peers worked out once for every node
        with paused_gc():
            flows = [f for node in plan.nodes for f in node_policy_flows(plan, node.name, memo)]
        policy_times.append(time.perf_counter() - t0)
    counts = policy_flow_counts(plan.network_policies, flows)
    per_policy = [v for k, v in counts.items() if k != "(shared)"]
    return {"pods": len([p for p in plan.pods if p.app == "server"]), "policies": n,
            "compile_all_s": statistics.median(times), "compile_policies_s": statistics.median(policy_times),
            "policy_flows": len(flows), "all_flows": sum(len(fs.flows) for fs in compiled.values()),
            "flows_per_policy_median": statistics.median(per_policy) if per_policy else 0,
            "flows_per_policy_max": max(per_policy, default=0), "cross_product_flows": product_cost(plan)}


def live_case(pods: int, counts: list[int], repeat: int, say) -> list[dict]:
    path = _write(world(pods))
    out = []
    try:
        with Lab(path, say=lambda s: None) as lab:
            say(f"up: {len(lab.plan.pods)} pods, mode {lab.plan.cluster.mode}")
            for n in counts:
                sets = policies(n)
                flows, cached = [], []
                for _ in range(repeat):
                    r = lab.set_network_policies(*sets)
                    flows.append(r["flows_updated_s"])
                    cached.append(r["datapath_s"])
                    lab.set_network_policies()
                status = lab.status()
                out.append({"policies": n, "change_to_flows_s": statistics.median(flows),
                            "change_to_flows_max_s": max(flows), "change_to_datapath_s": statistics.median(cached),
                            "packet_in": sum(b.get("packet_in", 0) for b in status.get("bridges", {}).values())})
                say(f"{n} policies: {out[-1]['change_to_flows_s'] * 1000:.0f} ms to flows")
    finally:
        os.unlink(path)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubevpc.bench.netpol", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100, help="pods in the generated world (default 100)")
    ap.add_argument("--policies", default="10,100,1000", help="policy counts to compile (default 10,100,1000)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    ap.add_argument("--live", action="store_true", help="also build the world (root) and time policy changes")
    ap.add_argument("--live-policies", default="10,100", help="policy counts for --live (default 10,100)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    try:
        counts = [int(x) for x in args.policies.split(",")]
        live_counts = [int(x) for x in args.live_policies.split(",")]
    except ValueError:
        ap.error("--policies and --live-policies take comma-separated numbers, e.g. 10,100,1000")
    if args.pods < NAMESPACES or args.pods > 1000:
        ap.error(f"--pods must be between {NAMESPACES} and 1000")
    if args.live and os.geteuid() != 0:
        ap.error("--live needs root")
    con = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    say = lambda s: Console(stderr=True, soft_wrap=True).print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {s}")  # noqa: E731
    results = {"compile": [], "live": []}
    for n in counts:
        say(f"compiling {n} policies over {args.pods} pods")
        results["compile"].append(compile_case(args.pods, n, args.repeat))
    t = Table(title=f"NetworkPolicy compile, {args.pods} pods on 4 nodes (median of {args.repeat}); compile: the "
                    "policy tables of every node; per policy: median/max flows; cross product: the same rules "
                    "without conjunctive match", title_justify="left")
    for col in ("policies", "compile", "all bridges", "flows", "per policy", "cross product", "saved",
                "x time, x flows"):
        t.add_column(col, justify="right")
    prev = None
    for r in results["compile"]:
        growth = f"{r['compile_policies_s'] / prev['compile_policies_s']:.1f}, " \
                 f"{r['policy_flows'] / prev['policy_flows']:.1f}" if prev else "-"
        t.add_row(str(r["policies"]), f"{r['compile_policies_s'] * 1000:.0f} ms", f"{r['compile_all_s'] * 1000:.0f} ms",
                  str(r["policy_flows"]), f"{r['flows_per_policy_median']:.0f}/{r['flows_per_policy_max']}",
                  str(r["cross_product_flows"]),
                  f"{r['cross_product_flows'] / max(r['policy_flows'], 1):.1f}x", growth)
        prev = r
    con.print(t)
    if args.live:
        results["live"] = live_case(args.pods, live_counts, args.repeat, say)
        lt = Table(title="policy change to flows programmed (barrier replies on every bridge), live")
        for col in ("policies", "to flows (median)", "max", "to datapath cache", "vs kube-proxy's 1 s", "packet-ins"):
            lt.add_column(col, justify="right")
        for r in results["live"]:
            lt.add_row(str(r["policies"]), f"{r['change_to_flows_s'] * 1000:.0f} ms",
                       f"{r['change_to_flows_max_s'] * 1000:.0f} ms", f"{r['change_to_datapath_s'] * 1000:.0f} ms",
                       f"{r['change_to_flows_s'] / 1.0:.2f}", str(r["packet_in"]))
        con.print(lt)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
