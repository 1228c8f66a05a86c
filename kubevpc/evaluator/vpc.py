"""The VPC's part of the evaluator: which attachment holds an address, the security groups (egress
of the source, ingress of the destination, the winning rule by priority) and the route table.
Written from the cloud's documented security group semantics, independently of the flows that
controller/compile.py makes of the same groups."""
from __future__ import annotations

import functools
import ipaddress

from ..planning import Attachment, GroupPlan, HostPlan, Plan, Route, RulePlan, VpcPlan
from .verdict import Step, Verdict, Wire


@functools.lru_cache(maxsize=1 << 15)
def in_cidr(ip: str, cidr: str) -> bool:
    """Is `ip` in `cidr`? An address of one family is in no CIDR of the other. Remembered: a
    matrix asks the same few thousand questions again and again (a bad address raises, and
    raises again: errors are not remembered)."""
    addr, net = ipaddress.ip_address(ip), ipaddress.ip_network(cidr)
    return addr.version == net.version and addr in net


def vpc_of(plan: Plan, h: HostPlan) -> str:
    if h.kind == "pod":
        return plan.cluster.vpc
    return plan.vswitch(h.vswitch).vpc


def attachment_of(plan: Plan, ip: str) -> Attachment | None:
    """The most specific attachment holding this address (an IPv6 one: the attachment with it)."""
    if ipaddress.ip_address(ip).version == 6:
        return next((a for a in plan.attachments if a.ipv6 == ip), None)
    best = None
    for a in plan.attachments:
        if in_cidr(ip, a.ip) and (best is None or
                                  ipaddress.IPv4Network(a.ip).prefixlen > ipaddress.IPv4Network(best.ip).prefixlen):
            best = a
    return best


def _rule_hits(plan: Plan, rule, peer_ip: str, proto: str, port: int) -> bool:
    if rule.protocol not in ("all", proto):
        return False
    if rule.port_min and not (rule.port_min <= port <= rule.port_max):
        return False
    if rule.cidr or rule.ipv6_cidr:
        return in_cidr(peer_ip, rule.cidr or rule.ipv6_cidr)
    group = next(g for g in plan.groups if g.name == rule.group)
    return any(in_cidr(peer_ip, m) for m in group.members + group.members6)


def _decide(plan: Plan, groups: list[GroupPlan], direction: str, peer_ip: str, proto: str, port: int):
    """The winning rule as (priority, accepts, group name, rule, its number in the group, from 1):
    lowest priority number; at equal priority drop wins. None if no rule hits."""
    hits = [(r.priority, r.policy != "drop", g.name, r, i) for g in groups for i, r in enumerate(g.rules, 1)
            if r.direction == direction and _rule_hits(plan, r, peer_ip, proto, port)]
    return min(hits, key=lambda h: h[:2]) if hits else None


def rule_text(group: str, number: int, rule: RulePlan) -> str:
    return rule.text(group, number)


def who(plan: Plan, att: Attachment) -> str:
    """An attachment's owner in words: a pod CIDR or custom route is named by where it leads (the
    route of any table, system or custom, to the instance whose port holds the attachment)."""
    if not att.owner.startswith("route/"):
        return att.owner
    dest = att.owner.removeprefix("route/")
    macs = {h.name: h.mac for h in plan.instances}
    route = next((r for v in plan.vpcs for t in (v.routes, *(rt.routes for rt in v.route_tables)) for r in t
                  if r.destination == dest and macs.get(r.next_hop) == att.mac), None)
    if route is not None and route.kind == "pod":
        return f"node {route.next_hop}'s pod CIDR {dest}"
    return f"{dest} behind {route.next_hop}" if route else dest


def egress(plan: Plan, wire: Wire, src: Attachment) -> Verdict:
    """The source's security groups on the way out: the winning egress rule, or the default
    (outbound allowed)."""
    groups = {g.name: g for g in plan.groups}
    flow = f"{wire.proto}/{wire.port}"
    hit = _decide(plan, [groups[n] for n in src.security_groups], "egress", wire.dst_ip, wire.proto, wire.port)
    if hit and hit[3].policy == "drop":
        return Verdict(False, f"egress of {who(plan, src)} dropped by {hit[2]} (priority {hit[0]})",
                       steps=(Step("security group", f"egress of {who(plan, src)}: {rule_text(hit[2], hit[4], hit[3])} "
                                                     f"drops {flow} to {wire.dst_ip}", False),))
    if hit:
        return Verdict(True, f"egress of {who(plan, src)} accepted by {hit[2]}",
                       steps=(Step("security group", f"egress of {who(plan, src)}: {rule_text(hit[2], hit[4], hit[3])} "
                                                     f"accepts {flow} to {wire.dst_ip}", True),))
    names = ", ".join(src.security_groups) or "no security group"
    return Verdict(True, f"egress of {who(plan, src)} allowed by default",
                   steps=(Step("security group", f"egress of {who(plan, src)}: no rule of {names} matches; "
                                                 "outbound traffic is allowed by default", True),))


def security_groups(plan: Plan, wire: Wire, src: Attachment | None, dst: Attachment | None) -> Verdict:
    groups = {g.name: g for g in plan.groups}
    steps: list[Step] = []
    flow = f"{wire.proto}/{wire.port}"
    if src is not None:
        out = egress(plan, wire, src)
        if not out.allowed:
            return out
        steps += out.steps
    if dst is None:
        return Verdict(False, f"nothing in the VPC holds {wire.dst_ip}",
                       steps=(*steps, Step("route", f"nothing in the VPC holds {wire.dst_ip}", False)))
    mine = [groups[n] for n in dst.security_groups]
    hit = _decide(plan, mine, "ingress", wire.src_ip, wire.proto, wire.port)
    owner = who(plan, dst)
    if hit:
        text = f"ingress of {owner}: {rule_text(hit[2], hit[4], hit[3])}"
        if hit[3].policy == "drop":
            return Verdict(False, f"ingress of {owner} dropped by {hit[2]} (priority {hit[0]})",
                           steps=(*steps, Step("security group", f"{text} drops {flow} from {wire.src_ip}", False)))
        return Verdict(True, f"ingress of {owner} accepted by {hit[2]} {flow}",
                       steps=(*steps, Step("security group", f"{text} accepts {flow} from {wire.src_ip}", True)))
    for g in mine:
        if any(in_cidr(wire.src_ip, m) for m in g.members + g.members6):
            reason = f"{wire.src_ip} and {owner} are both members of {g.name}"
            return Verdict(True, reason, steps=(*steps, Step(
                "security group", f"ingress of {owner}: {wire.src_ip} and {owner} are both members of {g.name}, "
                                  "whose members reach each other", True)))
    names = ", ".join(dst.security_groups) or "no security group"
    reason = f"ingress of {owner} denied: no rule of {names} allows {flow} from {wire.src_ip}"
    return Verdict(False, reason, steps=(*steps, Step("security group", f"ingress of {owner} denied: no rule of {names} "
                                                      f"allows {flow} from {wire.src_ip} (inbound is denied by "
                                                      "default)", False)))


def route_step(plan: Plan, vpc_name: str, src_ip: str, dst_ip: str, dst_node: str = "") -> Step:
    """How the VPC carries a packet from src_ip to dst_ip: on one vSwitch at layer 2, or by the
    most specific route of the route table of the vSwitch src_ip is on (a custom table associated
    with it, else the system table). A route that delivers is a fact of the chain (passes None);
    one that takes the packet elsewhere, or none, stops it (passes False). `dst_node`: the node
    whose pod CIDR holds dst_ip (a pod's address in vxlan and vpc-route modes), which a route must
    lead to."""
    a, b = attachment_of(plan, src_ip), attachment_of(plan, dst_ip)
    if a is not None and b is not None and a.vswitch == b.vswitch and (":" in dst_ip or _prefixlen(b.ip) == 32):
        return Step("route", f"{src_ip} and {dst_ip} are on vSwitch {a.vswitch}: switched at layer 2, no route")
    vpc = next(v for v in plan.vpcs if v.name == vpc_name)
    name, routes = table_routes(plan, vpc, src_ip)
    label = table_label(vpc, name)
    route = best_route(vpc, dst_ip, routes)
    if route is None:
        if name or dst_node:     # the system table of a VPC with one table: as it always said
            return Step("route", f"{label}: no entry for {dst_ip}: dropped", False)
        return Step("route", f"{label}: no entry for {dst_ip}")
    where = f"-> {route.next_hop}" if route.next_hop else f"({route.description})" if route.description else ""
    kind = {"system": "system route", "custom": "custom route", "pod": "pod route (vpc-route mode)",
            "natgw": "route to NAT gateway", "peering": "route to peering connection"}[route.kind]
    text = f"{label}: {kind} {route.destination} {where}".rstrip()
    if (dst_node and route.next_hop != dst_node) or route.kind in ("natgw", "peering"):
        return Step("route", f"{text}, not to {dst_ip}" + (f" on node {dst_node}" if dst_node else "")
                    + ": it does not get there", False)
    return Step("route", text)


def table_routes(plan: Plan, vpc: VpcPlan, src_ip: str) -> tuple[str, tuple[Route, ...]]:
    """The route table `vpc`'s vRouter routes a packet from src_ip by: the custom table of the
    vSwitch src_ip is on (its name and routes), else the system table ("" and its routes), as for
    packets from another VPC's peering or from the edge."""
    att = attachment_of(plan, src_ip)
    table = vpc.table_of(att.vswitch) if att is not None else None
    return (table.name, table.routes) if table is not None else ("", vpc.routes)


def table_label(vpc: VpcPlan, name: str) -> str:
    """A route table in words: `route table rt-app`, or `route table of vpc-prod` for the system table."""
    return f"route table {name}" if name else f"route table of {vpc.name}"


def best_route(vpc: VpcPlan, ip: str, routes: tuple[Route, ...] | None = None):
    """The most specific route for `ip` in `routes` (by default the VPC's system table). An IPv6
    address is routed by the IPv6 system routes, whatever table its source's vSwitch has (custom
    routes are IPv4 only)."""
    table = vpc.routes6 if ":" in ip else vpc.routes if routes is None else routes
    routes = [r for r in table if in_cidr(ip, r.destination)]
    return max(routes, key=lambda r: _prefixlen(r.destination), default=None)


def _prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen
