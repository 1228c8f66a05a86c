"""Connections between hosts of one node, in both families: the node bridge switches them and no
security group is on the way, unless one of two pods has an exclusive ENI.

Terway (pkg/apis/network.alibabacloud.com/v1beta1, ENIOptions): a PodNetworking's eniOptions.eniType
is Default, ENI or Trunk. A pod with eniType ENI holds an exclusive (secondary) ENI, moved into its
own namespace with its default route through the vSwitch gateway; only the node and Services go
through a veth to the node (plugin/datapath/exclusive_eni_linux.go). What it sends to another pod
of its node therefore leaves through its ENI, and the other pod's replies come back to that ENI:
the packets cross the vSwitch, where both pods' security groups apply, as between nodes. A pod on a
shared ENI (Default) or a trunk member ENI (Trunk) is reached through the node, whose rule `to <pod
IP> lookup main` delivers traffic between pods of the node there (plugin/datapath/
policy_router_linux.go); ACK lists among the limitations of trunk ENIs that "Pod security group
rules do not apply to traffic between pods on the same node", nor to traffic between a node and
its pods ("Configure a static IP address, a separate vSwitch, and a separate security group for
each pod"). A
Service's connection is kube-proxy's on the node whatever the ENIs (an exclusive ENI's pod reaches
the Service network through its veth).
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


def switched(src: HostPlan, dst: HostPlan, seen: str, family: int = 4) -> Verdict:
    """The node bridge delivers it: no security group on the way."""
    text = (f"both on node {src.node}: its bridge switches the {'IPv6 ' if family == 6 else ''}packet; "
            "security groups are not on this path")
    trunk = [h.key for h in (src, dst) if h.kind == "pod" and h.eni_type == "Trunk"]
    if trunk and src.key != dst.key:
        text += (f" ({', '.join(trunk)} on a trunk member ENI: Terway's node routes traffic between its pods "
                 "itself, and ACK applies no pod security group to it)")
    return Verdict(True, "on the same node: switched by the node bridge, no security group", seen,
                   (Step("node bridge", text, True),))


def through(v: Verdict, src: HostPlan, dst: HostPlan) -> Verdict:
    """A verdict of the VPC's (routes and security groups) for two pods of one node, one of them on
    an exclusive ENI, with the reason its packets left the node first."""
    which = " and ".join(h.key for h in (src, dst) if h.exclusive_eni)
    step = Step("node bridge", f"{which} on an exclusive ENI (PodNetworking eniType ENI): the packets between "
                               f"{src.key} and {dst.key}, both on node {src.node}, leave through the ENI to the "
                               "vSwitch and come back, so the security groups apply as between nodes")
    return Verdict(v.allowed, f"exclusive ENI, through the vSwitch: {v.reason}", v.seen_source, (step, *v.steps))
