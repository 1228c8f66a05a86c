"""Connections to a VPC's DNS resolver (100.100.2.136 and .138). Written from Alibaba Cloud's
documentation, independently of controller/resolver.py: every address of a VPC reaches the VPC's
DNS servers without NAT, EIP or route ("DHCP options sets": they are every instance's default DNS
servers), and they serve DNS (53/udp, 53/tcp) and nothing else. The same two addresses exist in
every VPC, each VPC's own. The source's egress security groups apply on the way, as for any
packet leaving an ENI; NetworkPolicy egress of a pod applies on top (kubevpc.evaluator.reach).
"""
from __future__ import annotations

from ..planning import HostPlan, Plan
from .northsouth import leaving
from .verdict import Step, Verdict
from .vpc import vpc_of

DNS_PORT = 53


def reach_resolver(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """A connection from `src` to `dst` where one of them is a VPC's resolver."""
    if src.kind == "resolver":
        reason = f"{src.key} is the VPC's DNS: it answers queries and opens no connection"
        return Verdict(False, reason, steps=(Step("resolver", reason, False),))
    if src.kind == "internet":
        reason = f"{dst.ip} is a VPC's own DNS address: the internet does not route it"
        return Verdict(False, reason, steps=(Step("internet", reason, False),))
    vpc = vpc_of(plan, src)
    own = plan.resolver(vpc)
    steps: list[Step] = []
    if own is None:
        reason = f"VPC {vpc} has no DNS resolver in this scenario (there is one per VPC with cloud.internet)"
        return Verdict(False, reason, steps=(Step("resolver", reason, False),))
    if own.key != dst.key:
        steps.append(Step("resolver", f"{dst.ip} is every VPC's DNS address: from {vpc} it is {own.key}"))
    ip, more, refused = leaving(plan, src, dst, port, proto)
    if refused is not None:
        return Verdict(False, refused.reason, steps=(*steps, *refused.steps))
    steps += more
    if port != DNS_PORT or proto not in ("udp", "tcp"):
        reason = (f"the VPC's DNS at {dst.ip} answers DNS only (53/udp and 53/tcp): the vRouter drops {port}/{proto} "
                  "to it, and the connection times out")
        return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    steps.append(Step("route", f"vRouter of {vpc}: {dst.ip} is the VPC's DNS, reached from any address of the VPC "
                               "whatever the route table says, without NAT", True))
    return Verdict(True, f"the VPC's DNS resolver {own.key} answers {port}/{proto}", ip, tuple(steps))
