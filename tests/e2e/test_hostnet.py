"""Pods with spec.hostNetwork, in each pod network mode, with tests/e2e/data/hostnet.yaml (its
header says what each object shows): a host-network pod as a Service backend (at its node's
address) and as a client (its node's traffic), NetworkPolicy that does not select it, and one
added, stopped and removed while running. Each allowed path has its refused twin.
"""
from __future__ import annotations

import os

import pytest

from kubevpc.errors import KubevpcError
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks

from .conftest import MODES, lab_in_mode
from .test_services import client_ip, name

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "hostnet.yaml")


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)


def seen(lab, source: str, dest: str, port: int, count: int = 10) -> set[tuple[str, str]]:
    """Who answered, and the client address it saw, over `count` connections."""
    results = lab.probe([Probe(source, dest, port)] * count)
    assert {r.outcome for r in results} == {"answered"}, [r.detail for r in results if not r.ok]
    return {(name(r), client_ip(r)) for r in results}


def test_the_declared_and_default_checks_pass(lab):
    outcomes = run_checks(lab, default_checks(lab.plan) + declared_checks(lab.plan))
    assert all(o.passed for o in outcomes), [(o.check.title, o.outcome, o.client, o.why) for o in outcomes
                                             if not o.passed]


def test_a_host_network_pod_serves_on_its_nodes_address(lab):
    node2 = lab.address("node/node-2")
    assert lab.address("pod/hostweb-0") == node2
    assert seen(lab, "ecs/ecs-client", "pod/hostweb-0", 9090) == {("hostweb-0", lab.address("ecs/ecs-client"))}
    assert seen(lab, "pod/client-3", "node/node-2", 9090) == {("hostweb-0", lab.address("pod/client-3"))}
    # twin: nothing listens there on node-1
    assert lab.connect("ecs/ecs-client", "node/node-1", 9090, timeout=1).outcome == "refused"


def test_as_a_service_endpoint(lab):
    for client in ("pod/client-1", "pod/client-3"):     # pods keep their address
        assert seen(lab, client, "svc/hostweb", 80) == {("hostweb-0", lab.address(client))}
    for client, node in (("node/node-1", "node-1"), ("pod/hostclient-3", "node-3")):     # other nodes' own
        assert seen(lab, client, "svc/hostweb", 80) == {("hostweb-0", lab.address(f"node/{node}"))}
    # the node itself (and a host-network pod on it): SNATed to the ClusterIP (kubevpc's deviation)
    cluster_ip = lab.service("hostweb").cluster_ip
    for client in ("node/node-2", "pod/hostclient-2"):
        assert seen(lab, client, "svc/hostweb", 80) == {("hostweb-0", cluster_ip)}


def test_nodeports_of_a_host_network_endpoint(lab):
    ecs = lab.address("ecs/ecs-client")
    # Cluster: masqueraded on another node, delivered unmasqueraded on the endpoint's own node
    assert seen(lab, "ecs/ecs-client", lab.address("node/node-1"), 30090) == {("hostweb-0", lab.address("node/node-1"))}
    assert seen(lab, "ecs/ecs-client", lab.address("node/node-2"), 30090) == {("hostweb-0", ecs)}
    # Local: the endpoint's node only; twin: node-3 has none and drops it
    assert seen(lab, "ecs/ecs-client", lab.address("node/node-2"), 30091) == {("hostweb-0", ecs)}
    assert lab.connect("ecs/ecs-client", lab.address("node/node-3"), 30091, timeout=1).outcome == "timeout"


def test_as_a_client_internal_traffic_policy_local_uses_its_nodes_endpoints(lab):
    assert seen(lab, "pod/hostclient-2", "svc/web-itp", 80, 20) == {("web-1", lab.address("node/node-2"))}
    assert lab.connect("pod/hostclient-3", "svc/web-itp", 80, timeout=1).outcome == "timeout"


def test_network_policy_selects_no_host_network_pod(lab):
    # hostweb-deny-all selects app: hostweb, which hostweb-0 carries: it stays open
    assert seen(lab, "pod/client-3", "pod/hostweb-0", 9090, 3) == {("hostweb-0", lab.address("pod/client-3"))}
    # web-from-hostclients: role: hostclient lets client-1 in, not the host-network pods with the label
    assert seen(lab, "pod/client-1", "pod/web-0", 8080, 3) == {("web-0", lab.address("pod/client-1"))}
    got = lab.probe([Probe("pod/hostclient-3", "pod/web-0", 8080), Probe("pod/hostclient-2", "pod/web-0", 8080),
                     Probe("pod/client-3", "pod/web-1", 8080)], timeout=1)
    assert [r.outcome for r in got] == ["timeout"] * 3, [r.detail for r in got]
    # a pod and its own node: hostclient-2 reaches web-1
    assert seen(lab, "pod/hostclient-2", "pod/web-1", 8080, 3) == {("web-1", lab.address("node/node-2"))}


def test_a_host_network_pod_comes_stops_and_goes_while_running(lab):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostclient-1", "labels": {"app": "hostclient"}},
           "spec": {"nodeName": "node-1", "hostNetwork": True, "containers": [{"name": "c", "ports": [
               {"containerPort": 7002}]}]}}
    assert lab.connect("pod/client-3", "node/node-1", 7002, timeout=1).outcome == "refused"
    lab.apply(pod)
    try:
        assert seen(lab, "pod/client-3", "pod/hostclient-1", 7002, 3) == {("hostclient-1", lab.address("pod/client-3"))}
        assert any(s["endpoint"] == "pod/default/hostclient-1" and s["state"] == "running" for s in lab.servers())
        lab.stop_server("pod/hostclient-1")
        assert lab.connect("pod/client-3", "pod/hostclient-1", 7002, timeout=1).outcome == "refused"
        assert lab.connect("ecs/ecs-client", "pod/hostweb-0", 9090).outcome == "answered", "the node's others run on"
        lab.start_server("pod/hostclient-1")
        assert lab.connect("pod/client-3", "pod/hostclient-1", 7002).outcome == "answered"
        # two host-network pods on one node may not share a port: the change is refused, nothing changes
        with pytest.raises(KubevpcError, match="didn't have free ports"):
            lab.apply({**pod, "metadata": {"name": "hostclient-1b"}})
    finally:
        lab.delete("pod/hostclient-1", grace_period=0)
    assert lab.connect("pod/client-3", "node/node-1", 7002, timeout=1).outcome == "refused"
    assert lab.connect("pod/client-1", "svc/hostweb", 80).outcome == "answered", "the node's namespace is left"


def test_no_controller_errors(lab):
    assert lab.status()["errors"] == []
