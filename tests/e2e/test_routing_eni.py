"""Custom route tables in eni mode, with scenarios/route-tables-eni.yaml (its header draws the
tables). Terway pods hold addresses of their pod vSwitch, so the vRouter routes them by that
vSwitch's table, as an ECS instance there, not by their node's: web-0 reaches vpc-b through
rt-pods while its node does not, node-2 through rt-nodes while its pod does not; vpc-b reaches
web-0, whose replies rt-pods routes back, and not web-1, whose replies meet the system table; and
rt-pods hands web-0's packets for 10.99.0.0/16 to the gateway instance ecs-gw, which the system
table of web-1's vSwitch does not. Every allowed path has its refused twin, and the evaluator
(the scenario's `expect:` list, `explain`, the trace beside it) agrees and names the table. One
lab, eni only: in the other modes the scenario's pods leave as their nodes (the unit tests walk
those flows), which tests/e2e/test_routing.py covers.
"""
from __future__ import annotations

import os

import pytest

from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe

from .conftest import assert_checks_pass, lab_in_mode, outcomes, scenario_checks

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "route-tables-eni.yaml")
BEHIND = "10.99.0.5"            # in 10.99.0.0/16, which rt-pods routes to ecs-gw


@pytest.fixture(scope="module")
def lab():
    runs = lab_in_mode(SCENARIO, "eni")
    yield next(runs)
    next(runs, None)



def decisions(t) -> str:
    return " ".join(d for h in t.hops for d in h.decisions)


def test_the_scenarios_checks_pass_and_the_evaluator_agrees(lab):
    checks, declared = scenario_checks(lab)
    assert any(c.expect for c in declared) and any(not c.expect for c in declared)
    assert_checks_pass(lab, checks)


def test_a_pod_leaves_by_the_table_of_its_own_vswitch_not_its_nodes(lab):
    web0 = lab.address("pod/web-0")
    assert outcomes(lab, ("pod/web-0", "ecs/ecs-b", 80),        # vsw-pods-h: rt-pods -> pcx-ab, as itself
                    ("node/node-1", "ecs/ecs-b", 80),           # twin: its node, vsw-n1 on the system table
                    ("node/node-2", "ecs/ecs-b", 80),           # vsw-n2: rt-nodes -> pcx-ab
                    ("pod/web-1", "ecs/ecs-b", 80)) == \
        [("answered", web0), ("timeout", ""), ("answered", lab.address("node/node-2")), ("timeout", "")]
    t = lab.trace("pod/web-0", "ecs/ecs-b", 80)
    assert t.outcome == "delivered" and t.seen_source == web0 and not t.disagreement, t.reason
    assert "route table rt-pods: route 172.16.0.0/16 -> peering connection pcx-ab" in decisions(t), decisions(t)
    assert "route table rt-pods: route to peering connection 172.16.0.0/16 -> pcx-ab" in \
        [s.text for s in explain(lab.plan, "pod/web-0", "ecs/ecs-b", 80).steps]
    twin = lab.trace("pod/web-1", "ecs/ecs-b", 80)
    assert twin.outcome == "dropped" and "table 20 (route): no route" in twin.reason and not twin.disagreement
    assert explain(lab.plan, "pod/web-1", "ecs/ecs-b", 80).reason.startswith(
        "route table of vpc-a has no route to 172.16.1.1 through peering connection pcx-ab")


def test_a_peered_vpc_reaches_a_pod_whose_own_table_routes_the_replies_back(lab):
    b = lab.address("ecs/ecs-b")
    assert outcomes(lab, ("ecs/ecs-b", "pod/web-0", 8080), ("ecs/ecs-b", "pod/web-1", 8080)) == \
        [("answered", b), ("timeout", "")]
    # one-sided: vpc-b routes both pod vSwitches, so the first packet reaches web-1; its reply is
    # routed by vsw-pods-i's table, the system table, which has no way to vpc-b
    assert lab.trace("ecs/ecs-b", "pod/web-1", 8080).outcome == "delivered"
    back = lab.trace("pod/web-1", "ecs/ecs-b", 80)
    assert back.outcome == "dropped" and back.reason.startswith("dropped on vr0 in table 20 (route)"), back.reason
    assert explain(lab.plan, "ecs/ecs-b", "pod/web-1", 8080).reason.startswith(
        "replies: route table of vpc-a has no route to 172.16.1.1")
    assert "replies: route table rt-pods: route to peering connection 172.16.0.0/16 -> pcx-ab" in \
        [s.text for s in explain(lab.plan, "ecs/ecs-b", "pod/web-0", 8080).steps]


def test_a_custom_route_takes_a_pods_packets_to_its_next_hop_instance(lab):
    """Nothing answers behind ecs-gw (the scenario has no network there), so the probes time out
    either way; the traces show where the first packet goes, and the evaluator agrees with each."""
    assert [r.outcome for r in lab.probe([Probe("pod/web-0", BEHIND, 80)], timeout=1.0)] == ["timeout"]
    t = lab.trace("pod/web-0", BEHIND, 80)
    assert (t.outcome, t.delivered_to, t.delivered_at) == ("delivered", "ecs/ecs-gw", f"{BEHIND}:80"), t.reason
    assert "route table rt-pods: custom route 10.99.0.0/16 -> ecs-gw" in decisions(t), decisions(t)
    assert not t.disagreement, t.disagreement
    assert t.expected.reason.startswith("route table rt-pods sends it to ecs-gw (custom route 10.99.0.0/16)")
    # twin: web-1's vSwitch is on the system table, which has no such route
    twin = lab.trace("pod/web-1", BEHIND, 80)
    assert twin.outcome == "dropped" and "table 20 (route): no route" in twin.reason, twin.reason
    assert not twin.disagreement and twin.expected.reason == f"route table of vpc-a: no entry for {BEHIND}: dropped"
    # the next hop's security group decides what the route brings it: sg-gw admits 80, not 81
    closed = lab.trace("pod/web-0", BEHIND, 81)
    assert closed.outcome == "dropped" and "route/10.99.0.0/16: inbound denied" in decisions(closed), closed.reason
    assert not closed.disagreement and "behind ecs-gw denied: no rule of sg-gw" in closed.expected.reason


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
