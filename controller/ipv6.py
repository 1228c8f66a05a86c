"""IPv6 of a dual-stack VPC and cluster (eni mode), beside the IPv4 flows of the same tables: the
vSwitch (classify, neighbour discovery, conntrack), the vRouter (system routes of each vSwitch's
/64, the neighbour table, the hop limit, no way out to the edge) and a node bridge (pods' IPv6 to
and from their ENI's uplink, pod to pod on the node, on one vSwitch or routed between two). Security groups hold IPv6 in
controller/secgroup.py. Nothing here is made for a VPC or vSwitch without an IPv6 CIDR, so the
flows of IPv4-only scenarios do not change.

Neighbour discovery is answered as ARP is: the vSwitch knows every address behind it, so a
neighbour solicitation for the gateway or for a host goes to the controller, which answers with
a neighbour advertisement from that address's MAC (controller/ndp.py), as OVN's ovn-controller
does (pinctrl, nd_na); nothing is flooded. Alibaba Cloud: "Enable IPv6 for a VPC"; the emulated
internet is IPv4 only, so IPv6 never reaches a VPC's edge.
"""
from __future__ import annotations

from kubevpc.planning import BridgePlan, NodePlan, Plan

from .flows import (ETH_IPV6, IPPROTO_ICMPV6, ND_NS, V6, Ct, DecTtl, Flow, Goto, Nat, Output, SetField, flow,
                    prefixlen6)
from .pipeline import NODE, REG_OUT, REG_SRC, SRC_HOST, SRC_POD, SRC_UPLINK, VROUTER, VSWITCH
from .podroute import exclusive_eni_flows, local_route_flows

_IP6 = {"eth_type": ETH_IPV6}
_ICMP6 = {**_IP6, "ip_proto": IPPROTO_ICMPV6}
# neighbour discovery and multicast listener messages a host may send besides a solicitation
# (RFC 4861: router solicitation and advertisement, advertisement, redirect; RFC 2710/3810: MLD)
_ND_OTHER = (130, 131, 132, 133, 134, 136, 137, 143)


# ------------------------------------------------------------------------------------ vSwitch
def vswitch6_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """Classify, the neighbour solicitations answered through the controller, and conntrack."""
    vsw = plan.vswitch(bridge.owner)
    if not vsw.ipv6_cidr:
        return []
    t_arp, t_ct = VSWITCH.table("arp"), VSWITCH.table("conntrack")
    out = [flow(0, 110, {**_ICMP6, "icmpv6_type": ND_NS}, [Goto(t_arp)], "nd",
                note="IPv6 neighbour solicitation to the responder")]
    out += [flow(0, 110, {**_ICMP6, "icmpv6_type": t}, [], "nd",
                 note=f"ICMPv6 type {t} (neighbour discovery, MLD): the cloud answers solicitations itself")
            for t in _ND_OTHER]
    out.append(flow(0, 100, _IP6, [Goto(t_ct)], note="IPv6 to conntrack (dual stack)"))
    out.append(_solicited(t_arp, vsw.gateway6, f"{vsw.name} gateway (the vRouter)"))
    out += [_solicited(t_arp, a.ipv6, a.owner) for a in plan.attachments if a.vswitch == vsw.name and a.ipv6]
    out.append(flow(t_ct, 100, _IP6, [Ct(bridge.zone, table=VSWITCH.table("slb"), nat=Nat())],
                    note="track IPv6 connections for the stateful security groups"))
    return out


def _solicited(table: int, ip6: str, what: str) -> Flow:
    """A solicitation for `ip6` (known behind this vSwitch) goes to the controller, which answers."""
    return flow(table, 100, {**_ICMP6, "icmpv6_type": ND_NS, "ipv6_nd_target": ip6}, [Output("controller")], "nd",
                note=f"neighbour solicitation for {ip6} ({what}): the controller advertises its MAC")


# ------------------------------------------------------------------------------------ vRouter
def vrouter6_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """Classify, the IPv6 route table (a system route per vSwitch /64) and the neighbour table."""
    vpc = next(v for v in plan.vpcs if v.bridge == bridge.name)
    if not vpc.ipv6_cidr:
        return []
    t_route, t_neigh = VROUTER.table("route"), VROUTER.table("neighbor")
    vsws = {v.name: v for v in plan.vswitches if v.vpc == vpc.name and v.ipv6_cidr}
    out = [flow(0, 100, _IP6, [Goto(t_route)], note="IPv6 to routing (dual stack)")]
    for obj, route in enumerate(vpc.routes6):
        out.append(flow(t_route, 100 + 10 * prefixlen6(route.destination), {**_IP6, V6.dst: V6.net(route.destination)},
                        [Goto(t_neigh)], "route", obj, f"system route {route.destination} ({route.description})"))
    out.append(flow(t_route, 3, _IP6, [], "route",
                    note="IPv6 outside the VPC: dropped (no route; the emulated internet is IPv4 only)"))
    for a in plan.attachments:
        v = vsws.get(a.vswitch)
        if v is None or not a.ipv6:
            continue
        m = {**_IP6, V6.dst: a.ipv6}
        rewrite = [DecTtl(), SetField("eth_src", v.gateway_mac), SetField("eth_dst", a.mac)]
        out += [flow(t_neigh, 110, {**m, "in_port": v.vrouter_port}, rewrite + [Output("in_port")], "route",
                     note=f"{a.owner} on {v.name}, back out the port the packet came from"),
                flow(t_neigh, 100, m, rewrite + [Output(v.vrouter_port)], "route", note=f"{a.owner} on {v.name}")]
    return out


# --------------------------------------------------------------------------------- node bridge
_ND_ALL = (130, 131, 132, 133, 134, 135, 136, 137, 143)      # neighbour discovery and MLD (RFC 4861, 3810)


def node6_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    """eni with dual stack: a pod sends IPv6 only from its own MAC and address; its IPv6 takes the
    node bridge's pipeline as IPv4 does (unSNAT, conntrack, Services, NetworkPolicy, commit: the
    shared flows in controller/node6.py), then leaves out of its ENI's uplink; IPv6 from an uplink
    or the node goes to the pod or node whose MAC it is addressed to. Neighbour discovery skips
    conntrack (the kernel's conntrack does not track it either) and goes straight to the route
    table."""
    if not (plan.cluster and plan.cluster.dual_stack and plan.cluster.mode == "eni"):
        return []
    t_unsnat, t_route, t_up = NODE.table("unsnat"), NODE.table("route"), NODE.table("uplink")
    host = plan.host(node.ecs)
    pods = [p for p in plan.own_pods if p.node == node.name and p.ipv6]
    out = []
    for p in pods:
        up = next(u for u in node.uplinks if u.vswitch == p.vswitch)
        mine = {"in_port": p.ofport, "eth_src": p.mac, **_IP6, V6.src: p.ipv6}
        out += [flow(0, 210, {**mine, "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": t},
                     [SetField(REG_SRC, SRC_POD), Goto(t_route)], "nd", note=f"{p.key}: ICMPv6 type {t} (neighbour "
                                                                            "discovery, MLD): not tracked")
                for t in _ND_ALL]
        out += [flow(0, 200, mine, [SetField(REG_SRC, SRC_POD), Goto(t_unsnat)], "pod", note=f"{p.key}: IPv6"),
                flow(t_route, 200, {**_IP6, "eth_dst": p.mac}, [Output(p.ofport)], "pod", note=f"{p.key}: local (IPv6)"),
                flow(t_route, 100, {**_IP6, REG_SRC: SRC_POD, "in_port": p.ofport},
                     [SetField(REG_OUT, up.ofport), Goto(t_up)], "route",
                     note=f"{p.key}: IPv6 out of its ENI on {up.vswitch}")]
    sources = [(host.ofport, SRC_HOST, "the node itself")] + \
        [(u.ofport, SRC_UPLINK, f"uplink to {u.vswitch}") for u in node.uplinks]
    for port, src, what in sources:
        out += [flow(0, 110, {"in_port": port, **_IP6, "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": t},
                     [SetField(REG_SRC, src), Goto(t_route)], "nd",
                     note=f"ICMPv6 type {t} from {what} (neighbour discovery, MLD): not tracked") for t in _ND_ALL]
        out.append(flow(0, 100, {"in_port": port, **_IP6}, [SetField(REG_SRC, src), Goto(t_unsnat)], "host",
                        note=f"IPv6 from {what}"))
    out += exclusive_eni_flows(plan, node, V6) + local_route_flows(plan, node, V6)
    if host.ipv6:
        out.append(flow(t_route, 200, {**_IP6, "eth_dst": host.mac}, [Output(host.ofport)], "host",
                        note="the node itself (IPv6)"))
    out.append(flow(t_route, 100, {**_IP6, REG_SRC: SRC_HOST}, [SetField(REG_OUT, node.uplinks[0].ofport), Goto(t_up)],
                    "host", note="the node's own IPv6 to its vSwitch"))
    return out
