"""Connections between hosts of one node, in both families: the node bridge switches them (routes
them, in eni mode, between two vSwitches) and no security group is on the way, unless one of two
pods has an exclusive ENI.

Terway (pkg/apis/network.alibabacloud.com/v1beta1, ENIOptions): a PodNetworking's eniOptions.eniType
is Default, ENI or Trunk. A pod with eniType ENI holds an exclusive (secondary) ENI, moved into its
own namespace with its default route through the vSwitch gateway; only the node and Services go
through a veth to the node (plugin/datapath/exclusive_eni_linux.go). What it sends to another pod
of its node therefore leaves through its ENI, and the other pod's replies come back to that ENI:
the packets cross the vSwitch, where both pods' security groups apply, as between nodes. A pod on a
shared ENI (Default) or a trunk member ENI (Trunk) is reached through the node, whose rule `to <pod
IP> lookup main` (priority 512, ahead of the pod's `from <pod IP> lookup <its ENI's table>` at 2048)
delivers traffic between pods of the node there, whichever vSwitch each pod's address is from
(plugin/datapath/policy_router_linux.go, consts_linux.go); ACK lists among the limitations of trunk
ENIs that "Pod security group rules do not apply to traffic between pods on the same node", nor to
traffic between a node and its pods ("Configure a static IP address, a separate vSwitch, and a
separate security group for each pod"). A Service's connection is kube-proxy's on the node whatever
the ENIs (an exclusive ENI's pod reaches the Service network through its veth).
"""
from __future__ import annotations

from ..planning import HostPlan
from .verdict import Step, Verdict


def on_one_node(src: HostPlan, dst: HostPlan) -> bool:
    """Both on one node, and a pod at one end at least (network hosts: a host-network pod is its node)."""
    return bool(src.node) and src.node == dst.node and (src.kind == "pod" or dst.kind == "pod")


def through_the_vswitch(src: HostPlan, dst: HostPlan, service: bool = False) -> bool:
    """Does a connection between two hosts of one node leave it: two pods, either on an exclusive
    ENI, and not a Service's connection (the node's kube-proxy takes that one)?"""
    return (not service and src.kind == dst.kind == "pod" and src.key != dst.key
            and (src.exclusive_eni or dst.exclusive_eni))


def routed_on_the_node(src: HostPlan, dst: HostPlan) -> bool:
    """eni: two hosts of one node on different vSwitches (a pod and its node, or pods of two pod
    vSwitches). Each sends to its gateway, and the node routes the packet to the other itself
    (Terway's host route: the rule `to <pod IP> lookup main` and the route `<pod IP> dev <its
    veth>`), one hop: the TTL is decremented. In vxlan and vpc-route modes pods have no vSwitch."""
    return bool(src.vswitch and dst.vswitch) and src.vswitch != dst.vswitch and src.key != dst.key


def switched(src: HostPlan, dst: HostPlan, seen: str, family: int = 4) -> Verdict:
    """The node bridge delivers it, switched or (between vSwitches) routed: no security group on the way."""
    v6 = "IPv6 " if family == 6 else ""
    if routed_on_the_node(src, dst):
        text = (f"both on node {src.node}, {src.key} on {src.vswitch} and {dst.key} on {dst.vswitch}: the node "
                f"routes the {v6}packet itself (Terway's host route `to {dst.ipv6 if family == 6 else dst.ip} lookup "
                f"main`), {'hop limit' if family == 6 else 'TTL'} decremented, and it never reaches the vSwitch; "
                "security groups are not on this path")
        reason = "on the same node: routed on the node (Terway's host route), no security group"
    else:
        text = f"both on node {src.node}: its bridge switches the {v6}packet; security groups are not on this path"
        reason = "on the same node: switched by the node bridge, no security group"
    trunk = [h.key for h in (src, dst) if h.kind == "pod" and h.eni_type == "Trunk"]
    if trunk and src.key != dst.key:
        text += (f" ({', '.join(trunk)} on a trunk member ENI: Terway's node routes traffic between its pods "
                 "itself, and ACK applies no pod security group to it)")
    return Verdict(True, reason, seen, (Step("node bridge", text, True),))


def through(v: Verdict, src: HostPlan, dst: HostPlan) -> Verdict:
    """A verdict of the VPC's (routes and security groups) for two pods of one node, one of them on
    an exclusive ENI, with the reason its packets left the node first."""
    which = " and ".join(h.key for h in (src, dst) if h.exclusive_eni)
    step = Step("node bridge", f"{which} on an exclusive ENI (PodNetworking eniType ENI): the packets between "
                               f"{src.key} and {dst.key}, both on node {src.node}, leave through the ENI to the "
                               "vSwitch and come back, so the security groups apply as between nodes")
    return Verdict(v.allowed, f"exclusive ENI, through the vSwitch: {v.reason}", v.seen_source, (step, *v.steps))
