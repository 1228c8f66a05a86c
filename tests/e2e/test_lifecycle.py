"""The pod and Service lifecycle while a scenario runs, in each pod network mode, with
tests/e2e/data/services.yaml (web-0 on node-1, web-1 on node-2): graceful deletion and
terminating endpoints (KEP-1669), a Deployment replacing a deleted pod, eviction (pod phase),
LoadBalancer Services and their SLBs coming and going, the labels that switch kube-proxy off, and
Services changing type and ports. One lab per mode, apart from test_pods_runtime.py's, so that
neither lab carries the other's long run of changes."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from kubevpc.errors import KubevpcError
from kubevpc.lab import Lab, Probe

from .conftest import MODES, lab_in_mode
from .test_pods_runtime import leftovers, pod_interfaces, spread
from .test_services import backend_key, client_ip, name, resolve, wait_health

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "services.yaml")


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    built = next(runs)
    yield built
    next(runs, None)
    assert leftovers(built.run) == [], "pods and SLBs added while running must go at teardown too"


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
    # scaling down honours the pod's grace period (30 s): web-3 terminates, still answering
    took = lab.scale("deploy/default/web", 2)
    # what is left of its 30 s once the change returns: 30 less the change's own time (flows, then
    # the datapath's cache, which alone can take a second and more)
    assert 25 < took["terminating"]["pod/default/web-3"] <= 30, took
    web3 = lab.plan.host("pod/default/web-3")
    assert web3.terminating
    assert lab.connect("pod/client-1", web3.ip, 8080).outcome == "answered"
    assert set(spread(lab, "pod/client-1", "svc/web", 30)) == {"web-0", "web-2"}
    # deleted again with a shorter grace period, it goes at once
    lab.delete("pod/default/web-3", grace_period=0)
    assert web_pods(lab) == ["web-0", "web-2"]
    assert lab.connect("pod/client-1", web3.ip, 8080, timeout=1).outcome != "answered"


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
              svc("last-np", "last", {"type": "NodePort"}),
              svc("last-lb", "last", {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                  annotations=intranet),
              svc("last-dns", "last", {"clusterIP": "None"}),
              svc("last-pub", "last", {"clusterIP": "None", "publishNotReadyAddresses": True}))
    node1 = lab.address("node/node-1")
    lb = lab.service("last-lb")
    node_port, health = lb.ports[0].node_port, lb.health_check_node_port
    cluster_port, node3 = lab.service("last-np").ports[0].node_port, lab.address("node/node-3")

    def observe() -> dict:
        r = lab.probe([Probe("pod/client-1", "svc/last", 80), Probe("pod/client-1", "svc/last-itp", 80),
                       Probe("pod/client-3", "svc/last-itp", 80), Probe("ecs/ecs-client", node1, node_port),
                       Probe("ecs/ecs-client", node1, health, "http"),
                       Probe("ecs/ecs-client", node3, cluster_port)], timeout=1)
        fqdn = [(f"{n}.default.svc.cluster.local.", "A") for n in ("last-dns", "last-pub")]
        dns = resolve(lab, "pod/client-3", fqdn)
        return {"cluster": r[0].outcome, "itp": r[1].outcome, "itp elsewhere": r[2].outcome,
                "node port": r[3].outcome, "client seen": client_ip(r[3]), "health": (r[4].answer or {}).get("status"),
                "dns": dns[f"{fqdn[0][0]}/A"], "dns published": dns[f"{fqdn[1][0]}/A"],
                "node port, Cluster, another node": (r[5].outcome, client_ip(r[5]))}
    ip = lab.address("pod/last")
    client = lab.address("ecs/ecs-client")
    both = {"cluster": "answered", "itp": "answered", "itp elsewhere": "timeout", "node port": "answered",
            "client seen": client, "dns": [ip], "dns published": [ip],
            "node port, Cluster, another node": ("answered", node3)}    # masqueraded by node-3
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
        for name in ("last", "last-itp", "last-np", "last-lb", "last-dns", "last-pub"):
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


def test_zero_packet_ins_and_no_controller_error(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
