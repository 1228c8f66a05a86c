"""The vRouter of a VPC: ARP for each vSwitch's gateway, the route table (longest prefix first) and
the neighbour table of every address on its vSwitches."""
from __future__ import annotations

from kubevpc.planning import OFPORT_VROUTER_EDGE, Attachment, BridgePlan, Plan

from .flows import ETH_ARP, ETH_IP, DecTtl, Flow, Goto, Output, SetField, arp_responder, flow, ipv4_match, prefixlen
from .pipeline import VROUTER
from .resolver import resolver_flows


def vrouter_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    t_arp, t_route, t_neigh = VROUTER.table("arp"), VROUTER.table("route"), VROUTER.table("neighbor")
    vpc = next(v for v in plan.vpcs if v.bridge == bridge.name)
    vsws = [v for v in plan.vswitches if v.vpc == vpc.name]
    out = [flow(0, 100, {"eth_type": ETH_ARP}, [Goto(t_arp)], note="ARP to the responder"),
           flow(0, 100, {"eth_type": ETH_IP}, [Goto(t_route)], note="IPv4 to routing"),
           flow(0, 0, None, [], note="no IPv6 or other protocols in the VPC")]
    out += [arp_responder(t_arp, v.gateway, v.gateway_mac, {"in_port": v.vrouter_port},
                          note=f"gateway of {v.name} answers on its own port") for v in vsws]
    out += _route_flows(plan, vpc, vsws, t_route, t_neigh)
    by_name = {v.name: v for v in vsws}
    for a in _unique_addresses(plan, vsws):
        v = by_name[a.vswitch]
        m = {"eth_type": ETH_IP, "ipv4_dst": a.ip}
        rewrite = [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", a.mac)]
        out += [flow(t_neigh, 110, {**m, "in_port": v.vrouter_port}, rewrite + [Output("in_port")], "route",
                     note=f"{a.owner} on {v.name}, back out the port the packet came from"),
                flow(t_neigh, 100, m, rewrite + [Output(v.vrouter_port)], "route", note=f"{a.owner} on {v.name}")]
    out.append(flow(t_neigh, 0, None, [], "route", note="unknown address in a vSwitch CIDR: dropped"))
    return out + resolver_flows(plan, bridge)


def _route_flows(plan: Plan, vpc, vsws, t_route: int, t_neigh: int) -> list[Flow]:
    """The route table: system routes to the neighbour table, NAT gateway routes to the edge,
    custom and pod routes to their next hop, and below them the edge and the drop."""
    by_name = {v.name: v for v in vsws}
    hosts = {h.name: h for h in plan.instances}
    out = []
    for obj, route in enumerate(vpc.routes):
        prio = 100 + 10 * prefixlen(route.destination)       # longest prefix wins
        match = {"eth_type": ETH_IP, **ipv4_match("ipv4_dst", route.destination)}
        if route.kind == "system":
            out.append(flow(t_route, prio, match, [Goto(t_neigh)], "route", obj,
                            f"system route {route.destination} ({route.description})"))
            continue
        if route.kind == "natgw":
            out += [flow(t_route, prio + 1, {**match, "in_port": OFPORT_VROUTER_EDGE}, [], "natgw", obj,
                         "from the edge: never back to it"),
                    flow(t_route, prio, match, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "natgw", obj,
                         f"route {route.destination} -> NAT gateway {route.next_hop}, at the edge")]
            continue
        hop = hosts[route.next_hop]
        v = by_name[hop.vswitch]
        out += [flow(t_route, prio, {**match, "in_port": v.vrouter_port},
                     [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", hop.mac), Output("in_port")],
                     "route", obj, f"{route.kind} route {route.destination} -> {hop.name}, back out the same port"),
                flow(t_route, prio - 1, match,
                     [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", hop.mac),
                      Output(v.vrouter_port)], "route", obj, f"{route.kind} route {route.destination} -> {hop.name}")]
    if plan.edge(vpc.name):
        # below every route: EIPs and the replies of connections from the internet leave at the
        # edge whatever the route table says (the edge drops what nothing there translates)
        out += [flow(t_route, 2, {"eth_type": ETH_IP, "in_port": OFPORT_VROUTER_EDGE}, [], "edge",
                     note="from the edge and routed nowhere in the VPC: dropped (no loop)"),
                flow(t_route, 1, {"eth_type": ETH_IP}, [DecTtl(), Output(OFPORT_VROUTER_EDGE)], "edge",
                     note="outside the VPC: to the edge (EIPs, replies to the internet)")]
    out.append(flow(t_route, 0, None, [], "route", note="no route: dropped"))
    return out


def _unique_addresses(plan: Plan, vsws) -> list[Attachment]:
    names = {v.name for v in vsws}
    return [a for a in plan.attachments if a.vswitch in names and prefixlen(a.ip) == 32]
