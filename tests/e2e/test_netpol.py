"""NetworkPolicy end to end, in each pod network mode, in the style of the upstream tests.

tests/e2e/data/netpol.yaml: namespaces x, y, z (labelled ns=<name>), pods a, b, c in each
(labelled pod=<name>; a on node-1, b on node-2, c on node-3 behind another vSwitch), each serving
TCP and UDP on ports 80 and 81, and a plain ECS instance ecs-out. Each test sets the scenario's
NetworkPolicies while it runs, probes the whole matrix (pods x pods, ports 80 and 81, TCP and UDP)
and requires that the network agrees with the evaluator (kubevpc.evaluator.netpol, written from the
specification) on every cell; then it checks cells written out by hand, allowed ones with their
refused twins, so that the test does not rest on the evaluator alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kubevpc.evaluator.matrix import Matrix
from kubevpc.lab import Lab, Probe

from .conftest import MODES, lab_in_mode, slow

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "netpol.yaml")
PORTS = [(80, "tcp"), (80, "udp"), (81, "tcp"), (81, "udp")]
PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def policy(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ns_sel(**labels) -> dict:
    return {"namespaceSelector": {"matchLabels": labels}}


def pod_sel(**labels) -> dict:
    return {"podSelector": {"matchLabels": labels}}


def probe_all(lab: Lab, sources=("pods",), dests=None) -> Matrix:
    m = lab.matrix(sources, PORTS, dests, timeout=slow(1.0))
    wrong = "\n".join(f"{c.source} -> {c.dest} {c.port}/{c.protocol}: expected {c.expected}, observed "
                      f"{c.observed} ({c.outcome}); {c.reason}" for c in m.differences)
    assert not m.differences, f"{len(m.differences)} cells differ:\n{wrong}\n{m.text()}{conntrack(lab, m)}"
    assert m.probe_s < slow(10), f"probing {len(m.cells)} cells took {m.probe_s:.1f} s"
    return m


def conntrack(lab: Lab, m: Matrix) -> str:
    """The datapath's conntrack entries between the differing cells' endpoints, for the failure message."""
    out = subprocess.run(["ovs-appctl", "--timeout=10", "dpctl/dump-conntrack"], capture_output=True, text=True).stdout
    pairs = {(f"src={lab.address(c.source)},", f"dst={lab._dest_ip(c.dest)},") for c in m.differences}
    lines = [line for line in out.splitlines() if any(s in line and d in line for s, d in pairs)]
    return "\nconntrack entries of these pairs:\n" + "\n".join(lines or ["(none)"])


def enforce(lab: Lab, *policies: dict, sources=("pods",), dests=None) -> Matrix:
    """Make these the NetworkPolicies, then probe everything."""
    took = lab.set_network_policies(*policies)
    # a change is programmed in 0.2-0.3 s as a rule (12 changes on this lab: median 0.23 s, max
    # 0.31 s, 2026-12-07), but about one change in a few hundred takes 1.07-1.08 s (seen once in each
    # of three runs of this suite that day, not explained yet: issue 21 reworks this path). The
    # bound is the live update's: well within kube-proxy's minimum sync period and a retry.
    assert took["flows_updated_s"] < 2.0, took
    return probe_all(lab, sources, dests)


def ok(m: Matrix, src: str, dst: str, port: int = 80, proto: str = "tcp") -> bool:
    ref = lambda e: e if "/" in e and e.split("/")[0] in ("pod", "ecs", "svc", "node") else f"pod/{e}"  # noqa: E731
    return m.cell(ref(src), ref(dst), port, proto).observed


# ------------------------------------------------------------------------------------ baseline
def test_without_policies_every_pod_reaches_every_pod_on_every_port(lab):
    m = enforce(lab)
    assert all(c.observed for c in m.cells), m.text()


# ------------------------------------------------------------------------------------ isolation
def test_default_deny_ingress_isolates_a_namespace_in_one_direction(lab):
    m = enforce(lab, policy("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    for src in PODS:
        for dst in ("x/a", "x/b", "x/c"):
            assert ok(m, src, dst) == (src == dst), (src, dst)
            assert ok(m, src, dst, 81, "udp") == (src == dst), (src, dst)
    assert ok(m, "x/b", "y/a") and ok(m, "x/c", "z/b", 81, "udp"), "egress of x is not isolated"


def test_default_deny_egress_isolates_the_other_direction(lab):
    m = enforce(lab, policy("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not ok(m, "x/a", "y/b") and not ok(m, "x/b", "x/c") and not ok(m, "x/c", "z/a", 80, "udp")
    assert ok(m, "y/b", "x/a") and ok(m, "z/a", "x/c", 80, "udp"), "ingress of x is not isolated"
    assert ok(m, "x/a", "x/a"), "a pod cannot block access to itself"


# ------------------------------------------------------------------------------------ selectors
def test_pod_selector_picks_peers_in_the_policys_namespace_only(lab):
    m = enforce(lab, policy("x", "allow-b", {"podSelector": {"matchLabels": {"pod": "a"}},
                                             "ingress": [{"from": [pod_sel(pod="b")]}]}))
    assert ok(m, "x/b", "x/a") and not ok(m, "y/b", "x/a") and not ok(m, "x/c", "x/a")
    assert ok(m, "y/c", "x/b"), "x/b is not selected by the policy"


def test_namespace_selector_picks_every_pod_of_the_matching_namespaces(lab):
    m = enforce(lab, policy("x", "allow-y", {"podSelector": {}, "ingress": [{"from": [ns_sel(ns="y")]}]}))
    assert ok(m, "y/a", "x/c") and ok(m, "y/c", "x/a", 81, "udp")
    assert not ok(m, "z/c", "x/a") and not ok(m, "x/b", "x/a"), "not even x's own pods"


def test_both_selectors_in_one_peer_is_and_in_two_peers_is_or(lab):
    m = enforce(lab, policy("x", "and", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "ingress": [{"from": [{**ns_sel(ns="y"), **pod_sel(pod="b")}]}]}))
    assert ok(m, "y/b", "x/a")
    assert not ok(m, "y/a", "x/a") and not ok(m, "z/b", "x/a") and not ok(m, "x/b", "x/a")
    m = enforce(lab, policy("x", "or", {"podSelector": {"matchLabels": {"pod": "a"}},
                                        "ingress": [{"from": [ns_sel(ns="y"), pod_sel(pod="b")]}]}))
    assert ok(m, "y/a", "x/a") and ok(m, "y/c", "x/a") and ok(m, "x/b", "x/a")
    assert not ok(m, "z/b", "x/a") and not ok(m, "x/c", "x/a")


def test_match_expressions(lab):
    m = enforce(lab, policy("x", "expr", {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "ns", "operator": "NotIn", "values": ["y"]}]},
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"},
                                                 {"key": "pod", "operator": "NotIn", "values": ["a"]}]}}]}]}))
    assert ok(m, "z/b", "x/a") and ok(m, "x/c", "x/b") and ok(m, "z/c", "x/b", 81, "udp")
    assert not ok(m, "y/b", "x/a") and not ok(m, "z/a", "x/a") and not ok(m, "x/a", "x/b")
    assert ok(m, "y/a", "x/c"), "x/c is not selected (pod In [a, b])"


def test_ip_block_with_except_for_pods_and_ecs(lab):
    yb, zc = lab.address("pod/y/b"), lab.address("pod/z/c")
    ecs = lab.address("ecs/ecs-out")
    m = enforce(lab,
                policy("x", "from-all-but", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                    {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{yb}/32", f"{zc}/32"]}}]}]}),
                policy("x", "to-vpc-but", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
                                           "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16",
                                                                           "except": [f"{ecs}/32"]}}]}]}),
                sources=["pods", "ecs"], dests=["pods", "ecs"])
    assert ok(m, "y/a", "x/a") and ok(m, "z/b", "x/a", 81, "udp")
    assert not ok(m, "y/b", "x/a") and not ok(m, "z/c", "x/a", 81, "udp")
    assert not ok(m, "x/b", "ecs/ecs-out"), "the excepted address is not allowed"
    assert ok(m, "x/a", "ecs/ecs-out"), "x/a's egress is not isolated"
    m = enforce(lab, policy("x", "to-vpc", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
                                            "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]}),
                sources=["pods"], dests=["ecs"])
    assert ok(m, "x/b", "ecs/ecs-out"), "without the except it is allowed"


# ------------------------------------------------------------------------------------ ports
def test_named_port_resolves_on_the_destination_pod(lab):
    m = enforce(lab, policy("x", "named", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))
    assert ok(m, "y/a", "x/a", 81, "tcp") and ok(m, "z/c", "x/b", 81, "tcp")
    assert not ok(m, "y/a", "x/a", 80, "tcp") and not ok(m, "y/a", "x/a", 81, "udp")


def test_end_port_range(lab):
    m = enforce(lab, policy("x", "range", {"podSelector": {}, "ingress": [
        {"ports": [{"protocol": "UDP", "port": 80, "endPort": 81}]}]}))
    assert ok(m, "y/b", "x/a", 80, "udp") and ok(m, "y/b", "x/a", 81, "udp")
    assert not ok(m, "y/b", "x/a", 80, "tcp") and not ok(m, "y/b", "x/a", 81, "tcp")


# ------------------------------------------------------------------------------------ combining
def test_stacked_policies_add_up(lab):
    m = enforce(lab,
                policy("x", "from-y", {"podSelector": {"matchLabels": {"pod": "a"}},
                                       "ingress": [{"from": [ns_sel(ns="y")]}]}),
                policy("x", "from-z-81", {"podSelector": {"matchLabels": {"pod": "a"}},
                                          "ingress": [{"from": [ns_sel(ns="z")], "ports": [{"port": 81}]}]}))
    assert ok(m, "y/c", "x/a", 80) and ok(m, "z/c", "x/a", 81)
    assert not ok(m, "z/c", "x/a", 80) and not ok(m, "z/c", "x/a", 81, "udp") and not ok(m, "x/b", "x/a", 81)


def test_egress_and_ingress_must_both_allow(lab):
    m = enforce(lab,
                policy("x", "egress-to-y", {"podSelector": {}, "policyTypes": ["Egress"],
                                            "egress": [{"to": [ns_sel(ns="y")]}]}),
                policy("y", "b-from-z", {"podSelector": {"matchLabels": {"pod": "b"}},
                                         "ingress": [{"from": [ns_sel(ns="z")]}]}))
    assert ok(m, "x/a", "y/a") and ok(m, "z/a", "y/b")
    assert not ok(m, "x/a", "y/b"), "egress allows, ingress does not"
    assert not ok(m, "x/c", "z/a"), "ingress is open, egress does not allow"


SEND = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[1])))
s.settimeout(1.0)
try:
    s.connect((sys.argv[2], 80))
    s.send(b"kubevpc-probe\\n")
    print(s.recv(2000).decode())
except OSError as e:
    print("none", e)
"""


def test_probes_are_new_connections_though_conntrack_remembers_old_ones(lab):
    """Conntrack remembers a path's earlier packets: a UDP flow for 30 s after its last packet. A
    datagram from the source port of an exchange made before a default deny egress still gets
    through (established packets skip the policy tables), and one from a fresh port is refused.
    So the matrix probes, TCP and UDP, never reuse a recent source port (kubevpc.probe.PortBlocks;
    docs/design.md, "Probes are new connections", has the TCP case): each round takes ports of its
    own, below the pod's ephemeral range, so kernel-chosen ports never collide with them either."""
    def send(port: int, dst: str) -> str:
        return lab.exec("pod/x/c", [sys.executable, "-c", SEND, str(port), lab.address(dst)]).stdout

    lab.set_network_policies()
    before = send(9999, "pod/y/a")
    assert json.loads(before)["client"] == f"{lab.address('pod/x/c')}:9999", before
    m = enforce(lab, policy("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not ok(m, "x/c", "y/a", 80, "udp"), "a new UDP flow must be refused"
    again = send(9999, "pod/y/a")
    assert json.loads(again)["client"].endswith(":9999"), f"the established UDP flow was cut: {again}"
    fresh = send(9998, "pod/y/a")
    assert fresh.startswith("none"), f"a new UDP flow from another port got through: {fresh}"

    lab.set_network_policies()
    probes = [Probe("pod/x/c", f"pod/{d}", port, proto) for d in PODS for port, proto in PORTS]
    rounds = [lab.probe(probes, timeout=slow(1.0)) for _ in range(2)]
    assert all(r.ok for rs in rounds for r in rs), [r for rs in rounds for r in rs if not r.ok]
    ports = [{int(r.detail.rpartition(":")[2]) for r in rs} for rs in rounds]
    assert all(len(p) == len(probes) for p in ports), ports   # a port of its own for each probe
    assert not ports[0] & ports[1], "the second round reused source ports of the first"
    low = int(lab.exec("pod/x/c", ["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split()[0])
    assert max(ports[0] | ports[1]) < low, (sorted(ports[0] | ports[1]), low)


def test_policy_applies_after_service_dnat(lab):
    """svc-a in x selects the a pods: a policy on x/a applies to connections through its ClusterIP."""
    m = enforce(lab, policy("x", "a-from-y", {"podSelector": {"matchLabels": {"pod": "a"}},
                                              "ingress": [{"from": [ns_sel(ns="y")]}]}),
                dests=["pods", "svc/x/svc-a"])
    assert ok(m, "y/b", "svc/x/svc-a") and ok(m, "y/c", "svc/x/svc-a")
    assert not ok(m, "z/b", "svc/x/svc-a") and not ok(m, "x/c", "svc/x/svc-a")
    assert ok(m, "x/a", "svc/x/svc-a"), "hairpin: x/a reaches itself through its Service"
    m = enforce(lab, policy("z", "egress-not-x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]}]}),
        sources=["pod/z/*", "pod/y/a"], dests=["svc/x/svc-a"])
    assert not ok(m, "z/b", "svc/x/svc-a"), "egress is judged on the endpoint, not the ClusterIP"
    assert ok(m, "y/a", "svc/x/svc-a")


# ------------------------------------------------------------------------------------ changes
def test_label_changes_while_running_are_followed(lab):
    allow = policy("x", "y-b-only", {"podSelector": {"matchLabels": {"pod": "a"}},
                                     "ingress": [{"from": [{**ns_sel(ns="y"), **pod_sel(pod="b")}]}]})
    m = enforce(lab, allow)
    assert not ok(m, "y/a", "x/a") and not ok(m, "z/b", "x/a")
    try:
        assert lab.label("pod/y/a", {"pod": "b"})["flows_updated_s"] < 1.0
        assert lab.label("namespace/z", {"ns": "y"})["flows_updated_s"] < 1.0
        m = probe_all(lab)
        assert ok(m, "y/a", "x/a") and ok(m, "z/b", "x/a")
        assert not ok(m, "z/a", "x/a")
    finally:
        lab.label("pod/y/a", {"pod": "a"})
        lab.label("namespace/z", {"ns": "z"})
    m = probe_all(lab)
    assert not ok(m, "y/a", "x/a") and not ok(m, "z/b", "x/a")


def test_policy_changes_keep_established_connections(lab):
    """A TCP stream from y/a to z/b runs while policies come and go, the last of which denies new
    connections to z/b: no second of the stream stalls (established connections skip the policy
    tables, as conntrack-based implementations do), and a new connection is refused."""
    later = [policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
             policy("z", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    server = subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid("pod/z/b")), "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        client = subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid("pod/y/a")), "iperf3", "-c",
                                   lab.address("pod/z/b"), "-p", "5201", "-t", "6", "-i", "1", "-J"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        lab.set_network_policies(policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        lab.set_network_policies(*later)
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, out[-500:] + err
        intervals = [i["sum"]["bytes"] for i in json.loads(out)["intervals"]]
        assert len(intervals) >= 5 and all(b > 0 for b in intervals), intervals
    finally:
        server.kill()
        server.wait(timeout=5)
    # twin: a new connection on the same path is refused now
    m = enforce(lab, *later)
    assert not ok(m, "y/a", "z/b") and not ok(m, "y/a", "z/b", 81, "udp") and ok(m, "z/a", "y/a")
    lab.set_network_policies()


def test_a_policy_drop_counter_rises_by_the_packets_a_denied_probe_sent(lab):
    lab.set_network_policies(policy("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    prefix = "x/a is isolated for ingress by NetworkPolicy x/deny-ingress"

    def dropped() -> int:
        return sum(c.packets for c in lab.rule_counters()
                   if c.kind == "NetworkPolicy" and c.action == "drop" and c.name.startswith(prefix))

    def settled(before: int, expected: int) -> int:
        # Open vSwitch adds the datapath's counts to its flows' when its revalidators run (every 500 ms)
        deadline = time.monotonic() + 5
        while (n := dropped() - before) != expected and time.monotonic() < deadline:
            time.sleep(0.25)
        return n

    script = ("import socket, sys, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for i in range(7):\n    s.sendto(b'x' * 64, (sys.argv[1], 80)); time.sleep(0.05)\n")
    before = dropped()
    assert lab.exec("pod/y/b", [sys.executable, "-c", script, lab.address("pod/x/a")]).returncode == 0
    assert settled(before, 7) == 7
    # the twin: y/a is not isolated; datagrams to it are not counted against x/a's isolation
    assert lab.exec("pod/y/b", [sys.executable, "-c", script, lab.address("pod/y/a")]).returncode == 0
    time.sleep(1.5)
    assert settled(before, 7) == 7
    node_bridge = lab.host("pod/x/a").bridge.removeprefix(lab.run + "-")
    assert any(c.name.startswith(prefix) and c.bridge == node_bridge for c in lab.rule_counters()), node_bridge


def test_no_packet_in_during_policy_enforcement(lab):
    enforce(lab, policy("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    status = lab.status()
    assert sum(b.get("packet_in", 0) for b in status["bridges"].values()) == 0, status
