"""Pods coming and going while the scenario runs, in each pod network mode: a Deployment scaled
up and down, a Pod applied and deleted. New pods serve, join Services, DNS, SLB backends and
NetworkPolicy; pods that go leave all of it and leave nothing behind; changes a running pod
cannot take are refused before anything is built.

tests/e2e/data/services.yaml: web has two replicas (web-0 on node-1, web-1 on node-2), so node-3
starts with no web endpoint. The tests run in order on one lab per mode.
"""
from __future__ import annotations

import collections
import os
import subprocess

import pytest

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab import Lab, Probe
from kubevpc.ledger import existing_bridges

from .conftest import MODES, lab_in_mode
from .test_services import backend_key, name, resolve, wait_health

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "services.yaml")


def leftovers(run: str) -> list[str]:
    """Namespaces, interfaces and bridges of the run that exist on the machine."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.split("\n")
    return ([n.split()[0] for n in netns if n.startswith(run + "-")] +
            [line.split(":")[1].strip().split("@")[0] for line in links if ":" in line
             and line.split(":")[1].strip().startswith(run)] +
            [b for b in existing_bridges() if b.startswith(run + "-")])


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    built = next(runs)
    yield built
    next(runs, None)
    assert leftovers(built.run) == [], "pods added while running must go at teardown too"


def pod_interfaces(lab: Lab, key) -> dict:
    """Where a pod (or an SLB: key or HostPlan) lives on the machine: its namespace, its veth, its
    port on the node (vSwitch) bridge."""
    h = lab.plan.host(key) if isinstance(key, str) else key
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ports = subprocess.run(["ovs-vsctl", "list-ports", h.bridge], capture_output=True, text=True).stdout.split()
    return {"netns": h.netns in netns.split(), "veth": os.path.exists(f"/sys/class/net/{h.veth}"),
            "port": h.veth in ports}


def spread(lab: Lab, source: str, service: str, count: int) -> collections.Counter:
    results = lab.probe([Probe(source, service, 80)] * count)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    return collections.Counter(name(r) for r in results)


def test_scaling_up_starts_pods_that_serve_and_join_services_dns_and_slbs(lab):
    before = {h.key: h for h in lab.plan.hosts}
    # twin first: node-3 has no web endpoint, so internalTrafficPolicy Local drops its pod's connections
    assert lab.connect("pod/client-3", "svc/web-itp", 80, timeout=1).outcome == "timeout"
    took = lab.scale("deploy/default/web", 4)
    assert "pods_started_s" in took and "pods_removed_s" not in took
    web2, web3 = lab.plan.host("pod/default/web-2"), lab.plan.host("pod/default/web-3")
    assert (web2.node, web3.node) == ("node-3", "node-1"), "replicas are placed round-robin by index"
    for key, h in before.items():               # nothing that ran moved or changed its address or port
        assert lab.plan.host(key).model_dump(exclude={"labels", "ready"}) == h.model_dump(exclude={"labels", "ready"})
    ips = [h.ip for h in lab.plan.hosts]
    assert len(ips) == len(set(ips)), "every address is held once"
    for h in (web2, web3):
        assert pod_interfaces(lab, h.key) == {"netns": True, "veth": True, "port": True}
        r = lab.connect("pod/client-1", h.key, 8080)
        assert r.outcome == "answered" and name(r) == h.name, r.detail
    # the ClusterIP spreads over all four: binomial(120, 1/4) is outside 10..50 with probability below 1e-5
    counts = spread(lab, "pod/client-1", "svc/web", 120)
    assert set(counts) == {"web-0", "web-1", "web-2", "web-3"} and all(10 <= n <= 50 for n in counts.values()), counts
    # node-3 now has a local endpoint: the same connection is answered, by web-2 only
    results = lab.probe([Probe("pod/client-3", "svc/web-itp", 80)] * 10)
    assert {name(r) for r in results} == {"web-2"}, [r.detail for r in results if not r.ok]
    # DNS: the headless Service lists the new pods; the new pod resolves names itself
    got = resolve(lab, "pod/web-2", [("web-headless", "A"), ("web", "A")])
    assert got["web-headless/A"] == sorted(lab.address(f"pod/web-{i}") for i in range(4))
    assert got["web/A"] == [lab.service("web").cluster_ip]
    # SLB: eni sends to the pods themselves, so the new pods become backends; in the other modes
    # node-3's health check port answers 200 now that it has a local endpoint
    if lab.plan.cluster.mode == "eni":
        wait_health(lab, "default/web-lb", {backend_key(lab, "default/web-lb", f"pod/default/web-{i}"): "healthy"
                                            for i in range(4)}, 20)
    else:
        wait_health(lab, "default/web-lb-local", {backend_key(lab, "default/web-lb-local", "node-3"): "healthy"}, 20)


def test_scaling_down_removes_pods_and_what_they_held(lab):
    gone = [lab.plan.host(f"pod/default/web-{i}") for i in (1, 2, 3)]
    took = lab.scale("deploy/default/web", 1, grace_period=0)
    assert "pods_removed_s" in took and "pods_started_s" not in took
    assert [h.key for h in lab.plan.pods if h.key.startswith("pod/default/web-")] == ["pod/default/web-0"]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for h in gone:
        assert h.netns not in netns and not os.path.exists(f"/sys/class/net/{h.veth}"), h.key
        assert h.veth not in subprocess.run(["ovs-vsctl", "list-ports", h.bridge], capture_output=True,
                                            text=True).stdout.split()
        assert h.key not in lab.net.hosts and not any(k.startswith(h.key) for k in lab.net.servers)
    # their addresses answer nothing; web-0, which stays, still does
    results = lab.probe([Probe("pod/client-1", h.ip, 8080) for h in gone], timeout=1)
    assert all(r.outcome in ("timeout", "unreachable", "refused") for r in results), [r.outcome for r in results]
    assert spread(lab, "pod/client-1", "svc/web", 20) == {"web-0": 20}
    assert resolve(lab, "pod/client-1", [("web-headless", "A")])["web-headless/A"] == [lab.address("pod/web-0")]
    assert lab.connect("pod/client-3", "svc/web-itp", 80, timeout=1).outcome == "timeout", "node-3 has none again"


def test_a_pod_applied_joins_its_service_and_leaves_it_when_deleted(lab):
    def pod(name: str, app: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"nodeName": "node-2", "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080}]}]}}
    lab.apply(pod("extra", "web"), pod("other", "other"))
    assert {h.node for h in (lab.host("pod/extra"), lab.host("pod/other"))} == {"node-2"}
    counts = spread(lab, "pod/client-3", "svc/web", 60)
    assert set(counts) == {"web-0", "extra"}, counts      # twin: "other" is not selected, never answers
    assert lab.connect("pod/client-3", "pod/other", 8080).outcome == "answered"
    extra = lab.plan.host("pod/default/extra")
    lab.delete("pod/default/extra", grace_period=0)
    assert pod_interfaces(lab, "pod/default/other") == {"netns": True, "veth": True, "port": True}
    assert extra.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert spread(lab, "pod/client-3", "svc/web", 20) == {"web-0": 20}
    assert lab.connect("pod/client-3", extra.ip, 8080, timeout=1).outcome != "answered"
    lab.delete("pod/default/other", grace_period=0)


def test_network_policy_covers_pods_added_later(lab):
    lab.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "web-from-clients"},
               "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                     "ports": [{"port": 8080}]}]}},
              {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder", "labels": {"app": "intruder"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 7000}]}]}})
    lab.scale("deploy/default/web", 2)
    try:
        for target in ("pod/web-0", "pod/web-1"):
            allowed = lab.connect("pod/client-3", target, 8080)
            denied = lab.connect("pod/intruder", target, 8080, timeout=1)
            assert allowed.outcome == "answered", (target, allowed.detail)
            assert denied.outcome == "timeout", (target, denied.outcome)
        # twin of the deny: a pod the policy does not select stays open to the new pod
        assert lab.connect("pod/intruder", "pod/client-3", 7000).outcome == "answered"
    finally:
        lab.delete("netpol/default/web-from-clients")
        lab.delete("pod/default/intruder", grace_period=0)


def test_changes_a_running_pod_cannot_take_are_refused_before_anything_is_built(lab):
    plan, netns = lab.plan, subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-1", "labels": {"app": "client"}},
              "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 7001}]}]}}
    with pytest.raises(KubevpcError, match=r"pod/default/client-1 would change its ports .*delete it and create"):
        lab.apply(client)
    client["spec"]["nodeName"] = "node-2"
    client["spec"]["containers"][0]["ports"][0]["containerPort"] = 7000
    with pytest.raises(KubevpcError, match="would change its node"):
        lab.apply(client)
    with pytest.raises(KubevpcError, match="the cluster's own"):
        lab.delete("pod/kube-system/kube-dns-0")
    with pytest.raises(KubevpcError, match="grace period -1: expected a whole number"):
        lab.delete("pod/default/web-0", grace_period=-1)
    with pytest.raises(KubevpcError, match="no Deployment default/nosuch"):
        lab.scale("deploy/default/nosuch", 3)
    with pytest.raises(KubevpcError, match="replicas -1: expected a whole number"):
        lab.scale("deploy/default/web", -1)
    # more pods than the addresses left: the planner's error names the object and the pool
    with pytest.raises(ScenarioError, match="exhausted|no free address"):
        lab.scale("deploy/default/web", 1000)
    assert lab.plan is plan
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == netns
    assert set(spread(lab, "pod/client-1", "svc/web", 20)) == {"web-0", "web-1"}


def test_zero_packet_ins_after_all_the_changes(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
