"""A node bridge's own tables: classify (who sent it), the ARP table, unSNAT and conntrack, commit
and the uplink table. Its Services are in controller/services.py, its NetworkPolicy in
controller/policy.py, its route table in controller/podroute.py."""
from __future__ import annotations

from kubevpc.planning import SNAT_PORTS, NodePlan, Plan

from .flows import (CT_DNAT, CT_NEW, CT_SNAT, CT_TRK, ETH_ARP, ETH_IP, IPPROTO, Ct, Flow, Goto, Nat, Output,
                    SetField, arp_responder, ct_state, flow, port_masks)
from .pipeline import (CTM_SERVICE, FLAG_NAT_COMMITTED, NODE, REG_FLAGS, REG_OUT, REG_SRC, SRC_HOST, SRC_POD,
                       SRC_TUNNEL, SRC_UPLINK)
from .services import snat_zone


def local_pods(plan: Plan, node: NodePlan) -> list:
    """The node's pods with a port on its bridge (a host-network pod's packets are the node's)."""
    return [h for h in plan.own_pods if h.node == node.name]


def classify_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    """Table 0: mark the source in reg0; pods only from their own MAC and IP."""
    t_arp, t_unsnat, t_route = NODE.table("arp"), NODE.table("unsnat"), NODE.table("route")
    host = plan.host(node.ecs)
    out = []
    for p in local_pods(plan, node):
        out += [flow(0, 200, {"in_port": p.ofport, "eth_src": p.mac, "eth_type": ETH_ARP, "arp_spa": p.ip},
                     [SetField(REG_SRC, SRC_POD), Goto(t_arp)], "pod", note=f"{p.key}: ARP"),
                flow(0, 200, {"in_port": p.ofport, "eth_src": p.mac, "eth_type": ETH_IP, "ipv4_src": p.ip},
                     [SetField(REG_SRC, SRC_POD), Goto(t_unsnat)], "pod", note=f"{p.key}: IPv4"),
                flow(0, 100, {"in_port": p.ofport}, [], "spoof", note=f"{p.key}: not its MAC/IP, or not IPv4: dropped")]
    for port, src, what in [(host.ofport, SRC_HOST, "the node itself")] + \
            [(u.ofport, SRC_UPLINK, f"uplink to {u.vswitch}") for u in node.uplinks]:
        out += [flow(0, 100, {"in_port": port, "eth_type": ETH_ARP}, [SetField(REG_SRC, src), Goto(t_arp)],
                     "host", note=f"ARP from {what}"),
                flow(0, 100, {"in_port": port, "eth_type": ETH_IP}, [SetField(REG_SRC, src), Goto(t_unsnat)],
                     "host", note=f"IPv4 from {what}")]
    routers = sorted({v.gateway for v in plan.vswitches if v.vpc == plan.cluster.vpc} |
                     {n.gateway for n in plan.nodes if n.gateway and n.name != node.name})
    for port, src in [(u.ofport, SRC_UPLINK) for u in node.uplinks] + [(t.ofport, SRC_TUNNEL) for t in node.tunnels[:1]]:
        out += [flow(0, 110, {"in_port": port, "eth_type": ETH_IP, "ip_proto": 1, "icmpv4_type": 11,
                              "ipv4_src": router}, [SetField(REG_SRC, src), Goto(t_route)], "host",
                     note=f"ICMP time exceeded from router {router} (a packet-out elsewhere): not tracked")
                for router in routers]
    out += [flow(0, 100, {"in_port": t.ofport, "eth_type": ETH_IP}, [SetField(REG_SRC, SRC_TUNNEL), Goto(t_unsnat)],
                 "tunnel", note="from another node through VXLAN") for t in node.tunnels[:1]]
    out.append(flow(0, 0, None, [], note="anything else: dropped"))
    return out


def arp_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    """Table 10: answer ARP for the pods' gateway and local pods; pass the node's own ARP."""
    t_arp = NODE.table("arp")
    pods, host, uplink = local_pods(plan, node), plan.host(node.ecs), node.uplinks[0]
    if plan.cluster.mode != "eni":
        out = [arp_responder(t_arp, node.gateway, node.gateway_mac, {REG_SRC: SRC_POD}, note="pods' gateway (this node)")]
        out += [arp_responder(t_arp, p.ip, p.mac, {REG_SRC: SRC_POD}, note=f"{p.key}, a neighbour on this node")
                for p in pods]
    else:
        out = [arp_responder(t_arp, p.ip, p.mac, {REG_SRC: src}, priority=110, note=f"{p.key} is local: answered here")
               for p in pods + [host] for src in (SRC_POD, SRC_HOST)]
        for p in pods:
            up = next(u for u in node.uplinks if u.vswitch == p.vswitch)
            out.append(flow(t_arp, 100, {"eth_type": ETH_ARP, REG_SRC: SRC_POD, "in_port": p.ofport}, [Output(up.ofport)],
                            "arp", note=f"{p.key}: ARP goes to its vSwitch"))
        out += [flow(t_arp, 100, {"eth_type": ETH_ARP, REG_SRC: SRC_UPLINK, "eth_dst": p.mac}, [Output(p.ofport)],
                     "arp", note=f"ARP reply for {p.key}") for p in pods]
    out += [flow(t_arp, 90, {"eth_type": ETH_ARP, REG_SRC: SRC_HOST}, [Output(uplink.ofport)], "arp",
                 note="the node's own ARP goes to its vSwitch"),
            flow(t_arp, 90, {"eth_type": ETH_ARP, REG_SRC: SRC_UPLINK, "eth_dst": host.mac}, [Output(host.ofport)],
                 "arp", note="ARP replies for the node"),
            flow(t_arp, 0, None, [], "arp", note="other ARP: dropped")]
    return out


def conntrack_flows(node: NodePlan, zone: int) -> list[Flow]:
    """Tables 15 and 20: undo SNAT to the node (replies come addressed to it), then conntrack with
    the Services' DNAT. Only packets that can be replies of a SNAT to the node go through the SNAT
    zone: to the SNAT ports, or ICMP (echo replies, errors); a new connection to a NodePort is not,
    and saves a recirculation."""
    t_unsnat, t_ct = NODE.table("unsnat"), NODE.table("conntrack")
    unsnat = [Ct(snat_zone(zone), table=t_ct, nat=Nat())]
    out = []
    for src in (SRC_POD, SRC_UPLINK, SRC_TUNNEL):
        m = {"eth_type": ETH_IP, REG_SRC: src, "ipv4_dst": node.ip}
        out.append(flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO["icmp"]}, unsnat, "snat",
                        note="ICMP to the node: maybe for a connection SNATed to it"))
        out += [flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO[proto], f"{proto}_dst": block}, unsnat, "snat",
                     note=f"to the node's SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}: maybe a reply")
                for proto in ("tcp", "udp") for block in port_masks(*SNAT_PORTS)]
    out += [flow(t_unsnat, 0, None, [Goto(t_ct)], "snat", note="everything else"),
            flow(t_ct, 100, {"eth_type": ETH_IP}, [Ct(zone, table=NODE.table("service"), nat=Nat())],
                 note="conntrack: apply a Service connection's DNAT, or its reverse to replies")]
    return out


def commit_flows(zone: int) -> list[Flow]:
    """Table 29: commit new connections that no Service committed, so replies are +rpl everywhere."""
    t_commit, t_route = NODE.table("commit"), NODE.table("route")
    out = [flow(t_commit, 110, {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW | nat)}, [Goto(t_route)], "base",
                note="a later packet of a Service connection still new (UDP before its first reply): no commit, "
                     "which would hide the Service mark from the uplink table")
           for nat in (CT_DNAT, CT_SNAT)]      # NATed by a ct lookup (tables 20, 28), so committed already
    out += [flow(t_commit, 100, {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW),
                                 REG_FLAGS: (0, FLAG_NAT_COMMITTED)},
                 [Ct(zone, commit=True), Goto(t_route)], "base",
                 note="commit the new connection, so its replies are +rpl at every later table"),
            flow(t_commit, 0, None, [Goto(t_route)], "base", note="established, related, committed")]
    return out


def uplink_flows(node: NodePlan) -> list[Flow]:
    """Table 36: to the vSwitch through the uplink's veth pair or the patch port beside it."""
    t_up = NODE.table("uplink")
    out = []
    for u in node.uplinks:
        out += [flow(t_up, 100, {REG_OUT: u.ofport, REG_FLAGS: (FLAG_NAT_COMMITTED, FLAG_NAT_COMMITTED)},
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
                     note=f"the rest: {u.vswitch} through the patch port, in the same datapath pass")]
    out.append(flow(t_up, 0, None, [], "uplink", note="no such uplink: dropped"))
    return out
