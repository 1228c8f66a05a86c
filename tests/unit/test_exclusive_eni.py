"""Terway's eniOptions.eniType (scenarios/exclusive-eni.yaml, eni mode): which pods get which kind of
ENI, the error a wrong one gets, and, walked through the compiled flows (tests/unit/netsim.py)
beside the evaluator, that a pod on an exclusive ENI meets the security groups of a pod of its own
node at the vSwitch, while shared (Default) and trunk member ENIs stay switched on the node."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from kubevpc.errors import ScenarioError
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import reach
from kubevpc.lab import changes
from kubevpc.planning import Plan, make_plan
from kubevpc.scenario.load import load

from .netsim import Network
from .problems import check, line_of

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "exclusive-eni.yaml"
RUN = "kvxe"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def base() -> dict:
    return yaml.safe_load(SCENARIO.read_text())


def dual_stack(data: dict) -> dict:
    """exclusive-eni.yaml's data (changed in place) in dual stack: IPv6 CIDRs on the VPC and both
    vSwitches, and sg-app's port 80 from the VPC's IPv6 CIDR too."""
    vpc = data["cloud"]["vpcs"][0]
    vpc["ipv6Cidr"] = "2001:db8:0:100::/56"
    vpc["vswitches"][0]["ipv6Cidr"] = "2001:db8:0:101::/64"
    vpc["vswitches"][1]["ipv6Cidr"] = "2001:db8:0:108::/64"
    data["cloud"]["securityGroups"][1]["rules"].append(
        {"direction": "ingress", "protocol": "tcp", "ports": 80, "ipv6Cidr": "2001:db8:0:100::/56"})
    data["cluster"]["dualStack"] = True
    return data


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(load(str(SCENARIO)), RUN)


@pytest.fixture(scope="module")
def net(plan) -> Network:
    return Network(plan)


def pod(name: str) -> str:
    return f"pod/default/{name}"


def walk(plan: Plan, net: Network, src: str, dst: str, port: int, family: int = 4) -> tuple[bool, list]:
    """Whether the first packet of src -> dst:port reaches dst (sent to dst's MAC: the node answers
    the pod's ARP for a neighbour with it), and the bridges it crossed; the evaluator must agree."""
    s, d = plan.host(src), plan.host(dst)
    ends = net.send(s, d.ipv6 if family == 6 else d.ip, port, eth_dst=d.mac)
    got = any(e.kind == "delivered" and e.host == dst for e in ends)
    v = reach(plan, s, d, port, "tcp", family)
    assert got == v.allowed, f"{src} -> {dst}:{port}: flows {got}, evaluator {v.allowed} ({v.reason}); " + \
        "; ".join(map(str, ends))
    return got, [b for e in ends for b, _ in e.path]


# -------------------------------------------------------------------------------------- planning
def test_each_pod_gets_the_eni_type_of_its_pod_networking(plan):
    types = {h.name: h.eni_type for h in plan.own_pods}
    assert types == {"eni-server": "ENI", "eni-client": "ENI", "trunk-server": "Trunk", "trunk-client": "Trunk",
                     "shared-server": "Default", "shared-client": "Default", "remote-client": "Default",
                     "shared-pods-server": "Default", "eni-pods-server": "ENI", "kube-dns-0": "Default"}
    assert plan.host(pod("eni-server")).exclusive_eni and not plan.host(pod("trunk-server")).exclusive_eni
    assert all(h.eni_type == "Default" for h in plan.hosts if h.kind != "pod")


def test_a_running_pod_keeps_its_eni_when_the_pod_networking_changes(tmp_path):
    data = {**base(), "expect": []}                   # expectations name the pod deleted below
    ld = load(str(write(tmp_path, data)))
    plan = make_plan(ld, RUN)
    data["manifests"][0]["spec"]["eniOptions"]["eniType"] = "Trunk"
    changed = load(str(write(tmp_path, data))).manifests
    after = changes.replan(ld, plan, RUN, changed, {}, {})
    assert after.plan.host(pod("eni-server")).eni_type == "ENI", "Terway attaches the ENI when the pod is created"
    manifests, deleted = changes.deleted(after.loaded.manifests, after.plan, pod("eni-server"))
    gone = changes.replan(after.loaded, after.plan, RUN, manifests, {}, {}, deleted=deleted)
    back = changes.replan(gone.loaded, gone.plan, RUN, changed, {}, {})
    assert back.plan.host(pod("eni-server")).eni_type == "Trunk", "created again: the PodNetworking as it is now"


def test_an_unknown_eni_type_is_refused_with_what_terway_takes(tmp_path):
    data = base()
    data["manifests"][1]["spec"]["eniOptions"]["eniType"] = "Exclusive"
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), "t")
    [p] = info.value.problems
    assert p.path == "manifests[1].spec.eniOptions.eniType"
    check(p, path, "Exclusive", line_of(path.read_text(), "Exclusive"), "Default", "ENI", "Trunk")


def test_eni_options_outside_eni_mode_are_refused_with_the_pod_networking(tmp_path):
    path = write(tmp_path, base())
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode="vpc-route"), "t")
    assert {p.path for p in info.value.problems} == {f"manifests[{i}].kind" for i in range(8)}
    assert all("eni mode only" in p.expected for p in info.value.problems)


# ------------------------------------------------------------------------------------ the flows
def test_an_exclusive_eni_pair_meets_its_security_groups_at_the_vswitch(plan, net):
    vswitch, node = plan.vswitch("vsw-a").bridge, plan.node("node-1").bridge
    ok, bridges = walk(plan, net, pod("eni-client"), pod("eni-server"), 80)
    assert ok and vswitch in bridges, "sg-app admits 80: up to the vSwitch and back down the same uplink"
    assert bridges.count(node) >= 2
    ok, bridges = walk(plan, net, pod("eni-client"), pod("eni-server"), 81)
    assert not ok and vswitch in bridges, "twin: sg-app has nothing for 81, and the vSwitch drops it"


def test_shared_and_trunk_pairs_are_switched_on_the_node(plan, net):
    for client, server in (("shared-client", "shared-server"), ("trunk-client", "trunk-server")):
        ok, bridges = walk(plan, net, pod(client), pod(server), 81)
        assert ok and set(bridges) == {plan.node("node-1").bridge}, f"{client}: no security group on the node"
    ok, _ = walk(plan, net, pod("remote-client"), pod("shared-server"), 81)
    assert not ok, "twin: from another node sg-app holds for the shared server too"


def test_one_exclusive_eni_is_enough_either_way(plan, net):
    assert not walk(plan, net, pod("shared-client"), pod("eni-server"), 81)[0]
    assert not walk(plan, net, pod("eni-client"), pod("shared-server"), 81)[0]
    assert not walk(plan, net, pod("trunk-client"), pod("eni-server"), 81)[0]
    assert walk(plan, net, pod("eni-client"), pod("trunk-server"), 80)[0]


def test_the_node_and_a_service_stay_on_the_node(plan, net):
    ok, bridges = walk(plan, net, "ecs/node-1", pod("eni-server"), 81)
    assert ok and set(bridges) == {plan.node("node-1").bridge}, "the node reaches it through Terway's veth"
    svc = plan.service("default/eni-server")
    ends = net.send(plan.host(pod("eni-client")), svc.cluster_ip, 81)
    assert [e.host for e in ends if e.kind == "delivered"] == [pod("eni-server")], list(map(str, ends))
    assert {b for e in ends for b, _ in e.path} == {plan.node("node-1").bridge}
    e = explain(plan, pod("eni-client"), "svc/default/eni-server", 81, "tcp")
    assert e.allowed, e.reason


def test_without_the_vswitchs_hairpin_the_exclusive_pair_is_lost(plan):
    """Open vSwitch drops an output to the port a packet came in by: the vSwitch needs its IN_PORT flow."""
    net = Network(plan)
    table = net.tables[plan.vswitch("vsw-a").bridge]
    hairpins = [f for f in table.tables[60] if f.priority == 10]
    assert [dict(f.match)["in_port"] for f in hairpins] == [plan.node("node-1").uplinks[0].vswitch_ofport]
    table.tables[60] = [f for f in table.tables[60] if f not in hairpins]
    ends = net.send(plan.host(pod("eni-client")), plan.host(pod("eni-server")).ip, 80,
                    eth_dst=plan.host(pod("eni-server")).mac)
    assert not any(e.kind == "delivered" for e in ends)


def test_flows_only_where_an_exclusive_eni_is(plan):
    """Pairs with an exclusive ENI on a node bridge; a hairpin on the uplinks of their nodes only."""
    fs = compile_plan(plan)
    pairs = [f for f in fs[plan.node("node-1").bridge].flows if f.table == 30 and f.priority == 202
             and "eth_dst" in dict(f.match)]       # the others: to a pod of another vSwitch (test_samenode.py)
    local = [h for h in plan.own_pods if h.node == "node-1"]
    want = {(a.ofport, b.mac) for a in local for b in local
            if a != b and a.vswitch == b.vswitch and (a.exclusive_eni or b.exclusive_eni)}
    assert {(dict(f.match)["in_port"], dict(f.match)["eth_dst"]) for f in pairs} == want
    assert not [f for f in fs[plan.node("node-2").bridge].flows if f.priority == 202]
    other = compile_plan(make_plan(load(str(SCENARIO.parent / "terway.yaml")), RUN))   # no exclusive ENI
    assert not [f for fs in other.values() for f in fs.flows if (f.table, f.priority) in ((30, 202), (60, 10))]


# ------------------------------------------------------------------------- other vSwitches, IPv6
def test_an_exclusive_pod_on_another_vswitch_of_its_node_goes_through_the_vrouter(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"].append({"name": "vsw-b", "zone": "zone-a", "cidr": "192.168.2.0/24"})
    data["manifests"][0]["spec"]["vSwitchOptions"] = ["vsw-b"]
    plan = make_plan(load(str(write(tmp_path, data))), RUN)
    net = Network(plan)
    assert plan.host(pod("eni-server")).vswitch == "vsw-b"
    ends = net.send(plan.host(pod("eni-client")), plan.host(pod("eni-server")).ip, 80)
    assert any(e.kind == "delivered" for e in ends) and plan.vpcs[0].bridge in {b for e in ends for b, _ in e.path}
    for port, want in ((80, True), (81, False)):
        got = any(e.kind == "delivered" for e in net.send(plan.host(pod("eni-client")), plan.host(pod("eni-server")).ip,
                                                          port))
        v = reach(plan, plan.host(pod("eni-client")), plan.host(pod("eni-server")), port)
        assert got == v.allowed == want, v.reason
        assert any(s.stage == "route" for s in v.steps) and v.reason.startswith("exclusive ENI")


def test_in_ipv6_too(tmp_path):
    data = dual_stack(base())
    plan = make_plan(load(str(write(tmp_path, data))), RUN)
    net = Network(plan)
    assert walk(plan, net, pod("eni-client"), pod("eni-server"), 80, 6)[0]
    assert not walk(plan, net, pod("eni-client"), pod("eni-server"), 81, 6)[0], "twin: through the vSwitch"
    assert walk(plan, net, pod("trunk-client"), pod("trunk-server"), 81, 6)[0], "trunk: on the node"


# ------------------------------------------------------------------------------------ evaluator
def test_the_evaluator_says_why(plan):
    e = explain(plan, pod("eni-client"), pod("eni-server"), 81, "tcp")
    assert not e.allowed and e.reason.startswith("exclusive ENI, through the vSwitch:")
    assert any("exclusive ENI" in s.text and s.stage == "node bridge" for s in e.steps)
    assert any(s.stage == "security group" and s.passes is False for s in e.steps)
    e = explain(plan, pod("trunk-client"), pod("trunk-server"), 81, "tcp")
    assert e.allowed and any("trunk member ENI" in s.text for s in e.steps)
    e = explain(plan, pod("shared-client"), pod("shared-server"), 81, "tcp")
    assert e.allowed and not any("trunk" in s.text or "exclusive" in s.text for s in e.steps)
    # to itself, and a Service's connection, stay in the pod and on the node
    me = plan.host(pod("eni-server"))
    assert reach(plan, me, me, 81).allowed
    assert reach(plan, plan.host(pod("eni-client")), me, 81, service=True).reason.startswith("on the same node")
