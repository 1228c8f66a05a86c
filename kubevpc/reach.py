"""What should connect: reachability worked out from the scenario's meaning, not from the flows.

Written from the specification (SPEC.md, the cloud's documented security group semantics and
the pod network modes), independently of controller/compile.py, so that probing the real
network against it tests the compiler. Each verdict carries the reason a user would want.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .plan import Attachment, GroupPlan, HostPlan, Plan, ServicePlan


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    seen_source: str = ""       # the client address the server should see, when allowed


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
    """The winning rule: lowest priority number; at equal priority drop wins. None if no rule hits."""
    hits = [(r.priority, r.policy != "drop", g.name, r) for g in groups for r in g.rules
            if r.direction == direction and _rule_hits(plan, r, peer_ip, proto, port)]
    return min(hits, key=lambda h: h[:2]) if hits else None


def security_groups(plan: Plan, wire: Wire, src: Attachment | None, dst: Attachment | None) -> Verdict:
    groups = {g.name: g for g in plan.groups}
    if src is not None:
        hit = _decide(plan, [groups[n] for n in src.security_groups], "egress", wire.dst_ip, wire.proto, wire.port)
        if hit and hit[3].policy == "drop":
            return Verdict(False, f"egress of {src.owner} dropped by {hit[2]} (priority {hit[0]})")
    if dst is None:
        return Verdict(False, f"nothing in the VPC holds {wire.dst_ip}")
    mine = [groups[n] for n in dst.security_groups]
    hit = _decide(plan, mine, "ingress", wire.src_ip, wire.proto, wire.port)
    if hit:
        if hit[3].policy == "drop":
            return Verdict(False, f"ingress of {dst.owner} dropped by {hit[2]} (priority {hit[0]})")
        return Verdict(True, f"ingress of {dst.owner} accepted by {hit[2]} {wire.proto}/{wire.port}")
    for g in mine:
        if any(_in(wire.src_ip, m) for m in g.members):
            return Verdict(True, f"{wire.src_ip} and {dst.owner} are both members of {g.name}")
    names = ", ".join(dst.security_groups) or "no security group"
    return Verdict(False, f"ingress of {dst.owner} denied: no rule of {names} allows {wire.proto}/{wire.port} "
                          f"from {wire.src_ip}")


def reach(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str = "tcp") -> Verdict:
    """Should a connection from src to dst:port/proto succeed, and with which client address?
    The network first (VPCs, routes, security groups), then NetworkPolicy where pods are involved."""
    v = _network(plan, src, dst, port, proto.lower())
    if not v.allowed or not plan.network_policies:
        return v
    from .netpol import evaluate        # netpol imports Verdict from here
    p = evaluate(plan.network_policies, plan.namespaces, _policy_view(src), _policy_view(dst), port, proto)
    if not p.allowed:
        return Verdict(False, f"NetworkPolicy: {p.reason}")
    return v if not (src.kind == "pod" or dst.kind == "pod") else Verdict(True, f"{v.reason}; {p.reason}",
                                                                          v.seen_source)


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
    if not svc.cluster_ip:
        return Verdict(False, f"Service {svc.key} has no ClusterIP"), []
    if not (src.kind == "pod" or (src.kind == "ecs" and src.node)):
        return Verdict(False, f"{src.key} is not in the cluster: ClusterIPs are reachable from pods and nodes "
                              "only"), []
    index = next((i for i, p in enumerate(svc.ports) if p.port == port and p.protocol.lower() == proto), None)
    if index is None:
        return Verdict(False, f"Service {svc.key} does not expose {port}/{proto}: dropped"), []
    ready = svc.ready_endpoints(index)
    if not ready:
        return Verdict(False, f"Service {svc.key} has no ready endpoint: refused"), []
    if svc.internal_traffic_policy == "Local":
        ready = [e for e in ready if e.node == src.node]
        if not ready:
            return Verdict(False, f"internalTrafficPolicy Local and no endpoint on {src.node}: dropped"), []
    return None, [(plan.host(e.pod), e.ports[index], reach(plan, src, plan.host(e.pod), e.ports[index], proto))
                  for e in ready]


def _network(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    if _vpc_of(plan, src) != _vpc_of(plan, dst):
        return Verdict(False, f"{src.key} and {dst.key} are in different VPCs, which are not peered")
    mode = plan.cluster.mode if plan.cluster else ""
    same_node = bool(src.node) and src.node == dst.node
    if same_node and (src.kind == "pod" or dst.kind == "pod"):
        return Verdict(True, "on the same node: switched by the node bridge, no security group", src.ip)
    if src.key == dst.key:
        return Verdict(True, "to itself", src.ip)
    # pod to pod and node to pod across nodes, and pod to node
    cluster_side = lambda h: h.kind == "pod" or (h.kind == "ecs" and bool(h.node))  # noqa: E731
    if mode == "vxlan" and cluster_side(src) and cluster_side(dst) and (src.kind == "pod" or dst.kind == "pod"):
        a_node, b_node = plan.node(src.node), plan.node(dst.node)
        # replies travel in their own VXLAN packets, from the other node's socket to port 4789
        for x, y in ((a_node, b_node), (b_node, a_node)):
            wire = Wire(x.ip, y.ip, "udp", plan.cluster.vxlan_port)
            v = security_groups(plan, wire, _attachment(plan, x.ip), _attachment(plan, y.ip))
            if not v.allowed:
                return Verdict(False, f"VXLAN from {x.name} to {y.name} blocked: {v.reason}")
        return Verdict(True, f"VXLAN from {a_node.name} to {b_node.name}", src.ip)
    src_ip, seen = src.ip, src.ip
    if src.kind == "pod" and mode == "vxlan":
        node = plan.node(src.node)
        src_ip = seen = node.ip            # SNAT to the node, as flannel's ip-masq does
        if dst.key == node.ecs:
            return Verdict(True, "to its own node", src.ip)
    if dst.kind == "pod" and mode == "vxlan":
        routes = [r for vpc in plan.vpcs if vpc.name == _vpc_of(plan, dst) for r in vpc.routes
                  if r.kind == "custom" and _in(dst.ip, r.destination)]
        route = max(routes, key=lambda r: ipaddress.IPv4Network(r.destination).prefixlen, default=None)
        if route is None or route.next_hop != dst.node:
            return Verdict(False, f"{dst.ip} is an overlay address: no VPC route leads to it "
                                  f"(add a custom route to node {dst.node} to make it reachable)")
    wire = Wire(src_ip, dst.ip, proto, port)
    v = security_groups(plan, wire, _attachment(plan, src_ip), _attachment(plan, dst.ip))
    return Verdict(v.allowed, v.reason, seen if v.allowed else "")
