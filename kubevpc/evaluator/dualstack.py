"""IPv6 connections of a dual-stack scenario (eni mode), decided by the same rules as IPv4: the
VPC (both ends in one VPC, each with an IPv6 address), the route table (a system route per
vSwitch /64), the security groups (ipv6Cidr rules, and members of a group in both families), and
the node bridge for pods on one node. What kubevpc does not carry in IPv6 is said, not guessed:
the emulated internet is IPv4 only, and NetworkPolicy is enforced on IPv4 only, so a pod any
policy selects gets no IPv6 at all (fails closed; controller/ipv6.py drops it the same way)."""
from __future__ import annotations

from ..planning import HostPlan, Plan
from .netpol import selects
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, route_step, security_groups, vpc_of


def reach6(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """Should an IPv6 connection from src to dst's IPv6 address, port/proto, succeed? src and dst
    are network hosts (a host-network pod is its node)."""
    def no(reason: str, stage: str = "IPv6") -> Verdict:
        return Verdict(False, reason, steps=(Step(stage, reason, False),))
    if src.kind == "internet" or dst.kind == "internet":
        return no("the emulated internet is IPv4 only: no IPv6 leaves or enters a VPC")
    for h in (src, dst):
        if not h.ipv6:
            return no(f"{h.key} has no IPv6 address (" + (
                "not a dual-stack cluster, or its vSwitch has no ipv6Cidr)" if h.kind == "pod" else
                "its vSwitch has no ipv6Cidr)"))
    if vpc_of(plan, src) != vpc_of(plan, dst):
        return no(f"{src.key} and {dst.key} are in different VPCs, which are not peered", "VPC")
    fenced = next((h for h in (src, dst) if h.kind == "pod" and any(selects(p, h) for p in plan.network_policies)), None)
    if fenced is not None:
        return no(f"{fenced.key} is selected by a NetworkPolicy, which kubevpc enforces on IPv4 only: it gets no "
                  "IPv6 at all (fails closed)", "NetworkPolicy")
    if src.key == dst.key:
        return Verdict(True, "to itself", src.ipv6, (Step("host", "to itself, inside its namespace", True),))
    if src.node and src.node == dst.node and (src.kind == "pod" or dst.kind == "pod"):
        return Verdict(True, "on the same node: switched by the node bridge, no security group", src.ipv6, (
            Step("node bridge", f"both on node {src.node}: its bridge switches the IPv6 packet; security groups "
                                "are not on this path", True),))
    wire = Wire(src.ipv6, dst.ipv6, proto, port)
    v = security_groups(plan, wire, attachment_of(plan, src.ipv6), attachment_of(plan, dst.ipv6))
    steps = (route_step(plan, vpc_of(plan, dst), src.ipv6, dst.ipv6), *v.steps)
    return Verdict(v.allowed, v.reason, src.ipv6 if v.allowed else "", steps)


def address(h: HostPlan, family: int) -> str:
    """A host's address in `family` (4 or 6); "" when it has none in that family."""
    return h.ipv6 if family == 6 else h.ip
