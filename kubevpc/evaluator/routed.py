"""Connections to an address that nothing in the scenario holds but a custom route sends to an ECS
instance (Alibaba Cloud: a route entry whose next hop is an ECS instance, such as a self-managed
gateway or firewall; "Route table overview",
https://www.alibabacloud.com/help/en/vpc/user-guide/route-table-overview). The vRouter routes the
packet by the table of the vSwitch it leaves from: an ECS instance's, a node's, and in eni mode a
pod's own pod vSwitch (Terway pods hold addresses of their vSwitch, so that vSwitch's route table
routes them, as it routes an instance there), not their node's. The next hop's security groups
apply (what a route sends to an instance sits behind its ENI).

The network's part ends at the next hop's ENI: the instance does not hold the address, and a
scenario has no network behind an instance, so nothing answers and the connection times out (an
instance namespace that forwards, as the machine's own ip_forward may make it, hands the packet
back to its vSwitch's table, which routes it no further). The chain says so in a `destination`
step that does not pass (as for a host where nothing listens), so a trace that delivers the
packet to the next hop agrees with it."""
from __future__ import annotations

import ipaddress

from ..planning import HostPlan, Plan, Route, VpcPlan
from .northsouth import leaving_address
from .reach import with_policy
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, best_route, in_cidr, security_groups, table_label, table_routes, vpc_of


def routed_vpc(plan: Plan, ip: str) -> VpcPlan | None:
    """The VPC one of whose route tables sends `ip` to an ECS instance by a custom route (and
    nothing of the scenario holds it: the caller's to know), else None."""
    if ":" in ip:
        return None
    return next((v for v in plan.vpcs for t in (v.routes, *(rt.routes for rt in v.route_tables))
                 for r in t if r.kind == "custom" and in_cidr(ip, r.destination)), None)


def reach_routed(plan: Plan, src: HostPlan, ip: str, port: int, proto: str) -> Verdict:
    """A connection from src to ip:port/proto, an address behind a custom route of `routed_vpc`."""
    vpc = routed_vpc(plan, ip)
    src = plan.network_host(src)
    if src.kind in ("internet", "resolver") or vpc_of(plan, src) != vpc.name:
        reason = (f"{ip} is behind a custom route of {vpc.name}, which only {vpc.name}'s own vSwitches route by "
                  f"(a peering connection carries only the peer VPC's CIDR; the internet reaches no private address)")
        return Verdict(False, reason, steps=(Step("route", reason, False),))
    src_ip, steps = _leaving(plan, src, ip)
    name, routes = table_routes(plan, vpc, src_ip)
    label = table_label(vpc, name)
    route = best_route(vpc, ip, routes)
    if route is None or route.kind != "custom":
        reason = f"{label}: no entry for {ip}: dropped" if route is None else \
            f"{label}: {_kind(route)} {route.destination} -> {route.next_hop or route.description}: not to an ECS instance"
        return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    hop = plan.host(f"ecs/{route.next_hop}")
    steps.append(Step("route", f"{label}: custom route {route.destination} -> {route.next_hop}: to its ENI on "
                               f"vSwitch {hop.vswitch}"))
    behind = next(a for a in plan.attachments if a.owner == f"route/{route.destination}" and a.mac == hop.mac)
    v = security_groups(plan, Wire(src_ip, ip, proto, port), attachment_of(plan, src_ip), behind)
    steps += v.steps
    if not v.allowed:
        return Verdict(False, v.reason, steps=tuple(steps))
    v = with_policy(plan, Verdict(True, v.reason, src_ip, tuple(steps)), src, _pseudo(hop, ip), port, proto)
    if not v.allowed:
        return v
    reason = (f"{label} sends it to {route.next_hop} (custom route {route.destination}), which receives it on its "
              f"ENI but does not hold {ip}: nothing answers")
    return Verdict(False, reason, steps=(*v.steps, Step(
        "destination", f"{route.next_hop} does not hold {ip}, and the scenario has no network behind it: "
                       "nothing answers, the connection times out", False)))


def _leaving(plan: Plan, src: HostPlan, ip: str) -> tuple[str, list[Step]]:
    """The source address the vRouter sees: a pod's own in eni mode, and in vpc-route mode to the
    VPC or the pods' CIDRs (not masqueraded there); its node's otherwise (flannel's ip-masq)."""
    mode = plan.cluster.mode if plan.cluster else ""
    if src.kind == "pod" and mode == "vpc-route":
        vpc = next(v for v in plan.vpcs if v.name == plan.cluster.vpc)
        if any(in_cidr(ip, c) for c in (vpc.cidr, *plan.cluster.pod_cidrs)):
            return src.ip, []
    ip_out, steps = leaving_address(plan, src)
    return ip_out, list(steps)


def _kind(route: Route) -> str:
    return {"system": "system route", "pod": "pod route (vpc-route mode)", "natgw": "route to NAT gateway",
            "peering": "route to peering connection"}.get(route.kind, "custom route")


def _pseudo(hop: HostPlan, ip: str) -> HostPlan:
    """What NetworkPolicy sees of the address: an address outside the cluster (ipBlock rules)."""
    return hop.model_copy(update={"ip": str(ipaddress.IPv4Address(ip)), "namespace": "", "node": "", "servers": ()})
