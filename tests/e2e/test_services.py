"""Services end to end, in each pod network mode: what clients see through ClusterIPs and NodePorts.

tests/e2e/data/services.yaml: web has two replicas (web-0 on node-1, web-1 on node-2); node-3 has
no web endpoint, so the Local traffic policies can be seen dropping there. Every allowed path has
a refused or dropped twin.
"""
from __future__ import annotations

import collections
import ipaddress
import os
import re
import subprocess
import time

import pytest

from kubevpc.lab import Lab, Probe

from .conftest import MODES, lab_in_mode

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "services.yaml")


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def name(result) -> str:
    return (result.answer or {}).get("name", "")


def client_ip(result) -> str:
    return (result.answer or {}).get("client", "").rsplit(":", 1)[0]


def node_ip(lab: Lab, node: str) -> str:
    return lab.address(f"node/{node}")


def dump(lab: Lab, node: str, table: int) -> str:
    bridge = lab.plan.node(node).bridge
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"table={table}"],
                          capture_output=True, text=True, check=True).stdout


# --------------------------------------------------------------------------------- ClusterIP
def test_clusterip_tcp_and_udp_reach_the_named_target_ports_and_keep_the_pod_source(lab):
    probes = [Probe("pod/client-1", "svc/web", 80), Probe("pod/client-3", "svc/web", 80),
              Probe("pod/client-1", "svc/web", 53, "udp"), Probe("pod/client-3", "svc/web", 53, "udp")]
    for p, r in zip(probes, lab.probe(probes)):
        assert r.outcome == "answered", (p, r.detail)
        assert name(r) in ("web-0", "web-1")
        assert client_ip(r) == lab.address(p.source), "the pod's source address is preserved through a ClusterIP"
        want = 8080 if p.proto == "tcp" else 5353
        assert r.answer["port"] == want, "targetPort by name resolves to the container port"
    # twin: a port the Service does not expose is dropped
    assert lab.connect("pod/client-1", "svc/web", 81, timeout=1).outcome == "timeout"


def test_connections_spread_over_the_endpoints(lab):
    results = lab.probe([Probe("pod/client-1", "svc/web", 80)] * 100)
    counts = collections.Counter(name(r) for r in results)
    assert sum(counts.values()) == 100 and set(counts) == {"web-0", "web-1"}, counts
    # binomial(100, 0.5): outside 25..75 happens with probability below 1e-6
    assert all(25 <= n <= 75 for n in counts.values()), counts


def test_a_service_without_ready_endpoints_refuses_at_once(lab):
    probes = [Probe("pod/client-1", "svc/empty", 80), Probe("pod/client-1", "svc/empty", 53, "udp"),
              Probe("node/node-2", "svc/empty", 80)]
    for p, r in zip(probes, lab.probe(probes, timeout=2)):
        assert r.outcome == "refused", (p, r.outcome, r.detail)
        assert r.elapsed_ms < 500, f"{p}: refused after {r.elapsed_ms} ms"
    # twin: the same client reaches a Service with endpoints
    assert lab.connect("pod/client-1", "svc/web", 80).outcome == "answered"


def test_hairpin_a_pod_reaches_itself_through_its_service(lab):
    results = lab.probe([Probe("pod/web-0", "svc/web", 80)] * 30)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    self_hits = [r for r in results if name(r) == "web-0"]
    assert self_hits, "30 connections never chose the pod itself"
    # masqueraded to its node, as kube-proxy masquerades hairpin traffic; others see the pod
    assert {client_ip(r) for r in self_hits} == {node_ip(lab, "node-1")}
    assert {client_ip(r) for r in results if name(r) == "web-1"} == {lab.address("pod/web-0")}


# ---------------------------------------------------------------------------------- NodePort
def test_nodeport_policy_cluster_answers_on_every_node_with_the_node_as_source(lab):
    nodes = ("node-1", "node-2", "node-3")
    probes = [Probe("ecs/ecs-client", f"node/{n}", 30080) for n in nodes for _ in range(6)]
    results = lab.probe(probes)
    for p, r in zip(probes, results):
        assert r.outcome == "answered", (p, r.detail)
        assert client_ip(r) == lab.address(p.dest), "externalTrafficPolicy Cluster: SNAT to the node"
    # node-3 has no endpoint of its own: it forwards to the others
    assert {name(r) for p, r in zip(probes, results) if p.dest == "node/node-3"} <= {"web-0", "web-1"}
    # pods reach NodePorts of other nodes too
    r = lab.connect("pod/client-3", "node/node-1", 30080)
    assert r.outcome == "answered" and client_ip(r) == node_ip(lab, "node-1")
    # twin: a NodePort nobody allocated is refused by the node
    assert lab.connect("ecs/ecs-client", "node/node-1", 30099).outcome == "refused"


def test_nodeport_policy_local_keeps_the_client_address_and_only_serves_local_endpoints(lab):
    results = lab.probe([Probe("ecs/ecs-client", "node/node-1", 30081)] * 6 +
                        [Probe("ecs/ecs-client", "node/node-2", 30081)] * 6)
    assert [name(r) for r in results] == ["web-0"] * 6 + ["web-1"] * 6
    assert {client_ip(r) for r in results} == {lab.address("ecs/ecs-client")}
    # twin: node-3 has no local endpoint: dropped, as kube-proxy drops it
    assert lab.connect("ecs/ecs-client", "node/node-3", 30081, timeout=1).outcome == "timeout"


def test_internal_traffic_policy_local(lab):
    results = lab.probe([Probe("pod/client-1", "svc/web-itp", 80)] * 10)
    assert [name(r) for r in results] == ["web-0"] * 10, "only node-1's endpoint"
    # twin: from node-3, which has no endpoint, the traffic is dropped
    assert lab.connect("pod/client-3", "svc/web-itp", 80, timeout=1).outcome == "timeout"


def test_nodes_reach_clusterips_plain_instances_do_not(lab):
    r = lab.connect("node/node-3", "svc/web", 80)
    assert r.outcome == "answered" and client_ip(r) == node_ip(lab, "node-3")
    # twin: an ECS instance that is not a node has no kube-proxy: the VPC has no route to ClusterIPs
    assert lab.connect("ecs/ecs-client", "svc/web", 80, timeout=1).outcome == "timeout"


# ---------------------------------------------------------------------------------- affinity
def test_session_affinity_holds_then_ends_after_its_timeout(lab):
    sticky = [name(lab.connect("pod/client-1", "svc/sticky", 80)) for _ in range(6)]
    assert len(set(sticky)) == 1 and sticky[0] in ("web-0", "web-1"), sticky
    learned = dump(lab, "node-1", 22)
    assert f"nw_src={lab.address('pod/client-1')}" in learned and "hard_timeout=3" in learned
    # twin: without affinity, 20 sequential connections from the same client use both endpoints
    plain = {name(lab.connect("pod/client-1", "svc/web", 80)) for _ in range(20)}
    assert plain == {"web-0", "web-1"}
    # timeoutSeconds is 3: the learned flow goes ...
    client = f"nw_src={lab.address('pod/client-1')}"
    deadline = time.monotonic() + 8
    while client in dump(lab, "node-1", 22):
        assert time.monotonic() < deadline, "the learned affinity flow outlived its timeout"
        time.sleep(0.2)
    # ... the datapath's flow cache forgets the remembered path once the revalidators have been
    # through it (about half a second later) ...
    revalidated()
    # ... and the next connection is balanced by the group again, which learns afresh
    assert lab.connect("pod/client-1", "svc/sticky", 80).outcome == "answered"
    revalidated()
    fresh = [line for line in dump(lab, "node-1", 22).splitlines() if client in line]
    assert len(fresh) == 1 and float(re.search(r"duration=([\d.]+)s", fresh[0]).group(1)) < 2.0, fresh
    chosen = int(re.search(r"load:(0x[0-9a-f]+)->NXM_NX_REG2", fresh[0]).group(1), 16)
    assert str(ipaddress.IPv4Address(chosen)) in (lab.address("pod/web-0"), lab.address("pod/web-1"))


def revalidated() -> None:
    subprocess.run(["ovs-appctl", "--timeout=10", "revalidator/wait"], check=True, capture_output=True)


# --------------------------------------------------------------------------------------- DNS
RESOLVE = """
import json, sys
import dns.resolver, dns.rdatatype
r = dns.resolver.Resolver()          # reads this pod's /etc/resolv.conf
out = {}
for name, rtype in json.loads(sys.argv[1]):
    try:
        ans = r.resolve(name, rtype, search=True, raise_on_no_answer=False)
        out[f"{name}/{rtype}"] = sorted(rr.to_text() for rrset in ans.response.answer for rr in rrset)
    except dns.resolver.NXDOMAIN:
        out[f"{name}/{rtype}"] = "NXDOMAIN"
print(json.dumps(out))
"""


def resolve(lab: Lab, pod: str, queries: list[tuple[str, str]]) -> dict:
    import json
    import sys
    res = lab.exec(pod, [sys.executable, "-c", RESOLVE, json.dumps(queries)])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_cluster_dns_answers_from_inside_a_pod(lab):
    web = lab.service("web").cluster_ip
    pods = sorted(lab.address(p) for p in ("pod/web-0", "pod/web-1"))
    got = resolve(lab, "pod/client-1", [
        ("web", "A"), ("web.default", "A"), ("web.default.svc.cluster.local.", "A"),
        ("web-headless", "A"), ("ext", "A"), ("kube-dns.kube-system", "A"), ("_http._tcp.web-headless", "SRV"),
        ("nosuch.default.svc.cluster.local.", "A"), ("web.nosuchns.svc.cluster.local.", "A")])
    assert got["web/A"] == [web] and got["web.default/A"] == [web], "search paths: web and web.default resolve"
    assert got["web.default.svc.cluster.local./A"] == [web]
    assert got["web-headless/A"] == pods, "headless: every ready pod"
    assert got["ext/A"] == ["db.example.com."], "ExternalName: a CNAME, never proxied"
    assert got["kube-dns.kube-system/A"] == [lab.plan.dns.ip]
    assert len(got["_http._tcp.web-headless/SRV"]) == 2 and all(" 8080 " in s for s in got["_http._tcp.web-headless/SRV"])
    # twins: names that do not exist
    assert got["nosuch.default.svc.cluster.local./A"] == "NXDOMAIN"
    assert got["web.nosuchns.svc.cluster.local./A"] == "NXDOMAIN"


def test_each_pod_has_its_own_resolv_conf_and_the_machines_is_untouched(lab):
    with open("/etc/resolv.conf", encoding="utf-8") as fh:
        machine = fh.read()
    for pod, ns in (("pod/client-1", "default"), ("pod/kube-system/kube-dns-0", "kube-system")):
        text = lab.exec(pod, ["cat", "/etc/resolv.conf"]).stdout
        assert f"nameserver {lab.plan.dns.ip}" in text and f"search {ns}.svc.cluster.local " in text
        assert "options ndots:5" in text
        netns = lab.host(pod).netns
        via_ip_netns = subprocess.run(["ip", "netns", "exec", netns, "cat", "/etc/resolv.conf"],
                                      capture_output=True, text=True).stdout
        assert via_ip_netns == text, "`ip netns exec` sees the pod's resolv.conf too"
    with open("/etc/resolv.conf", encoding="utf-8") as fh:
        assert fh.read() == machine
    mounts = subprocess.run(["findmnt", "-n", "/etc/resolv.conf"], capture_output=True, text=True).stdout
    assert not mounts.strip(), f"something is mounted over the machine's /etc/resolv.conf: {mounts}"
    # twin: an ECS instance is not a pod and keeps the machine's resolver configuration
    assert lab.plan.dns.ip not in lab.exec("ecs/ecs-client", ["cat", "/etc/resolv.conf"]).stdout


def test_zero_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}


# ----------------------------------------------------------------------------------------- SLB
def slb_state(lab: Lab, service: str, listener: str | None = None) -> dict:
    """The health checker's view: {"ip:port": status} of the SLB's one listener (or the one named)."""
    import json
    path = os.path.join(lab.net.state_dir, "slb-" + service.replace("/", "_") + ".state.json")
    with open(path, encoding="utf-8") as fh:
        listeners = json.load(fh)["listeners"]
    if listener is None:
        (backends,) = listeners.values()
    else:
        backends = listeners[listener]
    return {key: b["status"] for key, b in backends.items()}


def wait_health(lab: Lab, service: str, want: dict, deadline: float, listener: str | None = None) -> float:
    """Wait until the named backends have the wanted status; return the seconds it took."""
    t0 = time.monotonic()
    while True:
        state = slb_state(lab, service, listener)
        if all(state.get(k) == v for k, v in want.items()):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < deadline, f"{service}: {state}, wanted {want}"
        time.sleep(0.1)


def backend_key(lab: Lab, service: str, backend_id: str) -> str:
    slb = next(s for s in lab.plan.slbs if s.service == service)
    b = next(b for b in slb.listeners[0].backends if b.id == backend_id)
    return f"{b.ip}:{b.check_port}"


def test_slb_cluster_policy_balances_over_every_node(lab):
    nodes = ("node-1", "node-2", "node-3") if lab.plan.cluster.mode != "eni" else ("pod/default/web-0", "pod/default/web-1")
    wait_health(lab, "default/web-lb", {backend_key(lab, "default/web-lb", n): "healthy" for n in nodes}, 15)
    results = lab.probe([Probe("ecs/ecs-client", "slb/default/web-lb", 80)] * 30)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    assert {name(r) for r in results} == {"web-0", "web-1"}
    seen = {client_ip(r) for r in results}
    if lab.plan.cluster.mode == "eni":      # backends are the pods: the client's address arrives
        assert seen == {lab.address("ecs/ecs-client")}
    else:                                   # backends are NodePorts with policy Cluster: SNAT to the node
        assert seen <= {node_ip(lab, n) for n in nodes} and len(seen) >= 2
    # clients in the cluster reach the VIP too (kube-proxy short-circuits it): a pod keeps its address
    r = lab.connect("pod/client-3", "slb/default/web-lb", 80)
    assert r.outcome == "answered" and client_ip(r) == lab.address("pod/client-3")
    # twin: the VIP has no listener on port 81
    assert lab.connect("ecs/ecs-client", "slb/default/web-lb", 81, timeout=1).outcome == "timeout"


def test_slb_local_policy_keeps_the_client_address_and_skips_nodes_without_endpoints(lab):
    if lab.plan.cluster.mode == "eni":
        pytest.skip("eni: the SLB sends to the pods themselves, there is no node hop to keep local")
    want = {backend_key(lab, "default/web-lb-local", "node-1"): "healthy",
            backend_key(lab, "default/web-lb-local", "node-2"): "healthy",
            backend_key(lab, "default/web-lb-local", "node-3"): "unhealthy"}   # its health check port says 503
    wait_health(lab, "default/web-lb-local", want, 20)
    results = lab.probe([Probe("ecs/ecs-client", "slb/default/web-lb-local", 80)] * 30)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    assert {client_ip(r) for r in results} == {lab.address("ecs/ecs-client")}
    assert {name(r) for r in results} == {"web-0", "web-1"}


def test_slb_failover_and_recovery(lab):
    """A backend's server stops: it leaves rotation within unhealthy-threshold x interval plus one
    interval (here 2 x 1 s + 1 s, and the probe's own time); it returns after it restarts."""
    if lab.plan.cluster.mode == "eni":      # the backend is the pod itself
        service, backend, endpoint, program, survivor = ("default/web-lb", "pod/default/web-0", "pod/web-0",
                                                         "server", "web-1")
    else:                                   # the backend is node-1, judged by its health check port
        service, backend, endpoint, program, survivor = ("default/web-lb-local", "node-1", "node/node-1",
                                                         "nodehealth", "web-1")
    key = backend_key(lab, service, backend)
    wait_health(lab, service, {key: "healthy"}, 20)
    lab.stop_server(endpoint, program)
    try:
        took = wait_health(lab, service, {key: "unhealthy"}, 10)
        assert took < 2 * 1 + 1 + 1.5, f"failover took {took:.1f} s"
        time.sleep(0.5)                     # the controller reprograms the groups (it polls every 0.2 s)
        results = lab.probe([Probe("ecs/ecs-client", f"slb/{service}", 80)] * 20)
        assert [name(r) for r in results] == [survivor] * 20, "the failed backend is out of rotation"
    finally:
        lab.start_server(endpoint, program)
    wait_health(lab, service, {key: "healthy"}, 10)
    time.sleep(0.5)
    results = lab.probe([Probe("ecs/ecs-client", f"slb/{service}", 80)] * 30)
    assert {name(r) for r in results} == {"web-0", "web-1"}, "back in rotation after recovery"


# ------------------------------------------------------------------- changes while it runs
def test_a_pod_marked_not_ready_leaves_endpoints_groups_and_dns(lab):
    times = lab.set_ready("pod/web-1", False)
    try:
        assert times["flows_updated_s"] < 1.0, f"{times}: kube-proxy's minimum sync period is 1 s"
        results = lab.probe([Probe("pod/client-1", "svc/web", 80)] * 20)
        assert [name(r) for r in results] == ["web-0"] * 20
        deadline = time.monotonic() + 3           # the DNS server reloads its zone within 0.2 s
        while resolve(lab, "pod/client-1", [("web-headless", "A")])["web-headless/A"] != [lab.address("pod/web-0")]:
            assert time.monotonic() < deadline, "the headless Service still answers with the not-ready pod"
            time.sleep(0.1)
    finally:
        lab.set_ready("pod/web-1", True)
    # twin: ready again, both endpoints serve
    assert {name(r) for r in lab.probe([Probe("pod/client-1", "svc/web", 80)] * 30)} == {"web-0", "web-1"}


def test_session_affinity_switched_off_and_on_while_running(lab):
    sticky = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    ip = lab.service("sticky").cluster_ip
    lab.apply(sticky)                                  # sessionAffinity None
    try:
        assert lab.service("sticky").cluster_ip == ip, "the ClusterIP is kept across an update"
        plain = {name(lab.connect("pod/client-1", "svc/sticky", 80)) for _ in range(20)}
        assert plain == {"web-0", "web-1"}
    finally:
        lab.apply({**sticky, "spec": {**sticky["spec"], "sessionAffinity": "ClientIP",
                                      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3}}}})
    names = [name(lab.connect("pod/client-1", "svc/sticky", 80)) for _ in range(7)]
    # the first connection after the switch may still take a path the datapath cached before it;
    # from the one after, the choice is remembered
    assert len(set(names[1:])) == 1, names


def test_a_service_selector_changed_while_running(lab):
    empty = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
             "spec": {"selector": {"app": "web"}, "ports": [{"name": "tcp", "port": 80, "targetPort": 8080},
                                                             {"name": "udp", "port": 53, "protocol": "UDP"}]}}
    took = lab.apply(empty)["flows_updated_s"]
    try:
        assert took < 1.0
        assert lab.connect("pod/client-1", "svc/empty", 80).outcome == "answered"
    finally:
        lab.apply({**empty, "spec": {**empty["spec"], "selector": {"app": "nothing"}}})
    # twin: back to no endpoints, refused again
    assert lab.connect("pod/client-1", "svc/empty", 80).outcome == "refused"
