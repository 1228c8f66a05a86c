"""A VPC's DNS resolver on its vRouter: 100.100.2.136 and .138, reachable from every address of
the VPC without NAT or EIP and whatever the route table says, as Alibaba Cloud's VPC DNS is
("DHCP options sets": the DNS servers 100.100.2.136 and 100.100.2.138 are used by default).

Only DNS crosses the vRouter's port to it: in, UDP and TCP to port 53 of those addresses from the
VPC's vSwitches (anything else to them is dropped); out, UDP and TCP from port 53 of those
addresses, which the route table then delivers like any packet, and ARP for the vRouter's
address on that port. The resolver namespace can therefore answer DNS and do nothing else.
Stateless, like the rest of the vRouter: the vSwitches' conntrack admits the answers as replies."""
from __future__ import annotations

from kubevpc.planning import OFPORT_VROUTER_EDGE, VPC_DNS_GATEWAY, VPC_DNS_NET, BridgePlan, Plan

from .flows import ETH_ARP, ETH_IP, IPPROTO, DecTtl, Flow, Goto, Output, SetField, arp_responder, flow, ipv4_match
from .pipeline import VROUTER

DNS_PORT = 53
PRIO_DNS, PRIO_NOT_DNS, PRIO_FROM_EDGE = 500, 490, 510    # above every route (a /32 is 420)


def resolver_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """The vRouter's flows for its VPC's resolver; none when the VPC has no resolver."""
    h = plan.resolver(bridge.owner)
    if h is None:
        return []
    t_arp, t_route, t_custom = VROUTER.table("arp"), VROUTER.table("route"), VROUTER.table("route_custom")
    vpc = next(v for v in plan.vpcs if v.name == bridge.owner)
    # DNS goes to the resolver whichever route table the packet is routed by
    tables = (t_route, t_custom) if vpc.route_tables else (t_route,)
    gw_mac = h.gateway_mac
    ips = plan.internet.resolvers
    out = [flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_ARP}, [Goto(t_arp)], "resolver",
                note=f"{h.key}: ARP to the responder"),
           arp_responder(t_arp, VPC_DNS_GATEWAY, gw_mac, {"in_port": h.ofport}, feature="resolver",
                         note=f"the vRouter's address {VPC_DNS_GATEWAY} on {h.key}'s port")]
    for ip in ips:
        for proto in ("udp", "tcp"):
            out += [flow(0, 200, {"in_port": h.ofport, "eth_type": ETH_IP, "ipv4_src": ip, "ip_proto": IPPROTO[proto],
                                  f"{proto}_src": DNS_PORT}, [Goto(t_route)], "resolver",
                         note=f"{h.key}: a DNS answer from {ip} ({proto}), routed like any packet"),
                    *(flow(t, PRIO_DNS, {"eth_type": ETH_IP, "ipv4_dst": ip, "ip_proto": IPPROTO[proto],
                                         f"{proto}_dst": DNS_PORT},
                           [DecTtl(), SetField("eth_src", gw_mac), SetField("eth_dst", h.mac), Output(h.ofport)],
                           "resolver", note=f"DNS to the VPC's resolver {ip} ({proto}): to {h.key}, whatever the "
                           "routes") for t in tables)]
        out += [flow(t, PRIO_NOT_DNS, {"eth_type": ETH_IP, "ipv4_dst": ip}, [], "resolver",
                     note=f"to the VPC's resolver {ip}, not DNS: dropped (it answers DNS only)") for t in tables]
    out.append(flow(0, 150, {"in_port": h.ofport}, [], "resolver",
                    note=f"{h.key}: anything but a DNS answer or ARP: dropped (it opens no connection)"))
    if plan.edge(bridge.owner):
        out.append(flow(t_route, PRIO_FROM_EDGE, {"eth_type": ETH_IP, "in_port": OFPORT_VROUTER_EDGE,
                                                  **ipv4_match("ipv4_dst", VPC_DNS_NET)}, [], "resolver",
                        note="from the edge to the VPC's DNS: dropped (only the VPC reaches it)"))
    return out
