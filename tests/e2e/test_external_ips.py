"""Services' spec.externalIPs, in each pod network mode, with tests/e2e/data/externalip.yaml (its
header lists the five addresses and what each one shows). kube-proxy balances an external IP and
Service port like the ClusterIP for pods and nodes; clients in the VPC reach it only through a
custom route to a node, where externalTrafficPolicy decides. Each allowed path has its refused twin.
"""
from __future__ import annotations

import collections
import os

import pytest

from kubevpc.lab import Probe

from .conftest import MODES, lab_in_mode
from .test_services import client_ip, name

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "externalip.yaml")
CLUSTER, LOCAL, UNROUTED, LOCAL_NO_ENDPOINT, NO_ENDPOINT = (f"203.0.113.{n}" for n in range(10, 15))


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)


def answers(lab, source: str, ip: str, count: int = 20) -> collections.Counter:
    results = lab.probe([Probe(source, ip, 80)] * count)
    assert {r.outcome for r in results} == {"answered"}, [r.detail for r in results if not r.ok]
    return collections.Counter(name(r) for r in results)


def test_pods_and_nodes_reach_an_external_ip_as_the_cluster_ip(lab):
    for source in ("pod/client-1", "pod/client-3", "node/node-3"):
        assert set(answers(lab, source, CLUSTER, 30)) == {"web-0", "web-1"}, source
        # the address is balanced whether or not the VPC routes it
        assert set(answers(lab, source, UNROUTED, 30)) == {"web-0", "web-1"}, source
    # twin: a port the Service does not expose on the external IP is dropped
    assert lab.connect("pod/client-1", CLUSTER, 81, timeout=1).outcome == "timeout"
    # a pod's connection keeps its address; Local is for clients outside: pods use any endpoint
    r = lab.connect("pod/client-3", LOCAL, 80)
    assert r.outcome == "answered" and client_ip(r) == lab.address("pod/client-3"), r.detail
    assert set(answers(lab, "pod/client-3", LOCAL, 30)) == {"web-0", "web-1"}


def test_the_vpc_reaches_an_external_ip_through_a_route_to_a_node(lab):
    client = lab.address("ecs/ecs-client")
    # Cluster: node-3 (no endpoint of its own) balances over both and masquerades
    results = lab.probe([Probe("ecs/ecs-client", CLUSTER, 80)] * 30)
    assert {r.outcome for r in results} == {"answered"}, [r.detail for r in results if not r.ok]
    assert {name(r) for r in results} == {"web-0", "web-1"}
    assert {client_ip(r) for r in results} == {lab.address("node/node-3")}
    # Local: node-1 uses web-0 only, and the server sees the client's own address
    results = lab.probe([Probe("ecs/ecs-client", LOCAL, 80)] * 10)
    assert {(r.outcome, name(r), client_ip(r)) for r in results} == {("answered", "web-0", client)}
    # twins: no route, a Local node without endpoints (dropped), no endpoint at all (refused)
    got = lab.probe([Probe("ecs/ecs-client", ip, 80) for ip in (UNROUTED, LOCAL_NO_ENDPOINT, NO_ENDPOINT)], timeout=1)
    assert [r.outcome for r in got] == ["timeout", "timeout", "refused"], [r.detail for r in got]


def test_external_ips_change_while_running(lab):
    web_ext = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-ext"},
               "spec": {"selector": {"app": "web"}, "externalIPs": [UNROUTED],
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    try:
        took = lab.apply(web_ext)
        assert took["datapath_s"] < 3, took
        assert lab.connect("pod/client-1", CLUSTER, 80, timeout=1).outcome == "timeout", "no longer an external IP"
        assert lab.connect("pod/client-1", UNROUTED, 80).outcome == "answered", "twin: the one it keeps"
    finally:
        web_ext["spec"]["externalIPs"] = [CLUSTER, UNROUTED]
        lab.apply(web_ext)
    assert lab.connect("ecs/ecs-client", CLUSTER, 80).outcome == "answered"


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
