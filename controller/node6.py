"""A dual-stack node bridge's IPv6 (eni mode): the IPv6 twins of the flows every connection meets
there, so IPv6 takes the same pipeline as IPv4 (controller/node.py, controller/services.py): unSNAT
(15), conntrack (20), the Service table's shared flows (21), the destination into registers for
NetworkPolicy (24; the IPv6 address into xxreg2), masquerade to the node's IPv6 address (28),
commit (29), the Service routes by address (30) and the uplink (36). The Services' own IPv6
entries are made by controller/services.py (Entry.family 6), NetworkPolicy's IPv6 twins by
controller/policy.py (family 6). Nothing here is made outside a dual-stack eni cluster, so no IPv4
flow and no flow of a single-stack scenario changes.

kube-proxy runs one proxier per family; conntrack tracks both families in one zone, and Open
vSwitch's ct(nat) translates IPv6 as IPv4 (ovs-actions(7), "nat").
"""
from __future__ import annotations

from kubevpc.planning import SNAT_PORTS, NodePlan, Plan

from .flows import (CT_DNAT, CT_INV, CT_NEW, CT_RPL, CT_SNAT, CT_TRK, ETH_IPV6, IPPROTO, IPPROTO_ICMPV6, PROTO, Ct,
                    Flow, Goto, Move, Nat, Output, SetField, ct_state, flow, port_masks)
from .pipeline import (CTM_MASQ, CTM_SERVICE, FLAG_NAT_COMMITTED, NODE, REG_EP_IP6, REG_EP_PORT, REG_FLAGS, REG_OUT,
                       REG_SRC, SRC_POD, SRC_UPLINK)
from .services import snat_zone

_IP6 = {"eth_type": ETH_IPV6}
_SERVICE = {"ct_mark": (CTM_SERVICE, CTM_SERVICE)}


def dual_stack(plan: Plan) -> bool:
    return bool(plan.cluster and plan.cluster.dual_stack and plan.cluster.mode == "eni")


def node6_pipeline_flows(plan: Plan, node: NodePlan, zone: int) -> list[Flow]:
    """Every IPv6 twin of the shared flows of a node bridge's pipeline (tables 15 to 36)."""
    if not dual_stack(plan):
        return []
    return [*_conntrack6(plan, node, zone), *_service6(plan, node, zone), *_commit6(zone), *_routes6(plan, node),
            *_uplink6(node)]


def _conntrack6(plan: Plan, node: NodePlan, zone: int) -> list[Flow]:
    """Tables 15 and 20: replies to the node's IPv6 address at its SNAT ports (or ICMPv6) through
    the SNAT zone first; then conntrack with the Services' DNAT."""
    t_unsnat, t_ct = NODE.table("unsnat"), NODE.table("conntrack")
    node6 = plan.host(node.ecs).ipv6
    unsnat = [Ct(snat_zone(zone), table=t_ct, nat=Nat())]
    out = []
    if node6:
        for src in (SRC_POD, SRC_UPLINK):
            m = {**_IP6, REG_SRC: src, "ipv6_dst": node6}
            out.append(flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO_ICMPV6}, unsnat, "snat",
                            note="ICMPv6 to the node: maybe for a connection SNATed to it"))
            out += [flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO[proto], f"{proto}_dst": block}, unsnat, "snat",
                         note=f"to the node's IPv6 SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}: maybe a reply")
                    for proto in ("tcp", "udp") for block in port_masks(*SNAT_PORTS)]
    out.append(flow(t_ct, 100, _IP6, [Ct(zone, table=NODE.table("service"), nat=Nat())],
                    note="conntrack (IPv6): apply a Service connection's DNAT, or its reverse to replies"))
    return out


def _service6(plan: Plan, node: NodePlan, zone: int) -> list[Flow]:
    """Tables 21, 24 and 28: the IPv6 twins of the Service table's shared flows, the destination
    into xxreg2 and reg3 for the policy tables, and the masquerade to the node's IPv6 address."""
    t_svc, t_dst, t_policy, t_masq, t_next = (NODE.table(n) for n in (
        "service", "destination", "egress_policy", "masquerade", "commit"))
    new = ct_state(CT_TRK | CT_NEW)
    out = [flow(t_svc, 400, {**_IP6, "ct_state": ct_state(CT_TRK | CT_INV)}, [], "service",
                note="IPv6 invalid for conntrack: dropped, as in IPv4"),
           flow(t_svc, 300, {**_IP6, "ct_state": ct_state(CT_TRK, CT_RPL), "ct_mark": (CTM_MASQ, CTM_MASQ)},
                [Goto(t_masq)], "service", note="later IPv6 packets of a masqueraded connection: SNAT again"),
           flow(t_svc, 250, {**_IP6, "ct_state": ct_state(CT_TRK | CT_NEW | CT_DNAT)}, [Goto(t_next)], "service",
                note="later IPv6 packets of a Service connection still new (UDP): as established"),
           flow(t_svc, 1, {**_IP6, "ct_state": new}, [Goto(t_dst)], "service",
                note="a new IPv6 connection not for a Service: on to the policy tables")]
    out += [flow(t_dst, 100, {**_IP6, "ip_proto": IPPROTO[proto]}, [Move("ipv6_dst", REG_EP_IP6, 128),
                                                                    Move(f"{proto}_dst", REG_EP_PORT, 16),
                                                                    Goto(t_policy)], "service",
                 note=f"IPv6 {proto.upper()}: the destination address and port, where the policy tables read them")
            for proto in PROTO.values()]
    out.append(flow(t_dst, 0, _IP6, [Move("ipv6_dst", REG_EP_IP6, 128), Goto(t_policy)], "service",
                    note="other IPv6 (ICMPv6): the destination address"))
    node6 = plan.host(node.ecs).ipv6
    if node6:
        out.append(flow(t_masq, 100, _IP6, [Ct(snat_zone(zone), commit=True, table=t_next,
                                                mark=CTM_SERVICE | CTM_MASQ, nat=Nat("src", node6, *SNAT_PORTS))],
                        "service", note="masquerade (IPv6): SNAT to the node's IPv6 address"))
    return out


def _commit6(zone: int) -> list[Flow]:
    """Table 29 in IPv6: commit new connections no Service committed."""
    t_commit, t_route = NODE.table("commit"), NODE.table("route")
    out = [flow(t_commit, 110, {**_IP6, "ct_state": ct_state(CT_TRK | CT_NEW | nat)}, [Goto(t_route)], "base",
                note="a later IPv6 packet of a Service connection still new: no commit")
           for nat in (CT_DNAT, CT_SNAT)]
    out.append(flow(t_commit, 100, {**_IP6, "ct_state": ct_state(CT_TRK | CT_NEW), REG_FLAGS: (0, FLAG_NAT_COMMITTED)},
                    [Ct(zone, commit=True), Goto(t_route)], "base",
                    note="commit the new IPv6 connection, so its replies are +rpl at every later table"))
    return out


def _routes6(plan: Plan, node: NodePlan) -> list[Flow]:
    """Table 30: IPv6 Service connections were DNATed (or their replies un-DNATed) after the
    sender chose the destination MAC: route them by address, as eni_route_flows does in IPv4."""
    t_route, t_up = NODE.table("route"), NODE.table("uplink")
    pods = [h for h in plan.own_pods if h.node == node.name and h.ipv6]
    host = plan.host(node.ecs)
    gw_of = {v.name: v.gateway_mac for v in plan.vswitches}
    out = []
    for p in pods + ([host] if host.ipv6 else []):
        rewrite = [SetField("eth_src", gw_of[p.vswitch]), SetField("eth_dst", p.mac)]
        out += [flow(t_route, 210, {**_IP6, **_SERVICE, "ipv6_dst": p.ipv6, "in_port": p.ofport},
                     rewrite + [Output("in_port")], "service", note=f"{p.key}: IPv6 Service traffic back to where it came from"),
                flow(t_route, 205, {**_IP6, **_SERVICE, "ipv6_dst": p.ipv6}, rewrite + [Output(p.ofport)], "service",
                     note=f"{p.key}: IPv6 Service traffic to it")]
    out += [flow(t_route, 204, {**_IP6, **_SERVICE, "in_port": u.ofport},
                 [SetField("eth_src", node.mac), SetField("eth_dst", gw_of[u.vswitch]), Output("in_port")], "service",
                 note=f"IPv6 Service traffic from {u.vswitch} back to it, through the vRouter") for u in node.uplinks]
    for p in pods + [host]:
        up = next((u for u in node.uplinks if u.vswitch == p.vswitch), node.uplinks[0])
        out.append(flow(t_route, 204, {**_IP6, **_SERVICE, "in_port": p.ofport},
                        [SetField("eth_dst", gw_of[up.vswitch]), SetField(REG_OUT, up.ofport), Goto(t_up)], "service",
                        note=f"{p.key}: IPv6 Service traffic to the VPC, out of its ENI through the vRouter"))
    return out


def _uplink6(node: NodePlan) -> list[Flow]:
    """Table 36 in IPv6: as in IPv4, new and Service flows other than TCP through the veth pair, so
    that none overtakes its first packets (docs/design.md, "Why node uplinks ...")."""
    t_up = NODE.table("uplink")
    out = []
    for u in node.uplinks:
        out += [flow(t_up, 100, {REG_OUT: u.ofport, **_IP6, "ct_state": ct_state(CT_TRK | CT_NEW)},
                     [Output(u.ofport)], "uplink", note=f"new IPv6: {u.vswitch} through the veth pair"),
                flow(t_up, 95, {REG_OUT: u.ofport, **_IP6, "ip_proto": IPPROTO["tcp"]}, [Output(u.patch_ofport)],
                     "uplink", note=f"IPv6 TCP: {u.vswitch} through the patch port"),
                flow(t_up, 94, {REG_OUT: u.ofport, **_IP6, "ct_state": ct_state(CT_TRK), **_SERVICE},
                     [Output(u.ofport)], "uplink", note=f"an IPv6 Service flow other than TCP: {u.vswitch} through "
                                                       "the veth pair"),
                flow(t_up, 94, {REG_OUT: u.ofport, **_IP6, "ct_state": ct_state(CT_TRK | CT_SNAT)},
                     [Output(u.ofport)], "uplink", note=f"an IPv6 SNATed flow other than TCP: {u.vswitch} through "
                                                       "the veth pair")]
    return out
