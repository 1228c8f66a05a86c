"""A VPC's edge to the internet: EIPs (1:1 NAT, both ways, for instances and eni pods) and NAT
gateways (SNAT entries out, DNAT entries in), with conntrack so that replies find their way back
and nothing unsolicited gets in."""
from __future__ import annotations

import ipaddress

from kubevpc.planning import NAT_PORTS, OFPORT_EDGE_INTERNET, OFPORT_EDGE_VPC, BridgePlan, Plan

from .flows import (CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, ETH_IP, IPPROTO, Ct, Flow, Goto, Nat, Output, SetField,
                    ct_state, flow, ipv4_match, prefixlen)
from .pipeline import EDGE

_IP = {"eth_type": ETH_IP}
_FROM_VPC, _FROM_INTERNET = {**_IP, "in_port": OFPORT_EDGE_VPC}, {**_IP, "in_port": OFPORT_EDGE_INTERNET}
_NEW = ct_state(CT_TRK | CT_NEW)


def edge_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    t_nat, t_inet, t_vpc = (EDGE.table(n) for n in ("translate", "to_internet", "to_vpc"))
    vpc = next(v for v in plan.vpcs if v.name == bridge.owner)
    edge = plan.edge(vpc.name)
    zone = bridge.zone
    out = [flow(0, 100, _IP, [Ct(zone, table=t_nat, nat=Nat())], "edge",
                note="conntrack with NAT: replies get their translation undone"),
           flow(0, 0, None, [], "edge", note="no ARP or IPv6 at the edge: its neighbours are bridges"),
           flow(t_nat, 300, {**_IP, "ct_state": ct_state(CT_TRK | CT_INV)}, [], "edge", note="invalid: dropped"),
           flow(t_nat, 200, {**_FROM_VPC, "ct_state": ct_state(CT_TRK | CT_EST, CT_NEW)}, [Goto(t_inet)], "edge",
                note="established, from the VPC: out"),
           flow(t_nat, 200, {**_FROM_VPC, "ct_state": ct_state(CT_TRK | CT_REL, CT_NEW)}, [Goto(t_inet)], "edge",
                note="related (ICMP errors), from the VPC: out"),
           flow(t_nat, 200, {**_FROM_INTERNET, "ct_state": ct_state(CT_TRK | CT_EST, CT_NEW)}, [Goto(t_vpc)], "edge",
                note="established, from the internet: in"),
           flow(t_nat, 200, {**_FROM_INTERNET, "ct_state": ct_state(CT_TRK | CT_REL, CT_NEW)}, [Goto(t_vpc)], "edge",
                note="related (ICMP errors), from the internet: in")]
    out += _eip_flows(plan, vpc.name, zone, t_nat, t_inet, t_vpc)
    out += _nat_gateway_flows(plan, vpc, zone, t_nat, t_inet, t_vpc)
    out.append(flow(t_nat, 0, None, [], "edge", note="new and not translated here (no EIP, no SNAT entry and "
                    "route, no DNAT entry, not a listener): dropped"))
    publics = sorted({e.ip for e in plan.eips if e.vpc == vpc.name} |
                     {i for g in plan.nat_gateways if g.vpc == vpc.name for i in g.public_ips})
    out += [flow(t_inet, 100, {**_IP, "ipv4_src": a}, [SetField("eth_src", edge.mac),
                                                      SetField("eth_dst", plan.internet.gateway_mac),
                                                      Output(OFPORT_EDGE_INTERNET)], "edge",
                 note=f"from {a}: to the internet router") for a in publics]
    out += [flow(t_inet, 0, None, [], "edge", note="a private source never leaves the VPC"),
            flow(t_vpc, 0, None, [SetField("eth_src", edge.mac), Output(OFPORT_EDGE_VPC)], "edge",
                 note="to the vRouter")]
    return out


def _eip_flows(plan: Plan, vpc: str, zone: int, t_nat: int, t_inet: int, t_vpc: int) -> list[Flow]:
    """An instance's or a pod's EIP both ways; an internet-facing SLB's listeners inward."""
    out = []
    for obj, e in enumerate(plan.eips, start=1):
        if e.vpc != vpc:
            continue
        if e.one_to_one:            # an instance's, or an eni pod's
            out += [flow(t_nat, 150, {**_FROM_VPC, "ct_state": _NEW, "ipv4_src": e.private_ip},
                         [Ct(zone, commit=True, table=t_inet, nat=Nat("src", e.ip))], "eip", obj,
                         f"EIP {e.name}: {e.target} ({e.private_ip}) goes out as {e.ip}"),
                    flow(t_nat, 150, {**_FROM_INTERNET, "ct_state": _NEW, "ipv4_dst": e.ip},
                         [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", e.private_ip))], "eip", obj,
                         f"EIP {e.name}: {e.ip} is {e.target} ({e.private_ip})")]
        elif e.bound == "slb":
            slb = next(s for s in plan.slbs if s.service == e.target)
            for lst in slb.listeners:
                proto = lst.protocol.lower()
                out.append(flow(t_nat, 150, {**_FROM_INTERNET, "ct_state": _NEW, "ipv4_dst": e.ip,
                                             "ip_proto": IPPROTO[proto], f"{proto}_dst": lst.port},
                                [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", slb.vip))], "eip", obj,
                                f"internet-facing SLB {slb.service}: listener {lst.port}/{lst.protocol} at {e.ip}"))
    return out


def _nat_gateway_flows(plan: Plan, vpc, zone: int, t_nat: int, t_inet: int, t_vpc: int) -> list[Flow]:
    """A NAT gateway's SNAT entries, for the destinations a route sends to it, and its DNAT entries.
    With custom route tables, an SNAT entry translates only sources on the vSwitches whose table
    holds the route (what comes through the vRouter's fallback to the edge is not the NAT gateway's)."""
    # the NAT gateway routes of every route table of the VPC (a destination once per gateway)
    tables = (vpc.routes, *(t.routes for t in vpc.route_tables))
    routes = list({(r.next_hop, r.destination): r for table in tables for r in table if r.kind == "natgw"}.values())
    out = []
    for obj, g in enumerate(plan.nat_gateways, start=1):
        if g.vpc != vpc.name:
            continue
        out += _dnat_flows(g, obj, zone, t_nat, t_inet, t_vpc)
        for r in (r for r in routes if r.next_hop == g.name):
            out += [flow(t_nat, 100 + prefixlen(entry.source),
                         {**_FROM_VPC, "ct_state": _NEW, **ipv4_match("ipv4_src", source),
                          **ipv4_match("ipv4_dst", r.destination)},
                         [Ct(zone, commit=True, table=t_inet, nat=Nat("src", entry.public_ip, *NAT_PORTS))],
                         "natgw", obj, f"NAT gateway {g.name}: {entry.what} to {r.destination} as {entry.public_ip}")
                    for entry in g.snat for source in _sources(plan, vpc, r, entry.source)]
    return out


def _sources(plan: Plan, vpc, route, source: str) -> list[str]:
    """What an SNAT entry's source covers for a NAT gateway route: all of it in a VPC with one
    route table; with custom tables, its part on each vSwitch whose table holds the route."""
    if not vpc.route_tables:
        return [source]
    key = (route.next_hop, route.destination)
    custom = {v for t in vpc.route_tables for v in t.vswitches}
    where = [v for v in plan.vswitches if v.vpc == vpc.name and v.name not in custom] \
        if any((r.next_hop, r.destination) == key for r in vpc.routes) else []
    where += [plan.vswitch(v) for t in vpc.route_tables if any((r.next_hop, r.destination) == key for r in t.routes)
              for v in t.vswitches]
    net = ipaddress.IPv4Network(source)
    out = []
    for v in where:
        cidr = ipaddress.IPv4Network(v.cidr)
        if net.overlaps(cidr):
            out.append(str(net if net.subnet_of(cidr) else cidr))
    return out


def _dnat_flows(g, obj: int, zone: int, t_nat: int, t_inet: int, t_vpc: int) -> list[Flow]:
    """DNAT entries (Alibaba's ForwardEntry): a new connection from the internet to the EIP and
    port is committed with the DNAT, so its replies are undone by table 0's ct(nat) and leave as
    the EIP. An IP mapping (protocol any) takes every protocol and port, and its target leaves as
    the EIP too, before any SNAT entry (Alibaba: SNAT entries do not apply to an instance
    configured with DNAT IP mapping). An entry whose pod is gone has no flows."""
    out = []
    for d in g.dnat:
        if not d.internal_ip:
            continue
        note = f"NAT gateway {g.name}: {d.what} to {d.target or d.internal_ip}"
        if d.protocol == "any":
            out += [flow(t_nat, 150, {**_FROM_INTERNET, "ct_state": _NEW, "ipv4_dst": d.public_ip},
                         [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", d.internal_ip))], "natgw", obj,
                         f"{note} ({d.internal_ip})"),
                    flow(t_nat, 150, {**_FROM_VPC, "ct_state": _NEW, "ipv4_src": d.internal_ip},
                         [Ct(zone, commit=True, table=t_inet, nat=Nat("src", d.public_ip))], "natgw", obj,
                         f"NAT gateway {g.name}: {d.what}: {d.target or d.internal_ip} goes out as {d.public_ip}")]
            continue
        out.append(flow(t_nat, 150, {**_FROM_INTERNET, "ct_state": _NEW, "ipv4_dst": d.public_ip,
                                     "ip_proto": IPPROTO[d.protocol], f"{d.protocol}_dst": d.external_port},
                        [Ct(zone, commit=True, table=t_vpc, nat=Nat("dst", d.internal_ip, d.internal_port,
                                                                   d.internal_port))], "natgw", obj,
                        f"{note} ({d.internal_ip}:{d.internal_port})"))
    return out
