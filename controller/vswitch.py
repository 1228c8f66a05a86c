"""A vSwitch's switching: classify, the ARP responder, conntrack, l2 and output. Its SLB listeners
are in controller/slb.py, its security groups in controller/secgroup.py."""
from __future__ import annotations

from kubevpc.planning import OFPORT_VROUTER_ON_VSWITCH, BridgePlan, Plan

from .flows import (CT_TRK, ETH_ARP, ETH_IP, Ct, Flow, Goto, Nat, Output, OutputReg, Resubmit, SetField,
                    arp_responder, ct_state, flow)
from .pipeline import REG_OUT, VSWITCH


def switching_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """Classify (with the nodes' patch ports and untracked ICMP time exceeded), ARP and conntrack."""
    t_arp, t_ct, t_l2, t_out = (VSWITCH.table(n) for n in ("arp", "conntrack", "l2", "output"))
    vsw = plan.vswitch(bridge.owner)
    out = [flow(0, 100, {"eth_type": ETH_ARP}, [Goto(t_arp)], note="ARP to the responder"),
           flow(0, 100, {"eth_type": ETH_IP}, [Goto(t_ct)], note="IPv4 to conntrack"),
           flow(0, 0, None, [], note="no IPv6 or other protocols")]
    # ICMP time exceeded is made by the controller and sent as a packet-out, and OVS does not
    # recirculate a packet-out through conntrack; the cloud's own ICMP errors bypass it
    icmp11 = {"eth_type": ETH_IP, "ip_proto": 1, "icmpv4_type": 11}
    out += [flow(0, 110, {**icmp11, "in_port": OFPORT_VROUTER_ON_VSWITCH}, [Goto(t_l2)],
                 note="ICMP time exceeded from the vRouter (traceroute): not tracked"),
            flow(VSWITCH.table("sg_ingress"), 3100, {"eth_type": ETH_IP, "ct_state": ct_state(0, CT_TRK)},
                 [Goto(t_out)], "secgroup", note="untracked: only ICMP time exceeded from a router")]
    for node in plan.nodes:
        for up in node.uplinks:
            if up.vswitch != vsw.name:
                continue
            out.append(flow(0, 300, {"in_port": up.vswitch_patch_ofport},
                            [SetField("in_port", up.vswitch_ofport), Resubmit(0)], "uplink",
                            note=f"node {node.name}'s patch port: as if from its uplink (port {up.vswitch_ofport})"))
            if node.gateway:
                out.append(flow(0, 110, {**icmp11, "in_port": up.vswitch_ofport, "ipv4_src": node.gateway},
                                [Goto(t_l2)], note=f"ICMP time exceeded from node {node.name}'s pod gateway: not tracked"))
    out.append(arp_responder(t_arp, vsw.gateway, vsw.gateway_mac, note=f"{vsw.name} gateway (the vRouter)"))
    # hosts only: a route's destination (even a /32, such as an external IP routed to a node) is
    # reached through the gateway, never by ARP on the vSwitch
    out += [arp_responder(t_arp, a.ip, a.mac, note=f"{a.owner}") for a in _attachments(plan, vsw.name)
            if "/" not in a.ip]
    out += [flow(t_arp, 0, None, [], "arp", note="the cloud answers every ARP itself; nothing is flooded"),
            flow(t_ct, 100, {"eth_type": ETH_IP}, [Ct(bridge.zone, table=VSWITCH.table("slb"), nat=Nat())],
                 note="track connections for the stateful security groups and the SLBs")]
    return out


def l2_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """l2 (destination MAC to the output port in reg1) and output."""
    t_l2, t_in, t_out = VSWITCH.table("l2"), VSWITCH.table("sg_ingress"), VSWITCH.table("output")
    vsw = plan.vswitch(bridge.owner)
    seen_macs = {}
    for a in _attachments(plan, vsw.name):
        seen_macs.setdefault(a.mac, a)
    out = [flow(t_l2, 100, {"eth_dst": vsw.gateway_mac}, [SetField(REG_OUT, OFPORT_VROUTER_ON_VSWITCH), Goto(t_in)],
                "l2", note="to the gateway: the vRouter")]
    out += [flow(t_l2, 100, {"eth_dst": mac}, [SetField(REG_OUT, a.ofport), Goto(t_in)], "l2",
                 note=f"{a.owner} behind port {a.ofport}") for mac, a in seen_macs.items()]
    out += [flow(t_l2, 0, None, [], "l2", note="unknown MAC: dropped"),
            flow(t_out, 0, None, [OutputReg(1)], "l2", note="output to the port chosen in l2")]
    return out + _hairpin_flows(plan, vsw.name)


def _hairpin_flows(plan: Plan, vswitch: str) -> list[Flow]:
    """Back down the uplink a packet came up: between a pod on an exclusive ENI (PodNetworking
    eniType ENI) and another pod of its node, two ENIs of one ECS instance, which kubevpc puts
    behind one uplink. Open vSwitch drops an output to the port a packet came in by, unless it is
    IN_PORT. Only on uplinks of nodes with such a pod on this vSwitch, so the flows of other
    scenarios do not change."""
    nodes = {p.node for p in plan.own_pods if p.exclusive_eni and p.vswitch == vswitch}
    ports = sorted({u.vswitch_ofport for n in plan.nodes if n.name in nodes for u in n.uplinks if u.vswitch == vswitch})
    return [flow(VSWITCH.table("output"), 10, {"in_port": port, REG_OUT: port}, [Output("in_port")], "l2",
                 note=f"from node uplink {port} to an ENI behind it (an exclusive ENI's pod on its node): "
                      "back out IN_PORT") for port in ports]


def _attachments(plan: Plan, vswitch: str) -> list:
    return [a for a in plan.attachments if a.vswitch == vswitch]
