"""Hosts of one node on different vSwitches, in eni mode: a pod and a pod of another pod vSwitch, or a
pod and its node. Each sends to its gateway, and the node routes the packet to the other itself, as
Terway's host route (`to <pod IP> lookup main`) does: no security group on the way, the client's
address kept, the TTL decremented once, NetworkPolicy still applied. With an exclusive ENI on either
pod, the packets go through the vSwitches and the vRouter, where the security groups apply. Walked
through the compiled flows (tests/unit/netsim.py) beside the evaluator, and every pair of hosts of
one node in every eni scenario held to agree (the check that would have caught the flows sending
such pairs through the vRouter while the evaluator said "switched")."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import reach
from kubevpc.planning import HostPlan, Plan, make_plan
from kubevpc.scenario.load import load

from .golden import scenario_files
from .netsim import TTL, End, Network
from .test_exclusive_eni import dual_stack

ROOT = Path(__file__).resolve().parents[2]
PODSG = ROOT / "tests" / "e2e" / "data" / "podsg.yaml"
EXCLUSIVE = ROOT / "scenarios" / "exclusive-eni.yaml"
RUN = "kvsn"


def pod(name: str) -> str:
    return f"pod/default/{name}"


def plan_of(tmp_path: Path, data: dict) -> Plan:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path)), RUN)


def next_hop(plan: Plan, s: HostPlan, d: HostPlan, family: int) -> str:
    """The MAC s sends to for d: d's own when d's address is on s's vSwitch, else s's gateway's."""
    v = plan.vswitch(s.vswitch)
    ip, cidr = (d.ipv6, v.ipv6_cidr) if family == 6 else (d.ip, v.cidr)
    return d.mac if ipaddress.ip_address(ip) in ipaddress.ip_network(cidr) else s.gateway_mac


def walk(plan: Plan, net: Network, src: str, dst: str, port: int, family: int = 4,
         reply: bool = False) -> tuple[End | None, set]:
    """The first packet src -> dst:port (a reply of an established connection with `reply`): where
    it was delivered to dst, if it was, and the bridges it crossed. The evaluator must agree (a
    reply: with the connection it answers)."""
    s, d = plan.host(src), plan.host(dst)
    ends = net.send(s, d.ipv6 if family == 6 else d.ip, port, eth_dst=next_hop(plan, s, d, family), reply=reply)
    got = next((e for e in ends if e.kind == "delivered" and e.host == dst), None)
    v = reach(plan, d, s, port, "tcp", family) if reply else reach(plan, s, d, port, "tcp", family)
    assert (got is not None) == v.allowed, f"{src} -> {dst}:{port}: flows {got is not None}, evaluator " \
        f"{v.allowed} ({v.reason}); " + "; ".join(map(str, ends))
    return got, {b for e in ends for b, _ in e.path}


def routed_on(plan: Plan, end: End | None, bridges: set, src: str, node: str, family: int = 4) -> bool:
    """Delivered by the node's bridge alone, TTL (hop limit) decremented once, the client's address kept."""
    s = plan.host(src)
    return end is not None and bridges == {plan.node(node).bridge} and end.packet["nw_ttl"] == TTL - 1 and \
        end.packet["ipv6_src" if family == 6 else "ipv4_src"] == (s.ipv6 if family == 6 else s.ip)


# ---------------------------------------------------------------- podsg.yaml: node-2 and vault
@pytest.fixture
def podsg(tmp_path) -> Plan:
    """podsg.yaml with two more pods on node-2, on vsw-a as the node is: web-2 (sg-nodes, which
    sg-locked does not admit) and api-2 (sg-db-clients, which it admits on 80). vault is on vsw-pods."""
    data = yaml.safe_load(PODSG.read_text())
    for name, role in (("web-2", "web"), ("api-2", "api")):
        data["manifests"].append({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": name, "labels": {"role": role}},
                                  "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]}})
    return plan_of(tmp_path, data)


def test_the_node_reaches_its_pod_of_another_vswitch_on_itself():
    plan = make_plan(load(str(PODSG)), RUN)
    net = Network(plan)
    assert plan.host("ecs/node-2").vswitch == "vsw-a" and plan.host(pod("vault")).vswitch == "vsw-pods"
    for port in (80, 81):          # sg-locked admits neither from sg-nodes
        end, bridges = walk(plan, net, "ecs/node-2", pod("vault"), port)
        assert routed_on(plan, end, bridges, "ecs/node-2", "node-2"), (port, bridges)
        assert end.packet["eth_src"] == plan.vswitch("vsw-pods").gateway_mac and end.packet["eth_dst"] == \
            plan.host(pod("vault")).mac
    end, bridges = walk(plan, net, pod("web-1"), pod("vault"), 80)
    assert end is None and plan.vswitch("vsw-pods").bridge in bridges, "twin: from node-1, sg-locked drops it"


def test_pods_of_one_node_on_two_vswitches_meet_on_it_despite_the_security_groups(podsg):
    net = Network(podsg)
    for port in (80, 81):          # sg-locked: 80 from sg-db-clients only; 81 dropped (drop wins)
        end, bridges = walk(podsg, net, pod("web-2"), pod("vault"), port)
        assert routed_on(podsg, end, bridges, pod("web-2"), "node-2"), (port, bridges)
    end, bridges = walk(podsg, net, pod("vault"), pod("web-2"), 80, reply=True)
    assert routed_on(podsg, end, bridges, pod("vault"), "node-2"), "the reply the same way"
    end, _ = walk(podsg, net, pod("vault"), pod("web-2"), 80)
    assert end is not None, "and the other way round"
    for port in (80, 81):
        assert walk(podsg, net, pod("web-1"), pod("vault"), port)[0] is None, "twin: from node-1, through the vSwitch"
    e = explain(podsg, pod("web-2"), pod("vault"), 81, "tcp")
    assert e.allowed and "routed on the node (Terway's host route)" in e.reason, e.reason
    assert any("TTL decremented" in s.text and "lookup main" in s.text for s in e.steps)
    assert not any(s.stage == "security group" for s in e.steps)


def test_networkpolicy_still_applies_to_the_local_route(podsg, tmp_path):
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "vault-from-api", "namespace": "default"},
              "spec": {"podSelector": {"matchLabels": {"role": "vault"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "api"}}}]}]}}
    data = yaml.safe_load(PODSG.read_text())
    data["manifests"] += [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "labels": {"role": r}},
                           "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]}}
                          for n, r in (("web-2", "web"), ("api-2", "api"))] + [policy]
    plan = plan_of(tmp_path, data)
    net = Network(plan)
    end, bridges = walk(plan, net, pod("api-2"), pod("vault"), 81)
    assert routed_on(plan, end, bridges, pod("api-2"), "node-2"), "NetworkPolicy admits api; no security group"
    end, bridges = walk(plan, net, pod("web-2"), pod("vault"), 81)
    assert end is None and bridges == {plan.node("node-2").bridge}, "twin: NetworkPolicy drops it on the node"
    assert not reach(plan, plan.host(pod("web-2")), plan.host(pod("vault")), 81).allowed


# ------------------------------------------------------- exclusive-eni.yaml: the exclusive twin
def test_the_shared_pair_is_routed_on_the_node_and_the_exclusive_pair_goes_through_the_vrouter():
    plan = make_plan(load(str(EXCLUSIVE)), RUN)
    net, vrouter = Network(plan), plan.vpcs[0].bridge
    assert plan.host(pod("shared-pods-server")).vswitch == plan.host(pod("eni-pods-server")).vswitch == "vsw-pods"
    end, bridges = walk(plan, net, pod("shared-client"), pod("shared-pods-server"), 81)
    assert routed_on(plan, end, bridges, pod("shared-client"), "node-1"), "sg-app has nothing for 81: not on the way"
    end, bridges = walk(plan, net, pod("eni-client"), pod("eni-pods-server"), 81)
    assert end is None and vrouter in bridges, "twin: both exclusive, through the vRouter, sg-app drops 81"
    end, bridges = walk(plan, net, pod("eni-client"), pod("eni-pods-server"), 80)
    assert end is not None and vrouter in bridges, "and admits 80 there"
    for src, dst in (("eni-client", "shared-pods-server"), ("shared-client", "eni-pods-server")):
        end, bridges = walk(plan, net, pod(src), pod(dst), 81)
        assert end is None and vrouter in bridges, f"{src} -> {dst}: one exclusive ENI is enough"
    end, bridges = walk(plan, net, "ecs/node-1", pod("eni-pods-server"), 81)
    assert routed_on(plan, end, bridges, "ecs/node-1", "node-1"), "the node reaches an exclusive ENI's pod on itself"
    v = reach(plan, plan.host(pod("eni-client")), plan.host(pod("eni-pods-server")), 81)
    assert v.reason.startswith("exclusive ENI, through the vSwitch") and any(s.stage == "route" for s in v.steps)


def test_local_routes_only_where_hosts_of_a_node_are_on_two_vswitches():
    plan = make_plan(load(str(EXCLUSIVE)), RUN)
    fs = compile_plan(plan)
    local = [f for f in fs[plan.node("node-1").bridge].flows if (f.table, f.priority) == (30, 201)]
    # from the pods of vsw-pods to the node and the 5 pods of vsw-a without an exclusive ENI; from the
    # node to the two pods of vsw-pods, and from the pods of vsw-a to the shared one only
    assert len(local) == 6 + 2 + 1
    overrides = [f for f in fs[plan.node("node-1").bridge].flows if (f.table, f.priority) == (30, 202)
                 and "eth_dst" not in dict(f.match)]
    assert len(overrides) == 2 + 5, "an exclusive pod to a shared pod of the other vSwitch: to its own ENI"
    assert not [f for f in fs[plan.node("node-2").bridge].flows if f.priority == 201]
    other = compile_plan(make_plan(load(str(ROOT / "scenarios" / "default.yaml"), mode="eni"), RUN))
    assert not [f for fs in other.values() for f in fs.flows if (f.table, f.priority) == (30, 201)]


def test_in_ipv6_too(tmp_path):
    data = dual_stack(yaml.safe_load(EXCLUSIVE.read_text()))
    plan = plan_of(tmp_path, data)
    net, vrouter = Network(plan), plan.vpcs[0].bridge
    end, bridges = walk(plan, net, pod("shared-client"), pod("shared-pods-server"), 81, 6)
    assert routed_on(plan, end, bridges, pod("shared-client"), "node-1", 6), bridges
    end, bridges = walk(plan, net, pod("shared-pods-server"), pod("shared-client"), 81, 6, reply=True)
    assert routed_on(plan, end, bridges, pod("shared-pods-server"), "node-1", 6), "the reply the same way"
    end, bridges = walk(plan, net, pod("eni-client"), pod("eni-pods-server"), 81, 6)
    assert end is None and vrouter in bridges, "twin: exclusive, through the vRouter"
    assert walk(plan, net, pod("eni-client"), pod("eni-pods-server"), 80, 6)[0] is not None
    end, bridges = walk(plan, net, "ecs/node-1", pod("shared-pods-server"), 81, 6)
    assert routed_on(plan, end, bridges, "ecs/node-1", "node-1", 6)
    # neighbour discovery needs nothing new: a pod solicits its gateway only, which the vSwitch answers
    sol = net.solicit(plan.host(pod("shared-pods-server")), plan.host(pod("shared-pods-server")).gateway6)
    assert [e.kind for e in sol] == ["controller"]


# ------------------------------------------------------------ agreement, every eni scenario
def eni_plans() -> list:
    out = []
    for path in scenario_files():
        try:
            plan = make_plan(load(str(path), mode="eni"), RUN)
        except Exception:       # noqa: BLE001 - scenarios refused in eni mode (their own tests say why)
            continue
        if plan.cluster and plan.cluster.mode == "eni":
            out.append(pytest.param(plan, id=str(path.relative_to(ROOT))))
    return out


@pytest.mark.parametrize("plan", eni_plans())
def test_every_pair_of_hosts_of_a_node_agrees_with_the_evaluator(plan):
    """Each ordered pair of hosts of one node (a pod at one end; host-network pods are their node),
    at its servers' ports and 81, in both families: the first packet reaches the destination exactly
    when the evaluator says so; what the evaluator keeps on the node stays on the node's bridge,
    with the client's address, the TTL decremented only between two vSwitches."""
    net = Network(plan)
    hosts = [h for h in plan.hosts if h.node and not h.host_network]
    checked = 0
    for s in hosts:
        for d in hosts:
            if s.key == d.key or s.node != d.node or "pod" not in (s.kind, d.kind):
                continue
            for family in (4, 6) if s.ipv6 and d.ipv6 else (4,):
                for port in sorted({81, *(x.port for x in d.servers)}):
                    ip = d.ipv6 if family == 6 else d.ip
                    ends = net.send(s, ip, port, eth_dst=next_hop(plan, s, d, family))
                    got = next((e for e in ends if e.kind == "delivered" and e.host == d.key), None)
                    v = reach(plan, s, d, port, "tcp", family)
                    assert (got is not None) == v.allowed, f"{s.key} -> {d.key}:{port} IPv{family}: flows " \
                        f"{got is not None}, evaluator {v.allowed} ({v.reason}); " + "; ".join(map(str, ends))
                    checked += 1
                    if got is None or not v.reason.startswith("on the same node"):
                        continue
                    ttl = TTL - 1 if s.vswitch != d.vswitch else TTL
                    src = got.packet["ipv6_src" if family == 6 else "ipv4_src"]
                    assert {b for b, _ in got.path} == {plan.node(s.node).bridge} and got.packet["nw_ttl"] == ttl \
                        and src == (s.ipv6 if family == 6 else s.ip), (s.key, d.key, got.path[-1])
    assert checked or not plan.own_pods
