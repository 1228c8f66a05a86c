"""Pure compilers: a Plan in, the flows of every bridge out. No switch, no os-ken, no clock.

One function per bridge role; security groups have their own function because they are the
same on every vSwitch. Flow priorities inside a table carry the meaning documented next to
each flow; docs/design.md explains the walk of a packet.
"""
from __future__ import annotations

import ipaddress

from kubevpc.plan import (NAT_PORTS, OFPORT_EDGE_INTERNET, OFPORT_EDGE_VPC, OFPORT_VROUTER_EDGE,
                          OFPORT_VROUTER_ON_VSWITCH, SNAT_PORTS, Attachment, BridgePlan, Plan)

from .flows import (CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_SNAT, CT_TRK, CT_DNAT, ETH_ARP, ETH_IP, FEATURES, IPPROTO, Ct,
                    DecTtl, FlowSet, Goto, Learn, LearnMatch, Nat, Output, OutputReg, Resubmit, SetField, arp_responder,
                    ct_state, flow,
                    port_masks)
from .pipeline import (CTM_SERVICE, EDGE, FLAG_NAT_COMMITTED, FLOWLOG_ACCEPT_AT_DEST, FLOWLOG_ACCEPT_AT_SOURCE,
                       FLOWLOG_IN, FLOWLOG_OUT, FLOWLOG_REJECT_AT_DEST, FLOWLOG_REJECT_AT_SOURCE, INTERNET, NODE,
                       REG_EP_IP, REG_EP_PORT, REG_FLAGS, REG_FLOWLOG_CODE, REG_FLOWLOG_SIDE, REG_OUT, REG_SRC,
                       SRC_HOST, SRC_POD, SRC_TUNNEL, SRC_UPLINK, VROUTER, VSWITCH)
from .policy import PolicyTables, policy_flows
from .services import service_flows, slb_flows, snat_zone


def compile_plan(plan: Plan, health: dict | None = None, loads: dict | None = None) -> dict[str, FlowSet]:
    """Every bridge's desired flows. `health`: the SLB health checkers' view ({listener: {"ip:port":
    healthy}}); None counts every backend healthy (the static view of `kubevpc flows`). `loads`:
    the wlc listeners' established connections ({listener: {"ip:port": n}}); None counts none."""
    out: dict[str, FlowSet] = {}
    for bridge in plan.bridges:
        fs = FlowSet(bridge.name)
        if bridge.role == "vrouter":
            vrouter_flows(plan, bridge, fs)
        elif bridge.role == "vswitch":
            vswitch_flows(plan, bridge, fs, health, loads)
            security_group_flows(plan, bridge, fs)
        elif bridge.role == "edge":
            edge_flows(plan, bridge, fs)
        elif bridge.role == "internet":
            internet_flows(plan, bridge, fs)
        else:
            node_flows(plan, bridge, fs)
        out[bridge.name] = fs
    return out


def _net(cidr: str) -> str:
    """ipv4 match value: a plain address for /32, else address/mask."""
    net = ipaddress.IPv4Network(cidr)
    return str(net.network_address) if net.prefixlen == 32 else (str(net.network_address), str(net.netmask))


def _ipv4(field: str, cidr: str) -> dict:
    """A match on `field` for `cidr`; none for 0.0.0.0/0, which OpenFlow writes as no match."""
    return {} if _prefixlen(cidr) == 0 else {field: _net(cidr)}


def _prefixlen(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr).prefixlen


# ------------------------------------------------------------------------------------- vRouter
def vrouter_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet) -> None:
    t_arp, t_route, t_neigh = VROUTER.table("arp"), VROUTER.table("route"), VROUTER.table("neighbor")
    vpc = next(v for v in plan.vpcs if v.bridge == bridge.name)
    vsws = [v for v in plan.vswitches if v.vpc == vpc.name]
    fs.add(flow(0, 100, {"eth_type": ETH_ARP}, [Goto(t_arp)], note="ARP to the responder"),
           flow(0, 100, {"eth_type": ETH_IP}, [Goto(t_route)], note="IPv4 to routing"),
           flow(0, 0, None, [], note="no IPv6 or other protocols in the VPC"))
    for v in vsws:
        fs.add(arp_responder(t_arp, v.gateway, v.gateway_mac, {"in_port": v.vrouter_port},
                             note=f"gateway of {v.name} answers on its own port"))
    by_name = {v.name: v for v in vsws}
    hosts = {h.name: h for h in plan.instances}
    for obj, route in enumerate(vpc.routes):
        prio = 100 + 10 * _prefixlen(route.destination)       # longest prefix wins
        match = {"eth_type": ETH_IP, **_ipv4("ipv4_dst", route.destination)}
        if route.kind == "system":
            fs.add(flow(t_route, prio, match, [Goto(t_neigh)], "route", obj,
                        f"system route {route.destination} ({route.description})"))
            continue
        if route.kind == "natgw":
            fs.add(flow(t_route, prio + 1, {**match, "in_port": OFPORT_VROUTER_EDGE}, [], "natgw", obj,
                        "from the edge: never back to it"),
                   flow(t_route, prio, match, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "natgw", obj,
                        f"route {route.destination} -> NAT gateway {route.next_hop}, at the edge"))
            continue
        hop = hosts[route.next_hop]
        v = by_name[hop.vswitch]
        fs.add(flow(t_route, prio, {**match, "in_port": v.vrouter_port},
                    [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", hop.mac), Output("in_port")],
                    "route", obj, f"{route.kind} route {route.destination} -> {hop.name}, back out the same port"),
               flow(t_route, prio - 1, match,
                    [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", hop.mac),
                     Output(v.vrouter_port)], "route", obj, f"{route.kind} route {route.destination} -> {hop.name}"))
    if plan.edge(vpc.name):
        # below every route: EIPs and the replies of connections from the internet leave at the
        # edge whatever the route table says (the edge drops what nothing there translates)
        fs.add(flow(t_route, 2, {"eth_type": ETH_IP, "in_port": OFPORT_VROUTER_EDGE}, [], "edge",
                    note="from the edge and routed nowhere in the VPC: dropped (no loop)"),
               flow(t_route, 1, {"eth_type": ETH_IP}, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "edge",
                    note="outside the VPC: to the edge (EIPs, replies to the internet)"))
    fs.add(flow(t_route, 0, None, [], "route", note="no route: dropped"))
    for a in _unique_addresses(plan, vsws):
        v = by_name[a.vswitch]
        m = {"eth_type": ETH_IP, "ipv4_dst": a.ip}
        rewrite = [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", a.mac)]
        fs.add(flow(t_neigh, 110, {**m, "in_port": v.vrouter_port}, rewrite + [Output("in_port")], "route",
                    note=f"{a.owner} on {v.name}, back out the port the packet came from"),
               flow(t_neigh, 100, m, rewrite + [Output(v.vrouter_port)], "route", note=f"{a.owner} on {v.name}"))
    fs.add(flow(t_neigh, 0, None, [], "route", note="unknown address in a vSwitch CIDR: dropped"))


def _unique_addresses(plan: Plan, vsws) -> list[Attachment]:
    names = {v.name for v in vsws}
    return [a for a in plan.attachments if a.vswitch in names and _prefixlen(a.ip) == 32]


# ---------------------------------------------------------------------------------------- edge
def edge_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet) -> None:
    """A VPC's edge to the internet: EIPs (1:1 NAT, both ways) and NAT gateways (SNAT), with
    conntrack so that replies find their way back and nothing unsolicited gets in."""
    t_nat, t_inet, t_vpc = (EDGE.table(n) for n in ("translate", "to_internet", "to_vpc"))
    vpc = next(v for v in plan.vpcs if v.name == bridge.owner)
    edge = plan.edge(vpc.name)
    zone = bridge.zone
    ip = {"eth_type": ETH_IP}
    from_vpc, from_inet = {**ip, "in_port": OFPORT_EDGE_VPC}, {**ip, "in_port": OFPORT_EDGE_INTERNET}
    new = ct_state(CT_TRK | CT_NEW)
    fs.add(flow(0, 100, ip, [Ct(zone, table=t_nat, nat=Nat())], "edge",
                note="conntrack with NAT: replies get their translation undone"),
           flow(0, 0, None, [], "edge", note="no ARP or IPv6 at the edge: its neighbours are bridges"))
    fs.add(flow(t_nat, 300, {**ip, "ct_state": ct_state(CT_TRK | CT_INV)}, [], "edge", note="invalid: dropped"),
           flow(t_nat, 200, {**from_vpc, "ct_state": ct_state(CT_TRK | CT_EST, CT_NEW)}, [Goto(t_inet)], "edge",
                note="established, from the VPC: out"),
           flow(t_nat, 200, {**from_vpc, "ct_state": ct_state(CT_TRK | CT_REL, CT_NEW)}, [Goto(t_inet)], "edge",
                note="related (ICMP errors), from the VPC: out"),
           flow(t_nat, 200, {**from_inet, "ct_state": ct_state(CT_TRK | CT_EST, CT_NEW)}, [Goto(t_vpc)], "edge",
                note="established, from the internet: in"),
           flow(t_nat, 200, {**from_inet, "ct_state": ct_state(CT_TRK | CT_REL, CT_NEW)}, [Goto(t_vpc)], "edge",
                note="related (ICMP errors), from the internet: in"))
    for obj, e in enumerate(plan.eips, start=1):
        if e.vpc != vpc.name:
            continue
        if e.bound == "instance":
            fs.add(flow(t_nat, 150, {**from_vpc, "ct_state": new, "ipv4_src": e.private_ip},
                        [Ct(zone, commit=True, table=t_inet, nat=Nat("src", e.ip))], "eip", obj,
                        f"EIP {e.name}: {e.target} ({e.private_ip}) goes out as {e.ip}"),
                   flow(t_nat, 150, {**from_inet, "ct_state": new, "ipv4_dst": e.ip},
                        [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", e.private_ip))], "eip", obj,
                        f"EIP {e.name}: {e.ip} is {e.target} ({e.private_ip})"))
        elif e.bound == "slb":
            slb = next(s for s in plan.slbs if s.service == e.target)
            for lst in slb.listeners:
                proto = lst.protocol.lower()
                fs.add(flow(t_nat, 150, {**from_inet, "ct_state": new, "ipv4_dst": e.ip, "ip_proto": IPPROTO[proto],
                                         f"{proto}_dst": lst.port},
                            [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", slb.vip))], "eip", obj,
                            f"internet-facing SLB {slb.service}: listener {lst.port}/{lst.protocol} at {e.ip}"))
    routes = [r for r in vpc.routes if r.kind == "natgw"]
    for obj, g in enumerate(plan.nat_gateways, start=1):
        if g.vpc != vpc.name:
            continue
        for r in (r for r in routes if r.next_hop == g.name):
            for entry in g.snat:
                fs.add(flow(t_nat, 100 + _prefixlen(entry.source),
                            {**from_vpc, "ct_state": new, **_ipv4("ipv4_src", entry.source),
                             **_ipv4("ipv4_dst", r.destination)},
                            [Ct(zone, commit=True, table=t_inet, nat=Nat("src", entry.public_ip, *NAT_PORTS))],
                            "natgw", obj, f"NAT gateway {g.name}: {entry.what} to {r.destination} as {entry.public_ip}"))
    fs.add(flow(t_nat, 0, None, [], "edge", note="new and not translated here (no EIP, no SNAT entry and "
                "route, not a listener): dropped"))
    publics = sorted({e.ip for e in plan.eips if e.vpc == vpc.name} |
                     {i for g in plan.nat_gateways if g.vpc == vpc.name for i in g.public_ips})
    for a in publics:
        fs.add(flow(t_inet, 100, {**ip, "ipv4_src": a}, [SetField("eth_src", edge.mac),
                                                          SetField("eth_dst", plan.internet.gateway_mac),
                                                          Output(OFPORT_EDGE_INTERNET)], "edge",
                    note=f"from {a}: to the internet router"))
    fs.add(flow(t_inet, 0, None, [], "edge", note="a private source never leaves the VPC"),
           flow(t_vpc, 0, None, [SetField("eth_src", edge.mac), Output(OFPORT_EDGE_VPC)], "edge",
                note="to the vRouter"))


# ------------------------------------------------------------------------------------ internet
def internet_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet) -> None:
    """The internet router: the zone's hosts on one subnet, each VPC's public addresses behind its edge."""
    t_arp, t_route = INTERNET.table("arp"), INTERNET.table("route")
    inet = plan.internet
    for h in plan.internet_hosts:
        fs.add(flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_ARP, "arp_spa": h.ip}, [Goto(t_arp)], "internet",
                    note=f"{h.key}: ARP"),
               flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_IP, "ipv4_src": h.ip}, [Goto(t_route)], "internet",
                    note=f"{h.key}: IPv4"),
               flow(0, 100, {"in_port": h.ofport}, [], "spoof", note=f"{h.key}: not its address, or not IPv4: dropped"))
        fs.add(arp_responder(t_arp, h.ip, h.mac, feature="internet", note=f"{h.key}"))
        fs.add(flow(t_route, 100, {"eth_type": ETH_IP, "ipv4_dst": h.ip},
                    [SetField("eth_src", inet.gateway_mac), SetField("eth_dst", h.mac), Output(h.ofport)], "internet",
                    note=f"to {h.key}"))
    fs.add(arp_responder(t_arp, inet.gateway, inet.gateway_mac, feature="internet", note="the router"),
           flow(t_arp, 0, None, [], "arp", note="other ARP: dropped"))
    for e in plan.edges:
        publics = sorted({x.ip for x in plan.eips if x.vpc == e.vpc} |
                         {i for g in plan.nat_gateways if g.vpc == e.vpc for i in g.public_ips})
        for a in publics:
            fs.add(flow(0, 100, {"in_port": e.internet_port, "eth_type": ETH_IP, "ipv4_src": a}, [Goto(t_route)],
                        "internet", note=f"from {a} of VPC {e.vpc}"),
                   flow(t_route, 110, {"eth_type": ETH_IP, "ipv4_dst": a, "in_port": e.internet_port},
                        [SetField("eth_dst", e.mac), Output("in_port")], "internet",
                        note=f"{a} of VPC {e.vpc}, from its own edge: back"),
                   flow(t_route, 100, {"eth_type": ETH_IP, "ipv4_dst": a},
                        [SetField("eth_dst", e.mac), Output(e.internet_port)], "internet",
                        note=f"{a}: to the edge of VPC {e.vpc}"))
    fs.add(flow(0, 0, None, [], "internet", note="anything else: dropped"),
           flow(t_route, 0, None, [], "internet", note="no such address on this internet: dropped"))


# ------------------------------------------------------------------------------------- vSwitch
def vswitch_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet, health: dict | None = None,
                  loads: dict | None = None) -> None:
    t_arp, t_ct, t_l2, t_out = (VSWITCH.table(n) for n in ("arp", "conntrack", "l2", "output"))
    vsw = plan.vswitch(bridge.owner)
    atts = [a for a in plan.attachments if a.vswitch == vsw.name]
    fs.add(flow(0, 100, {"eth_type": ETH_ARP}, [Goto(t_arp)], note="ARP to the responder"),
           flow(0, 100, {"eth_type": ETH_IP}, [Goto(t_ct)], note="IPv4 to conntrack"),
           flow(0, 0, None, [], note="no IPv6 or other protocols"))
    # ICMP time exceeded is made by the controller and sent as a packet-out, and OVS does not
    # recirculate a packet-out through conntrack; the cloud's own ICMP errors bypass it
    icmp11 = {"eth_type": ETH_IP, "ip_proto": 1, "icmpv4_type": 11}
    fs.add(flow(0, 110, {**icmp11, "in_port": OFPORT_VROUTER_ON_VSWITCH}, [Goto(t_l2)],
                note="ICMP time exceeded from the vRouter (traceroute): not tracked"),
           flow(VSWITCH.table("sg_ingress"), 3100, {"eth_type": ETH_IP, "ct_state": ct_state(0, CT_TRK)},
                [Goto(t_out)], "secgroup", note="untracked: only ICMP time exceeded from a router"))
    for node in plan.nodes:
        for up in node.uplinks:
            if up.vswitch != vsw.name:
                continue
            fs.add(flow(0, 300, {"in_port": up.vswitch_patch_ofport},
                        [SetField("in_port", up.vswitch_ofport), Resubmit(0)], "uplink",
                        note=f"node {node.name}'s patch port: as if from its uplink (port {up.vswitch_ofport})"))
            if node.gateway:
                fs.add(flow(0, 110, {**icmp11, "in_port": up.vswitch_ofport, "ipv4_src": node.gateway}, [Goto(t_l2)],
                            note=f"ICMP time exceeded from node {node.name}'s pod gateway: not tracked"))
    fs.add(arp_responder(t_arp, vsw.gateway, vsw.gateway_mac, note=f"{vsw.name} gateway (the vRouter)"))
    for a in atts:
        if _prefixlen(a.ip) == 32:
            fs.add(arp_responder(t_arp, a.ip, a.mac, note=f"{a.owner}"))
    fs.add(flow(t_arp, 0, None, [], "arp", note="the cloud answers every ARP itself; nothing is flooded"))
    fs.add(flow(t_ct, 100, {"eth_type": ETH_IP}, [Ct(bridge.zone, table=VSWITCH.table("slb"), nat=Nat())],
                note="track connections for the stateful security groups and the SLBs"))
    slb_flows(plan, bridge, fs, health, loads)
    seen_macs = {}
    for a in atts:
        seen_macs.setdefault(a.mac, a)
    fs.add(flow(t_l2, 100, {"eth_dst": vsw.gateway_mac}, [SetField(REG_OUT, OFPORT_VROUTER_ON_VSWITCH),
                                                           Goto(VSWITCH.table("sg_ingress"))], "l2",
                note="to the gateway: the vRouter"))
    for mac, a in seen_macs.items():
        fs.add(flow(t_l2, 100, {"eth_dst": mac}, [SetField(REG_OUT, a.ofport), Goto(VSWITCH.table("sg_ingress"))],
                    "l2", note=f"{a.owner} behind port {a.ofport}"))
    fs.add(flow(t_l2, 0, None, [], "l2", note="unknown MAC: dropped"))
    fs.add(flow(t_out, 0, None, [OutputReg(1)], "l2", note="output to the port chosen in l2"))


def _rule_matches(rule, peer_field: str, peers: list[str]) -> list[dict]:
    """The match dicts of one security group rule, for each peer address and port block."""
    base: dict = {"eth_type": ETH_IP}
    if rule.protocol != "all":
        base["ip_proto"] = IPPROTO[rule.protocol]
    port_field = f"{rule.protocol}_dst" if rule.protocol in ("tcp", "udp") else ""
    blocks = port_masks(rule.port_min, rule.port_max) if rule.port_min else [None]
    out = []
    for peer in peers:
        for block in blocks:
            m = dict(base)
            if peer != "0.0.0.0/0":
                m[peer_field] = _net(peer)
            if block is not None:
                m[port_field] = block if block[1] != 0xFFFF else block[0]
            out.append(m)
    return out


def _of_priority(sg_priority: int, policy: str) -> int:
    """SG priority 1 is highest; at equal priority drop wins."""
    return 1000 + (100 - sg_priority) * 2 + (1 if policy == "drop" else 0)


def security_group_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet) -> None:
    """Stateful security groups at the vSwitch port of each instance (and each eni pod)."""
    t_eg, t_l2, t_in, t_out = (VSWITCH.table(n) for n in ("sg_egress", "l2", "sg_ingress", "output"))
    vsw = plan.vswitch(bridge.owner)
    groups = {g.name: g for g in plan.groups}
    atts = [a for a in plan.attachments if a.vswitch == vsw.name]
    est = ct_state(CT_TRK | CT_EST, CT_NEW | CT_INV)
    rel = ct_state(CT_TRK | CT_REL, CT_NEW | CT_INV)
    inv = ct_state(CT_TRK | CT_INV)
    new = ct_state(CT_TRK | CT_NEW)
    logs = plan.flow_log_window > 0
    # flow logs: every packet that passes is counted at its side of the ENI; what a rule decides is learned
    count_out, count_in = (_count(FLOWLOG_OUT), _count(FLOWLOG_IN)) if logs else ([], [])

    def learn(code: int) -> list:
        return [SetField(REG_FLOWLOG_CODE, code), Resubmit(VSWITCH.table("flowlog_learn"))] if logs else []

    for table, nxt, count in ((t_eg, t_l2, count_out), (t_in, t_out, count_in)):
        fs.add(flow(table, 3000, {"eth_type": ETH_IP, "ct_state": inv}, [], "secgroup", note="invalid: dropped"),
               flow(table, 2900, {"eth_type": ETH_IP, "ct_state": est}, [*count, Goto(nxt)], "secgroup",
                    note="established connections pass"),
               flow(table, 2900, {"eth_type": ETH_IP, "ct_state": rel}, [*count, Goto(nxt)], "secgroup",
                    note="related packets (ICMP errors) pass"))
    # traffic from the vRouter was checked by the vSwitch it came from
    fs.add(flow(t_eg, 2000, {"eth_type": ETH_IP, "ct_state": new, "in_port": OFPORT_VROUTER_ON_VSWITCH},
                [Goto(t_l2)], "secgroup", note="from the vRouter: egress was checked at the source"))
    fs.add(flow(t_in, 2000, {"eth_type": ETH_IP, "ct_state": new, REG_OUT: OFPORT_VROUTER_ON_VSWITCH},
                [Ct(bridge.zone, commit=True), Goto(t_out)], "secgroup",
                note="to the vRouter: ingress is checked at the destination; commit here"))
    # learn, then count: a retry of a new connection is counted (its first packet is not: the learned flow
    # is installed after it)
    out_ok, out_no = learn(FLOWLOG_ACCEPT_AT_SOURCE) + count_out, learn(FLOWLOG_REJECT_AT_SOURCE) + count_out
    in_ok, in_no = learn(FLOWLOG_ACCEPT_AT_DEST) + count_in, learn(FLOWLOG_REJECT_AT_DEST) + count_in
    for obj, a in enumerate(atts, start=1):
        src = {"eth_type": ETH_IP, "ct_state": new, "in_port": a.ofport, "ipv4_src": _net(a.ip)}
        dst = {"eth_type": ETH_IP, "ct_state": new, REG_OUT: a.ofport, "ipv4_dst": _net(a.ip)}
        fs.add(flow(t_eg, 10, src, [*out_ok, Goto(t_l2)], "secgroup", obj,
                    f"{a.owner}: outbound allowed unless a rule drops it (the default)"),
               flow(t_in, 10, {k: v for k, v in dst.items()}, in_no, "secgroup", obj,
                    f"{a.owner}: inbound denied unless a rule or group membership allows it (the default)"))
        for gname in a.security_groups:
            g = groups[gname]
            for m in _rule_matches(_AllRule, "ipv4_src", list(g.members)):
                fs.add(flow(t_in, _of_priority(100, "accept") - 100, {**dst, **m},
                            [*in_ok, Ct(bridge.zone, commit=True), Goto(t_out)], "secgroup", obj,
                            f"{a.owner}: members of {g.name} reach each other"))
            for number, rule in enumerate(g.rules, start=1):
                peers = [rule.cidr] if rule.cidr else list(groups[rule.group].members)
                note = f"{rule.direction} of {a.owner}: {rule.text(g.name, number)}"
                if rule.direction == "egress":
                    for m in _rule_matches(rule, "ipv4_dst", peers):
                        fs.add(flow(t_eg, _of_priority(rule.priority, rule.policy), {**src, **m},
                                    [*out_ok, Goto(t_l2)] if rule.policy == "accept" else out_no, "secgroup", obj,
                                    note))
                else:
                    for m in _rule_matches(rule, "ipv4_src", peers):
                        fs.add(flow(t_in, _of_priority(rule.priority, rule.policy), {**dst, **m},
                                    [*in_ok, Ct(bridge.zone, commit=True), Goto(t_out)] if rule.policy == "accept"
                                    else in_no, "secgroup", obj, note))
    if logs:
        flowlog_flows(plan, fs)
    # anti-spoofing: anything else a port sends as new is not from an address behind it
    for a in {a.ofport: a for a in atts}.values():
        fs.add(flow(t_eg, 5, {"eth_type": ETH_IP, "ct_state": new, "in_port": a.ofport}, [], "spoof",
                    note=f"port {a.ofport}: source address not behind this port (spoofed): dropped"))
    fs.add(flow(t_in, 5, {"eth_type": ETH_IP, "ct_state": new}, [], "secgroup",
                note="destination address not behind the chosen port: dropped"))


def _count(side: int) -> list:
    """Count the packet in the flowlog table at this side of its ENI (a learned flow, if any, matches)."""
    return [SetField(REG_FLOWLOG_SIDE, side), Resubmit(VSWITCH.table("flowlog"))]


# what a learned flow of the flow log matches, per protocol: (eth_type, ip_proto or None, port fields)
_FLOWLOG_PROTOCOLS = (("tcp", IPPROTO["tcp"], ("tcp_src", "tcp_dst")), ("udp", IPPROTO["udp"], ("udp_src", "udp_dst")),
                      ("icmp", IPPROTO["icmp"], ()), ("ip", None, ()))


def flowlog_cookie(direction: int, accept: bool, first: bool) -> int:
    """The cookie of a learned flow-log flow: its direction at the ENI (FLOWLOG_OUT or FLOWLOG_IN),
    its action, and whether the packet that learned it travels in its direction (that packet is
    not in its counts); kubevpc.flowlog.decode_cookie reads them back."""
    return (FEATURES["flowlog_record"] << 56) | (((direction << 2) | (int(first) << 1) | int(accept)) << 32)


def _learned(plan: Plan, direction: int, accept: bool, port_from: str, reverse: bool, proto, ports) -> Learn:
    """A learned flow-log flow: the connection's tuple in this direction (reversed for replies),
    the ENI's port (from in_port or reg1 of the learning packet) and the side it is counted at.
    The switch reports it to the controller when it has been idle for the window (send_flow_rem)."""
    src, dst = ("ipv4_dst", "ipv4_src") if reverse else ("ipv4_src", "ipv4_dst")
    specs = [LearnMatch("eth_type", 16, value=ETH_IP)]
    specs.append(LearnMatch("ip_proto", 8, value=proto) if proto is not None else LearnMatch("ip_proto", 8))
    specs += [LearnMatch(REG_FLOWLOG_SIDE, 32, value=direction),
              LearnMatch("in_port" if direction == FLOWLOG_OUT else REG_OUT, 32, src=port_from),
              LearnMatch("ipv4_src", 32, src=src), LearnMatch("ipv4_dst", 32, src=dst)]
    if ports:
        a, b = ports if not reverse else (ports[1], ports[0])
        specs += [LearnMatch(ports[0], 16, src=a), LearnMatch(ports[1], 16, src=b)]
    return Learn(table=VSWITCH.table("flowlog"), priority=100, hard_timeout=0, idle_timeout=plan.flow_log_window,
                 cookie=flowlog_cookie(direction, accept, not reverse), specs=tuple(specs), send_flow_rem=True)


def flowlog_flows(plan: Plan, fs: FlowSet) -> None:
    """The flowlog table (learned flows, and nothing to do for the rest) and flowlog_learn: for a
    connection a security group decided, the flows that count it at the ENI, by protocol. At the
    source's ENI (sg_egress, in_port is its port): out in the packet's direction, in for replies;
    at the destination's (sg_ingress, reg1 is its port): in, and out for replies. A rejected
    connection gets one flow, in the packet's direction."""
    t_log, t_learn = VSWITCH.table("flowlog"), VSWITCH.table("flowlog_learn")
    fs.add(flow(t_log, 0, None, [], "flowlog", note="no flow-log flow for this packet: nothing to count"),
           flow(t_learn, 0, None, [], "flowlog", note="nothing to learn"))
    plans = {FLOWLOG_ACCEPT_AT_SOURCE: [(FLOWLOG_OUT, True, "in_port", False), (FLOWLOG_IN, True, "in_port", True)],
             FLOWLOG_ACCEPT_AT_DEST: [(FLOWLOG_IN, True, REG_OUT, False), (FLOWLOG_OUT, True, REG_OUT, True)],
             FLOWLOG_REJECT_AT_DEST: [(FLOWLOG_IN, False, REG_OUT, False)],
             FLOWLOG_REJECT_AT_SOURCE: [(FLOWLOG_OUT, False, "in_port", False)]}
    words = {FLOWLOG_ACCEPT_AT_SOURCE: "accepted at the source's ENI", FLOWLOG_ACCEPT_AT_DEST:
             "accepted at the destination's ENI", FLOWLOG_REJECT_AT_DEST: "rejected at the destination's ENI",
             FLOWLOG_REJECT_AT_SOURCE: "rejected at the source's ENI"}
    for code, learns in plans.items():
        for name, proto, ports in _FLOWLOG_PROTOCOLS:
            match = {REG_FLOWLOG_CODE: code, "eth_type": ETH_IP, **({"ip_proto": proto} if proto else {})}
            fs.add(flow(t_learn, 100 if proto else 90, match,
                        [_learned(plan, *x, proto, ports) for x in learns], "flowlog", code,
                        f"flow log: a {name} connection {words[code]}"))


class _AllRule:
    """Group membership acts as an accept-all rule at the lowest rule priority."""

    protocol = "all"
    port_min = port_max = 0


# ---------------------------------------------------------------------------------------- node
def node_flows(plan: Plan, bridge: BridgePlan, fs: FlowSet) -> None:
    node = plan.node(bridge.owner)
    mode = plan.cluster.mode
    t_arp, t_unsnat, t_ct, t_route = (NODE.table(n) for n in ("arp", "unsnat", "conntrack", "route"))
    pods = [h for h in plan.pods if h.node == node.name]
    host = plan.host(node.ecs)
    uplink = node.uplinks[0]
    vsw = plan.vswitch(node.vswitch)

    # classify: who sent it
    for p in pods:
        fs.add(flow(0, 200, {"in_port": p.ofport, "eth_src": p.mac, "eth_type": ETH_ARP, "arp_spa": p.ip},
                    [SetField(REG_SRC, SRC_POD), Goto(t_arp)], "pod", note=f"{p.key}: ARP"),
               flow(0, 200, {"in_port": p.ofport, "eth_src": p.mac, "eth_type": ETH_IP, "ipv4_src": p.ip},
                    [SetField(REG_SRC, SRC_POD), Goto(t_unsnat)], "pod", note=f"{p.key}: IPv4"),
               flow(0, 100, {"in_port": p.ofport}, [], "spoof", note=f"{p.key}: not its MAC/IP, or not IPv4: dropped"))
    for port, src, what in [(host.ofport, SRC_HOST, "the node itself")] + \
            [(u.ofport, SRC_UPLINK, f"uplink to {u.vswitch}") for u in node.uplinks]:
        fs.add(flow(0, 100, {"in_port": port, "eth_type": ETH_ARP}, [SetField(REG_SRC, src), Goto(t_arp)],
                    "host", note=f"ARP from {what}"),
               flow(0, 100, {"in_port": port, "eth_type": ETH_IP}, [SetField(REG_SRC, src), Goto(t_unsnat)],
                    "host", note=f"IPv4 from {what}"))
    routers = sorted({v.gateway for v in plan.vswitches if v.vpc == plan.cluster.vpc} |
                     {n.gateway for n in plan.nodes if n.gateway and n.name != node.name})
    for port, src in [(u.ofport, SRC_UPLINK) for u in node.uplinks] + [(t.ofport, SRC_TUNNEL) for t in node.tunnels[:1]]:
        for router in routers:
            fs.add(flow(0, 110, {"in_port": port, "eth_type": ETH_IP, "ip_proto": 1, "icmpv4_type": 11,
                                 "ipv4_src": router}, [SetField(REG_SRC, src), Goto(t_route)], "host",
                        note=f"ICMP time exceeded from router {router} (a packet-out elsewhere): not tracked"))
    for t in node.tunnels[:1]:
        fs.add(flow(0, 100, {"in_port": t.ofport, "eth_type": ETH_IP}, [SetField(REG_SRC, SRC_TUNNEL),
                                                                        Goto(t_unsnat)],
                    "tunnel", note="from another node through VXLAN"))
    fs.add(flow(0, 0, None, [], note="anything else: dropped"))

    # ARP
    if mode != "eni":
        fs.add(arp_responder(t_arp, node.gateway, node.gateway_mac, {REG_SRC: SRC_POD},
                             note="pods' gateway (this node)"))
        for p in pods:
            fs.add(arp_responder(t_arp, p.ip, p.mac, {REG_SRC: SRC_POD}, note=f"{p.key}, a neighbour on this node"))
    else:
        for p in pods + [host]:
            for src in (SRC_POD, SRC_HOST):
                fs.add(arp_responder(t_arp, p.ip, p.mac, {REG_SRC: src}, priority=110,
                                     note=f"{p.key} is local: answered here"))
        for p in pods:
            up = next(u for u in node.uplinks if u.vswitch == p.vswitch)
            fs.add(flow(t_arp, 100, {"eth_type": ETH_ARP, REG_SRC: SRC_POD, "in_port": p.ofport}, [Output(up.ofport)],
                        "arp", note=f"{p.key}: ARP goes to its vSwitch"))
        for p in pods:
            fs.add(flow(t_arp, 100, {"eth_type": ETH_ARP, REG_SRC: SRC_UPLINK, "eth_dst": p.mac}, [Output(p.ofport)],
                        "arp", note=f"ARP reply for {p.key}"))
    fs.add(flow(t_arp, 90, {"eth_type": ETH_ARP, REG_SRC: SRC_HOST}, [Output(uplink.ofport)], "arp",
                note="the node's own ARP goes to its vSwitch"),
           flow(t_arp, 90, {"eth_type": ETH_ARP, REG_SRC: SRC_UPLINK, "eth_dst": host.mac}, [Output(host.ofport)],
                "arp", note="ARP replies for the node"),
           flow(t_arp, 0, None, [], "arp", note="other ARP: dropped"))

    # undo SNAT to the node (replies come addressed to it), then conntrack with the Services' DNAT
    # only packets that can be replies of a SNAT to the node: to the SNAT ports, or ICMP (echo
    # replies, errors); a new connection to a NodePort is not, and saves a recirculation
    unsnat = [Ct(snat_zone(bridge.zone), table=t_ct, nat=Nat())]
    for src in (SRC_POD, SRC_UPLINK, SRC_TUNNEL):
        m = {"eth_type": ETH_IP, REG_SRC: src, "ipv4_dst": node.ip}
        fs.add(flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO["icmp"]}, unsnat, "snat",
                    note="ICMP to the node: maybe for a connection SNATed to it"))
        for proto in ("tcp", "udp"):
            for block in port_masks(*SNAT_PORTS):
                fs.add(flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO[proto], f"{proto}_dst": block}, unsnat, "snat",
                            note=f"to the node's SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}: maybe a reply"))
    fs.add(flow(t_unsnat, 0, None, [Goto(t_ct)], "snat", note="everything else"),
           flow(t_ct, 100, {"eth_type": ETH_IP}, [Ct(bridge.zone, table=NODE.table("service"), nat=Nat())],
                note="conntrack: apply a Service connection's DNAT, or its reverse to replies"))
    service_flows(plan, node, bridge.zone, fs)
    fs.add(*node_policy_flows(plan, node.name))
    for nat in (CT_DNAT, CT_SNAT):      # NATed by a ct lookup (tables 20, 28), so committed already
        fs.add(flow(NODE.table("commit"), 110, {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW | nat)},
                    [Goto(t_route)], "base",
                    note="a later packet of a Service connection still new (UDP before its first reply): no commit, "
                         "which would hide the Service mark from the uplink table"))
    fs.add(flow(NODE.table("commit"), 100, {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW),
                                             REG_FLAGS: (0, FLAG_NAT_COMMITTED)},
                [Ct(bridge.zone, commit=True), Goto(t_route)], "base",
                note="commit the new connection, so its replies are +rpl at every later table"),
           flow(NODE.table("commit"), 0, None, [Goto(t_route)], "base", note="established, related, committed"))

    if mode == "eni":
        _node_eni_route(plan, node, pods, host, fs)
    else:
        _node_pod_cidr_route(plan, node, pods, host, vsw, fs)
    t_up = NODE.table("uplink")
    for u in node.uplinks:
        fs.add(flow(t_up, 100, {REG_OUT: u.ofport, REG_FLAGS: (FLAG_NAT_COMMITTED, FLAG_NAT_COMMITTED)},
                    [Output(u.ofport)], "uplink",
                    note=f"a Service committed it here (up to 4 recirculations): {u.vswitch} through the veth pair"),
               flow(t_up, 100, {REG_OUT: u.ofport, "eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW)},
                    [Output(u.ofport)], "uplink", note=f"new (SNAT): {u.vswitch} through the veth pair"),
               # A flow whose first packets took the veth pair must not switch to the patch port
               # while they may still be queued in it: the later packets would overtake them. TCP
               # sends nothing after its SYN until the reply comes, so it may switch; UDP and ICMP
               # Service and SNAT flows stay on the veth pair (docs/design.md, "Why node uplinks ...").
               flow(t_up, 95, {REG_OUT: u.ofport, "eth_type": ETH_IP, "ip_proto": IPPROTO["tcp"]},
                    [Output(u.patch_ofport)], "uplink",
                    note=f"TCP: {u.vswitch} through the patch port (only its SYN took the veth pair)"),
               flow(t_up, 94, {REG_OUT: u.ofport, "eth_type": ETH_IP, "ct_state": ct_state(CT_TRK),
                               "ct_mark": (CTM_SERVICE, CTM_SERVICE)}, [Output(u.ofport)], "uplink",
                    note=f"a Service flow other than TCP: {u.vswitch} through the veth pair, as its first packets"),
               flow(t_up, 94, {REG_OUT: u.ofport, "eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_SNAT)},
                    [Output(u.ofport)], "uplink",
                    note=f"an SNATed flow other than TCP: {u.vswitch} through the veth pair, as its first packets"),
               flow(t_up, 90, {REG_OUT: u.ofport}, [Output(u.patch_ofport)], "uplink",
                    note=f"the rest: {u.vswitch} through the patch port, in the same datapath pass"))
    fs.add(flow(t_up, 0, None, [], "uplink", note="no such uplink: dropped"))


def _to_uplink(u) -> list:
    """Out to the vSwitch of uplink u: the uplink table chooses the veth pair or the patch port."""
    return [SetField(REG_OUT, u.ofport), Goto(NODE.table("uplink"))]


POLICY_TABLES = PolicyTables(egress=NODE.table("egress_policy"), egress_next=NODE.table("ingress_policy"),
                             ingress=NODE.table("ingress_policy"), ingress_next=NODE.table("endpoint"),
                             dst_ip=REG_EP_IP, dst_port=REG_EP_PORT)


def policy_endpoints(plan: Plan) -> list:
    """What NetworkPolicy peers are chosen among: the pods, and the nodes' own instances (for the
    exemption of traffic between a pod and its node). SLB and plain ECS addresses meet ipBlocks only."""
    nodes = {n.name for n in plan.nodes}
    return [h for h in plan.hosts if h.kind == "pod" or (h.kind == "ecs" and h.name in nodes)]


def node_policy_flows(plan: Plan, node: str) -> list:
    """Both policy tables of a node's bridge: its pods' egress and ingress."""
    return policy_flows(plan.network_policies, plan.namespaces, policy_endpoints(plan),
                        [p for p in plan.pods if p.node == node], POLICY_TABLES)


def _deliver(p, gw_mac: str, dec: bool) -> list:
    return ([DecTtl()] if dec else []) + [SetField("eth_src", gw_mac), SetField("eth_dst", p.mac), Output(p.ofport)]


def _node_pod_cidr_route(plan, node, pods, host, vsw, fs: FlowSet) -> None:
    """vxlan and vpc-route: the node bridge is the pods' router."""
    mode = plan.cluster.mode
    t_route, t_snat = NODE.table("route"), NODE.table("snat_out")
    ip = {"eth_type": ETH_IP}
    zone = plan.bridge(node.bridge).zone
    svc_mark = {"ct_mark": (CTM_SERVICE, CTM_SERVICE)}
    uplink = node.uplinks[0]
    for p in pods:
        fs.add(flow(t_route, 300, {**ip, "ipv4_dst": p.ip, "eth_dst": p.mac, REG_SRC: SRC_POD}, [Output(p.ofport)],
                    "pod", note=f"{p.key}: from a pod on the same node, switched"),
               flow(t_route, 295, {**ip, "ipv4_dst": p.ip, "in_port": p.ofport},
                    _deliver(p, node.gateway_mac, True)[:-1] + [Output("in_port")], "pod",
                    note=f"{p.key}: to itself through a Service (hairpin, masqueraded)"),
               flow(t_route, 290, {**ip, "ipv4_dst": p.ip}, _deliver(p, node.gateway_mac, True), "pod",
                    note=f"{p.key}: routed to it"))
    # to the node itself
    to_host = [SetField("eth_src", vsw.gateway_mac), SetField("eth_dst", host.mac)]
    fs.add(flow(t_route, 280, {**ip, "ipv4_dst": node.ip, REG_SRC: SRC_UPLINK}, [Output(host.ofport)], "host",
                note="to the node from its vSwitch"),
           flow(t_route, 270, {**ip, "ipv4_dst": node.ip}, to_host + [Output(host.ofport)], "host",
                note="to the node from its pods or a tunnel"))
    node_ips = {n.ip for n in plan.nodes} if mode == "vxlan" else {node.ip}   # vxlan: nodes go by tunnel
    neighbours = [a for a in plan.attachments if a.vswitch == vsw.name and "/" not in a.ip and a.ip not in node_ips]
    via_router = [SetField("eth_src", node.mac), SetField("eth_dst", vsw.gateway_mac)]
    # Service traffic that entered from the VPC or a tunnel and leaves for the VPC (replies of
    # NodePort connections, masqueraded connections to endpoints elsewhere): through the vRouter
    fs.add(flow(t_route, 120, {**ip, **svc_mark, REG_SRC: SRC_UPLINK}, [DecTtl()] + via_router + [Output("in_port")],
                "service", note="Service traffic from the vSwitch back to it, through the vRouter"))

    def to_vpc(dst_ip: str | None, src: int, extra: list, prio: int, note: str) -> None:
        m = {**ip, REG_SRC: src}
        if dst_ip:
            m["ipv4_dst"] = dst_ip
        fs.add(flow(t_route, prio, m, extra, "route", note=note))

    if mode == "vxlan":
        fs.add(flow(t_route, 120, {**ip, **svc_mark, REG_SRC: SRC_TUNNEL},
                    [DecTtl()] + via_router + _to_uplink(uplink), "service",
                    note="Service traffic from a tunnel to the VPC (a NodePort reply), through the vRouter"))
        for t in node.tunnels:
            rewrite = [SetField("eth_src", node.gateway_mac), SetField("eth_dst", _peer_gw_mac(plan, t.peer))]
            for src, dec, out in ((SRC_POD, True, t.ofport), (SRC_HOST, False, t.ofport),
                                  (SRC_UPLINK, True, t.ofport), (SRC_TUNNEL, True, "in_port")):
                fs.add(flow(t_route, 250, {**ip, REG_SRC: src, "ipv4_dst": _net(t.peer_pod_cidr)},
                            ([DecTtl()] if dec else []) + rewrite + [Output(out)], "tunnel",
                            note=f"pod CIDR of {t.peer}: VXLAN to {t.remote_ip}"))
            fs.add(flow(t_route, 250, {**ip, REG_SRC: SRC_POD, "ipv4_dst": t.remote_ip},
                        [DecTtl()] + rewrite + [Output(t.ofport)], "tunnel",
                        note=f"node {t.peer} from a pod: through the tunnel, not SNATed"))
    else:  # vpc-route: no encapsulation, no SNAT inside the VPC; the vRouter's pod routes bring replies back
        for a in neighbours:
            to_vpc(a.ip, SRC_POD, [DecTtl(), SetField("eth_src", node.mac), SetField("eth_dst", a.mac),
                                   *_to_uplink(uplink)], 110, f"{a.owner} is on the node's vSwitch")
        vpc_cidr = next(v.cidr for v in plan.vpcs if v.name == plan.cluster.vpc)
        for dst, what in ((vpc_cidr, "the VPC"), (plan.cluster.pod_cidr, "other nodes' pods")):
            to_vpc(_net(dst), SRC_POD, [DecTtl()] + via_router + _to_uplink(uplink), 105,
                   f"pods to {what} ({dst}): routed out of the ECS's ENI, not SNATed")
    # vxlan: pods to the VPC and beyond; vpc-route: pods to beyond the VPC (the internet). SNAT to
    # the node's address, as flannel's ip-masq does. TTL is decremented before SNAT, so an expiry
    # is answered to the pod, not to the node (-rpl, not +trk-rpl: after the commit table's
    # ct(commit), OVS shows the packet as untracked)
    beyond = "the VPC" if mode == "vxlan" else "outside the VPC"
    fs.add(flow(t_route, 100, {**ip, REG_SRC: SRC_POD, "ct_state": ct_state(0, CT_RPL)},
                [DecTtl(), Ct(snat_zone(zone), commit=True, table=t_snat, nat=Nat("src", node.ip, *SNAT_PORTS))],
                "snat", note=f"pod to {beyond}: SNAT to the node address (in the SNAT zone)"),
           flow(t_route, 90, {**ip, REG_SRC: SRC_POD}, [DecTtl(), Goto(t_snat)], "snat",
                note=f"pod replying to a connection from {beyond}: not SNATed"))
    for a in neighbours:
        fs.add(flow(t_snat, 100, {**ip, "ipv4_dst": a.ip},
                    [SetField("eth_src", node.mac), SetField("eth_dst", a.mac), *_to_uplink(uplink)],
                    "snat", note=f"{a.owner} is on the node's vSwitch: straight to it"))
    fs.add(flow(t_snat, 0, ip, via_router + _to_uplink(uplink), "snat", note="elsewhere: to the vRouter"))
    # the node's own traffic that is not for its pods or the tunnels goes to its vSwitch unchanged
    fs.add(flow(t_route, 50, {**ip, REG_SRC: SRC_HOST}, _to_uplink(uplink), "host",
                note="the node's own traffic to the VPC"))
    fs.add(flow(t_route, 0, None, [], "route", note="nothing else: dropped"))


def _peer_gw_mac(plan: Plan, peer: str) -> str:
    return plan.node(peer).gateway_mac


def _node_eni_route(plan, node, pods, host, fs: FlowSet) -> None:
    """eni: pods are peers of the node on their vSwitch; the node bridge switches by MAC."""
    t_route = NODE.table("route")
    ip = {"eth_type": ETH_IP}
    svc_mark = {"ct_mark": (CTM_SERVICE, CTM_SERVICE)}
    # Service connections were DNATed (or their replies un-DNATed) after the sender chose the
    # destination MAC: route them by address
    gw_of = {v.name: v.gateway_mac for v in plan.vswitches}
    for p in pods + [host]:
        rewrite = [SetField("eth_src", gw_of[p.vswitch]), SetField("eth_dst", p.mac)]
        fs.add(flow(t_route, 210, {**ip, **svc_mark, "ipv4_dst": p.ip, "in_port": p.ofport}, rewrite + [Output("in_port")],
                    "service", note=f"{p.key}: Service traffic back to where it came from"),
               flow(t_route, 205, {**ip, **svc_mark, "ipv4_dst": p.ip}, rewrite + [Output(p.ofport)], "service",
                    note=f"{p.key}: Service traffic to it"))
    for u in node.uplinks:
        fs.add(flow(t_route, 205, {**ip, **svc_mark, "in_port": u.ofport},
                    [SetField("eth_src", node.mac), SetField("eth_dst", gw_of[u.vswitch]), Output("in_port")], "service",
                    note=f"Service traffic from {u.vswitch} back to it, through the vRouter"))
    for p in pods:
        up = next(u for u in node.uplinks if u.vswitch == p.vswitch)
        fs.add(flow(t_route, 205, {**ip, **svc_mark, "in_port": p.ofport},
                    [SetField("eth_dst", gw_of[up.vswitch]), *_to_uplink(up)], "service",
                    note=f"{p.key}: Service traffic to the VPC, out of its ENI through the vRouter"))
    fs.add(flow(t_route, 205, {**ip, **svc_mark, "in_port": host.ofport},
                [SetField("eth_dst", gw_of[node.uplinks[0].vswitch]), *_to_uplink(node.uplinks[0])], "service",
                note="the node's Service traffic to the VPC, through the vRouter"))
    for p in pods + [host]:
        fs.add(flow(t_route, 200, {**ip, "eth_dst": p.mac}, [Output(p.ofport)], "pod", note=f"{p.key}: local"))
    for p in pods:
        up = next(u for u in node.uplinks if u.vswitch == p.vswitch)
        fs.add(flow(t_route, 100, {**ip, REG_SRC: SRC_POD, "in_port": p.ofport}, _to_uplink(up), "route",
                    note=f"{p.key}: out of its ENI on {up.vswitch}"))
    fs.add(flow(t_route, 100, {**ip, REG_SRC: SRC_HOST}, _to_uplink(node.uplinks[0]), "host",
                note="the node's own traffic to its vSwitch"),
           flow(t_route, 0, None, [], "route", note="nothing else: dropped"))
