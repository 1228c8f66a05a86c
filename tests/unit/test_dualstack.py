"""IPv4/IPv6 dual stack in eni mode (scenarios/dualstack.yaml): every validation error with file,
line and value; the plan's IPv6 side; the flows walked with tests/unit/netsim.py in IPv6 (pod to
pod across nodes, pod to ECS, ECS to pod by an ipv6Cidr rule and the twins that are dropped,
neighbour discovery answered for the gateway) beside the evaluator; `kubevpc explain` in IPv6.
Expected addresses are written out by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from controller.ndp import advertisement
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import reach
from kubevpc.planning import Plan, make_plan, resolve_endpoint
from kubevpc.scenario.load import load

from .netsim import Network
from .plans import plan_of
from .problems import check, line_of, the
from .test_validation import refuse

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "dualstack.yaml"
RUN = "kvs"
GW_H, CLIENT6, WEB0_6, WEB1_6, APP6 = ("2001:db8:0:101::fd", "2001:db8:0:101::3", "2001:db8:0:101::2",
                                       "2001:db8:0:102::2", "2001:db8:0:102::50")


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def vpc(d: dict) -> dict:
    return d["cloud"]["vpcs"][0]


def instance(d: dict, name: str) -> dict:
    return next(i for i in d["cloud"]["instances"] if i["name"] == name)


def plan() -> Plan:
    return plan_of(SCENARIO, "eni", RUN)


def host(ref: str):
    return resolve_endpoint(plan(), ref)


# ------------------------------------------------------------------------------------------ plan
def test_addresses_mirror_their_ipv4_host_number_unless_declared():
    p = plan()
    got = {h.key: (h.ip, h.ipv6, h.gateway6) for h in p.hosts}
    assert got["ecs/node-1"] == ("192.168.1.1", "2001:db8:0:101::1", GW_H)
    assert got["pod/default/client"] == ("192.168.1.3", CLIENT6, GW_H)
    assert got["pod/default/web-1"] == ("192.168.2.2", WEB1_6, "2001:db8:0:102::fd")
    assert got["ecs/ecs-app"] == ("192.168.2.50", APP6, "2001:db8:0:102::fd")      # declared
    assert [(v.ipv6_cidr, v.gateway6) for v in p.vswitches] == [("2001:db8:0:101::/64", GW_H),
                                                                ("2001:db8:0:102::/64", "2001:db8:0:102::fd")]
    assert [(r.destination, r.kind) for r in p.vpcs[0].routes6] == [("2001:db8:0:101::/64", "system"),
                                                                    ("2001:db8:0:102::/64", "system")]
    assert p.cluster.dual_stack and p.vpcs[0].ipv6_cidr == "2001:db8:0:100::/56"
    nodes = next(g for g in p.groups if g.name == "sg-nodes")
    assert CLIENT6 in nodes.members6 and WEB1_6 in nodes.members6 and APP6 not in nodes.members6


def test_a_single_stack_scenario_has_no_ipv6_anywhere():
    p = make_plan(load(str(SCENARIO.parent / "default.yaml"), mode="eni"), RUN)
    assert not any(h.ipv6 or h.gateway6 for h in p.hosts)
    assert not any(a.ipv6 for a in p.attachments) and not any(v.ipv6_cidr for v in p.vswitches)
    assert not any(g.members6 for g in p.groups) and not p.cluster.dual_stack


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("where, value, words", [
    ("vpc", "2400:3200::/56", ["2001:db8::/32", "fd00::/8", "never be real"]),
    ("vpc", "2001:db8:0:100::/48", ["/56"]),
    ("vsw", "2001:db8:0:1100::/64", ["subnet of the VPC's ipv6Cidr"]),
    ("vsw", "2001:db8:0:102::/80", ["/64"]),
    ("vsw", "2001:db8:0:101::/64", ["overlaps vSwitch 'vsw-h'"]),
    ("vsw", "10.0.0.0/64", ["IPv6 CIDR"]),
])
def test_ipv6_cidrs_are_checked(tmp_path, where, value, words):
    d = data()
    target = vpc(d) if where == "vpc" else vpc(d)["vswitches"][1]
    target["ipv6Cidr"] = value
    path = "cloud.vpcs[0].ipv6Cidr" if where == "vpc" else "cloud.vpcs[0].vswitches[1].ipv6Cidr"
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, path)
    assert str(value) in str(p.value)
    check(p, f, p.value, line_of(text, value, after=None if where == "vpc" else "vsw-i"), *words)


def test_a_vswitch_needs_its_vpc_to_have_ipv6(tmp_path):
    d = data()
    del vpc(d)["ipv6Cidr"]
    d["cluster"]["dualStack"] = False
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].vswitches[0].ipv6Cidr"), f, "2001:db8:0:101::/64",
          line_of(text, "2001:db8:0:101::/64"), "VPC vpc-prod has no ipv6Cidr")


@pytest.mark.parametrize("value, words", [
    ("2001:db8:0:101::60", ["outside its vSwitch vsw-i"]),
    ("2001:db8:0:102::fd", ["reserved", "gateway"]),
    ("2001:db8:0:102::", ["reserved", "first address"]),
    ("2001:db8:0:102::1", ["already held by instance node-2"]),      # node-2's IPv4 twin
    ("2400:3200::1", ["2001:db8::/32", "never be real"]),
])
def test_an_instances_ipv6_is_checked(tmp_path, value, words):
    d = data()
    instance(d, "ecs-app")["ipv6"] = value
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, "cloud.instances[2].ipv6")
    check(p, f, p.value, line_of(text, value, after="ecs-app"), *words)
    assert value in str(p.value)


def test_an_ipv6_address_on_a_vswitch_without_ipv6(tmp_path):
    d = data()
    vpc(d)["vswitches"].append({"name": "vsw-v4", "cidr": "192.168.3.0/24"})
    d["cloud"]["instances"].append({"name": "ecs-v4", "vswitch": "vsw-v4", "ipv6": "2001:db8:0:103::5"})
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.instances[3].ipv6"), f, "2001:db8:0:103::5", line_of(text, "2001:db8:0:103::5"),
          "vSwitch vsw-v4 has no ipv6Cidr")


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route"])
def test_dual_stack_needs_terway(tmp_path, mode):
    problems, f, text = refuse(tmp_path, data(), mode)
    check(the(problems, "cluster.dualStack"), f, True, line_of(text, "dualStack"), "Terway", "eni", mode)


def test_dual_stack_needs_a_vpc_with_ipv6(tmp_path):
    d = data()
    del vpc(d)["ipv6Cidr"]
    for v in vpc(d)["vswitches"]:
        del v["ipv6Cidr"]
    del instance(d, "ecs-app")["ipv6"]
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cluster.dualStack"), f, True, line_of(text, "dualStack"), "no ipv6Cidr", "IPv6 enabled")


def test_pods_vswitches_need_ipv6_and_are_named(tmp_path):
    d = data()
    del vpc(d)["vswitches"][1]["ipv6Cidr"]
    del instance(d, "ecs-app")["ipv6"]
    problems, f, text = refuse(tmp_path, d)
    bad = [p for p in problems if p.value == "vsw-i"]
    assert len(bad) == 1, problems          # one problem for the vSwitch, not one per pod
    assert "vSwitch vsw-i, which has no ipv6Cidr" in bad[0].expected and bad[0].file == str(f)


def test_a_pods_ipv6_twin_may_not_be_an_instances_declared_address(tmp_path):
    d = data()
    instance(d, "ecs-app")["ipv6"] = WEB1_6
    problems, f, _ = refuse(tmp_path, d)
    assert any(p.value == WEB1_6 and "declared by instance ecs-app" in p.expected for p in problems), problems


@pytest.mark.parametrize("rule, words", [
    ({"direction": "ingress", "cidr": "10.0.0.0/8", "ipv6Cidr": "2001:db8::/32"}, ["exactly one peer", "ipv6Cidr"]),
    ({"direction": "ingress", "ipv6Cidr": "2400:3200::/32"}, ["2001:db8::/32", "never be real"]),
])
def test_rule_peers(tmp_path, rule, words):
    d = data()
    d["cloud"]["securityGroups"][1]["rules"].append(rule)
    problems, f, text = refuse(tmp_path, d)
    p = next(p for p in problems if p.path.startswith("cloud.securityGroups[1].rules[2]"))
    for w in words:
        assert w in p.expected
    assert p.file == str(f) and p.line


# ----------------------------------------------------------------------------------------- flows
def _walk(src: str, dst_ip: str, port: int = 8080):
    ends = Network(plan()).send(host(src), dst_ip, port)
    assert len(ends) == 1, [str(e) for e in ends]
    return ends[0]


def _evaluator(src: str, dst: str, port: int = 8080, family: int = 6):
    return reach(plan(), host(src), host(dst), port, "tcp", family)


@pytest.mark.parametrize("src, dst, dst_ip, delivered", [
    ("pod/client", "pod/web-1", WEB1_6, True),          # pod to pod across nodes and vSwitches (group members)
    ("pod/client", "ecs/ecs-app", APP6, True),          # pod to ECS: sg-app's ipv6Cidr rule for vsw-h
    ("pod/web-1", "ecs/ecs-app", APP6, False),          # its twin: vsw-i is not admitted over IPv6
    ("ecs/ecs-app", "pod/web-0", WEB0_6, True),         # ECS to pod: sg-nodes' ipv6Cidr rule for vsw-i
    ("ecs/node-1", "ecs/ecs-app", APP6, True),          # a node's own IPv6
])
def test_ipv6_flows_agree_with_the_evaluator(src, dst, dst_ip, delivered):
    end = _walk(src, dst_ip)
    assert (end.kind == "delivered" and end.host == host(dst).key) == delivered, str(end)
    if delivered:
        assert end.packet["ipv6_src"] == host(src).ipv6 and end.packet["ipv6_dst"] == dst_ip
        assert end.packet["eth_dst"] == host(dst).mac
    assert _evaluator(src, dst).allowed == delivered


def test_the_ipv6_rule_does_not_open_ipv4_nor_another_port():
    # the twin of ECS to pod: in IPv4 sg-nodes admits nothing from ecs-app on 8080 ...
    end = _walk("ecs/ecs-app", host("pod/web-0").ip)
    assert end.kind == "dropped" and any("inbound denied" in f.note for _, f in end.path)
    assert not _evaluator("ecs/ecs-app", "pod/web-0", family=4).allowed
    # ... and in IPv6 nothing on another port
    end = _walk("ecs/ecs-app", WEB0_6, 9090)
    assert end.kind == "dropped" and "inbound denied" in end.path[-1][1].note
    assert not _evaluator("ecs/ecs-app", "pod/web-0", 9090).allowed


def test_pods_on_one_node_are_switched_by_the_node_bridge():
    client, web0 = host("pod/client"), host("pod/web-0")
    ends = Network(plan()).send(client, WEB0_6, 8080, eth_dst=web0.mac)
    assert [(e.kind, e.host) for e in ends] == [("delivered", web0.key)]
    assert all(bridge == client.bridge for bridge, _ in ends[0].path)
    assert _evaluator("pod/client", "pod/web-0").allowed


def test_ipv6_never_leaves_the_vpc():
    end = _walk("pod/client", "2001:db8:ffff::1", 80)
    assert end.kind == "dropped" and "IPv4 only" in end.path[-1][1].note
    end = _walk("ecs/ecs-app", "fd00::1", 80)
    assert end.kind == "dropped"


def test_a_pod_cannot_send_from_another_ipv6_address():
    client = host("pod/client").model_copy(update={"ipv6": "2001:db8:0:101::99"})
    ends = Network(plan()).send(client, APP6, 8080)
    assert [e.kind for e in ends] == ["dropped"]


@pytest.mark.parametrize("src, target", [("pod/client", GW_H), ("pod/web-1", "2001:db8:0:102::fd"),
                                         ("ecs/ecs-app", WEB1_6), ("ecs/node-1", GW_H)])
def test_neighbour_solicitations_are_answered_by_the_controller(src, target):
    ends = Network(plan()).solicit(host(src), target)
    assert [e.kind for e in ends] == ["controller"], [str(e) for e in ends]
    bridge, last = ends[0].path[-1]
    assert last.feature == "nd" and plan().bridge(bridge).role == "vswitch"


def test_solicitations_for_unknown_addresses_are_not_flooded():
    ends = Network(plan()).solicit(host("pod/client"), "2001:db8:0:101::99")
    assert [e.kind for e in ends] == ["dropped"]


def _ns(src_mac: str, src: str, target: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="33:33:ff:00:00:fd", src=src_mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src, dst="ff02::1:ff00:fd", nxt=58, hop_limit=255))
    pkt.add_protocol(icmpv6.icmpv6(type_=135, data=icmpv6.nd_neighbor(dst=target, option=icmpv6.nd_option_sla(
        hw_src=src_mac))))
    pkt.serialize()
    return bytes(pkt.data)


def test_the_advertisement_gives_the_gateways_mac_as_a_router():
    client, vsw = host("pod/client"), plan().vswitch("vsw-h")
    reply = packet.Packet(advertisement(plan(), "vsw-h", _ns(client.mac, CLIENT6, GW_H)))
    eth, ip6, icmp6 = (reply.get_protocol(k) for k in (ethernet.ethernet, ipv6.ipv6, icmpv6.icmpv6))
    assert (eth.src, eth.dst) == (vsw.gateway_mac, client.mac)
    assert (ip6.src, ip6.dst, ip6.hop_limit) == (GW_H, CLIENT6, 255)
    assert icmp6.type_ == 136 and icmp6.data.dst == GW_H and icmp6.data.res == 0b111      # router, solicited, override
    assert icmp6.data.option.hw_src == vsw.gateway_mac
    other = packet.Packet(advertisement(plan(), "vsw-h", _ns(client.mac, CLIENT6, WEB0_6)))
    assert other.get_protocol(icmpv6.icmpv6).data.res == 0b011 and other.get_protocol(ethernet.ethernet).src == \
        host("pod/web-0").mac
    assert advertisement(plan(), "vsw-h", _ns(client.mac, CLIENT6, "2001:db8:0:101::99")) is None
    assert advertisement(plan(), "vsw-h", _ns(client.mac, "::", GW_H)) is None      # duplicate address detection


def test_a_pod_a_network_policy_selects_is_held_to_it_in_ipv6_too(tmp_path):
    """An empty ingress rule admits everything in both families (a pod selected by a policy is no
    longer fenced off from IPv6: the policy's flows have IPv6 twins)."""
    d = data()
    d["manifests"].append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "web", "namespace": "default"},
                           "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    p = make_plan(load(str(path)), RUN)
    ends = Network(p).send(resolve_endpoint(p, "ecs/ecs-app"), WEB0_6, 8080)
    assert [(e.kind, e.host) for e in ends] == [("delivered", "pod/default/web-0")]
    assert reach(p, resolve_endpoint(p, "ecs/ecs-app"), resolve_endpoint(p, "pod/web-0"), 8080, "tcp", 6).allowed
    assert reach(p, resolve_endpoint(p, "pod/client"), resolve_endpoint(p, "pod/web-0"), 8080).allowed


def test_explain_takes_an_ipv6_destination():
    e = explain(plan(), "pod/client", APP6, 8080)
    assert e.allowed and e.seen_source == CLIENT6
    assert any("2001:db8:0:101::/64" in s.text for s in e.steps)
    e = explain(plan(), "pod/web-1", "ecs/ecs-app", 8080, family=6)
    assert not e.allowed and "2001:db8:0:102::2" in e.reason
    e = explain(plan(), "ecs/ecs-app", "pod/web-0", 8080, family=6)
    assert e.allowed and e.seen_source == APP6
