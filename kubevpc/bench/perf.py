"""`kubevpc perf [FILE]`: throughput and latency of the paths that matter, in each pod network mode,
next to the physical references measured in the same run (a benchmark, not a test).

For every path (pod to pod on one node, across nodes on one vSwitch, across vSwitches, ECS to
pod, pod to ClusterIP, pod to NodePort, client to SLB VIP) and every mode it measures:

* TCP throughput with iperf3, several runs: median, lowest and highest, retransmissions, and the
  ratio to a raw veth pair measured in the same run;
* UDP at a set rate (iperf3 -u -b): received rate, loss and jitter;
* ping RTT and TCP connect time, the first one (a cold path: ARP, the datapath's flow setup,
  the first conntrack entry) apart from the steady state (the median of the rest);
* the controller's packet-in count, which must stay zero.

The references, measured before and after the modes: a raw veth pair between two namespaces,
two namespaces on a Linux bridge (itself in a namespace), and two namespaces on one Open vSwitch
bridge of the same datapath kubevpc uses (no controller, no conntrack). Only namespaces and
interfaces whose names start with this run's prefix are created, and removed at the end.

Without FILE the built-in scenario below is used (`perf_scenario()`); its copy is written next to
the results. With FILE the paths are chosen from that scenario (`choose_paths`); a path it does not
have is reported with the reason.

Output: a table on the terminal (or JSON with --json), and in --out: perf.json, perf.png (a chart,
with matplotlib: pip install -e '.[perf]') and the scenario used.

This module holds what the benchmark is (statistics, parsing of iperf3 and ping, the scenario,
the paths, the settings); perf_measure.py measures on this machine, perf_report.py judges and
prints; the command is kubevpc/cli/perf.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kubevpc.errors import KubevpcError
from kubevpc.evaluator.reach import reach

MODES = ("vxlan", "vpc-route", "eni")
FORMAT = 1                      # version of the JSON report's shape
IPERF_PORT = 5201
UDP_LENGTH = 1400               # datagram size: fits every pod MTU (vxlan's 1450 too)
REF_NET = "10.123.0"            # the references' addresses; they exist only inside their namespaces
Say = Callable[[str], None]


class PerfError(KubevpcError):
    """A measurement that could not be made (iperf3 failed, a path did not connect)."""


# ------------------------------------------------------------------------------ statistics
def stat(values: Iterable[float | None]) -> dict | None:
    """Median, lowest and highest of the values that exist; None when there is none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def first_and_steady(samples: list[float | None]) -> dict | None:
    """The first sample (a cold path) apart from the median of the others (the steady state)."""
    if not samples:
        return None
    return {"first": samples[0], "steady": stat(samples[1:]), "lost": sum(s is None for s in samples),
            "count": len(samples)}


# ------------------------------------------------------------------------------- parsing
def parse_iperf(text: str, udp: bool = False) -> dict:
    """One iperf3 -J run: Gbit/s received, and retransmissions (TCP) or loss and jitter (UDP)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise PerfError(f"iperf3 gave no JSON: {text.strip()[:200] or '(nothing)'}") from None
    if doc.get("error"):
        raise PerfError(f"iperf3: {doc['error']}")
    end = doc.get("end") or {}
    if udp:
        got = end.get("sum_received") or end.get("sum")
        if not got:
            raise PerfError("iperf3 UDP run has no received summary (the server's report was lost)")
        whole = end.get("sum") or got
        return {"gbps": got["bits_per_second"] / 1e9, "lost_percent": whole.get("lost_percent"),
                "jitter_ms": whole.get("jitter_ms"), "packets": whole.get("packets")}
    got, sent = end.get("sum_received"), end.get("sum_sent") or {}
    if not got:
        raise PerfError("iperf3 TCP run has no received summary")
    return {"gbps": got["bits_per_second"] / 1e9, "retransmits": sent.get("retransmits")}


PING_LINE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


def parse_ping(text: str, count: int) -> list[float | None]:
    """RTTs in ms by sequence number (1..count); None for a lost echo."""
    rtts: list[float | None] = [None] * count
    for m in PING_LINE.finditer(text):
        seq = int(m.group(1))
        if 1 <= seq <= count:
            rtts[seq - 1] = float(m.group(2))
    return rtts


# The TCP connect probe, run with the venv's python inside the client's namespace: one connection
# at a time, timing connect() alone (the address is numeric: no resolver in the way).
CONNECT_PROBE = """
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(2.0)
    t = time.perf_counter()
    try:
        s.connect((host, port))
        out.append((time.perf_counter() - t) * 1000)
    except OSError:
        out.append(None)
    finally:
        s.close()
    time.sleep(0.02)
print(json.dumps(out))
"""


# -------------------------------------------------------------------------- the scenario
def perf_scenario() -> dict:
    """The built-in scenario: every path of the report, each one deterministic.

    node-1 and node-2 share vsw-a, node-3 is on vsw-b with ecs-client. The client pod is on node-1,
    beside peer-1; the server pod on node-2 is the only endpoint of the Service iperf (a LoadBalancer
    with externalTrafficPolicy Local, so its NodePort and SLB always land on node-2: no random
    choice between runs; the SLB checks nodes over HTTP at the health check node port, and pods in
    eni mode at their port 8080, never iperf3 itself); peer-3 is on node-3."""
    pod = lambda name, node, labels=None: {  # noqa: E731
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}}
    lb = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
    return {
        "name": "perf",
        "description": "kubevpc perf: one path of each kind, each deterministic",
        "cloud": {
            "vpcs": [{"name": "vpc", "cidr": "192.168.0.0/16", "vswitches": [
                {"name": "vsw-a", "zone": "zone-a", "cidr": "192.168.1.0/24"},
                {"name": "vsw-b", "zone": "zone-b", "cidr": "192.168.2.0/24"}]}],
            "securityGroups": [
                {"name": "sg-nodes", "vpc": "vpc", "rules": [
                    {"direction": "ingress", "protocol": "all", "cidr": "192.168.0.0/16",
                     "description": "the benchmark reaches pods, NodePorts and health checks from the VPC"}]},
                {"name": "sg-client", "vpc": "vpc"}],
            "instances": [
                {"name": "node-1", "vswitch": "vsw-a", "securityGroups": ["sg-nodes"]},
                {"name": "node-2", "vswitch": "vsw-a", "securityGroups": ["sg-nodes"]},
                {"name": "node-3", "vswitch": "vsw-b", "securityGroups": ["sg-nodes"]},
                {"name": "ecs-client", "vswitch": "vsw-b", "securityGroups": ["sg-client"]}]},
        "cluster": {"mode": "vpc-route", "nodes": ["node-1", "node-2", "node-3"]},
        "manifests": [
            pod("client", "node-1"), pod("peer-1", "node-1"), pod("server", "node-2", {"app": "iperf"}),
            pod("peer-3", "node-3"),
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "iperf", "annotations": {
                 lb + "address-type": "intranet", lb + "vswitch-id": "vsw-a",
                 lb + "health-check-connect-port": "8080"}},
             "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "iperf"},
                      "ports": [{"name": "tcp", "port": IPERF_PORT, "targetPort": IPERF_PORT},
                                {"name": "udp", "port": IPERF_PORT, "targetPort": IPERF_PORT, "protocol": "UDP"}]}},
        ],
    }


# ---------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class PerfPath:
    key: str                    # stable name in the JSON report
    title: str
    client: str = ""            # endpoint keys
    server: str = ""            # where iperf3 -s runs
    dest: str = ""              # address the client connects to
    port: int = 0               # where the client connects
    listen: int = 0             # where iperf3 listens in the server (a Service's target port)
    udp: bool = True
    ping: bool = True           # Service addresses are not pinged: they do not answer as the pod would
    skip: str = ""              # why this path is not measured


PATH_KINDS = (
    ("pod-pod-same-node", "pod to pod, same node"),
    ("pod-pod-same-vswitch", "pod to pod, across nodes, one vSwitch"),
    ("pod-pod-cross-vswitch", "pod to pod, across vSwitches"),
    ("ecs-pod", "ECS to pod"),
    ("pod-clusterip", "pod to ClusterIP"),
    ("pod-nodeport", "pod to NodePort"),
    ("client-slb", "client to SLB VIP"),
)
TITLES = dict(PATH_KINDS)


def _free_port(host, start: int = IPERF_PORT) -> int:
    taken = {s.port for s in host.servers}
    port = start
    while port in taken:
        port += 1
    return port


def _iperf_service(plan, client):
    """The first Service iperf3 can be measured through: one ready endpoint (iperf3's control and
    data connections must reach the same server), not the client, and a TCP port whose numeric
    target port the pod's own server does not hold; kube-proxy must program it (a Service labelled
    to switch kube-proxy off answers at no ClusterIP). Returns (service, port index) or (None, why)."""
    for svc in plan.services:
        if not svc.cluster_ip or not svc.proxied:
            continue
        for i, p in enumerate(svc.ports):
            eps = svc.ready_endpoints(i)
            if p.protocol != "TCP" or len(eps) != 1 or eps[0].pod == client.key:
                continue
            server = plan.host(eps[0].pod)
            if eps[0].ports[i] in {s.port for s in server.servers}:
                continue
            return svc, i
    return None, ("no Service with exactly one ready endpoint and a numeric target port that no container "
                  "port declares (iperf3 listens there); the built-in scenario has one")


def choose_paths(plan) -> list[PerfPath]:
    """One path of each kind from the plan (pure), in PATH_KINDS order; absent ones carry the reason."""
    pods = [p for p in plan.own_pods if p.app == "server"]      # pod paths: not host-network pods
    nodes = {n.name: n for n in plan.nodes}
    client = _pick(lambda a: any(b.node == a.node and b.key != a.key for b in pods), pods) or (pods[0] if pods else None)
    svc, index = _iperf_service(plan, client) if client else (None, "the scenario has no pods")
    endpoint = plan.host(svc.ready_endpoints(index)[0].pod) if svc else None
    vsw = lambda p: nodes[p.node].vswitch  # noqa: E731
    if client is None:
        same = across = cross = None
    else:
        same = _pick(lambda p: p.node == client.node and p.key != client.key, pods)
        others = [endpoint] + pods if endpoint else pods
        across = _pick(lambda p: p.node != client.node and vsw(p) == vsw(client), others)
        cross = _pick(lambda p: vsw(p) != vsw(client), others)
    vpc = plan.cluster.vpc if plan.cluster else ""
    ecs = _pick(lambda h: not h.node and plan.vswitch(h.vswitch).vpc == vpc, plan.instances)
    out = {p.key: p for p in (
        _direct(plan, "pod-pod-same-node", client, same, "no two pods on one node"),
        _direct(plan, "pod-pod-same-vswitch", client, across, "no two pods on different nodes of one vSwitch"),
        _direct(plan, "pod-pod-cross-vswitch", client, cross, "no two pods on nodes of different vSwitches"),
        _direct(plan, "ecs-pod", ecs, endpoint or across or cross or same, "no plain ECS instance in the cluster's VPC"))}
    if svc is None:
        for key in ("pod-clusterip", "pod-nodeport", "client-slb"):
            out[key] = PerfPath(key, TITLES[key], skip=str(index))
    else:
        out.update(_service_paths(plan, svc, index, client, endpoint, ecs))
    return [out[k] for k, _ in PATH_KINDS]


def _pick(pred, items):
    return next((x for x in items if pred(x)), None)


def _direct(plan, key: str, src, dst, why_missing: str) -> PerfPath:
    """A path straight from src to a port of dst that no server of dst holds (iperf3 listens there)."""
    if src is None or dst is None:
        return PerfPath(key, TITLES[key], skip=why_missing)
    port = _free_port(dst)
    verdict = reach(plan, src, dst, port, "tcp")
    if not verdict.allowed:
        return PerfPath(key, TITLES[key], src.key, dst.key, dst.ip, port, skip=verdict.reason)
    udp = reach(plan, src, dst, port, "udp").allowed
    return PerfPath(key, TITLES[key], src.key, dst.key, dst.ip, port, port, udp=udp)


def _service_paths(plan, svc, index: int, client, endpoint, ecs) -> dict[str, PerfPath]:
    """The paths through the Service iperf3 is measured through (port `index`, whose one ready
    endpoint is `endpoint`): its ClusterIP, its NodePort, its SLB's VIP (from the plain ECS `ecs`)."""
    out: dict[str, PerfPath] = {}
    sp = svc.ports[index]
    udp = any(p.protocol == "UDP" and p.port == sp.port and p.target_port == sp.target_port for p in svc.ports)
    target = svc.ready_endpoints(index)[0].ports[index]
    common = dict(server=endpoint.key, listen=target, udp=udp, ping=False)
    out["pod-clusterip"] = PerfPath("pod-clusterip", TITLES["pod-clusterip"], client.key, dest=svc.cluster_ip,
                                    port=sp.port, **common)
    if sp.node_port:
        node = plan.node(endpoint.node)      # with policy Local only the endpoint's node serves it
        out["pod-nodeport"] = PerfPath("pod-nodeport", TITLES["pod-nodeport"], client.key, dest=node.ip,
                                       port=sp.node_port, **common)
    else:
        out["pod-nodeport"] = PerfPath("pod-nodeport", TITLES["pod-nodeport"],
                                       skip=f"Service {svc.key} has no NodePort")
    slb = _pick(lambda s: s.service == svc.key, plan.slbs)
    if slb and ecs:
        out["client-slb"] = PerfPath("client-slb", TITLES["client-slb"], ecs.key, dest=slb.vip, port=sp.port,
                                     **common)
    else:
        out["client-slb"] = PerfPath("client-slb", TITLES["client-slb"],
                                     skip=f"Service {svc.key} has no SLB" if not slb else "no plain ECS client")
    return out


# ----------------------------------------------------------------------------- settings
@dataclass
class Settings:
    repeat: int = 3
    seconds: int = 3
    udp_rate: str = "500M"
    udp: bool = True
    pings: int = 20
    connects: int = 20
    modes: list[str] = field(default_factory=lambda: list(MODES))
    datapath: str | None = None


def preflight() -> None:
    if os.geteuid() != 0:
        raise KubevpcError("kubevpc perf needs root (it creates namespaces and Open vSwitch bridges)")
    for tool in ("iperf3", "ping", "mnexec", "ovs-vsctl"):
        if shutil.which(tool) is None:
            raise KubevpcError(f"{tool} is not installed; run `make install` (scripts/install.sh)")
