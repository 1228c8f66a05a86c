"""The internet router: the zone's hosts on one subnet, each VPC's public addresses behind its edge."""
from __future__ import annotations

from kubevpc.planning import BridgePlan, Plan

from .flows import ETH_ARP, ETH_IP, Flow, Goto, Output, SetField, arp_responder, flow
from .pipeline import INTERNET


def internet_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    t_arp, t_route = INTERNET.table("arp"), INTERNET.table("route")
    inet = plan.internet
    out = []
    for h in plan.internet_hosts:
        out += [flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_ARP, "arp_spa": h.ip}, [Goto(t_arp)], "internet",
                     note=f"{h.key}: ARP"),
                flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_IP, "ipv4_src": h.ip}, [Goto(t_route)], "internet",
                     note=f"{h.key}: IPv4"),
                flow(0, 100, {"in_port": h.ofport}, [], "spoof", note=f"{h.key}: not its address, or not IPv4: dropped"),
                arp_responder(t_arp, h.ip, h.mac, feature="internet", note=f"{h.key}"),
                flow(t_route, 100, {"eth_type": ETH_IP, "ipv4_dst": h.ip},
                     [SetField("eth_src", inet.gateway_mac), SetField("eth_dst", h.mac), Output(h.ofport)], "internet",
                     note=f"to {h.key}")]
    out += [arp_responder(t_arp, inet.gateway, inet.gateway_mac, feature="internet", note="the router"),
            flow(t_arp, 0, None, [], "arp", note="other ARP: dropped")]
    for e in plan.edges:
        publics = sorted({x.ip for x in plan.eips if x.vpc == e.vpc} |
                         {i for g in plan.nat_gateways if g.vpc == e.vpc for i in g.public_ips})
        for a in publics:
            out += [flow(0, 100, {"in_port": e.internet_port, "eth_type": ETH_IP, "ipv4_src": a}, [Goto(t_route)],
                         "internet", note=f"from {a} of VPC {e.vpc}"),
                    flow(t_route, 110, {"eth_type": ETH_IP, "ipv4_dst": a, "in_port": e.internet_port},
                         [SetField("eth_dst", e.mac), Output("in_port")], "internet",
                         note=f"{a} of VPC {e.vpc}, from its own edge: back"),
                    flow(t_route, 100, {"eth_type": ETH_IP, "ipv4_dst": a},
                         [SetField("eth_dst", e.mac), Output(e.internet_port)], "internet",
                         note=f"{a}: to the edge of VPC {e.vpc}")]
    out += [flow(0, 0, None, [], "internet", note="anything else: dropped"),
            flow(t_route, 0, None, [], "internet", note="no such address on this internet: dropped")]
    return out
