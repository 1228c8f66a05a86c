"""IPv4/IPv6 dual stack (eni mode only: ACK offers it with Terway only), with
tests/e2e/data/dualstack.yaml: pods and ECS instances reach each other in both families side by
side; security groups admit IPv6 by ipv6Cidr (sg-app: vsw-h's /64 only; sg-nodes: vsw-i's /64
over IPv6 but nothing over IPv4), each allow with its dropped twin; neighbour discovery answered
by the controller; the evaluator agrees with every probe; and the root namespace holds no IPv6
of the run, during it or after it."""
from __future__ import annotations

import os
import subprocess

import pytest

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks

from .conftest import lab_in_mode

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "dualstack.yaml")
CLIENT6, WEB0_6, WEB1_6, APP6 = "2001:db8:0:101::3", "2001:db8:0:101::2", "2001:db8:0:102::2", "2001:db8:0:102::50"


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
