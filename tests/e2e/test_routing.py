"""Custom route tables and a VPC peering connection, with scenarios/route-tables.yaml (its header
draws the three route tables of vpc-a and the one-sided routes of vpc-b). Routing in the VPC is the
same in every pod network mode, except that vpc-route mode writes the pods' CIDR routes into the
route tables of the nodes' vSwitches: so vpc-route, and vxlan beside it. Every allowed path has its
refused twin, and the evaluator's verdicts (the scenario's `expect:` list) agree with the probes.
"""
from __future__ import annotations

import os

import pytest

from kubevpc.evaluator.explain import explain

from .conftest import assert_checks_pass, lab_in_mode, outcomes, scenario_checks

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "route-tables.yaml")


@pytest.fixture(scope="module", params=("vpc-route", "vxlan"))
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)



def test_the_scenarios_checks_pass_and_the_evaluator_agrees(lab):
    checks, declared = scenario_checks(lab)
    assert any(c.expect for c in declared) and any(not c.expect for c in declared)
    assert_checks_pass(lab, checks)


def test_a_custom_table_routes_to_the_peering_and_the_system_table_does_not(lab):
    app = lab.address("ecs/ecs-app")
    assert outcomes(lab, ("ecs/ecs-app", "ecs/ecs-b", 80), ("ecs/ecs-db", "ecs/ecs-b", 80)) == \
        [("answered", app), ("timeout", "")]
    # the trace names the table that decided, as the evaluator does
    t = lab.trace("ecs/ecs-app", "ecs/ecs-b", 80)
    decisions = " ".join(d for h in t.hops for d in h.decisions)
    assert t.outcome == "delivered" and not t.disagreement, t.reason
    assert "route table rt-app: route 172.16.0.0/16 -> peering connection pcx-ab" in decisions, decisions
    assert any(s.text.startswith("route table rt-app: ") for s in explain(lab.plan, "ecs/ecs-app", "ecs/ecs-b", 80).steps)
    twin = lab.trace("ecs/ecs-db", "ecs/ecs-b", 80)
    assert twin.outcome == "dropped" and "table 20 (route): no route" in twin.reason and not twin.disagreement
    assert explain(lab.plan, "ecs/ecs-db", "ecs/ecs-b", 80).reason.startswith("route table of vpc-a has no route")


def test_a_peering_carries_nothing_without_routes_on_both_sides(lab):
    b, app = lab.address("ecs/ecs-b"), lab.address("ecs/ecs-app")
    got = outcomes(lab, ("ecs/ecs-b", "ecs/ecs-app", 80),        # vpc-b routes vsw-app back
                   ("ecs/ecs-app2", "ecs/ecs-b", 80),            # rt-app routes there, vpc-b not back
                   ("ecs/ecs-b", "ecs/ecs-app2", 80))            # vpc-b has no route to vsw-app2
    assert got == [("answered", b), ("timeout", ""), ("timeout", "")]
    # one-sided: the first packet arrives (a trace follows it alone); what vpc-b cannot route is the
    # way back, which the trace the other way shows dropped at vpc-b's vRouter
    assert lab.trace("ecs/ecs-app2", "ecs/ecs-b", 80).outcome == "delivered"
    back = lab.trace("ecs/ecs-b", "ecs/ecs-app2", 80)
    assert back.outcome == "dropped" and back.reason.startswith("dropped on vr1 in table 20 (route)"), back.reason
    assert "carries nothing without routes on both sides" in explain(lab.plan, "ecs/ecs-app2", "ecs/ecs-b", 80).reason
    assert lab.connect("ecs/ecs-app", "ecs/ecs-b", 80).ok and app != b     # the same route serves vsw-app


def test_security_groups_still_decide_across_the_peering(lab):
    b = lab.address("ecs/ecs-b")
    assert outcomes(lab, ("ecs/ecs-b", "ecs/ecs-app", 80), ("ecs/ecs-b", "ecs/ecs-app", 81)) == \
        [("answered", b), ("timeout", "")]
    assert lab.connect("ecs/ecs-app", "127.0.0.1", 81).ok, "81 listens: the security group drops it"


def test_pods_go_through_the_peering_as_their_node_from_a_node_vswitch_whose_table_routes_it(lab):
    assert outcomes(lab, ("pod/web-1", "ecs/ecs-b", 80), ("pod/web-0", "ecs/ecs-b", 80)) == \
        [("answered", lab.address("node/node-2")), ("timeout", "")]


def test_pod_routes_are_in_the_tables_of_the_nodes_vswitches_only(lab):
    vpc_route = lab.plan.cluster.mode == "vpc-route"
    web1, node1 = lab.address("pod/web-1"), lab.address("node/node-1")
    got = outcomes(lab, ("pod/web-1", "pod/web-0", 8080),        # vpc-route: by rt-nodes' route to node-1
                   ("ecs/ecs-db", "pod/web-0", 8080),            # the system table: vpc-route only
                   ("ecs/ecs-app", "pod/web-0", 8080),           # rt-app has no pod route
                   ("pod/web-0", "ecs/ecs-app", 80))             # vpc-route: no way back in rt-app
    assert got == ([("answered", web1), ("answered", lab.address("ecs/ecs-db")), ("timeout", ""), ("timeout", "")]
                   if vpc_route else
                   [("answered", web1), ("timeout", ""), ("timeout", ""), ("answered", node1)])


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
