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
import time

import pytest

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab import Lab, Probe
from kubevpc.ledger import existing_bridges

from .conftest import MODES, lab_in_mode
from .test_services import backend_key, client_ip, name, resolve, wait_health

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


def web_pods(lab: Lab) -> list[str]:
    return sorted(h.name for h in lab.plan.pods if h.name.startswith("web-"))


def wait_gone(lab: Lab, key: str, deadline: float) -> float:
    """Seconds until the Lab has removed `key` (its grace period over)."""
    t0 = time.monotonic()
    while any(h.key == key for h in lab.plan.pods):
        assert time.monotonic() - t0 < deadline, f"{key} still there after {deadline} s"
        time.sleep(0.05)
    with lab.lock:              # the change that removes it has finished
        return time.monotonic() - t0


def test_a_deleted_pod_serves_through_its_grace_period_then_goes(lab):
    lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slow", "labels": {"app": "web"}},
               "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 4, "containers": [
                   {"name": "c", "ports": [{"name": "http", "containerPort": 8080},
                                           {"name": "echo", "containerPort": 5353, "protocol": "UDP"}]}]}})
    assert "slow" in spread(lab, "pod/client-3", "svc/web", 40), "a ready pod of the Service"
    slow = lab.plan.host("pod/default/slow")
    t0 = time.monotonic()
    took = lab.delete("pod/default/slow")                  # its own grace period: 4 s
    assert 3 < took["terminating"]["pod/default/slow"] <= 4, took
    assert lab.plan.host("pod/default/slow").terminating
    e = next(e for e in lab.service("web").endpoints if e.name == "slow")
    assert (e.ready, e.serving, e.terminating) == (False, True, True)
    # it keeps running and answers on its own address ...
    r = lab.connect("pod/client-1", slow.ip, 8080)
    assert r.outcome == "answered" and name(r) == "slow", r.detail
    # ... but the Service has ready endpoints, so kube-proxy sends it nothing new; DNS drops it
    assert set(spread(lab, "pod/client-3", "svc/web", 40)) == {"web-0", "web-1"}
    got = resolve(lab, "pod/client-1", [("web-headless", "A")])["web-headless/A"]
    assert slow.ip not in got and got == sorted(lab.address(f"pod/web-{i}") for i in range(2))
    # the grace period over, it is removed, with everything it held
    wait_gone(lab, "pod/default/slow", 15)
    assert 3.5 < time.monotonic() - t0 < 12, time.monotonic() - t0
    assert pod_interfaces(lab, "pod/default/web-0")["netns"]
    assert slow.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.connect("pod/client-1", slow.ip, 8080, timeout=1).outcome != "answered"
    assert lab.status()["errors"] == []


def test_a_deployment_replaces_a_deleted_pod_under_a_new_name_and_address(lab):
    assert web_pods(lab) == ["web-0", "web-1"]
    old = lab.plan.host("pod/default/web-1")
    took = lab.delete("pod/default/web-1", grace_period=0)
    assert "pods_started_s" in took and "pods_removed_s" in took, took
    assert web_pods(lab) == ["web-0", "web-2"], "the ReplicaSet makes a new pod; the deleted one is gone"
    new = lab.plan.host("pod/default/web-2")
    assert new.ip != old.ip and new.ip not in {h.ip for h in lab.plan.hosts if h.key != new.key}
    r = lab.connect("pod/client-1", "pod/web-2", 8080)
    assert r.outcome == "answered" and name(r) == "web-2", r.detail
    assert set(spread(lab, "pod/client-1", "svc/web", 40)) == {"web-0", "web-2"}
    assert lab.connect("pod/client-1", old.ip, 8080, timeout=1).outcome != "answered"
    # scaling up afterwards takes the next index, never the deleted pod's name
    lab.scale("deploy/default/web", 3)
    assert web_pods(lab) == ["web-0", "web-2", "web-3"]
    lab.scale("deploy/default/web", 2, grace_period=0)
    assert web_pods(lab) == ["web-0", "web-2"]


def test_an_evicted_pod_stops_and_its_service_refuses_at_once(lab):
    def pod(phase: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evictee", "labels": {"app": "lonely"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
                "status": {"phase": phase, **({"reason": "Evicted"} if phase == "Failed" else {})}}
    lab.apply(pod("Running"), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lonely"},
                               "spec": {"selector": {"app": "lonely"}, "publishNotReadyAddresses": True,
                                        "ports": [{"port": 80, "targetPort": 8080}]}})
    try:
        assert lab.connect("pod/client-3", "svc/lonely", 80).outcome == "answered", "twin: running, it serves"
        took = lab.apply(pod("Failed"))
        assert took["datapath_s"] < 3, took
        assert lab.service("lonely").endpoints == (), "never an endpoint, even with publishNotReadyAddresses"
        r = lab.connect("pod/client-3", "svc/lonely", 80)
        assert r.outcome == "refused" and r.elapsed_ms < 500, (r.outcome, r.elapsed_ms)
        assert lab.connect("pod/client-3", "pod/evictee", 8080, timeout=1).outcome != "answered"
        assert "phase Failed" in lab.down_reason("pod/default/evictee")
        with pytest.raises(KubevpcError, match="phase Failed, which is final"):
            lab.apply(pod("Running"))
    finally:
        lab.delete("svc/default/lonely")
        lab.delete("pod/default/evictee", grace_period=0)


def test_a_loadbalancer_service_applied_while_running_gets_an_slb_and_loses_it_when_deleted(lab):
    annotations = {f"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-{k}": v for k, v in (
        ("address-type", "intranet"), ("health-check-interval", "1"), ("health-check-connect-timeout", "1"),
        ("healthy-threshold", "2"), ("unhealthy-threshold", "2"))}
    lb = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late-lb", "annotations": annotations},
          "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": 8080}]}}
    others = {h.key: h for h in lab.plan.hosts if h.kind == "slb"}
    t0 = time.monotonic()
    lab.apply(lb)
    host = lab.plan.host("slb/default/late-lb")
    assert pod_interfaces(lab, host.key) == {"netns": True, "veth": True, "port": True}
    assert all(lab.plan.host(k) == h for k, h in others.items()), "the running SLBs keep what they hold"
    slb = next(s for s in lab.plan.slbs if s.service == "default/late-lb")
    ids = [b.id for b in slb.listeners[0].backends]
    wait_health(lab, "default/late-lb", {backend_key(lab, "default/late-lb", i): "healthy" for i in ids}, 20)
    results = lab.probe([Probe("ecs/ecs-client", host.ip, 8000)] * 20)
    took = time.monotonic() - t0
    assert {r.outcome for r in results} == {"answered"} and {name(r) for r in results} <= {"web-0", "web-2"}, \
        [r.detail for r in results if not r.ok]
    assert took < 15, f"{took:.1f} s from apply to a serving SLB"
    assert lab.connect("ecs/ecs-client", host.ip, 8001, timeout=1).outcome != "answered", "twin: no such listener"
    lab.delete("svc/default/late-lb")
    assert "slb/default/late-lb" not in {h.key for h in lab.plan.hosts}
    assert pod_interfaces(lab, host) == {"netns": False, "veth": False, "port": False}
    assert not any(k.startswith(host.key) for k in lab.net.servers), "its health checker stopped"
    assert lab.connect("ecs/ecs-client", host.ip, 8000, timeout=1).outcome != "answered"
    for k, h in others.items():         # the other SLBs still serve
        assert lab.connect("ecs/ecs-client", h.ip, 80).outcome == "answered", k


def svc(name: str, app: str, spec: dict | None = None, labels: dict | None = None, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels or {}, **meta},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}], **(spec or {})}}


def test_a_service_left_with_terminating_endpoints_falls_back_to_them(lab):
    """KEP-1669: no ready endpoint, so kube-proxy uses those serving while terminating; the
    health check node port says 503 while the node port still serves; DNS keeps the pod only
    with publishNotReadyAddresses."""
    intranet = {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet"}
    lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "last", "labels": {"app": "last"}},
               "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 12,
                        "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}},
              svc("last", "last"), svc("last-itp", "last", {"internalTrafficPolicy": "Local"}),
              svc("last-lb", "last", {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                  annotations=intranet),
              svc("last-dns", "last", {"clusterIP": "None"}),
              svc("last-pub", "last", {"clusterIP": "None", "publishNotReadyAddresses": True}))
    node1 = lab.address("node/node-1")
    lb = lab.service("last-lb")
    node_port, health = lb.ports[0].node_port, lb.health_check_node_port

    def observe() -> dict:
        r = lab.probe([Probe("pod/client-1", "svc/last", 80), Probe("pod/client-1", "svc/last-itp", 80),
                       Probe("pod/client-3", "svc/last-itp", 80), Probe("ecs/ecs-client", node1, node_port),
                       Probe("ecs/ecs-client", node1, health, "http")], timeout=1)
        fqdn = [(f"{n}.default.svc.cluster.local.", "A") for n in ("last-dns", "last-pub")]
        dns = resolve(lab, "pod/client-3", fqdn)
        return {"cluster": r[0].outcome, "itp": r[1].outcome, "itp elsewhere": r[2].outcome,
                "node port": r[3].outcome, "client seen": client_ip(r[3]), "health": (r[4].answer or {}).get("status"),
                "dns": dns[f"{fqdn[0][0]}/A"], "dns published": dns[f"{fqdn[1][0]}/A"]}
    ip = lab.address("pod/last")
    client = lab.address("ecs/ecs-client")
    both = {"cluster": "answered", "itp": "answered", "itp elsewhere": "timeout", "node port": "answered",
            "client seen": client, "dns": [ip], "dns published": [ip]}
    try:
        assert observe() == {**both, "health": 200}, "twin: ready, it serves and its node is healthy"
        took = lab.delete("pod/default/last")
        assert took["terminating"]["pod/default/last"] > 9, took
        assert observe() == {**both, "health": 503, "dns": "NXDOMAIN"}, "a headless Service without records"
        lab.set_ready("pod/default/last", False)   # twin: not ready, not serving: nothing is left anywhere
        got = observe()
        assert (got["cluster"], got["itp"], got["node port"], got["health"]) == ("refused", "refused", "refused", 503), got
        lab.set_ready("pod/default/last", True)
        assert observe()["cluster"] == "answered"
        wait_gone(lab, "pod/default/last", 20)
        assert lab.connect("pod/client-1", "svc/last", 80, timeout=1).outcome == "refused", "gone: nothing left"
    finally:
        for name in ("last", "last-itp", "last-lb", "last-dns", "last-pub"):
            lab.delete(f"svc/default/{name}")
        if any(h.key == "pod/default/last" for h in lab.plan.pods):
            lab.delete("pod/default/last", grace_period=0)


def test_labels_that_switch_kube_proxy_off_take_a_service_down_and_back(lab):
    off = {"service.kubernetes.io/service-proxy-name": "other-proxy"}
    lab.apply(svc("quiet", "web", labels=off))
    try:
        cip = lab.service("quiet").cluster_ip
        r = lab.connect("pod/client-1", "svc/quiet", 80, timeout=1)
        assert r.outcome == "timeout", "not programmed: nothing answers, nothing refuses"
        assert resolve(lab, "pod/client-1", [("quiet", "A")])["quiet/A"] == [cip], "DNS still answers"
        took = lab.apply(svc("quiet", "web"))             # the label removed: kube-proxy takes it
        assert took["datapath_s"] < 3, took
        assert lab.connect("pod/client-1", "svc/quiet", 80).outcome == "answered"
        took = lab.apply(svc("quiet", "web", labels={"service.kubernetes.io/headless": ""}))
        assert took["datapath_s"] < 3, took
        assert lab.connect("pod/client-1", "svc/quiet", 80, timeout=1).outcome == "timeout"
        assert lab.service("quiet").cluster_ip == cip
    finally:
        lab.delete("svc/default/quiet")


def test_a_service_changes_type_and_ports_while_running(lab):
    def dual(ports: list[dict], **spec) -> dict:
        return svc("dual", "web", {"ports": ports, **spec})
    tcp = {"name": "tcp", "port": 80, "targetPort": 8080}
    udp = {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 5353}

    def outcomes() -> tuple[str, str]:
        r = lab.probe([Probe("pod/client-1", "svc/dual", 80), Probe("pod/client-1", "svc/dual", 80, "udp")], timeout=1)
        return r[0].outcome, r[1].outcome
    lab.apply(dual([tcp, udp]))
    try:
        assert outcomes() == ("answered", "answered")
        cip = lab.service("dual").cluster_ip
        took = lab.apply(dual([udp]))                     # TCP/80 dropped, UDP/80 stays
        assert took["flows_updated_s"] < 1, took
        assert outcomes() == ("timeout", "answered")
        took = lab.apply(dual([tcp]))                     # and the reverse
        assert took["flows_updated_s"] < 1, took
        assert outcomes() == ("answered", "timeout")
        assert lab.service("dual").cluster_ip == cip, "the ClusterIP stays across changes"
        # ClusterIP -> NodePort: every node answers at the node port; and back: none does
        node = lab.address("node/node-2")
        took = lab.apply(dual([tcp], type="NodePort"))
        assert took["flows_updated_s"] < 1, took
        port = lab.service("dual").ports[0].node_port
        assert lab.connect("ecs/ecs-client", node, port).outcome == "answered"
        lab.apply(dual([tcp]))
        assert lab.service("dual").ports[0].node_port == 0
        assert lab.connect("ecs/ecs-client", node, port, timeout=1).outcome != "answered"
        assert outcomes()[0] == "answered"
        # deleted, the ClusterIP goes quiet; created again under the same name, it serves again
        lab.delete("svc/default/dual")
        assert lab.connect("pod/client-1", cip, 80, timeout=1).outcome == "timeout"
        lab.apply(dual([tcp]))
        assert outcomes()[0] == "answered"
    finally:
        lab.delete("svc/default/dual")


def test_zero_packet_ins_after_all_the_changes(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
