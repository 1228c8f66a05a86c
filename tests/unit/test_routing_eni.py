"""Custom route tables in eni mode (scenarios/route-tables-eni.yaml): Terway pods hold addresses of
their pod vSwitch, so the vRouter routes their packets by that vSwitch's table, not their node's.
The compiled flows are walked with tests/unit/netsim.py against the evaluator (kubevpc.evaluator:
reach, and explain for an address behind a custom route to an ECS instance), in every mode: in
vxlan and vpc-route the same scenario's pods leave as their nodes."""
from __future__ import annotations

import pytest
import yaml

from kubevpc.errors import KubevpcError
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.observe.trace import Trace, compare
from kubevpc.planning import Plan, make_plan, resolve_endpoint
from kubevpc.scenario.load import load

from .netsim import Network
from .plans import MODES, REPO, plan_of
from .test_routing import assert_flows_agree
from .test_validation import write

SCENARIO = REPO / "scenarios" / "route-tables-eni.yaml"
BEHIND = "10.99.0.5"            # in 10.99.0.0/16, which rt-pods routes to ecs-gw


def vrouter_tables(plan: Plan, end) -> list[int]:
    """The tables a walk took on vpc-a's vRouter."""
    return [f.table for bridge, f in end.path if bridge == plan.vpcs[0].bridge]


def walk(plan: Plan, net: Network, src: str, dst_ip: str, port: int):
    (end,) = net.send(plan.network_host(resolve_endpoint(plan, src)), dst_ip, port)
    return end


@pytest.mark.parametrize("mode", MODES)
def test_the_flows_agree_with_the_evaluator(mode):
    plan = plan_of(SCENARIO, mode)
    assert_flows_agree(plan, default_checks(plan) + declared_checks(plan))


def test_a_pod_is_routed_by_the_table_of_its_own_vswitch_not_its_nodes():
    """web-0 (vsw-pods-h: rt-pods, number 2) reaches vpc-b as itself while node-1 (vsw-n1: the
    system table) is dropped; node-2 (vsw-n2: rt-nodes, number 1) gets there, its pod web-1
    (vsw-pods-i: the system table) does not."""
    plan = plan_of(SCENARIO, "eni")
    net, b = Network(plan), plan.host("ecs/ecs-b").ip
    assert [(t.name, t.number, t.vswitches) for t in plan.vpcs[0].route_tables] == [
        ("rt-nodes", 1, ("vsw-n2",)), ("rt-pods", 2, ("vsw-pods-h",))]
    assert {h.name: h.vswitch for h in plan.pods} == {"web-0": "vsw-pods-h", "web-1": "vsw-pods-i"}
    got = {src: walk(plan, net, src, b, 80) for src in ("pod/web-0", "node/node-1", "node/node-2", "pod/web-1")}
    assert {src: (e.kind, e.host, vrouter_tables(plan, e)) for src, e in got.items()} == {
        "pod/web-0": ("delivered", "ecs/ecs-b", [0, 21]), "node/node-1": ("dropped", "", [0, 20]),
        "node/node-2": ("delivered", "ecs/ecs-b", [0, 21]), "pod/web-1": ("dropped", "", [0, 20])}
    assert got["pod/web-0"].packet["ipv4_src"] == plan.host("pod/default/web-0").ip     # as itself
    table_of = {src: dict(e.path[[b for b, _ in e.path].index(plan.vpcs[0].bridge) + 1][1].match).get("reg0")
                for src, e in got.items() if e.kind == "delivered"}
    assert table_of == {"pod/web-0": 2, "node/node-2": 1}
    # explain names the table that decided, for the pod and its node alike
    assert "route table rt-pods: route to peering connection 172.16.0.0/16 -> pcx-ab" in \
        [s.text for s in explain(plan, "pod/web-0", "ecs/ecs-b", 80).steps]
    assert explain(plan, "pod/web-1", "ecs/ecs-b", 80).reason.startswith(
        "route table of vpc-a has no route to 172.16.1.1 through peering connection pcx-ab")


def test_a_peered_vpc_reaches_an_eni_pod_whose_table_routes_the_replies_back():
    plan = plan_of(SCENARIO, "eni")
    net, b = Network(plan), plan.host("ecs/ecs-b")
    for pod, back in (("pod/default/web-0", "delivered"), ("pod/default/web-1", "dropped")):
        there = net.send(b, plan.host(pod).ip, 8080)
        assert [(e.kind, e.host) for e in there] == [("delivered", pod)]        # vpc-b routes both pod vSwitches
        reply = net.send(plan.host(pod), b.ip, 40000, sport=8080, reply=True)
        assert [e.kind for e in reply] == [back], "; ".join(map(str, reply))
    e = explain(plan, "ecs/ecs-b", "pod/web-1", 8080)
    assert e.reason.startswith("replies: route table of vpc-a has no route to 172.16.1.1")
    assert "replies: route table rt-pods: route to peering connection 172.16.0.0/16 -> pcx-ab" in \
        [s.text for s in explain(plan, "ecs/ecs-b", "pod/web-0", 8080).steps]


# ============================================================================ to a next-hop instance
def test_a_custom_route_takes_a_pods_traffic_to_its_next_hop_instance_and_the_default_table_does_not():
    """rt-pods sends 10.99.0.0/16 to ecs-gw: web-0's packet leaves its node by its ENI on
    vsw-pods-h, the vRouter routes it by rt-pods to ecs-gw's port on vsw-n1, where sg-gw (ecs-gw's
    group, which what the route sends there is behind) admits 80 and not 81. Its twin, web-1 on
    the system table, is dropped at the vRouter; so is node-1, web-0's own node."""
    plan = plan_of(SCENARIO, "eni")
    net, gw = Network(plan), plan.host("ecs/ecs-gw")
    to_gw = walk(plan, net, "pod/web-0", BEHIND, 80)
    assert (to_gw.kind, to_gw.host, to_gw.packet["ipv4_dst"], to_gw.packet["eth_dst"]) == \
        ("delivered", "ecs/ecs-gw", BEHIND, gw.mac)
    assert vrouter_tables(plan, to_gw) == [0, 21]
    assert to_gw.path[-1][0] == plan.vswitch("vsw-n1").bridge
    for src in ("pod/web-1", "node/node-1"):
        twin = walk(plan, net, src, BEHIND, 80)
        assert (twin.kind, twin.path[-1][0], twin.path[-1][1].table) == ("dropped", plan.vpcs[0].bridge, 20), src
    closed = walk(plan, net, "pod/web-0", BEHIND, 81)
    assert (closed.kind, closed.path[-1][0]) == ("dropped", plan.vswitch("vsw-n1").bridge)
    # the evaluator: the table, the next hop's group, and nothing there to answer
    e = explain(plan, "pod/web-0", BEHIND, 80)
    assert e.allowed is False and e.reason == ("route table rt-pods sends it to ecs-gw (custom route 10.99.0.0/16), "
                                               "which receives it on its ENI but does not hold 10.99.0.5: nothing answers")
    texts = [(s.stage, s.passes, s.text) for s in e.steps]
    assert ("route", None, "route table rt-pods: custom route 10.99.0.0/16 -> ecs-gw: to its ENI on vSwitch vsw-n1") in texts
    assert any(st == "security group" and ok and t.startswith("ingress of 10.99.0.0/16 behind ecs-gw: sg-gw rule 1")
               for st, ok, t in texts)
    assert texts[-1][:2] == ("destination", False)
    assert explain(plan, "pod/web-1", BEHIND, 80).reason == "route table of vpc-a: no entry for 10.99.0.5: dropped"
    assert explain(plan, "pod/web-0", BEHIND, 81).reason.startswith(
        "ingress of 10.99.0.0/16 behind ecs-gw denied: no rule of sg-gw allows tcp/81")


@pytest.mark.parametrize("mode", MODES)
def test_the_flows_deliver_to_the_next_hop_where_the_evaluator_says_it_gets_there(mode):
    """Every source of the scenario to 10.99.0.5 on 80 and 81: the flows deliver the packet to
    ecs-gw exactly when the evaluator's chain ends at the next hop (its `destination` step: nothing
    answers there); in vxlan and vpc-route the pods leave as their nodes, by their nodes' tables."""
    plan = plan_of(SCENARIO, mode)
    net = Network(plan)
    got = {}
    for src in ("pod/web-0", "pod/web-1", "node/node-1", "node/node-2", "ecs/ecs-gw", "ecs/ecs-b"):
        for port in (80, 81):
            end = walk(plan, net, src, BEHIND, port)
            there = end.kind == "delivered" and end.host == "ecs/ecs-gw" and end.packet["ipv4_dst"] == BEHIND
            e = explain(plan, src, BEHIND, port)
            assert e.allowed is False
            reached = e.steps[-1].stage == "destination"
            assert there == reached, f"{src} -> {BEHIND}:{port}: flows {end}, evaluator {e.reason}"
            got[(src, port)] = there
    assert {k for k, v in got.items() if v} == ({("pod/web-0", 80)} if mode == "eni" else set())


def test_a_custom_route_covering_pod_addresses_does_not_take_them(tmp_path):
    """A broad custom route (0.0.0.0/0 -> ecs-gw in rt-nodes) covers the pods' vSwitches, but each
    vSwitch's system route, in every table, is more specific: node-2 reaches web-0 directly, as it
    reaches an ECS instance, and only what no vSwitch holds goes to ecs-gw."""
    d = yaml.safe_load(SCENARIO.read_text())
    d["cloud"]["vpcs"][0]["routeTables"][0]["routes"].append({"destination": "0.0.0.0/0", "nextHop": "ecs-gw"})
    plan = make_plan(load(str(write(tmp_path, d)), mode="eni"), "kv")
    net = Network(plan)
    web0 = plan.host("pod/default/web-0")
    to_pod = walk(plan, net, "node/node-2", web0.ip, 8080)
    assert (to_pod.kind, to_pod.host) == ("delivered", web0.key)
    e = explain(plan, "node/node-2", "pod/web-0", 8080)
    assert e.allowed and "route table rt-nodes: system route 192.168.11.0/24 (vSwitch vsw-pods-h)" in \
        [s.text for s in e.steps]
    elsewhere = walk(plan, net, "node/node-2", "10.1.2.3", 80)
    assert (elsewhere.kind, elsewhere.host) == ("delivered", "ecs/ecs-gw")
    assert "route table rt-nodes: custom route 0.0.0.0/0 -> ecs-gw: to its ENI on vSwitch vsw-n1" in \
        [s.text for s in explain(plan, "node/node-2", "10.1.2.3", 80).steps]
    assert walk(plan, net, "node/node-2", plan.host("ecs/ecs-b").ip, 80).host == "ecs/ecs-b"   # the /16 is longer


def test_explain_still_refuses_an_address_nothing_holds_or_routes():
    plan = plan_of(SCENARIO, "eni")
    with pytest.raises(KubevpcError, match="nothing in this scenario holds 10.98.0.1: .*a custom route sends to an ECS"):
        explain(plan, "pod/web-0", "10.98.0.1", 80)
    e = explain(plan, "ecs/ecs-b", BEHIND, 80)
    assert e.allowed is False and e.reason.startswith("10.99.0.5 is behind a custom route of vpc-a, which only vpc-a's")


def test_a_trace_that_ends_at_the_next_hop_agrees_with_the_evaluator():
    """`kubevpc trace` beside explain: delivered to ecs-gw is what the chain says for web-0 (the
    network gets it there; nothing answers), dropped is what it says for web-1 and for port 81."""
    plan = plan_of(SCENARIO, "eni")

    def leaf(outcome: str) -> Trace:
        return Trace("pod/web-0", BEHIND, 80, "tcp", [], outcome, outcome, delivered_to="ecs/ecs-gw"
                     if outcome == "delivered" else "", delivered_at=f"{BEHIND}:80", seen_source="192.168.11.1")
    for src, port, outcome in (("pod/web-0", 80, "delivered"), ("pod/web-1", 80, "dropped"),
                               ("pod/web-0", 81, "dropped")):
        e = explain(plan, src, BEHIND, port)
        assert compare(leaf(outcome), e) == "", (src, port)
        other = "dropped" if outcome == "delivered" else "delivered"
        assert compare(leaf(other), e) != "", (src, port, other)
