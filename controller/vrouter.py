"""The vRouter of a VPC: ARP for each vSwitch's gateway, the route tables (longest prefix first) and
the neighbour table of every address on its vSwitches.

A packet is routed by the table of the vSwitch it came from: the system table (`route`), or the
custom table the vSwitch is associated with (`route_custom`, matched on the table's number, which
`classify` loads into REG_ROUTE_TABLE). Packets from the edge and from peering connections use the
system table, as Alibaba's VPC routes what a gateway or a peer hands it. A peering connection is a
patch port pair between two vRouters: a route to it outputs there, and the other vRouter routes the
packet by its own system table, taking only addresses of its own VPC (a peering is not transitive).
"""
from __future__ import annotations

from kubevpc.planning import OFPORT_VROUTER_EDGE, Attachment, BridgePlan, Plan, VpcPlan

from .flows import ETH_ARP, ETH_IP, DecTtl, Flow, Goto, Output, SetField, arp_responder, flow, ipv4_match, prefixlen
from .pipeline import REG_ROUTE_TABLE, VROUTER
from .resolver import resolver_flows

T_ROUTE, T_CUSTOM, T_NEIGH = VROUTER.table("route"), VROUTER.table("route_custom"), VROUTER.table("neighbor")


def vrouter_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    t_arp = VROUTER.table("arp")
    vpc = next(v for v in plan.vpcs if v.bridge == bridge.name)
    vsws = [v for v in plan.vswitches if v.vpc == vpc.name]
    out = [flow(0, 100, {"eth_type": ETH_ARP}, [Goto(t_arp)], note="ARP to the responder"),
           flow(0, 100, {"eth_type": ETH_IP}, [Goto(T_ROUTE)], note="IPv4 to routing"),
           flow(0, 0, None, [], note="no IPv6 or other protocols in the VPC")]
    out += _classify_tables(plan, vpc) + _classify_peerings(plan, vpc)
    out += [arp_responder(t_arp, v.gateway, v.gateway_mac, {"in_port": v.vrouter_port},
                          note=f"gateway of {v.name} answers on its own port") for v in vsws]
    out += _route_flows(plan, vpc, vsws, T_ROUTE, {}, 0)
    for t in vpc.route_tables:
        out += _route_flows(plan, vpc, vsws, T_CUSTOM, {REG_ROUTE_TABLE: t.number}, t.number, t.routes, t.name)
    if vpc.route_tables:
        out.append(flow(T_CUSTOM, 0, None, [], "route", note="no route in the custom route table: dropped"))
    by_name = {v.name: v for v in vsws}
    for a in _unique_addresses(plan, vsws):
        v = by_name[a.vswitch]
        m = {"eth_type": ETH_IP, "ipv4_dst": a.ip}
        rewrite = [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", a.mac)]
        out += [flow(T_NEIGH, 110, {**m, "in_port": v.vrouter_port}, rewrite + [Output("in_port")], "route",
                     note=f"{a.owner} on {v.name}, back out the port the packet came from"),
                flow(T_NEIGH, 100, m, rewrite + [Output(v.vrouter_port)], "route", note=f"{a.owner} on {v.name}")]
    out.append(flow(T_NEIGH, 0, None, [], "route", note="unknown address in a vSwitch CIDR: dropped"))
    return out + resolver_flows(plan, bridge)


def _classify_tables(plan: Plan, vpc: VpcPlan) -> list[Flow]:
    """IPv4 from a vSwitch associated with a custom route table goes to that table."""
    ports = {v.name: v.vrouter_port for v in plan.vswitches if v.vpc == vpc.name}
    return [flow(0, 110, {"eth_type": ETH_IP, "in_port": ports[name]},
                 [SetField(REG_ROUTE_TABLE, t.number), Goto(T_CUSTOM)], "route", t.number << 16,
                 f"from {name}: route table {t.name}") for t in vpc.route_tables for name in t.vswitches]


def _classify_peerings(plan: Plan, vpc: VpcPlan) -> list[Flow]:
    """From a peering connection: addresses of this VPC to the system table; nothing else (no
    transit to a third VPC, the internet or a NAT gateway; Alibaba: "VPC peering is non-transitive")."""
    out = []
    for p in plan.peerings:
        if vpc.name in p.vpcs:
            out += [flow(0, 110, {"eth_type": ETH_IP, "in_port": p.ofport, **ipv4_match("ipv4_dst", vpc.cidr)},
                         [Goto(T_ROUTE)], "route", note=f"from peering {p.name}: to {vpc.name}, by the system table"),
                    flow(0, 105, {"in_port": p.ofport}, [], "route",
                         note=f"from peering {p.name}, not for {vpc.name}: dropped (a peering is not transitive)")]
    return out


def _route_flows(plan: Plan, vpc: VpcPlan, vsws, t_route: int, extra: dict, number: int,
                 routes=None, name: str = "") -> list[Flow]:
    """A route table: system routes to the neighbour table, NAT gateway routes to the edge,
    peering routes to the peering, custom and pod routes to their next hop, and below them the
    edge and the drop. `extra`: what the table's flows match besides (a custom table: its number);
    their cookies' object ids are the route's index in the table, plus the table's number << 16."""
    routes = vpc.routes if routes is None else routes
    by_name = {v.name: v for v in vsws}
    hosts = {h.name: h for h in plan.instances}
    peer_port = {p.name: p.ofport for p in plan.peerings}
    ours = {v.vrouter_port for v in vsws if not number or v.name in _table(vpc, number).vswitches}
    where = f"route table {name}: " if name else ""
    out = []
    for i, route in enumerate(routes):
        obj = (number << 16) | i
        prio = 100 + 10 * prefixlen(route.destination)       # longest prefix wins
        match = {"eth_type": ETH_IP, **extra, **ipv4_match("ipv4_dst", route.destination)}
        if route.kind == "system":
            out.append(flow(t_route, prio, match, [Goto(T_NEIGH)], "route", obj,
                            f"{where}system route {route.destination} ({route.description})"))
            continue
        if route.kind == "natgw":
            if not number:
                out.append(flow(t_route, prio + 1, {**match, "in_port": OFPORT_VROUTER_EDGE}, [], "natgw", obj,
                                "from the edge: never back to it"))
            out.append(flow(t_route, prio, match, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "natgw", obj,
                            f"{where}route {route.destination} -> NAT gateway {route.next_hop}, at the edge"))
            continue
        if route.kind == "peering":
            out.append(flow(t_route, prio, match, [DecTtl(), Output(peer_port[route.next_hop])], "route", obj,
                            f"{where}route {route.destination} -> peering connection {route.next_hop}"))
            continue
        hop = hosts[route.next_hop]
        v = by_name[hop.vswitch]
        rewrite = [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", hop.mac)]
        if v.vrouter_port in ours:
            out.append(flow(t_route, prio, {**match, "in_port": v.vrouter_port}, rewrite + [Output("in_port")],
                            "route", obj, f"{where}{route.kind} route {route.destination} -> {hop.name}, back out "
                                          "the same port"))
        out.append(flow(t_route, prio - 1, match, rewrite + [Output(v.vrouter_port)], "route", obj,
                        f"{where}{route.kind} route {route.destination} -> {hop.name}"))
    return out + _below_routes(plan, vpc, t_route, extra, number)


def _below_routes(plan: Plan, vpc: VpcPlan, t_route: int, extra: dict, number: int) -> list[Flow]:
    """Below every route: EIPs and the replies of connections from the internet leave at the edge
    whatever the route table says (the edge drops what nothing there translates); then the drop
    (one for all the custom tables, made by the caller)."""
    out = []
    if plan.edge(vpc.name):
        if not number:
            out.append(flow(t_route, 2, {"eth_type": ETH_IP, "in_port": OFPORT_VROUTER_EDGE}, [], "edge",
                            note="from the edge and routed nowhere in the VPC: dropped (no loop)"))
        out.append(flow(t_route, 1, {"eth_type": ETH_IP, **extra}, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "edge",
                        note="outside the VPC: to the edge (EIPs, replies to the internet)"))
    if not number:
        out.append(flow(t_route, 0, None, [], "route", note="no route: dropped"))
    return out


def _table(vpc: VpcPlan, number: int):
    return next(t for t in vpc.route_tables if t.number == number)


def _unique_addresses(plan: Plan, vsws) -> list[Attachment]:
    names = {v.name for v in vsws}
    return [a for a in plan.attachments if a.vswitch in names and prefixlen(a.ip) == 32]
