"""Terway's eniOptions.eniType end to end, eni mode only (PodNetworking is Terway's), with
scenarios/exclusive-eni.yaml: three client/server pairs on node-1 with the same security groups
(sg-app admits 80 from the VPC, nothing on 81). The pair on exclusive ENIs (eniType ENI) leaves the
node through the vSwitch, which drops 81; the shared (Default) and trunk (Trunk) pairs are switched
on the node, where no security group applies, and 81 connects. Two more servers on node-1 have
addresses from a second pod vSwitch, vsw-pods: node-1 routes between the shared client and the shared
one itself (Terway's host route), so 81 connects, and the exclusive pair goes through the vRouter,
where 81 is dropped. NetworkPolicy backend-ingress refuses trunk-client at eni-server and
shared-server: ACK does not enforce NetworkPolicy on a pod with an exclusive ENI, so eni-server still
answers it on 80, and its shared twin drops it. The evaluator agrees on every probe, and `kubevpc
trace` shows the way each packet went."""
from __future__ import annotations

import os

import pytest

from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe

from .conftest import assert_checks_pass, lab_in_mode, scenario_checks
from .test_services import client_ip

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "exclusive-eni.yaml")


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_mode(SCENARIO, "eni")


def pod(name: str) -> str:
    return f"pod/default/{name}"


def test_the_scenarios_checks_pass_and_the_evaluator_agrees(lab):
    assert_checks_pass(lab, scenario_checks(lab)[0])


def test_security_groups_apply_between_exclusive_enis_of_one_node_only(lab):
    probes = [Probe(pod("eni-client"), pod("eni-server"), 80), Probe(pod("eni-client"), pod("eni-server"), 81),
              Probe(pod("shared-client"), pod("shared-server"), 81), Probe(pod("trunk-client"), pod("trunk-server"), 81),
              Probe(pod("shared-client"), pod("eni-server"), 81), Probe(pod("eni-client"), pod("shared-server"), 81),
              Probe(pod("remote-client"), pod("shared-server"), 81), Probe("node/node-1", pod("eni-server"), 81)]
    got = lab.probe(probes, timeout=1.0)
    outcomes = [r.outcome for r in got]
    assert outcomes == ["answered", "timeout",            # exclusive pair: sg-app at the vSwitch, 80 and not 81
                        "answered", "answered",           # shared and trunk pairs: on the node, no security group
                        "timeout", "timeout",             # one exclusive ENI is enough, either way
                        "timeout", "answered"], [r.detail for r in got]   # sg-app between nodes; the node itself
    assert client_ip(got[0]) == lab.address(pod("eni-client")), "the server sees the pod's own address"
    for p, r in zip(probes, got):
        e = explain(lab.plan, p.source, p.dest, p.port, p.proto)
        assert e.allowed == (r.outcome == "answered"), (p, e.reason, r.detail)


def test_pods_of_one_node_on_two_vswitches_are_routed_on_it_unless_exclusive(lab):
    """shared-pods-server and eni-pods-server take their addresses from vsw-pods, the clients from
    vsw-a: node-1 routes the shared pair itself (Terway's host route), where sg-app is not on the
    way; the exclusive pair goes through both vSwitches and the vRouter, where sg-app drops 81."""
    probes = [Probe(pod("shared-client"), pod("shared-pods-server"), 81),
              Probe(pod("eni-client"), pod("eni-pods-server"), 81),
              Probe(pod("eni-client"), pod("eni-pods-server"), 80),
              Probe(pod("eni-client"), pod("shared-pods-server"), 81),
              Probe("node/node-1", pod("eni-pods-server"), 81)]
    got = lab.probe(probes, timeout=1.0)
    assert [r.outcome for r in got] == ["answered",               # shared: routed on node-1, no security group
                                        "timeout", "answered",    # exclusive: sg-app through the vRouter
                                        "timeout",                # one exclusive ENI is enough
                                        "answered"], [r.detail for r in got]   # the node, on itself
    assert client_ip(got[0]) == lab.address(pod("shared-client")), "routed, not NATed: the client's own address"
    for p, r in zip(probes, got):
        e = explain(lab.plan, p.source, p.dest, p.port, p.proto)
        assert e.allowed == (r.outcome == "answered"), (p, e.reason, r.detail)
    vrouter = lab.plan.vpcs[0].bridge
    vswitches = {lab.plan.vswitch(v).bridge for v in ("vsw-a", "vsw-pods")}
    routed = lab.trace(pod("shared-client"), pod("shared-pods-server"), 81)
    assert routed.outcome == "delivered" and not routed.disagreement, routed.reason
    assert not {b for h in routed.hops for b in [h.bridge, *h.bridges]} & (vswitches | {vrouter})
    through = lab.trace(pod("eni-client"), pod("eni-pods-server"), 81)
    assert through.outcome == "dropped" and "sg_ingress" in through.reason and not through.disagreement, \
        through.reason
    passed = {b for h in through.hops for b in [h.bridge, *h.bridges]}     # hops name bridges whole or by suffix
    assert any(b == vrouter or vrouter.endswith("-" + b) for b in passed), passed


def test_a_services_connection_stays_on_the_node(lab):
    svc = lab.service("eni-server")
    r = lab.connect(pod("eni-client"), svc.cluster_ip, 81)
    assert r.outcome == "answered" and r.answer["name"] == "eni-server", r.detail
    direct = lab.connect(pod("eni-client"), pod("eni-server"), 81, timeout=1.0)
    assert direct.outcome == "timeout", "twin: the same port, straight to the pod, meets sg-app at the vSwitch"


def test_trace_shows_the_exclusive_pair_through_the_vswitch_and_the_shared_pair_on_the_node(lab):
    vswitch = lab.plan.vswitch("vsw-a").bridge
    ok = lab.trace(pod("eni-client"), pod("eni-server"), 80)
    assert ok.outcome == "delivered" and not ok.disagreement, ok.reason
    assert vswitch in {b for h in ok.hops for b in [h.bridge, *h.bridges]}
    closed = lab.trace(pod("eni-client"), pod("eni-server"), 81)
    assert closed.outcome == "dropped" and "sg_ingress" in closed.reason and not closed.disagreement, closed.reason
    shared = lab.trace(pod("shared-client"), pod("shared-server"), 81)
    assert shared.outcome == "delivered" and not shared.disagreement, shared.reason
    assert vswitch not in {b for h in shared.hops for b in [h.bridge, *h.bridges]}


def test_networkpolicy_is_not_enforced_on_an_exclusive_eni(lab):
    """backend-ingress selects eni-server and shared-server and takes nothing from trunk-client. ACK
    does not enforce NetworkPolicy on a pod with an exclusive ENI: eni-server answers trunk-client on
    80 (through the vSwitch, where sg-app admits it); its shared twin, under the same policy, drops it
    on node-1. Another pod still reaches the shared one (the policy's rule)."""
    probes = [Probe(pod("trunk-client"), pod("eni-server"), 80), Probe(pod("trunk-client"), pod("shared-server"), 80),
              Probe(pod("shared-client"), pod("shared-server"), 80)]
    got = lab.probe(probes, timeout=1.0)
    assert [r.outcome for r in got] == ["answered", "timeout", "answered"], [r.detail for r in got]
    assert client_ip(got[0]) == lab.address(pod("trunk-client"))
    for p, r in zip(probes, got):
        e = explain(lab.plan, p.source, p.dest, p.port, p.proto)
        assert e.allowed == (r.outcome == "answered"), (p, e.reason, r.detail)
    ignored = explain(lab.plan, pod("trunk-client"), pod("eni-server"), 80, "tcp")
    assert any("ACK does not enforce NetworkPolicy on a pod with an exclusive ENI" in s.text for s in ignored.steps)
    closed = lab.trace(pod("trunk-client"), pod("shared-server"), 80)
    assert closed.outcome == "dropped" and "ingress_policy" in closed.reason and not closed.disagreement, \
        closed.reason


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
