"""What should connect: reachability worked out from the scenario's meaning, not from the flows.

Written from the specification (SPEC.md, the cloud's documented security group semantics and
the pod network modes), independently of controller/compile.py, so that probing the real
network against it tests the compiler. Each verdict carries the reason a user would want, and
the chain of steps that led to it (`Verdict.steps`: the VPC, the node bridge, the tunnel, the
route, the translations, each security group rule and NetworkPolicy rule met on the way), which
`kubevpc explain` prints.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .plan import Attachment, GroupPlan, HostPlan, Plan, RulePlan, ServicePlan, VpcPlan


@dataclass(frozen=True)
class Step:
    """One link of the evaluator's chain: where it looked (`stage`), what it found, and whether the
    connection passes there: True, False (it stops here), or None for a fact on the way (a route,
    a translation)."""

    stage: str
    text: str
    passes: bool | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    seen_source: str = ""       # the client address the server should see, when allowed
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Wire:
    """A packet as the vSwitches see it: source and destination address and their ports."""

    src_ip: str
    dst_ip: str
    proto: str                  # tcp | udp
    port: int


def _in(ip: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr)


def _vpc_of(plan: Plan, h: HostPlan) -> str:
    if h.kind == "pod":
        return plan.cluster.vpc
    return plan.vswitch(h.vswitch).vpc


def _attachment(plan: Plan, ip: str) -> Attachment | None:
    """The most specific attachment holding this address."""
    best = None
    for a in plan.attachments:
        if _in(ip, a.ip) and (best is None or
                              ipaddress.IPv4Network(a.ip).prefixlen > ipaddress.IPv4Network(best.ip).prefixlen):
            best = a
    return best


def _rule_hits(plan: Plan, rule, peer_ip: str, proto: str, port: int) -> bool:
    if rule.protocol not in ("all", proto):
        return False
    if rule.port_min and not (rule.port_min <= port <= rule.port_max):
        return False
    if rule.cidr:
        return _in(peer_ip, rule.cidr)
    group = next(g for g in plan.groups if g.name == rule.group)
    return any(_in(peer_ip, m) for m in group.members)


def _decide(plan: Plan, groups: list[GroupPlan], direction: str, peer_ip: str, proto: str, port: int):
    """The winning rule as (priority, accepts, group name, rule, its number in the group, from 1):
    lowest priority number; at equal priority drop wins. None if no rule hits."""
    hits = [(r.priority, r.policy != "drop", g.name, r, i) for g in groups for i, r in enumerate(g.rules, 1)
            if r.direction == direction and _rule_hits(plan, r, peer_ip, proto, port)]
    return min(hits, key=lambda h: h[:2]) if hits else None


def rule_text(group: str, number: int, rule: RulePlan) -> str:
    return rule.text(group, number)


def who(plan: Plan, att: Attachment) -> str:
    """An attachment's owner in words: a pod CIDR or custom route is named by where it leads."""
    if not att.owner.startswith("route/"):
        return att.owner
    dest = att.owner.removeprefix("route/")
    route = next((r for v in plan.vpcs for r in v.routes if r.destination == dest and r.next_hop), None)
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
        if any(_in(wire.src_ip, m) for m in g.members):
            reason = f"{wire.src_ip} and {owner} are both members of {g.name}"
            return Verdict(True, reason, steps=(*steps, Step(
                "security group", f"ingress of {owner}: {wire.src_ip} and {owner} are both members of {g.name}, "
                                  "whose members reach each other", True)))
    names = ", ".join(dst.security_groups) or "no security group"
    reason = f"ingress of {owner} denied: no rule of {names} allows {flow} from {wire.src_ip}"
    return Verdict(False, reason, steps=(*steps, Step("security group", f"ingress of {owner} denied: no rule of {names} "
                                                      f"allows {flow} from {wire.src_ip} (inbound is denied by "
                                                      "default)", False)))


def route_step(plan: Plan, vpc_name: str, src_ip: str, dst_ip: str) -> Step:
    """How the VPC carries a packet from src_ip to dst_ip: on one vSwitch at layer 2, or by the
    vRouter's most specific route (a fact of the chain, not a decision)."""
    a, b = _attachment(plan, src_ip), _attachment(plan, dst_ip)
    if a is not None and b is not None and a.vswitch == b.vswitch and _prefixlen(b.ip) == 32:
        return Step("route", f"{src_ip} and {dst_ip} are on vSwitch {a.vswitch}: switched at layer 2, no route")
    vpc = next(v for v in plan.vpcs if v.name == vpc_name)
    route = best_route(vpc, dst_ip)
    if route is None:
        return Step("route", f"route table of {vpc.name}: no entry for {dst_ip}")
    where = f"-> {route.next_hop}" if route.next_hop else f"({route.description})" if route.description else ""
    kind = {"system": "system route", "custom": "custom route", "pod": "pod route (vpc-route mode)",
            "natgw": "route to NAT gateway"}[route.kind]
    return Step("route", f"route table of {vpc.name}: {kind} {route.destination} {where}".rstrip())


def best_route(vpc: VpcPlan, ip: str):
    routes = [r for r in vpc.routes if _in(ip, r.destination)]
    return max(routes, key=lambda r: _prefixlen(r.destination), default=None)


def _prefixlen(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr).prefixlen


def reach(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str = "tcp") -> Verdict:
    """Should a connection from src to dst:port/proto succeed, and with which client address?
    The network first (VPCs, routes, security groups), then NetworkPolicy where pods are involved.
    Hosts of the emulated internet go to kubevpc.northsouth."""
    if src.kind == "internet" or dst.kind == "internet":
        from .northsouth import reach_internet        # northsouth imports from here
        return with_policy(plan, reach_internet(plan, src, dst, port, proto.lower()), src, dst, port, proto)
    v = _network(plan, src, dst, port, proto.lower())
    return with_policy(plan, v, src, dst, port, proto)


def with_policy(plan: Plan, v: Verdict, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """A network verdict with NetworkPolicy's on top, where pods are involved."""
    if not v.allowed or not plan.network_policies:
        return v
    from .netpol import evaluate        # netpol imports Verdict from here
    p = evaluate(plan.network_policies, plan.namespaces, _policy_view(src), _policy_view(dst), port, proto)
    if not p.allowed:
        return Verdict(False, f"NetworkPolicy: {p.reason}", steps=v.steps + p.steps)
    return v if not (src.kind == "pod" or dst.kind == "pod") else Verdict(True, f"{v.reason}; {p.reason}",
                                                                          v.seen_source, v.steps + p.steps)


def _policy_view(h: HostPlan) -> HostPlan:
    """What NetworkPolicy sees of a host: pods are pods; anything else (an ECS instance, a node, an
    SLB's address) is just an address, with its node if it is one."""
    return h if h.kind == "pod" else h.model_copy(update={"namespace": ""})


def service_targets(plan: Plan, src: HostPlan, svc: ServicePlan, port: int, proto: str = "tcp"
                    ) -> tuple[Verdict | None, list[tuple[HostPlan, int, Verdict]]]:
    """A connection from src to a Service's ClusterIP and port: either a verdict for the whole
    Service (not reachable, refused) or, per endpoint src may land on, the endpoint, its target
    port and whether the connection to it succeeds (network and NetworkPolicy, after DNAT)."""
    proto = proto.lower()

    def whole(reason: str) -> Verdict:
        return Verdict(False, reason, steps=(Step("Service", reason, False),))
    if not svc.cluster_ip:
        return whole(f"Service {svc.key} has no ClusterIP"), []
    if not (src.kind == "pod" or (src.kind == "ecs" and src.node)):
        return whole(f"{src.key} is not in the cluster: ClusterIPs are reachable from pods and nodes only"), []
    index = next((i for i, p in enumerate(svc.ports) if p.port == port and p.protocol.lower() == proto), None)
    if index is None:
        return whole(f"Service {svc.key} does not expose {port}/{proto}: dropped"), []
    ready = svc.ready_endpoints(index)
    if not ready:
        return whole(f"Service {svc.key} has no ready endpoint: refused"), []
    if svc.internal_traffic_policy == "Local":
        ready = [e for e in ready if e.node == src.node]
        if not ready:
            return whole(f"internalTrafficPolicy Local and no endpoint on {src.node}: dropped"), []
    return None, [(plan.host(e.pod), e.ports[index], reach(plan, src, plan.host(e.pod), e.ports[index], proto))
                  for e in ready]


def _network(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    if _vpc_of(plan, src) != _vpc_of(plan, dst):
        reason = f"{src.key} and {dst.key} are in different VPCs, which are not peered"
        return Verdict(False, reason, steps=(Step("VPC", f"{src.key} is in {_vpc_of(plan, src)}, {dst.key} in "
                                                         f"{_vpc_of(plan, dst)}: VPCs are isolated, and these "
                                                         "are not peered", False),))
    mode = plan.cluster.mode if plan.cluster else ""
    same_node = bool(src.node) and src.node == dst.node
    if same_node and (src.kind == "pod" or dst.kind == "pod"):
        reason = "on the same node: switched by the node bridge, no security group"
        return Verdict(True, reason, src.ip, (Step("node bridge", f"both on node {src.node}: its bridge switches "
                                                   "the packet; security groups are not on this path", True),))
    if src.key == dst.key:
        return Verdict(True, "to itself", src.ip, (Step("host", "to itself, inside its namespace", True),))
    # pod to pod and node to pod across nodes, and pod to node
    cluster_side = lambda h: h.kind == "pod" or (h.kind == "ecs" and bool(h.node))  # noqa: E731
    if mode == "vxlan" and cluster_side(src) and cluster_side(dst) and (src.kind == "pod" or dst.kind == "pod"):
        a_node, b_node = plan.node(src.node), plan.node(dst.node)
        steps = [Step("VXLAN", f"node {a_node.name}'s bridge encapsulates it: VXLAN VNI {plan.cluster.vni} from "
                               f"{a_node.ip} to node {b_node.name} at {b_node.ip}, UDP {plan.cluster.vxlan_port}; "
                               "replies come back the same way"),
                 route_step(plan, plan.cluster.vpc, a_node.ip, b_node.ip)]
        # replies travel in their own VXLAN packets, from the other node's socket to port 4789
        for x, y in ((a_node, b_node), (b_node, a_node)):
            wire = Wire(x.ip, y.ip, "udp", plan.cluster.vxlan_port)
            v = security_groups(plan, wire, _attachment(plan, x.ip), _attachment(plan, y.ip))
            steps += [Step(s.stage, f"VXLAN {x.name} to {y.name}: {s.text}", s.passes) for s in v.steps]
            if not v.allowed:
                return Verdict(False, f"VXLAN from {x.name} to {y.name} blocked: {v.reason}", steps=tuple(steps))
        steps.append(Step("VXLAN", f"node {b_node.name}'s bridge decapsulates it and delivers it to {dst.key}; "
                                   "pod security groups do not apply in this mode", True))
        return Verdict(True, f"VXLAN from {a_node.name} to {b_node.name}", src.ip, tuple(steps))
    src_ip, seen = src.ip, src.ip
    steps: list[Step] = []
    if src.kind == "pod" and mode == "vxlan":
        node = plan.node(src.node)
        src_ip = seen = node.ip            # SNAT to the node, as flannel's ip-masq does
        if dst.key == node.ecs:
            return Verdict(True, "to its own node", src.ip, (Step("node bridge", f"to its own node {node.name}, "
                                                                                 "on the node bridge", True),))
        steps.append(Step("NAT", f"SNAT to node {node.name} ({node.ip}): flannel masquerades pod traffic that "
                                 "leaves the overlay"))
    if dst.kind == "pod" and mode == "vxlan":
        routes = [r for vpc in plan.vpcs if vpc.name == _vpc_of(plan, dst) for r in vpc.routes
                  if r.kind == "custom" and _in(dst.ip, r.destination)]
        route = max(routes, key=lambda r: ipaddress.IPv4Network(r.destination).prefixlen, default=None)
        if route is None or route.next_hop != dst.node:
            reason = (f"{dst.ip} is an overlay address: no VPC route leads to it "
                      f"(add a custom route to node {dst.node} to make it reachable)")
            return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    wire = Wire(src_ip, dst.ip, proto, port)
    steps.append(route_step(plan, _vpc_of(plan, dst), src_ip, dst.ip))
    v = security_groups(plan, wire, _attachment(plan, src_ip), _attachment(plan, dst.ip))
    return Verdict(v.allowed, v.reason, seen if v.allowed else "", (*steps, *v.steps))
