"""IPv4/IPv6 dual stack (eni mode only: ACK offers it with Terway only), with
tests/e2e/data/dualstack.yaml: pods and ECS instances reach each other in both families side by
side; security groups admit IPv6 by ipv6Cidr (sg-app: vsw-h's /64 only; sg-nodes: vsw-i's /64
over IPv6 but nothing over IPv4), each allow with its dropped twin; neighbour discovery answered
by the controller; the evaluator agrees with every probe; and the root namespace holds no IPv6
of the run, during it or after it. The second half: Services in IPv6 (a PreferDualStack ClusterIP
over both families, NodePorts at the nodes' IPv6 addresses with externalTrafficPolicy Cluster and
Local, refusal without endpoints), an IPv6 NetworkPolicy ipBlock with its twins, AAAA answers and
the NODATA of an IPv4-only Service; every allow with its deny twin."""
from __future__ import annotations

import os
import subprocess

import pytest

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks

from .conftest import lab_in_mode
from .test_services import resolve

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "dualstack.yaml")
CLIENT6, WEB0_6, WEB1_6, APP6 = "2001:db8:0:101::3", "2001:db8:0:101::2", "2001:db8:0:102::2", "2001:db8:0:102::50"
NODE1_6, NODE2_6, SOLO6, WEB6 = "2001:db8:0:101::1", "2001:db8:0:102::1", "2001:db8:0:101::4", "fd00:172:21::b"


def root_ipv6() -> tuple[str, str]:
    """The root namespace's IPv6 routes (every table) and addresses."""
    run = lambda *a: subprocess.run(["ip", "-6", *a], capture_output=True, text=True).stdout  # noqa: E731
    return run("route", "show", "table", "all"), run("-o", "addr")


@pytest.fixture(scope="module", params=["eni"])
def lab(request):
    before = root_ipv6()
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)
    assert root_ipv6() == before, "the root namespace's IPv6 routes or addresses changed"


def client_ip(r) -> str:
    return (r.answer or {}).get("client", "").rsplit(":", 1)[0].strip("[]")


def test_addresses_are_the_plans(lab):
    assert (lab.address("pod/client", 6), lab.address("ecs/ecs-app", 6)) == (CLIENT6, APP6)
    out = lab.exec("pod/client", ["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert f"{CLIENT6}/64" in out and "fe80" not in out, out
    route = lab.exec("pod/client", ["ip", "-6", "route", "show", "default"]).stdout
    assert "via 2001:db8:0:101::fd" in route, route


def test_ipv4_and_ipv6_side_by_side(lab):
    got = lab.probe([Probe("pod/client", "ecs/ecs-app", 8080), Probe("pod/client", "ecs/ecs-app", 8080, family=6),
                     Probe("pod/client", "pod/web-1", 8080), Probe("pod/client", "pod/web-1", 8080, family=6),
                     Probe("pod/client", "pod/web-0", 8080, family=6)])
    assert [r.outcome for r in got] == ["answered"] * 5, [r.detail for r in got]
    assert [client_ip(r) for r in got] == [lab.address("pod/client"), CLIENT6, lab.address("pod/client"),
                                           CLIENT6, CLIENT6]
    assert lab.connect("pod/client", APP6, 8080).outcome == "answered"        # an IPv6 literal as well


def test_security_groups_admit_ipv6_by_cidr_each_with_its_twin(lab):
    got = lab.probe([Probe("ecs/ecs-app", "pod/web-0", 8080, family=6),      # sg-nodes: vsw-i's /64 over IPv6
                     Probe("ecs/ecs-app", "pod/web-0", 8080),                 # twin: nothing over IPv4
                     Probe("ecs/ecs-app", "pod/web-0", 9090, family=6),      # twin: not another port
                     Probe("pod/web-1", "ecs/ecs-app", 8080, family=6),      # twin of client: vsw-i not admitted
                     Probe("node/node-2", "ecs/ecs-app", 8080, family=6)],   # nor the node on it
                    timeout=1)
    assert [r.outcome for r in got] == ["answered", "timeout", "timeout", "timeout", "timeout"], \
        [r.detail for r in got]
    assert client_ip(got[0]) == APP6


def test_the_evaluator_agrees(lab):
    checks = default_checks(lab.plan) + declared_checks(lab.plan)
    assert any(c.family == 6 for c in checks)
    failed = [(o.check.title, o.check.source, o.check.dest, o.outcome, o.client, o.why)
              for o in run_checks(lab, checks, timeout=1) if not o.passed]
    assert not failed, failed


def test_neighbour_discovery_is_answered_by_the_controller(lab):
    neigh = lab.exec("pod/client", ["ip", "-6", "neigh", "show", "2001:db8:0:101::fd"]).stdout
    gw_mac = lab.plan.vswitch("vsw-h").gateway_mac
    assert gw_mac in neigh.lower(), neigh
    st = lab.status()
    assert sum(b.get("nd", 0) for b in st["bridges"].values()) > 0, st["bridges"]
    assert st["errors"] == []


def test_no_ipv6_of_the_run_in_the_root_namespace(lab):
    routes, addrs = root_ipv6()
    assert "2001:db8" not in routes + addrs


# ------------------------------------------------------------------------- Services in IPv6
def test_a_prefer_dual_stack_service_over_both_families(lab):
    web = lab.service("web")
    assert web.cluster_ips == (lab.service("web").cluster_ip, WEB6)
    got = lab.probe([Probe("pod/client", "svc/default/web", 80, family=6), Probe("pod/client", "svc/default/web", 80),
                     Probe("pod/client", "svc/default/empty", 80, family=6),       # twin: no endpoint, refused at once
                     Probe("pod/client", "svc/default/web6", 80, family=6)], timeout=2)
    assert [r.outcome for r in got] == ["answered", "answered", "refused", "answered"], [r.detail for r in got]
    assert [client_ip(r) for r in (got[0], got[1], got[3])] == [CLIENT6, lab.address("pod/client"), CLIENT6]
    assert got[2].elapsed_ms < 1000, "refused, not timed out"
    assert lab.connect("pod/client", "svc/default/web", 81, timeout=1, family=6).outcome == "timeout"   # no such port


def test_nodeports_over_ipv6_with_both_traffic_policies(lab):
    got = lab.probe([Probe("ecs/ecs-app", NODE2_6, 30080),       # Cluster: masqueraded to node-2
                     Probe("ecs/ecs-app", NODE1_6, 30081),       # Local: solo is on node-1, the client kept
                     Probe("ecs/ecs-app", NODE2_6, 30081),       # twin: no local endpoint on node-2, dropped
                     Probe("ecs/ecs-app", "node/node-1", 30081)],  # twin: sg-nodes admits NodePorts over IPv6 only
                    timeout=1)
    assert [r.outcome for r in got] == ["answered", "answered", "timeout", "timeout"], [r.detail for r in got]
    assert (client_ip(got[0]), client_ip(got[1])) == (NODE2_6, APP6)
    assert got[0].answer["name"] in ("web-0", "web-1") and got[1].answer["name"] == "solo"
    verdicts = [explain(lab.plan, "ecs/ecs-app", dest, port) for dest, port in
                ((NODE2_6, 30080), (NODE1_6, 30081), (NODE2_6, 30081), ("node/node-1", 30081))]
    assert [e.allowed for e in verdicts] == [True, True, False, False], [e.reason for e in verdicts]
    assert [e.seen_source for e in verdicts[:2]] == [NODE2_6, APP6]


def test_an_ipv6_ip_block_admits_ipv6_only(lab):
    got = lab.probe([Probe("pod/web-0", "pod/guarded", 8080, family=6),    # inside 2001:db8:0:101::/64
                     Probe("pod/client", "pod/guarded", 8080, family=6),   # twin: its except
                     Probe("pod/web-0", "pod/guarded", 8080)], timeout=1)  # twin: an IPv6 ipBlock is no IPv4 one
    assert [r.outcome for r in got] == ["answered", "timeout", "timeout"], [r.detail for r in got]
    assert client_ip(got[0]) == WEB0_6


def test_aaaa_of_dual_stack_services_and_nodata_of_an_ipv4_only_one(lab):
    got = resolve(lab, "pod/client", [("web", "AAAA"), ("web", "A"), ("legacy", "AAAA"), ("legacy", "A"),
                                      ("solo-direct", "AAAA"),
                                      ("nosuch.default.svc.cluster.local.", "AAAA")])
    assert got["web/AAAA"] == [WEB6] and got["web/A"] == [lab.service("web").cluster_ip]
    assert got["legacy/AAAA"] == [] and got["legacy/A"] == [lab.service("legacy").cluster_ip], "NODATA, A answers"
    assert got["solo-direct/AAAA"] == [SOLO6]
    # twin: a Service that does not exist (a name outside the cluster domain would be REFUSED here: this
    # scenario has no emulated internet, so the cluster DNS has no upstream)
    assert got["nosuch.default.svc.cluster.local./AAAA"] == "NXDOMAIN"


def test_the_ipv6_matrix_agrees(lab):
    m = lab.matrix(["pod/default/web-0", "pod/default/client"], [(8080, "tcp")], ["pod/default/guarded"],
                   timeout=1, family=6)
    assert [(c.source, c.expected, c.observed) for c in m.cells] == [("pod/default/web-0", True, True),
                                                                     ("pod/default/client", False, False)]
