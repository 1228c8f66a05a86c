"""The checksum hop of a vxlan node bridge (KUBEVPC_VXLAN_CSUM_HOP): the flows that send a pod's
packet through it before the conntrack NAT that will change its addresses, when the packet then
leaves through the VXLAN device. docs/design.md, "The checksum hop (vxlan)", walks them.

Why. On Open vSwitch 3.1's userspace datapath a pod with offloads on (TSO) sends packets whose
TCP or UDP checksum field holds only the pseudo-header sum, for the kernel to complete. Conntrack
NAT updates that field as if it were a full checksum. A local receiver never checks it, but the
kernel's VXLAN device completes the checksum from it, wrongly, and the far end drops the packet
(docs/performance.md, "What was wrong", 2). The hop is a veth pair with both ends on the bridge
(kubevpc.planning.with_csum_hops); Open vSwitch sends into one end, whose TX checksum offload is off
(topologies/hops.py), so the kernel completes the checksum (and cuts a TSO packet into segments)
on the way out, and the packet comes back in by the other end, correct, to be NATed and tunnelled.

Which packets. Exactly those of a pod on this node (reg0 1) that are NATed here and then leave by
the tunnel, the rest untouched:

- a new connection to a Service entry whose chosen endpoint is on another node: table 27 knows
  the endpoint (the select group loaded it into reg2) before it commits the DNAT, and sends the
  packet into the hop instead; back from the hop (in_port the hop's, FLAG_CSUM_DONE), the packet
  is balanced again (the group's hash of the same 5-tuple picks the same endpoint; any it picks is
  fine, the checksum being complete), and committed with CTM_HOP in its ct_mark;
- a connection to a local pod from beyond a tunnel (a NodePort or external IP of this node): table
  27 commits it with CTM_HOP, so the pod's replies, un-DNATed (and un-SNATed) here and tunnelled
  back, take the hop;
- later packets of both: a pod's packet is looked up in the node's zone without NAT first (table 15
  to table 19, in place of table 20's lookup with NAT), and one of a CTM_HOP connection goes into
  the hop; other Service connections are looked up again with their NAT, everything else goes on
  to table 21 as before (no NAT to apply), so plain pod traffic, on one node or across nodes, never
  takes the hop and costs no extra conntrack pass;
- replies to a masqueraded connection (addressed to the node at a SNAT port) are looked up in the
  SNAT zone without NAT first (table 15 to table 16): table 28 copied CTM_HOP into the SNAT zone's
  mark, so they take the hop before their un-SNAT.

A packet back from the hop carries FLAG_CSUM_DONE and comes in at the hop's port, and no flow sends
such a packet into the hop: it takes the path it would have taken without the hop, once.
"""
from __future__ import annotations

from kubevpc.planning import OFPORT_NODE_HOP_IN, OFPORT_NODE_HOP_OUT, SNAT_PORTS, BridgePlan, NodePlan, Plan

from .flows import ETH_IP, IPPROTO, Ct, Flow, Goto, Nat, Output, SetField, flow, port_masks
from .pipeline import (CTM_HOP, CTM_MASQ, CTM_SERVICE, FLAG_CSUM_DONE, NODE, REG_FLAGS, REG_SRC, SRC_POD,
                       SRC_TUNNEL)
from .services import Entry, endpoint_commit, endpoint_match, entries, snat_zone

_IP = {"eth_type": ETH_IP}
_HOP = {"ct_mark": (CTM_HOP, CTM_HOP)}
_TODO = {REG_SRC: SRC_POD, REG_FLAGS: (0, FLAG_CSUM_DONE)}     # a pod's packet, not yet through the hop
INTO_HOP = Output(OFPORT_NODE_HOP_OUT)


def has_hop(bridge: BridgePlan) -> bool:
    """Does this node bridge have the checksum hop (its plan gave it the two ports)?"""
    return any(p.kind == "hop" for p in bridge.ports)


def csum_hop_flows(plan: Plan, node: NodePlan, bridge: BridgePlan) -> list[Flow]:
    """Every flow of the checksum hop on this node's bridge; none without one (the plan of every
    run without KUBEVPC_VXLAN_CSUM_HOP, and of every mode but vxlan)."""
    if not has_hop(bridge):
        return []
    return [*_classify(), *_before_nat(node, bridge.zone), *_endpoint_flows(plan, node, bridge.zone),
            *_masquerade(node, bridge.zone)]


def _classify() -> list[Flow]:
    """Table 0: what comes back from the hop is a pod's packet again, its checksum complete."""
    return [flow(NODE.table("classify"), 200, {"in_port": OFPORT_NODE_HOP_IN, **_IP},
                 [SetField(REG_SRC, SRC_POD), SetField(REG_FLAGS, FLAG_CSUM_DONE), Goto(NODE.table("unsnat"))], "hop",
                 note="back from the checksum hop: a pod's packet, its checksum complete; it does not go round again")]


def _before_nat(node: NodePlan, zone: int) -> list[Flow]:
    """Tables 15, 16 and 19: a pod's packet looked up without NAT first; into the hop when its
    connection is marked, else NATed as before (16 on to 20, 19 on to 21)."""
    t_unsnat, t_hop_unsnat, t_ct, t_hop, t_svc = (NODE.table(n) for n in (
        "unsnat", "hop_unsnat", "conntrack", "hop", "service"))
    look = [Ct(snat_zone(zone), table=t_hop_unsnat)]
    m = {**_IP, **_TODO, "ipv4_dst": node.ip}
    out = [flow(t_unsnat, 105, {**m, "ip_proto": IPPROTO["icmp"]}, look, "hop",
                note="a pod's ICMP to the node: the SNAT zone without NAT first, for the checksum hop")]
    out += [flow(t_unsnat, 105, {**m, "ip_proto": IPPROTO[proto], f"{proto}_dst": block}, look, "hop",
                 note=f"a pod's packet to the node's SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}: the SNAT zone "
                      "without NAT first, for the checksum hop")
            for proto in ("tcp", "udp") for block in port_masks(*SNAT_PORTS)]
    return out + [
        flow(t_hop_unsnat, 100, {**_IP, **_HOP}, [INTO_HOP], "hop",
             note="the reply of a masqueraded connection whose client is beyond a tunnel: into the checksum hop "
                  "before its un-SNAT"),
        flow(t_hop_unsnat, 0, _IP, [Ct(snat_zone(zone), table=t_ct, nat=Nat())], "hop",
             note="no hop (the node's zone marks the connection as this zone does): un-SNAT, as table 15 does"),
        flow(t_unsnat, 10, {**_IP, **_TODO}, [Ct(zone, table=t_hop)], "hop",
             note="a pod's other packets: the node's zone without NAT first (table 19 instead of 20), so that the "
                  "checksum hop can come before any NAT"),
        flow(t_hop, 100, {**_IP, **_HOP}, [INTO_HOP], "hop",
             note="a connection NATed here and tunnelled: into the checksum hop before its NAT"),
        flow(t_hop, 90, {**_IP, "ct_mark": (CTM_SERVICE, CTM_SERVICE)}, [Ct(zone, table=t_svc, nat=Nat())], "hop",
             note="another Service connection: conntrack again, with its DNAT or its reverse"),
        flow(t_hop, 0, None, [Goto(t_svc)], "hop", note="no NAT to apply (no Service, or new): on, as table 20 does")]


def _endpoint_flows(plan: Plan, node: NodePlan, zone: int) -> list[Flow]:
    """Table 27, above each entry's endpoint flows: a local pod's new connection to an endpoint on
    another node goes into the hop first, and is committed with CTM_HOP when it comes back; a
    connection from beyond a tunnel to a local pod is committed with CTM_HOP, for its replies."""
    t_ep = NODE.table("endpoint")
    local = {p.ip for p in plan.own_pods if p.node == node.name}
    out = []
    for e in entries(plan, node):
        if e.family != 4 or e.refuse:
            continue
        for ep in e.endpoints:
            if ep.ip == node.ip:            # a host-network pod here: its replies are the node's own
                continue
            em, mark = endpoint_match(e, ep), endpoint_commit(e, ep, zone, e.masquerade, CTM_HOP)
            if ep.ip in local and _takes(e, SRC_TUNNEL):
                out.append(flow(t_ep, 105, {**em, REG_SRC: SRC_TUNNEL}, mark, "hop", e.id,
                                f"{e.name}: {ep.pod} for a client beyond a tunnel: marked, so that its replies take "
                                "the checksum hop"))
            elif ep.ip not in local and _takes(e, SRC_POD):
                out += [flow(t_ep, 106, {**em, REG_SRC: SRC_POD, "in_port": OFPORT_NODE_HOP_IN}, mark, "hop", e.id,
                             f"{e.name}: back from the checksum hop: DNAT to {ep.pod} on another node, marked"),
                        flow(t_ep, 105, {**em, REG_SRC: SRC_POD}, [INTO_HOP], "hop", e.id,
                             f"{e.name}: a pod to {ep.pod} on another node: into the checksum hop before the DNAT")]
    return out


def _takes(e: Entry, src: int) -> bool:
    """Can entry `e` receive a new connection from `src`? From a tunnel only at this node's own
    addresses (a NodePort, an external IP): a pod's ClusterIP or VIP connection is balanced on its
    own node, before the tunnel."""
    if src == SRC_TUNNEL and e.kind not in ("node-port", "external-ip"):
        return False
    return not e.sources or src in e.sources


def _masquerade(node: NodePlan, zone: int) -> list[Flow]:
    """Table 28: a marked connection's SNAT carries the mark into the SNAT zone, where table 16 reads it."""
    return [flow(NODE.table("masquerade"), 105, {**_IP, **_HOP},
                 [Ct(snat_zone(zone), commit=True, table=NODE.table("commit"), mark=CTM_SERVICE | CTM_MASQ | CTM_HOP,
                     nat=Nat("src", node.ip, *SNAT_PORTS))], "hop",
                 note="masquerade a connection marked for the checksum hop: the mark goes into the SNAT zone too")]
