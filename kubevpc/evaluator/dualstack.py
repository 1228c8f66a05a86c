"""IPv6 connections of a dual-stack scenario (eni mode), decided by the same rules as IPv4: the
VPC (both ends in one VPC, each with an IPv6 address), the route table (a system route per
vSwitch /64), the security groups (ipv6Cidr rules, and members of a group in both families), and
the node bridge for pods on one node. What kubevpc does not carry in IPv6 is said, not guessed:
the emulated internet is IPv4 only. NetworkPolicy holds in IPv6 by the same rules as in IPv4
(kubevpc.evaluator.netpol, over the hosts' IPv6 addresses): selectors select pods whatever the
family, an ipBlock matches addresses of its own family only."""
from __future__ import annotations

from ..planning import HostPlan, Plan
from .netpol import evaluate
from .samenode import on_one_node, switched, through, through_the_vswitch
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, route_step, security_groups, vpc_of


def reach6(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str, service: bool = False) -> Verdict:
    """Should an IPv6 connection from src to dst's IPv6 address, port/proto, succeed? src and dst
    are network hosts (a host-network pod is its node). `service`: a Service's connection DNATed
    to dst (kubevpc.evaluator.samenode)."""
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
    return with_policy6(plan, _network6(plan, src, dst, port, proto, service), src, dst, port, proto)


def with_policy6(plan: Plan, v: Verdict, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """An IPv6 network verdict with NetworkPolicy's on top, where a pod is involved."""
    src, dst = plan.network_host(src), plan.network_host(dst)
    if not v.allowed or not plan.network_policies or not (src.kind == "pod" or dst.kind == "pod"):
        return v
    p = policy6(plan, src, dst, port, proto)
    if not p.allowed:
        return Verdict(False, f"NetworkPolicy: {p.reason}", steps=v.steps + p.steps)
    return Verdict(True, f"{v.reason}; {p.reason}", v.seen_source, v.steps + p.steps)


def policy6(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """NetworkPolicy on an IPv6 connection: the evaluator's rules over the hosts' IPv6 addresses
    (anything but a pod is only an address to NetworkPolicy)."""
    def view(h: HostPlan) -> HostPlan:
        return h.model_copy(update={"ip": h.ipv6, **({} if h.kind == "pod" else {"namespace": ""})})
    return evaluate(plan.network_policies, plan.namespaces, view(src), view(dst), port, proto)


def _network6(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str, service: bool = False) -> Verdict:
    """The network's part of an IPv6 connection between two hosts of one VPC with IPv6 addresses."""
    if src.key == dst.key:
        return Verdict(True, "to itself", src.ipv6, (Step("host", "to itself, inside its namespace", True),))
    if on_one_node(src, dst) and not through_the_vswitch(src, dst, service):
        return switched(src, dst, src.ipv6, 6)
    v = _vpc6(plan, src, dst, port, proto)
    return through(v, src, dst) if on_one_node(src, dst) else v


def _vpc6(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """Through the VPC: the route to dst's /64 and the security groups of both ends."""
    wire = Wire(src.ipv6, dst.ipv6, proto, port)
    v = security_groups(plan, wire, attachment_of(plan, src.ipv6), attachment_of(plan, dst.ipv6))
    steps = (route_step(plan, vpc_of(plan, dst), src.ipv6, dst.ipv6), *v.steps)
    return Verdict(v.allowed, v.reason, src.ipv6 if v.allowed else "", steps)


def address(h: HostPlan, family: int) -> str:
    """A host's address in `family` (4 or 6); "" when it has none in that family."""
    return h.ipv6 if family == 6 else h.ip
