"""The compiled flows: pipeline discipline, cookies, match prerequisites, port masks, security
group priorities and the structure each pod network mode must have. No switch is needed: flows
are plain data (controller/flows.py), and what a bridge does with a packet is looked up in them
by the flow-table simulator (tests/unit/fakeoftable.py)."""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from pathlib import Path

import pytest

from controller.compile import compile_plan
from controller.flows import (CT_DNAT, CT_NEW, CT_RPL, CT_SNAT, CT_TRK, ETH_ARP, ETH_IP, IPPROTO, Ct, Flow, FlowSet,
                              Goto, Output, OutputReg, Resubmit, SetField, ct_state, port_masks)
from controller.pipeline import (CTM_MASQ, CTM_SERVICE, FLAG_NAT_COMMITTED, NODE, PIPELINES, REG_FLAGS, REG_OUT,
                                 REG_SRC, SRC_HOST, SRC_POD, SRC_TUNNEL, SRC_UPLINK)
from controller.services import snat_zone
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan
from tests.unit.fakeoftable import FakeOFTable
from tests.unit.netsim import Network

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
SCENARIOS = {"default": REPO / "scenarios" / "default.yaml", "reach": DATA / "reach.yaml",
             "small": DATA / "small.yaml"}
MODES = ("vxlan", "vpc-route", "eni")
TUNNEL_OFPORT = 100
CASES = [(s, m) for s in SCENARIOS for m in MODES]


# ------------------------------------------------------------------------------------- helpers
_plans: dict[tuple[str, str], Plan] = {}


def plan_for(scenario: str, mode: str) -> Plan:
    if (scenario, mode) not in _plans:
        _plans[scenario, mode] = make_plan(load(str(SCENARIOS[scenario]), mode=mode), "kv")
    return _plans[scenario, mode]


def every_flow(plan: Plan):
    """(bridge plan, flow) for every flow of every bridge."""
    compiled = compile_plan(plan)
    assert set(compiled) == {b.name for b in plan.bridges}
    for b in plan.bridges:
        assert compiled[b.name].flows, f"{b.name} has no flows"
        for f in compiled[b.name].flows:
            yield b, f


def targets(f: Flow) -> list[int]:
    """Tables a flow sends packets on to: goto_table, resubmit and ct(table=...)."""
    return [a.table for a in f.actions
            if isinstance(a, (Goto, Resubmit)) or (isinstance(a, Ct) and a.table is not None)]


def snat_to_node(flows, node) -> list[Ct]:
    """The ct actions that SNAT pods' own connections to the node (not Service masquerade)."""
    return [a for f in flows for a in f.actions if isinstance(a, Ct) and a.commit and a.nat is not None
            and a.nat.kind == "src" and f.feature == "snat"]


def match(f: Flow) -> dict:
    return dict(f.match)


def outputs(f: Flow) -> list:
    return [a.port for a in f.actions if isinstance(a, Output)]


def node_flows(plan: Plan, node: str) -> list[Flow]:
    return compile_plan(plan)[plan.node(node).bridge].flows


def cidr_match(cidr: str):
    net = ipaddress.IPv4Network(cidr)
    return (str(net.network_address), str(net.netmask))


def table_of(plan: Plan, bridge: str) -> FakeOFTable:
    return FakeOFTable.of(compile_plan(plan)[bridge])


NEW = 0x21                         # ct_state +trk+new


def tcp(src: str, dst: str, port: int, **fields) -> dict:
    """A new TCP connection's first packet, as the security-group and routing tables see it."""
    return {"eth_type": ETH_IP, "ct_state": NEW, "ipv4_src": src, "ipv4_dst": dst, "ip_proto": 6, "tcp_dst": port,
            **fields}


def sg_ingress(plan: Plan, owner: str, src: str, port: int):
    """The flow the destination's vSwitch runs in sg_ingress (50) for a new TCP connection to `owner`."""
    att = next(a for a in plan.attachments if a.owner == owner)
    return table_of(plan, plan.vswitch(att.vswitch).bridge).lookup(50, tcp(src, att.ip, port, reg1=att.ofport))


# ----------------------------------------------------------------------------- pipeline checks
@pytest.mark.parametrize("scenario, mode", CASES)
def test_tables_and_gotos_follow_the_declared_pipeline(scenario, mode):
    plan = plan_for(scenario, mode)
    for bridge, f in every_flow(plan):
        pipeline = PIPELINES[bridge.role]
        declared = {t.id for t in pipeline.tables}
        assert f.table in declared, f"{bridge.name}: table {f.table} not declared for {bridge.role}: {f.to_ofctl()}"
        allowed = pipeline.by_id(f.table).next
        for t in targets(f):
            assert t in allowed, f"{bridge.name}: {f.table} -> {t} not in next {allowed}: {f.to_ofctl()}"
            # the one way back: a flow that changes in_port looks its table up again, and cannot match again
            again = t == f.table and any(a.field == "in_port" and a.value != dict(f.match).get("in_port")
                                         for a in f.actions if isinstance(a, SetField))
            assert t > f.table or again, f"{bridge.name}: goes backwards: {f.to_ofctl()}"


@pytest.mark.parametrize("scenario, mode", CASES)
def test_classify_table_ends_in_an_explicit_drop(scenario, mode):
    """Table 0 sees everything: what no flow claims is dropped by a priority-0 flow, visibly."""
    plan = plan_for(scenario, mode)
    zero: dict[str, list[Flow]] = defaultdict(list)
    for bridge, f in every_flow(plan):
        if f.table == 0:
            zero[bridge.name].append(f)
    for b in plan.bridges:
        catch_all = [f for f in zero[b.name] if f.priority == 0]
        assert len(catch_all) == 1 and catch_all[0].match == () and catch_all[0].actions == (), b.name


@pytest.mark.parametrize("scenario, mode", CASES)
def test_no_flow_goes_to_the_controller(scenario, mode):
    for bridge, f in every_flow(plan_for(scenario, mode)):
        if f.feature != "reject":      # the one exception: the node asking an empty Service (refused for it)
            assert "controller" not in [str(p).lower() for p in outputs(f)], f.to_ofctl()
        assert "CONTROLLER" not in f.actions_ofctl()


@pytest.mark.parametrize("scenario, mode", CASES)
def test_outputs_and_in_ports_name_ports_of_the_bridge(scenario, mode):
    plan = plan_for(scenario, mode)
    for bridge, f in every_flow(plan):
        ports = {p.ofport for p in bridge.ports}
        for p in outputs(f):
            assert p == "in_port" or p in ports, f"{bridge.name}: output to missing port: {f.to_ofctl()}"
        if "in_port" in match(f):
            assert match(f)["in_port"] in ports, f"{bridge.name}: in_port of a missing port: {f.to_ofctl()}"
        for a in f.actions:
            if isinstance(a, SetField) and a.field == "reg1":
                assert a.value in ports, f"{bridge.name}: reg1 set to a missing port: {f.to_ofctl()}"
            if isinstance(a, OutputReg):
                assert a.reg == 1


@pytest.mark.parametrize("scenario, mode", CASES)
def test_match_prerequisites(scenario, mode):
    for bridge, f in every_flow(plan_for(scenario, mode)):
        m, text = match(f), f.to_ofctl()
        if {"ipv4_src", "ipv4_dst", "ip_proto", "ct_state"} & set(m):
            assert m.get("eth_type") == ETH_IP, text
        if "tcp_dst" in m or "tcp_src" in m:
            assert m.get("ip_proto") == 6, text
        if "udp_dst" in m or "udp_src" in m:
            assert m.get("ip_proto") == 17, text
        if any(k.startswith("arp_") for k in m):
            assert m.get("eth_type") == ETH_ARP, text
        for a in f.actions:     # rewriting ARP fields needs an ARP match too
            if isinstance(a, SetField) and a.field.startswith("arp_"):
                assert m.get("eth_type") == ETH_ARP, text


@pytest.mark.parametrize("scenario, mode", CASES)
def test_no_two_flows_conflict(scenario, mode):
    """Same table, priority and match with different actions: the switch keeps only one of them."""
    for name, fs in compile_plan(plan_for(scenario, mode)).items():
        seen: dict[tuple, str] = {}
        for f in fs.flows:
            key = (f.table, f.priority, frozenset(f.match))
            assert seen.setdefault(key, f.actions_ofctl()) == f.actions_ofctl(), f"{name}: {f.to_ofctl()}"


# ------------------------------------------------------------------------------------- cookies
@pytest.mark.parametrize("scenario, mode", CASES)
def test_cookies_unique_per_bridge(scenario, mode):
    for name, fs in compile_plan(plan_for(scenario, mode)).items():
        by_cookie: dict[int, set] = defaultdict(set)
        for f in fs.flows:
            by_cookie[f.cookie].add((f.feature, f.obj, f.key_text()))
        clashes = {hex(c): v for c, v in by_cookie.items() if len(v) > 1}
        assert not clashes, f"{name}: different flows share a cookie: {clashes}"


@pytest.mark.parametrize("scenario, mode", CASES)
def test_cookies_stable_across_compilations(scenario, mode):
    first = compile_plan(plan_for(scenario, mode))
    again = compile_plan(make_plan(load(str(SCENARIOS[scenario]), mode=mode), "kv"))
    assert {b: [f.cookie for f in fs.flows] for b, fs in first.items()} == \
           {b: [f.cookie for f in fs.flows] for b, fs in again.items()}
    assert {b: fs.ofctl() for b, fs in first.items()} == {b: fs.ofctl() for b, fs in again.items()}


def test_cookie_layout():
    a = Flow(30, 100, (("eth_type", ETH_IP),), (Goto(40),), "secgroup", 7)
    b = Flow(30, 100, (("eth_type", ETH_IP),), (Goto(40),), "secgroup", 7, note="notes do not count")
    c = Flow(30, 101, (("eth_type", ETH_IP),), (Goto(40),), "secgroup", 7)
    assert a.cookie >> 56 == 5 and (a.cookie >> 32) & 0xFFFFFF == 7
    assert a.cookie == b.cookie
    assert a.cookie != c.cookie and a.cookie >> 32 == c.cookie >> 32


def test_flowset_ofctl_sorted_by_table_then_priority():
    fs = FlowSet("br")
    fs.add(Flow(10, 5, (), ()), Flow(0, 1, (), ()), Flow(10, 50, (), ()))
    lines = fs.ofctl()
    assert [line.split(",")[1:3] for line in lines] == [["table=0", "priority=1 actions=drop"],
                                                        ["table=10", "priority=50 actions=drop"],
                                                        ["table=10", "priority=5 actions=drop"]]


# ---------------------------------------------------------------------------------- port masks
def covered(first: int, last: int) -> set[int]:
    masks = port_masks(first, last)
    for value, mask in masks:
        assert value & ~mask & 0xFFFF == 0, f"value {value:#x} has bits outside mask {mask:#x}"
    return {port for port in range(65536) if any(port & mask == value for value, mask in masks)}


@pytest.mark.parametrize("first, last, blocks", [(1, 65535, 16), (80, 80, 1), (8000, 8080, 3), (1024, 2047, 1),
                                                 (65535, 65535, 1), (3, 5, 2), (32768, 65535, 1), (1, 1024, 11)])
def test_port_masks_cover_exactly_the_range(first, last, blocks):
    assert covered(first, last) == set(range(first, last + 1))
    assert len(port_masks(first, last)) == blocks


def test_port_masks_blocks_are_disjoint():
    masks = port_masks(1000, 9999)
    sizes = [0x10000 - mask for _, mask in masks]
    assert sum(sizes) == 9000


# ---------------------------------------------------------------------- security group priorities
def _ingress_flows(plan: Plan, owner: str, port: int) -> list[Flow]:
    att = next(a for a in plan.attachments if a.owner == owner)
    flows = compile_plan(plan)[plan.vswitch(att.vswitch).bridge].flows
    return [f for f in flows if f.table == 50 and match(f).get("reg1") == att.ofport
            and match(f).get("ipv4_dst") == att.ip and match(f).get("tcp_dst") == port]


def _accepts(f: Flow) -> bool:
    return any(isinstance(a, Goto) for a in f.actions)


@pytest.mark.parametrize("mode", MODES)
def test_drop_beats_accept_at_equal_priority(mode):
    flows = _ingress_flows(plan_for("reach", mode), "ecs/eq-1", 8080)
    accept = [f for f in flows if _accepts(f)]
    drop = [f for f in flows if f.drops]
    assert len(accept) == 1 and len(drop) == 1, [f.to_ofctl() for f in flows]
    assert drop[0].priority > accept[0].priority
    plan = plan_for("reach", mode)
    assert sg_ingress(plan, "ecs/eq-1", plan.host("ecs/app-2").ip, 8080) == drop[0]


@pytest.mark.parametrize("mode", MODES)
def test_priority_one_beats_priority_two(mode):
    plan = plan_for("reach", mode)
    (accept1,) = [f for f in _ingress_flows(plan, "ecs/prio-1", 9090) if _accepts(f)]
    (drop2,) = [f for f in _ingress_flows(plan, "ecs/prio-1", 9090) if f.drops]
    assert accept1.priority > drop2.priority
    (drop1,) = [f for f in _ingress_flows(plan, "ecs/prio-1", 9091) if f.drops]
    (accept2,) = [f for f in _ingress_flows(plan, "ecs/prio-1", 9091) if _accepts(f)]
    assert drop1.priority > accept2.priority
    src = plan.host("ecs/web-1").ip
    assert sg_ingress(plan, "ecs/prio-1", src, 9090) == accept1
    assert sg_ingress(plan, "ecs/prio-1", src, 9091) == drop1


@pytest.mark.parametrize("mode", MODES)
def test_group_membership_ranks_below_every_rule_and_above_the_default_deny(mode):
    plan = plan_for("reach", mode)
    att = next(a for a in plan.attachments if a.owner == "ecs/prio-1")
    flows = [f for f in compile_plan(plan)[plan.vswitch(att.vswitch).bridge].flows
             if f.table == 50 and match(f).get("reg1") == att.ofport and match(f).get("ipv4_dst") == att.ip]
    rules = [f for f in flows if "tcp_dst" in match(f)]
    member = [f for f in flows if "ipv4_src" in match(f) and "tcp_dst" not in match(f)]
    default = [f for f in flows if "ipv4_src" not in match(f)]
    assert rules and member and len(default) == 1 and default[0].drops
    assert max(f.priority for f in member) < min(f.priority for f in rules)
    assert default[0].priority < min(f.priority for f in member)
    # a member on a port no rule names: membership allows; a rule's port from a member: the rule
    # decides; a stranger: the default deny
    assert sg_ingress(plan, "ecs/prio-1", att.ip, 7000) in member
    assert sg_ingress(plan, "ecs/prio-1", att.ip, 9091).drops
    assert sg_ingress(plan, "ecs/prio-1", "10.1.1.9", 7000) == default[0]


@pytest.mark.parametrize("mode", MODES)
def test_egress_drop_rule_compiles_to_a_drop_above_the_default_allow(mode):
    plan = plan_for("reach", mode)
    att = next(a for a in plan.attachments if a.owner == "ecs/out-1")
    flows = [f for f in compile_plan(plan)[plan.vswitch(att.vswitch).bridge].flows
             if f.table == 30 and match(f).get("in_port") == att.ofport and match(f).get("ipv4_src") == att.ip]
    (drop,) = [f for f in flows if match(f).get("tcp_dst") == 443]
    (allow,) = [f for f in flows if "tcp_dst" not in match(f)]
    assert drop.drops and allow.actions[-1] == Goto(40)
    assert drop.priority > allow.priority
    vsw = table_of(plan, plan.vswitch(att.vswitch).bridge)
    assert vsw.lookup(30, tcp(att.ip, "8.8.8.8", 443, in_port=att.ofport)) == drop
    assert vsw.lookup(30, tcp(att.ip, "8.8.8.8", 80, in_port=att.ofport)) == allow


def test_port_ranges_in_rules_become_masked_matches(tmp_path):
    text = (SCENARIOS["small"]).read_text().replace("ports: 22", "ports: 8000-8080")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    plan = make_plan(load(str(path)), "kv")
    att = next(a for a in plan.attachments if a.owner == "ecs/ecs-1")
    flows = [f for f in compile_plan(plan)[plan.vswitch(att.vswitch).bridge].flows
             if f.table == 50 and match(f).get("reg1") == att.ofport and "tcp_dst" in match(f)]
    # an exact port is written without a mask
    got = sorted(m if isinstance(m, tuple) else (m, 0xFFFF) for m in (match(f)["tcp_dst"] for f in flows))
    assert got == sorted(port_masks(8000, 8080))
    assert all(match(f)["ipv4_src"] == ("10.0.0.0", "255.255.0.0") for f in flows)
    vsw = table_of(plan, plan.vswitch(att.vswitch).bridge)
    for port, allowed in ((7999, False), (8000, True), (8047, True), (8080, True), (8081, False)):
        hit = vsw.lookup(50, tcp("10.0.9.9", att.ip, port, reg1=att.ofport))
        assert (hit in flows) == allowed and any(isinstance(a, Goto) for a in hit.actions) == allowed, port


# ---------------------------------------------------------------------------- mode structure
def test_vxlan_node_bridges_tunnel_and_snat():
    plan = plan_for("default", "vxlan")
    for node in plan.nodes:
        flows = node_flows(plan, node.name)
        assert any(TUNNEL_OFPORT in outputs(f) for f in flows), node.name
        # one tunnel flow per peer pod CIDR and source: pods, the host, the vSwitch (NodePorts) out
        # of the tunnel; another tunnel (NodePorts) back into it
        for peer in (n for n in plan.nodes if n.name != node.name):
            to_peer = [f for f in flows if match(f).get("ipv4_dst") == cidr_match(peer.pod_cidr)]
            by_src = {match(f)[REG_SRC]: outputs(f) for f in to_peer}
            assert by_src == {SRC_POD: [TUNNEL_OFPORT], SRC_HOST: [TUNNEL_OFPORT], SRC_UPLINK: [TUNNEL_OFPORT],
                              SRC_TUNNEL: ["in_port"]}
            assert all(SetField("eth_dst", peer.gateway_mac) in f.actions for f in to_peer)
        snat = snat_to_node(flows, node)
        assert len(snat) == 1
        assert (snat[0].nat.kind, snat[0].nat.ip) == ("src", node.ip)
        assert snat[0].zone == snat_zone(plan.bridge(node.bridge).zone) != plan.bridge(node.bridge).zone
        assert (snat[0].nat.port_min, snat[0].nat.port_max) == (61000, 65535)
        # a pod's new connection to an instance in the VPC is routed to that SNAT
        ecs = next(h for h in plan.instances if h.name not in {n.name for n in plan.nodes})
        pod = next(p for p in plan.pods if p.node == node.name)
        hit = FakeOFTable(flows).lookup(NODE.table("route"), tcp(pod.ip, ecs.ip, 5432, reg0=SRC_POD))
        assert [a for a in hit.actions if isinstance(a, Ct)] == snat


def test_vxlan_vrouter_has_no_pod_routes():
    plan = plan_for("default", "vxlan")
    vr = compile_plan(plan)[plan.vpcs[0].bridge].flows
    pod_net = ipaddress.IPv4Network(plan.cluster.pod_cidr)
    for f in vr:
        dst = match(f).get("ipv4_dst")
        if dst is not None:
            addr = dst[0] if isinstance(dst, tuple) else dst
            assert ipaddress.IPv4Address(addr) not in pod_net, f.to_ofctl()


@pytest.mark.parametrize("mode", ["vpc-route", "eni"])
def test_no_tunnel_and_no_snat_outside_vxlan(mode):
    plan = plan_for("default", mode)
    for node in plan.nodes:
        flows = node_flows(plan, node.name)
        assert not any(TUNNEL_OFPORT in outputs(f) for f in flows)
        assert not any(p.kind == "vxlan" for p in plan.bridge(node.bridge).ports)
        if mode == "eni":
            assert not snat_to_node(flows, node)
            continue
        # vpc-route: pods keep their address inside the VPC and towards other nodes' pods; only
        # what goes beyond (the internet) is SNATed to the node, at a lower priority
        route = NODE.table("route")
        snat = [f for f in flows if f.table == route and any(isinstance(a, Ct) and a.nat for a in f.actions)]
        assert [f.priority for f in snat] == [100]
        vpc = next(v for v in plan.vpcs if v.name == plan.cluster.vpc)
        kept = {match(f).get("ipv4_dst") for f in flows if f.table == route and f.priority == 105}
        net = lambda c: (str(ipaddress.IPv4Network(c).network_address), str(ipaddress.IPv4Network(c).netmask))  # noqa: E731
        assert kept == {net(vpc.cidr), net(plan.cluster.pod_cidr)}


def test_vpc_route_vrouter_routes_each_node_pod_cidr():
    plan = plan_for("default", "vpc-route")
    vpc = next(v for v in plan.vpcs if v.name == plan.cluster.vpc)
    flows = compile_plan(plan)[vpc.bridge].flows
    for node in plan.nodes:
        vsw = plan.vswitch(node.vswitch)
        routed = [f for f in flows if f.table == 20 and match(f).get("ipv4_dst") == cidr_match(node.pod_cidr)]
        plain = [f for f in routed if "in_port" not in match(f)]
        assert len(plain) == 1, [f.to_ofctl() for f in routed]
        assert SetField("eth_dst", node.mac) in plain[0].actions
        assert outputs(plain[0]) == [vsw.vrouter_port]
        # /24 pod routes rank with /24 system routes' rule: longer prefixes above shorter
        assert plain[0].priority == 100 + 10 * 24 - 1
    pod_cidrs = {cidr_match(n.pod_cidr) for n in plan.nodes}
    other = [f for f in flows if isinstance(match(f).get("ipv4_dst"), tuple)
             and match(f)["ipv4_dst"] not in pod_cidrs and ipaddress.IPv4Address(match(f)["ipv4_dst"][0])
             in ipaddress.IPv4Network(plan.cluster.pod_cidr)]
    assert not other


def test_eni_node_bridges_switch_by_destination_mac():
    plan = plan_for("default", "eni")
    for node in plan.nodes:
        flows = node_flows(plan, node.name)
        local = [h for h in plan.pods if h.node == node.name] + [plan.host(node.ecs)]
        for h in local:
            hits = [f for f in flows if f.table == 30 and match(f).get("eth_dst") == h.mac]
            assert len(hits) == 1 and outputs(hits[0]) == [h.ofport], h.key
            assert "ipv4_dst" not in match(hits[0])          # switched, not routed
            assert not any(isinstance(a, SetField) for a in hits[0].actions)
        assert not snat_to_node(flows, node)


def test_pods_may_only_send_from_their_own_mac_and_ip():
    plan = plan_for("default", "vxlan")
    for p in plan.pods:
        flows = [f for f in node_flows(plan, p.node) if f.table == 0 and match(f).get("in_port") == p.ofport]
        passing = [f for f in flows if f.actions]
        assert passing and all(match(f)["eth_src"] == p.mac for f in passing)
        assert all(match(f).get("ipv4_src", match(f).get("arp_spa")) == p.ip for f in passing)
        (drop,) = [f for f in flows if f.drops]
        assert drop.priority < min(f.priority for f in passing)
        sent = {"in_port": p.ofport, "eth_src": p.mac, "eth_type": ETH_IP, "ipv4_src": p.ip}
        table = FakeOFTable(flows)
        assert table.lookup(0, sent) in passing
        assert table.lookup(0, {**sent, "ipv4_src": "10.9.9.9"}) == drop
        assert table.lookup(0, {**sent, "eth_src": "0a:58:00:00:00:01"}) == drop


def test_vrouter_prefers_the_longest_prefix(tmp_path):
    """Two custom routes cover the same pod: the /24 must outrank the /16 whatever the order
    (kubevpc.evaluator.reach must agree; see test_reach.test_vxlan_route_lookup_is_longest_prefix)."""
    text = SCENARIOS["small"].read_text().replace(
        "      vswitches:\n",
        "      routeTable:\n        routes:\n"
        "          - {destination: 172.20.0.0/16, nextHop: node-2}\n"
        "          - {destination: 172.20.0.0/24, nextHop: node-1}\n"
        "      vswitches:\n", 1)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    plan = make_plan(load(str(path)), "kv")
    flows = [f for f in compile_plan(plan)[plan.vpcs[0].bridge].flows if f.table == 20 and "in_port" not in match(f)]
    (wide,) = [f for f in flows if match(f).get("ipv4_dst") == cidr_match("172.20.0.0/16")]
    (narrow,) = [f for f in flows if match(f).get("ipv4_dst") == cidr_match("172.20.0.0/24")]
    assert narrow.priority > wide.priority
    assert SetField("eth_dst", plan.node("node-1").mac) in narrow.actions
    assert SetField("eth_dst", plan.node("node-2").mac) in wide.actions
    vr = table_of(plan, plan.vpcs[0].bridge)
    edge_port = 999                      # from no vSwitch: only the plain routes match
    assert vr.lookup(20, {"eth_type": ETH_IP, "ipv4_dst": "172.20.0.9", "in_port": edge_port}) == narrow
    assert vr.lookup(20, {"eth_type": ETH_IP, "ipv4_dst": "172.20.1.9", "in_port": edge_port}) == wide
    # and every in_port variant of the /16 still ranks below the plain /24
    assert all(f.priority < narrow.priority for f in compile_plan(plan)[plan.vpcs[0].bridge].flows
               if f.table == 20 and match(f).get("ipv4_dst") == cidr_match("172.20.0.0/16"))


# ------------------------------------------------------------------------- uplinks: veth or patch
@pytest.mark.parametrize("scenario, mode", CASES)
def test_nodes_leave_by_the_patch_port_except_what_a_service_or_snat_just_committed(scenario, mode):
    """Every IPv4 packet a node sends to a vSwitch goes through table 36, which keeps the
    veth pair (it ends the datapath pass) for the 4-recirculation Service commits and new
    connections, and for the rest of Service and SNAT flows other than TCP (so that no packet
    overtakes their first ones), and sends everything else through the patch port in the same pass."""
    plan = plan_for(scenario, mode)
    t_up = NODE.table("uplink")
    for node in plan.nodes:
        flows = node_flows(plan, node.name)
        links = {u.ofport for u in node.uplinks}
        patches = {u.patch_ofport for u in node.uplinks}
        for f in flows:
            if f.table != t_up:
                assert not set(outputs(f)) & patches, f"patch port used outside the uplink table: {f.to_ofctl()}"
                if match(f).get("eth_type") == ETH_IP or f.table > NODE.table("arp"):
                    assert not set(outputs(f)) & links, f"IPv4 straight to an uplink: {f.to_ofctl()}"
        table = [f for f in flows if f.table == t_up]
        for u in node.uplinks:
            mine = sorted((f for f in table if match(f).get(REG_OUT) == u.ofport), key=lambda f: -f.priority)
            assert [outputs(f) for f in mine] == [[u.ofport], [u.ofport], [u.patch_ofport], [u.ofport], [u.ofport],
                                                  [u.patch_ofport]]
            assert match(mine[0])[REG_FLAGS] == (FLAG_NAT_COMMITTED, FLAG_NAT_COMMITTED)
            assert match(mine[1])["ct_state"] == ct_state(CT_TRK | CT_NEW)
            assert match(mine[2])["ip_proto"] == IPPROTO["tcp"] and mine[2].priority < mine[1].priority
            assert {(m.get("ct_mark"), m["ct_state"]) for m in map(match, mine[3:5])} == {
                ((CTM_SERVICE, CTM_SERVICE), ct_state(CT_TRK)), (None, ct_state(CT_TRK | CT_SNAT))}
            assert mine[3].priority < mine[2].priority and mine[3].priority == mine[4].priority
            assert mine[5].priority < mine[4].priority and set(match(mine[5])) == {REG_OUT}
        reached = [f for f in flows if t_up in targets(f)]
        assert reached and all(any(isinstance(a, SetField) and a.field == REG_OUT and a.value in links
                                   for a in f.actions) for f in reached)


@pytest.mark.parametrize("mode", MODES)
def test_a_service_connection_still_new_is_handled_as_established(mode):
    """A UDP flow is new until its first reply. Its later datagrams, DNATed by table 20's lookup
    (+dnat), skip the policy tables as established packets do; a masqueraded one is SNATed again
    whether new or not; and none is committed again (a commit without recirculation would hide
    its Service mark from the uplink table)."""
    plan = plan_for("default", mode)
    for node in plan.nodes:
        flows = node_flows(plan, node.name)
        svc = {f.priority: f for f in flows if f.table == NODE.table("service") and f.priority in (250, 300)}
        assert match(svc[300])["ct_state"] == ct_state(CT_TRK, CT_RPL), "new or established, not a reply"
        assert match(svc[300])["ct_mark"] == (CTM_MASQ, CTM_MASQ) and targets(svc[300]) == [NODE.table("masquerade")]
        assert match(svc[250])["ct_state"] == ct_state(CT_TRK | CT_NEW | CT_DNAT)
        assert targets(svc[250]) == [NODE.table("commit")]
        commit = sorted((f for f in flows if f.table == NODE.table("commit")), key=lambda f: -f.priority)
        assert {match(f)["ct_state"] for f in commit[:2]} == {ct_state(CT_TRK | CT_NEW | CT_DNAT),
                                                            ct_state(CT_TRK | CT_NEW | CT_SNAT)}
        for f in commit[:2]:
            assert targets(f) == [NODE.table("route")] and not any(isinstance(a, Ct) for a in f.actions)
        assert match(commit[2])["ct_state"] == ct_state(CT_TRK | CT_NEW) and commit[2].priority < commit[1].priority
        assert any(isinstance(a, Ct) and a.commit for a in commit[2].actions)


@pytest.mark.parametrize("mode", MODES)
def test_a_vswitch_takes_a_nodes_patch_port_as_its_uplink(mode):
    plan = plan_for("default", mode)
    compiled = compile_plan(plan)
    for node in plan.nodes:
        for u in node.uplinks:
            vsw = compiled[plan.vswitch(u.vswitch).bridge].flows
            f = next(f for f in vsw if f.table == 0 and match(f).get("in_port") == u.vswitch_patch_ofport)
            assert f.actions == (SetField("in_port", u.vswitch_ofport), Resubmit(0))
            # a packet from the patch port is classified as one from the uplink
            w = FakeOFTable(vsw).walk(tcp(node.ip, "10.9.9.9", 80, in_port=u.vswitch_patch_ofport))
            assert w.path[0] == f and w.packet["in_port"] == u.vswitch_ofport
            assert [(g.table, g.priority, targets(g)) for g in w.path[1:]] == [(0, 100, [20]), (20, 100, [25])]
            assert not any(u.vswitch_patch_ofport in outputs(g) for g in vsw), "a vSwitch never sends by the patch port"


@pytest.mark.parametrize("mode", MODES)
def test_a_service_connection_to_an_endpoint_on_the_balancing_node_is_delivered_there(mode):
    """A pod, the node itself, or a client in the VPC at a NodePort: DNATed to an endpoint on the
    node that balances it, the first packet goes straight to that pod, in every mode. In eni mode
    the flows that send Service traffic on to the vRouter by the port it came from rank below the
    deliveries by address (the two matched at one priority, which leaves the choice to OVS); the
    endpoint on another node is the twin, reached by the other path."""
    plan = make_plan(load(str(REPO / "tests" / "e2e" / "data" / "services.yaml"), mode=mode), "kv")
    net = Network(plan)
    web0, web1 = plan.host("pod/default/web-0"), plan.host("pod/default/web-1")
    node1, cluster_ip = plan.node("node-1"), plan.service("default/web").cluster_ip
    for src, dst, port in ((plan.host("pod/default/client-1"), cluster_ip, 80),
                           (plan.host("ecs/node-1"), cluster_ip, 80), (plan.host("ecs/ecs-client"), node1.ip, 30080)):
        ends = net.send(src, dst, port)
        assert sorted((e.kind, e.host, e.packet["ipv4_dst"]) for e in ends) == [
            ("delivered", web0.key, web0.ip), ("delivered", web1.key, web1.ip)], [str(e) for e in ends]
        local = next(e for e in ends if e.host == web0.key)
        assert {bridge for bridge, _ in local.path} >= {node1.bridge}
        assert all(bridge == node1.bridge for bridge, _ in local.path[local.path.index(
            next(x for x in local.path if x[0] == node1.bridge)):]), "left node-1 on the way to its own pod"
        far = next(e for e in ends if e.host == web1.key)
        assert far.path[-1][0] == plan.node("node-2").bridge
