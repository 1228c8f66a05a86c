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
"""
from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from kubevpc.errors import KubevpcError

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
    target port the pod's own server does not hold. Returns (service, port index) or (None, why)."""
    for svc in plan.services:
        if not svc.cluster_ip:
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
    from kubevpc.evaluator.reach import reach
    pods = [p for p in plan.pods if p.app == "server"]
    nodes = {n.name: n for n in plan.nodes}
    out: dict[str, PerfPath] = {}

    def direct(key: str, src, dst, why_missing: str) -> None:
        if src is None or dst is None:
            out[key] = PerfPath(key, TITLES[key], skip=why_missing)
            return
        port = _free_port(dst)
        verdict = reach(plan, src, dst, port, "tcp")
        if not verdict.allowed:
            out[key] = PerfPath(key, TITLES[key], src.key, dst.key, dst.ip, port, skip=verdict.reason)
            return
        udp = reach(plan, src, dst, port, "udp").allowed
        out[key] = PerfPath(key, TITLES[key], src.key, dst.key, dst.ip, port, port, udp=udp)

    def pick(pred, items):
        return next((x for x in items if pred(x)), None)

    client = pick(lambda a: any(b.node == a.node and b.key != a.key for b in pods), pods) or (pods[0] if pods else None)
    svc, index = _iperf_service(plan, client) if client else (None, "the scenario has no pods")
    endpoint = plan.host(svc.ready_endpoints(index)[0].pod) if svc else None
    vsw = lambda p: nodes[p.node].vswitch  # noqa: E731
    if client is None:
        same = across = cross = None
    else:
        same = pick(lambda p: p.node == client.node and p.key != client.key, pods)
        others = [endpoint] + pods if endpoint else pods
        across = pick(lambda p: p.node != client.node and vsw(p) == vsw(client), others)
        cross = pick(lambda p: vsw(p) != vsw(client), others)
    direct("pod-pod-same-node", client, same, "no two pods on one node")
    direct("pod-pod-same-vswitch", client, across, "no two pods on different nodes of one vSwitch")
    direct("pod-pod-cross-vswitch", client, cross, "no two pods on nodes of different vSwitches")
    vpc = plan.cluster.vpc if plan.cluster else ""
    ecs = pick(lambda h: not h.node and plan.vswitch(h.vswitch).vpc == vpc, plan.instances)
    direct("ecs-pod", ecs, endpoint or across or cross or same, "no plain ECS instance in the cluster's VPC")
    if svc is None:
        for key in ("pod-clusterip", "pod-nodeport", "client-slb"):
            out[key] = PerfPath(key, TITLES[key], skip=str(index))
        return [out[k] for k, _ in PATH_KINDS]
    sp = svc.ports[index]
    udp = any(p.protocol == "UDP" and p.port == sp.port and p.target_port == sp.target_port for p in svc.ports)
    target = svc.ready_endpoints(index)[0].ports[index]
    common = dict(server=endpoint.key, listen=target, udp=udp, ping=False)
    out["pod-clusterip"] = PerfPath("pod-clusterip", TITLES["pod-clusterip"], client.key, dest=svc.cluster_ip,
                                    port=sp.port, **common)
    if sp.node_port:
        node = nodes[endpoint.node]      # with policy Local only the endpoint's node serves it
        out["pod-nodeport"] = PerfPath("pod-nodeport", TITLES["pod-nodeport"], client.key, dest=node.ip,
                                       port=sp.node_port, **common)
    else:
        out["pod-nodeport"] = PerfPath("pod-nodeport", TITLES["pod-nodeport"],
                                       skip=f"Service {svc.key} has no NodePort")
    slb = pick(lambda s: s.service == svc.key, plan.slbs)
    if slb and ecs:
        out["client-slb"] = PerfPath("client-slb", TITLES["client-slb"], ecs.key, dest=slb.vip, port=sp.port,
                                     **common)
    else:
        out["client-slb"] = PerfPath("client-slb", TITLES["client-slb"],
                                     skip=f"Service {svc.key} has no SLB" if not slb else "no plain ECS client")
    return [out[k] for k, _ in PATH_KINDS]


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


# ---------------------------------------------------------------------------- measuring
class Namespace:
    """Where commands run: a kubevpc endpoint (by its shell's pid) or one of our named namespaces."""

    def __init__(self, prefix: list[str], name: str):
        self.prefix, self.name = prefix, name

    @classmethod
    def of_lab(cls, lab, endpoint: str) -> "Namespace":
        return cls(["mnexec", "-a", str(lab.net.host_pid(lab.host(endpoint).key))], endpoint)

    @classmethod
    def named(cls, netns: str) -> "Namespace":
        return cls(["ip", "netns", "exec", netns], netns)

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PerfError(f"{' '.join(cmd[:3])} in {self.name} did not finish within {timeout:.0f} s") from None

    def popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self.prefix + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)


class Servers:
    """iperf3 servers we started, one per (namespace, port), each written to a run's ledger (so
    that `kubevpc clean` stops them after a crash); all stopped by stop()."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}

    def ensure(self, ns: Namespace, port: int) -> None:
        key = (ns.name, port)
        if key in self.procs and self.procs[key].poll() is None:
            return
        self.procs[key] = ns.popen(["iperf3", "-s", "-p", str(port)])
        self.ledger.record("process", self.procs[key].pid, token="iperf3")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:     # listening once `ss` in that namespace shows it
            if self.procs[key].poll() is not None:
                raise PerfError(f"iperf3 -s -p {port} in {ns.name} exited with {self.procs[key].returncode}")
            if f":{port} " in ns.run(["ss", "-Htln"], timeout=5).stdout:
                return
            time.sleep(0.05)
        raise PerfError(f"iperf3 -s -p {port} in {ns.name} was not listening after 5 s")

    def restart(self, ns: Namespace, port: int) -> None:
        proc = self.procs.pop((ns.name, port), None)
        if proc is not None:
            _stop([proc])
        self.ensure(ns, port)

    def stop(self) -> None:
        _stop(list(self.procs.values()))
        self.procs.clear()


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL whatever has not ended after 5 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def iperf_run(client: Namespace, dest: str, port: int, seconds: int, udp_rate: str | None = None) -> dict:
    cmd = ["iperf3", "-c", dest, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    if udp_rate:
        cmd += ["-u", "-b", udp_rate, "-l", str(UDP_LENGTH)]
    res = client.run(cmd, timeout=seconds + 20)
    return parse_iperf(res.stdout, udp=bool(udp_rate))


def latency(client: Namespace, dest: str, port: int, settings: Settings, ping: bool) -> dict:
    """First and steady ping RTT (when the address answers pings as the server would) and TCP
    connect time, measured before any bulk traffic on the path."""
    out: dict = {"ping_ms": None, "connect_ms": None}
    if ping:
        n = settings.pings
        res = client.run(["ping", "-n", "-c", str(n), "-i", "0.01", "-W", "1", dest], timeout=n + 10)
        out["ping_ms"] = first_and_steady(parse_ping(res.stdout, n))
    res = client.run([sys.executable, "-c", CONNECT_PROBE, dest, str(port), str(settings.connects)],
                     timeout=settings.connects * 2.5 + 10)
    try:
        out["connect_ms"] = first_and_steady(json.loads(res.stdout))
    except json.JSONDecodeError:
        raise PerfError(f"connect probe in {client.name} failed: {res.stderr.strip()[-300:]}") from None
    return out


def measure(client: Namespace, server: Namespace, dest: str, port: int, listen: int, settings: Settings,
            servers: Servers, say: Say, label: str, udp: bool = True, ping: bool = True) -> dict:
    """Latency first (cold), then TCP runs, then UDP runs, on one path: the client connects to
    dest:port, iperf3 listens on `listen` in the server. Each run gets a fresh iperf3 server (the
    connect probe's bare connections, or a run that failed, can leave one busy); a failed run is
    tried once more, and both the failure and the retry are in the report."""
    servers.ensure(server, listen)
    result: dict = {"dest": dest, "port": port, **latency(client, dest, port, settings, ping)}
    errors: list[str] = []

    def runs(proto: str, rate: str | None) -> list[dict]:
        out = []
        for i in range(settings.repeat):
            for attempt in (1, 2):
                servers.restart(server, listen)
                try:
                    out.append(iperf_run(client, dest, port, settings.seconds, rate))
                    break
                except PerfError as exc:
                    errors.append(f"{proto} run {i + 1}, attempt {attempt}: {exc}")
                    say(f"{label}: {proto} run {i + 1} failed: {exc}")
            else:
                continue
            r = out[-1]
            extra = f", {r['lost_percent']:.1f}% lost at {rate}bit/s" if rate else ""
            say(f"{label}: {proto} {r['gbps']:.2f} Gbit/s{extra} (run {i + 1}/{settings.repeat})")
        return out

    tcp = runs("TCP", None)
    result["tcp"] = {"gbps": stat(r["gbps"] for r in tcp), "retransmits": [r["retransmits"] for r in tcp]}
    result["udp"] = None
    if settings.udp and udp:
        got = runs("UDP", settings.udp_rate)
        result["udp"] = {k: stat(r[k] for r in got) for k in ("gbps", "lost_percent", "jitter_ms")}
    result["errors"] = errors
    result["complete"] = len(tcp) == settings.repeat and (result["udp"] is None or
                                                          (result["udp"]["gbps"] or {}).get("n") == settings.repeat)
    return result


# --------------------------------------------------------------------------- references
class References:
    """The physical references: namespaces (and, for Open vSwitch, a bridge and two root-side veth
    ends) named with a run name of their own, written to that run's ledger before they are made.
    close() removes them; after a crash, `kubevpc clean` does."""

    def __init__(self, datapath):
        from kubevpc.ledger import Ledger, run_dir
        for _ in range(64):
            self.prefix = "kvpf" + secrets.token_hex(1)      # a run name of 6 characters
            if not os.path.exists(run_dir(self.prefix)):
                break
        else:
            raise PerfError("no free run name kvpf00-kvpfff for the references; run `kubevpc clean`")
        self.datapath = datapath
        self.ledger = Ledger(self.prefix)
        self.ledger.create()

    def _ns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.ledger.record("netns", name)
        _ip(["netns", "add", name])
        _ip(["-n", name, "link", "set", "lo", "up"])
        return name

    def _address(self, ns: str, ip: str) -> None:
        _ip(["-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        _ip(["-n", ns, "link", "set", "eth0", "up"])

    def veth(self) -> tuple[str, str]:
        a, b = self._ns("va"), self._ns("vb")
        _ip(["-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        self._address(a, f"{REF_NET}.1")
        self._address(b, f"{REF_NET}.2")
        return a, b

    def linux_bridge(self) -> tuple[str, str]:
        br, a, b = self._ns("br"), self._ns("ba"), self._ns("bb")
        _ip(["-n", br, "link", "add", "br0", "type", "bridge"])
        _ip(["-n", br, "link", "set", "br0", "up"])
        for ns, port, ip in ((a, "pa", f"{REF_NET}.1"), (b, "pb", f"{REF_NET}.2")):
            _ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", br])
            _ip(["-n", br, "link", "set", port, "master", "br0", "up"])
            self._address(ns, ip)
        return a, b

    def ovs_bridge(self) -> tuple[str, str]:
        """One bridge of kubevpc's datapath, no controller (standalone: the normal action), the same
        receive buffers as kubevpc's ports."""
        from topologies.build import enlarge_ovs_rcvbuf, no_ipv6
        a, b = self._ns("oa"), self._ns("ob")
        ends = [f"{self.prefix}o0", f"{self.prefix}o1"]
        for ns, end, ip in ((a, ends[0], f"{REF_NET}.1"), (b, ends[1], f"{REF_NET}.2")):
            self.ledger.record("link", end)
            _ip(["link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", ns])
            no_ipv6([end])
            _ip(["link", "set", end, "up"])
            self._address(ns, ip)
        bridge = f"{self.prefix}-ovs"
        self.ledger.record("bridge", bridge)
        cmd = ["ovs-vsctl", "--timeout=30", "--", "add-br", bridge, "--", "set", "bridge", bridge,
               f"datapath_type={self.datapath.kind}", "fail_mode=standalone", "other-config:disable-in-band=true",
               f"external_ids:kubevpc-run={self.prefix}"]
        for end in ends:
            cmd += ["--", "add-port", bridge, end]
        _run(cmd)
        if self.datapath.kind == "netdev":
            enlarge_ovs_rcvbuf(ends)
        return a, b

    def close(self) -> None:
        from kubevpc.ledger import clean_run
        clean_run(self.prefix)


def _run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise PerfError(f"{' '.join(cmd[:6])} failed: {(res.stderr or res.stdout).strip()[:300]}")
    return res.stdout


def _ip(args: list[str]) -> str:
    return _run(["ip", *args])


REFERENCE_KINDS = (("veth", "raw veth pair"), ("linux-bridge", "Linux bridge"),
                   ("ovs-bridge", "one Open vSwitch bridge"))


def measure_references(settings: Settings, datapath, say: Say) -> dict[str, dict]:
    out = {}
    for key, title in REFERENCE_KINDS:
        refs = References(datapath)
        servers = Servers(refs.ledger)
        try:
            a, b = {"veth": refs.veth, "linux-bridge": refs.linux_bridge, "ovs-bridge": refs.ovs_bridge}[key]()
            out[key] = measure(Namespace.named(a), Namespace.named(b), f"{REF_NET}.2", IPERF_PORT, IPERF_PORT,
                               settings, servers, say, f"reference {title}")
            out[key]["title"] = title
        finally:
            servers.stop()
            refs.close()
    return out


# -------------------------------------------------------------------------------- modes
def _packet_ins(lab) -> int:
    return sum(b.get("packet_in", 0) for b in lab.status().get("bridges", {}).values())


def datapath_settings(lab) -> dict:
    """What the report says about the data plane of a running lab."""
    dp, builder = lab.net.datapath, lab.builder
    return {"kind": dp.kind, "userspace_tso": dp.userspace_tso, "note": dp.note,
            "offloads": asdict(builder.offloads), "ovs_rcvbuf": dict(builder.rcvbuf)}


def measure_mode(file: str, mode: str, settings: Settings, say: Say) -> dict:
    from kubevpc.lab import Lab
    lab = Lab(file, mode=mode, datapath=settings.datapath, say=lambda s: say(f"[{mode}] {s}"))
    say(f"mode {mode}: building {file} (run {lab.run})")
    paths = choose_paths(lab.plan)
    lab.up()
    servers = Servers(lab.net.ledger)
    try:
        out = {"run": lab.run, "bringup_s": lab.timings.get("up"), "datapath": datapath_settings(lab), "paths": []}
        before = _packet_ins(lab)
        for p in paths:
            entry = asdict(p)
            if not p.skip:
                try:
                    entry.update(measure(Namespace.of_lab(lab, p.client), Namespace.of_lab(lab, p.server), p.dest,
                                         p.port, p.listen, settings, servers, say, f"{mode} {p.title}",
                                         udp=p.udp, ping=p.ping))
                except PerfError as exc:
                    entry["errors"] = [str(exc)]
                    say(f"{mode} {p.title}: {exc}")
            out["paths"].append(entry)
        out["packet_in"] = _packet_ins(lab)
        out["packet_in_during_run"] = out["packet_in"] - before
        say(f"mode {mode}: packet-ins to the controller: {out['packet_in']}")
        return out
    finally:
        servers.stop()
        lab.down()


def machine() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""
    other = first_line(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "other_config"])
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "ovs": first_line(["ovs-vswitchd", "--version"]), "ovs_other_config": other,
            "iperf3": first_line(["iperf3", "--version"])}


def run(file: str, settings: Settings, say: Say) -> dict:
    """The whole benchmark: references, each mode, references again; the report as a dict."""
    from topologies.build import detect_datapath
    t0 = time.monotonic()
    dp = detect_datapath(settings.datapath)
    report = {"format": FORMAT, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenario": file,
              "machine": machine(), "settings": asdict(settings), "modes": {}}
    say(f"references (raw veth, Linux bridge, one Open vSwitch bridge, {dp.kind} datapath), before the modes")
    before = measure_references(settings, dp, say)
    for mode in settings.modes:
        report["modes"][mode] = measure_mode(file, mode, settings, say)
    say("references again, after the modes")
    after = measure_references(settings, dp, say)
    report["references"] = merge_references(before, after)
    report["duration_s"] = time.monotonic() - t0
    add_ratios(report)
    report["targets"] = targets(report)
    return report


def merge_references(before: dict, after: dict) -> dict:
    """Each reference's runs before and after the modes, pooled (the drift shows in min and max)."""
    out = {}
    for key, b in before.items():
        a = after.get(key, {})
        merged = {"title": b["title"], "before": b, "after": a}
        merged["tcp"] = {"gbps": stat(_values(b, "tcp", "gbps") + _values(a, "tcp", "gbps"))}
        merged["udp"] = {k: stat(_values(b, "udp", k) + _values(a, "udp", k))
                         for k in ("gbps", "lost_percent", "jitter_ms")} if b.get("udp") else None
        merged["ping_ms"], merged["connect_ms"] = b.get("ping_ms"), b.get("connect_ms")
        out[key] = merged
    return out


def _values(entry: dict, proto: str, what: str) -> list[float]:
    s = (entry.get(proto) or {}).get(what)
    return list(s["values"]) if s else []


def _median(entry: dict | None, proto: str = "tcp", what: str = "gbps") -> float | None:
    s = ((entry or {}).get(proto) or {}).get(what)
    return s["median"] if s else None


def add_ratios(report: dict) -> None:
    veth = _median(report["references"].get("veth"))
    for ref in report["references"].values():
        ref["ratio_to_veth"] = ratio(_median(ref), veth)
    for m in report["modes"].values():
        for p in m["paths"]:
            p["ratio_to_veth"] = ratio(_median(p), veth)


def _path(report: dict, mode: str, key: str) -> dict | None:
    m = report["modes"].get(mode)
    return next((p for p in m["paths"] if p["key"] == key), None) if m else None


def targets(report: dict) -> list[dict]:
    """The performance issue's targets that this run can judge (bring-up has its own benchmark)."""
    out = []
    veth = _median(report["references"].get("veth"))
    for mode in report["modes"]:
        medians = (_median(_path(report, mode, k)) for k in ("pod-pod-same-vswitch", "pod-pod-cross-vswitch"))
        across = [m for m in medians if m is not None]
        slower = min(across) if across else None      # the slower of the two paths across nodes
        r = ratio(slower, veth)
        out.append({"target": f"{mode}: pod to pod across nodes >= 1/2 raw veth", "ok": bool(r and r >= 0.5),
                    "detail": f"slower path {slower:.2f} Gbit/s = {r:.2f} x raw veth" if r else "not measured"})
    for k in ("pod-pod-same-vswitch", "pod-pod-cross-vswitch"):
        vx, vr = _median(_path(report, "vxlan", k)), _median(_path(report, "vpc-route", k))
        if vx is not None and vr is not None:
            out.append({"target": f"vpc-route >= vxlan, {TITLES[k]}", "ok": vr >= vx,
                        "detail": f"vpc-route {vr:.2f}, vxlan {vx:.2f} Gbit/s; vxlan costs {1 - vx / vr:.0%}"
                        if vr else f"vpc-route {vr:.2f}, vxlan {vx:.2f} Gbit/s"})
    for mode, m in report["modes"].items():
        out.append({"target": f"{mode}: zero packet-ins", "ok": m.get("packet_in") == 0,
                    "detail": f"{m.get('packet_in')} packet-in(s)"})
    return out


def failures(report: dict) -> list[str]:
    """Paths that should have been measured but were not, or not every run (even retried)."""
    out = []
    for mode, m in report["modes"].items():
        for p in m["paths"]:
            if not p.get("skip") and p.get("errors") and not p.get("complete"):
                out.append(f"{mode} {p['title']}: {p['errors'][-1]}")
    return out


# -------------------------------------------------------------------------------- report
def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _spread(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return _fmt(s["median"], digits)
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _short(text: str, limit: int = 60) -> str:
    text = text.split(" (")[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _latency(x: dict | None) -> str:
    if not x:
        return "-"
    steady = x["steady"]["median"] if x.get("steady") else None
    first = x.get("first")
    lost = f", {x['lost']} lost" if x.get("lost") else ""
    return f"{_fmt(first)} / {_fmt(steady)}{lost}"


def rows(report: dict) -> list[list[str]]:
    """The table's rows: references, then each path in each mode."""
    out = []
    for ref in report["references"].values():
        out.append(_row(ref["title"], "reference", ref))
    for key, title in PATH_KINDS:
        for mode in report["modes"]:
            p = _path(report, mode, key)
            if p is not None:
                out.append(_row(title, mode, p))
    return out


def _row(title: str, mode: str, e: dict) -> list[str]:
    if e.get("skip"):       # the first clause of the reason; perf.json has all of it
        return [title, mode, "n/a: " + _short(e["skip"]), "", "", "", "", "", "", ""]
    tcp, udp = e.get("tcp") or {}, e.get("udp") or {}
    retr = [r for r in tcp.get("retransmits", []) if r is not None]
    if e.get("errors") and not tcp.get("gbps"):
        return [title, mode, "failed: " + _short(e["errors"][0]), "", "", "", "", "", "", ""]
    return [title, mode, _spread(tcp.get("gbps")), _fmt(e.get("ratio_to_veth")),
            str(int(statistics.median(retr))) if retr else "-", _spread(udp.get("gbps")),
            _spread(udp.get("lost_percent"), 1), _spread(udp.get("jitter_ms"), 3),
            _latency(e.get("ping_ms")), _latency(e.get("connect_ms"))]


COLUMNS = ("path", "mode", "TCP Gbit/s median (min-max)", "x raw veth", "retr.", "UDP Gbit/s rcvd",
           "UDP loss %", "jitter ms", "ping ms first / steady", "connect ms first / steady")


def table(report: dict):
    from rich.table import Table
    s = report["settings"]
    t = Table(title=f"kubevpc perf: {report['scenario']}; {s['repeat']} x {s['seconds']} s per measurement, "
                    f"UDP at {s['udp_rate']}bit/s")
    for col in COLUMNS:
        t.add_column(col, overflow="fold")
    for r in rows(report):
        t.add_row(*r)
    return t


def summary_lines(report: dict) -> list[str]:
    lines = []
    for mode, m in report["modes"].items():
        d = m["datapath"]
        buf = d.get("ovs_rcvbuf") or {}
        buffers = (f"; Open vSwitch receive buffers {buf['bytes'] >> 20} MiB on {buf['sockets']} of {buf['ports']} "
                   "ports" if buf.get("bytes") else "")
        lines.append(f"{mode}: {d['kind']} datapath; {d['offloads']['note']}{buffers}; packet-ins {m['packet_in']}; "
                     f"bring-up {_fmt(m.get('bringup_s'), 1)} s")
    for t in report["targets"]:
        lines.append(f"target {'met' if t['ok'] else 'NOT met'}: {t['target']} ({t['detail']})")
    lines.append(f"machine: {report['machine']['kernel']}, {report['machine']['cpus']} CPUs, "
                 f"{report['machine']['ovs']}; took {report['duration_s']:.0f} s")
    return lines


def chart(report: dict, path: str) -> None:
    """Bars per path and mode (median TCP Gbit/s, whiskers from lowest to highest run), the
    references as horizontal lines; below, steady ping RTT and TCP connect time per path and mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = list(report["modes"])
    keys = [k for k, _ in PATH_KINDS]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9), gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / max(len(modes), 1)
    colors = {"vxlan": "#d95f02", "vpc-route": "#1b9e77", "eni": "#7570b3"}
    for i, mode in enumerate(modes):
        xs, ys, lo, hi, lat_x, lat_y, con_y = [], [], [], [], [], [], []
        for j, k in enumerate(keys):
            p = _path(report, mode, k) or {}
            s = (p.get("tcp") or {}).get("gbps")
            x = j + (i - (len(modes) - 1) / 2) * width
            if s:
                xs.append(x)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            elif p.get("skip") or p.get("errors"):
                top.text(x, 0.05, "n/a" if p.get("skip") else "failed", rotation=90, ha="center", va="bottom",
                         fontsize=7, color="grey")
            lat = p.get("connect_ms") or {}
            if lat.get("steady"):
                lat_x.append(x)
                con_y.append(lat["steady"]["median"])
                ping = (p.get("ping_ms") or {}).get("steady")
                lat_y.append(ping["median"] if ping else None)
        color = colors.get(mode)
        bars = top.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=mode, color=color)
        top.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=2)
        bottom.bar(lat_x, con_y, width, label=f"{mode} TCP connect", color=color)
        pings = [(x, y) for x, y in zip(lat_x, lat_y) if y is not None]
        if pings:
            bottom.plot([x for x, _ in pings], [y for _, y in pings], "k_", markersize=12,
                        label="ping RTT" if i == 0 else None)
    styles = {"veth": "-", "linux-bridge": "--", "ovs-bridge": ":"}
    for key, ref in report["references"].items():
        m = _median(ref)
        if m:
            top.axhline(m, color="black", linestyle=styles.get(key, "-."), linewidth=1,
                        label=f"{ref['title']}: {m:.1f} Gbit/s")
    labels = [TITLES[k].replace(", ", ",\n") for k in keys]
    for ax in (top, bottom):
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    s, mach = report["settings"], report["machine"]
    top.set_ylabel("TCP Gbit/s (median; whiskers: min-max)")
    top.set_title(f"kubevpc perf: {os.path.basename(report['scenario'])}, {s['repeat']} x {s['seconds']} s; "
                  f"{mach['ovs']}, kernel {mach['kernel']}, {mach['cpus']} CPUs", fontsize=10)
    top.set_ylim(0, max([_median(r) or 0 for r in report["references"].values()] + [1]) * 1.3)
    top.legend(fontsize=8, ncol=3, loc="upper right")
    bottom.set_ylabel("ms (steady state median)")
    bottom.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def preflight() -> None:
    if os.geteuid() != 0:
        raise KubevpcError("kubevpc perf needs root (it creates namespaces and Open vSwitch bridges)")
    for tool in ("iperf3", "ping", "mnexec", "ovs-vsctl"):
        if shutil.which(tool) is None:
            raise KubevpcError(f"{tool} is not installed; run `make install` (scripts/install.sh)")
