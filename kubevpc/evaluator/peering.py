"""A connection between two VPCs joined by a peering connection, from Alibaba's documented
behaviour (https://www.alibabacloud.com/help/en/vpc/vpc-peer-to-peer-connection): VPCs are isolated
unless peered; a peering carries only what a route of each side sends to it ("configure a route in
each VPC that points to the peer VPC"), so a route on one side alone carries nothing; it is not
transitive; and security groups still decide ("update security groups ... to permit inbound
traffic from the peer VPC"), the peer's instances matched by CIDR rules: a group's members are
addresses of its own VPC.

The source's packets are routed by the route table of its vSwitch, those that arrive over the
peering by the system table of the other VPC, and the replies by the table of the destination's
vSwitch. Pods leave as their nodes in vxlan and vpc-route modes (flannel masquerades what leaves
the pod network for outside the VPC), as they do for the internet."""
from __future__ import annotations

from ..planning import HostPlan, PeeringPlan, Plan
from .northsouth import leaving_address
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, best_route, in_cidr, route_step, security_groups, table_label, table_routes, vpc_of


def across_peering(plan: Plan, peering: PeeringPlan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """Should a connection from src to dst:port/proto, in the two VPCs of `peering`, succeed?"""
    here, there = (next(v for v in plan.vpcs if v.name == vpc_of(plan, h)) for h in (src, dst))
    src_ip, steps = leaving_address(plan, src)
    steps = [Step("VPC", f"{src.key} is in {here.name}, {dst.key} in {there.name}: peered by {peering.name}"), *steps]
    if not in_cidr(dst.ip, there.cidr):
        reason = (f"{dst.ip} is outside {there.name}'s CIDR {there.cidr} (a pod address): peering connection "
                  f"{peering.name} carries only addresses of the peer VPC")
        return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    out = _through(plan, here, src_ip, dst.ip, peering)
    steps.append(out)
    if out.passes is False:
        return Verdict(False, out.text, steps=tuple(steps))
    steps += [Step("peering", f"peering connection {peering.name} hands it to {there.name}, whose system route "
                              "table routes what comes from a peering"),
              route_step(plan, there.name, src_ip, dst.ip)]
    v = security_groups(plan, Wire(src_ip, dst.ip, proto, port), attachment_of(plan, src_ip), attachment_of(plan, dst.ip))
    steps += v.steps
    if not v.allowed:
        return Verdict(False, v.reason, steps=tuple(steps))
    back = _through(plan, there, dst.ip, src_ip, peering)
    steps.append(Step("route", f"replies: {back.text}", back.passes))
    if back.passes is False:
        return Verdict(False, f"replies: {back.text}", steps=tuple(steps))
    return Verdict(True, f"through peering connection {peering.name}; {v.reason}", src_ip, tuple(steps))


def _through(plan: Plan, vpc, from_ip: str, to_ip: str, peering: PeeringPlan) -> Step:
    """The route a packet from from_ip to to_ip takes at `vpc`'s vRouter: the peering's, or it
    stops (no entry, or a route elsewhere: a route on the other side alone carries nothing)."""
    name, routes = table_routes(plan, vpc, from_ip)
    label = table_label(vpc, name)
    route = best_route(vpc, to_ip, routes)
    if route is not None and route.kind == "peering" and route.next_hop == peering.name:
        return Step("route", f"{label}: route to peering connection {route.destination} -> {peering.name}", True)
    found = "no entry for it" if route is None else \
        f"route {route.destination} sends it to {route.next_hop or route.description}"
    return Step("route", f"{label} has no route to {to_ip} through peering connection {peering.name} ({found}): "
                         "dropped; a peering connection carries nothing without routes on both sides", False)
