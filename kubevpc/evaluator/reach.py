"""What should connect: reachability worked out from the scenario's meaning, not from the flows.

Written from the specification (SPEC.md, the cloud's documented security group semantics and
the pod network modes), independently of controller/compile.py, so that probing the real
network against it tests the compiler. Each verdict carries the reason a user would want, and
the chain of steps that led to it (`Verdict.steps`: the VPC, the node bridge, the tunnel, the
route, the translations, each security group rule and NetworkPolicy rule met on the way), which
`kubevpc explain` prints.

Here: the verdict for a connection between two hosts (the VPC's part in kubevpc.evaluator.vpc,
the internet's in kubevpc.evaluator.northsouth, NetworkPolicy in kubevpc.evaluator.netpol), and
for a connection to a Service's ClusterIP, the endpoints it may land on.
"""
from __future__ import annotations

from ..planning import HostPlan, Plan, ServicePlan
from .dualstack import reach6
from .netpol import evaluate
from .northsouth import reach_internet
from .peering import across_peering
from .resolver import reach_resolver
from .samenode import on_one_node, switched, through, through_the_vswitch
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, best_route, route_step, security_groups, table_label, table_routes, vpc_of


def reach(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str = "tcp", family: int = 4,
          service: bool = False) -> Verdict:
    """Should a connection from src to dst:port/proto succeed, and with which client address?
    The network first (VPCs, routes, security groups), then NetworkPolicy where pods are involved.
    Hosts of the emulated internet go to kubevpc.evaluator.northsouth, a VPC's DNS resolver to
    kubevpc.evaluator.resolver. A host-network pod is its node here, at either end (whether
    something listens is the caller's to judge). `family` 6: to dst's IPv6 address
    (kubevpc.evaluator.dualstack). `service`: the connection of a Service the node's kube-proxy
    DNATed to dst, which stays on the node when dst is on it (kubevpc.evaluator.samenode)."""
    src, dst = plan.network_host(src), plan.network_host(dst)
    if family == 6:
        return reach6(plan, src, dst, port, proto.lower(), service)
    if src.kind == "resolver" or dst.kind == "resolver":
        return with_policy(plan, reach_resolver(plan, src, dst, port, proto.lower()), src, dst, port, proto)
    if src.kind == "internet" or dst.kind == "internet":
        return with_policy(plan, reach_internet(plan, src, dst, port, proto.lower()), src, dst, port, proto)
    v = _network(plan, src, dst, port, proto.lower(), service)
    return with_policy(plan, v, src, dst, port, proto)


def with_policy(plan: Plan, v: Verdict, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """A network verdict with NetworkPolicy's on top, where pods are involved (a host-network pod
    is its node's traffic)."""
    src, dst = plan.network_host(src), plan.network_host(dst)
    if not v.allowed or not plan.network_policies:
        return v
    p = evaluate(plan.network_policies, plan.namespaces, _policy_view(src), _policy_view(dst), port, proto)
    if not p.allowed:
        return Verdict(False, f"NetworkPolicy: {p.reason}", steps=v.steps + p.steps)
    return v if not (src.kind == "pod" or dst.kind == "pod") else Verdict(True, f"{v.reason}; {p.reason}",
                                                                          v.seen_source, v.steps + p.steps)


def _policy_view(h: HostPlan) -> HostPlan:
    """What NetworkPolicy sees of a host: pods are pods; anything else (an ECS instance, a node, an
    SLB's address) is just an address, with its node if it is one."""
    return h if h.kind == "pod" else h.model_copy(update={"namespace": ""})


def service_targets(plan: Plan, src: HostPlan, svc: ServicePlan, port: int, proto: str = "tcp", family: int = 4
                    ) -> tuple[Verdict | None, list[tuple[HostPlan, int, Verdict]]]:
    """A connection from src to a Service's ClusterIP and port: either a verdict for the whole
    Service (not programmed, not reachable, refused, dropped) or, per endpoint src may land on, the
    endpoint, its target port and whether the connection to it succeeds (network and
    NetworkPolicy, after DNAT). The endpoints are kube-proxy's: the ready ones, else those serving
    while terminating (ServicePlan.cluster_endpoints and local_endpoints). `family` 6: to its IPv6
    ClusterIP, over the endpoints' IPv6 addresses (kube-proxy's IPv6 proxier, dual stack)."""
    proto = proto.lower()

    def whole(reason: str) -> Verdict:
        return Verdict(False, reason, steps=(Step("Service", reason, False),))
    address = svc.cluster_ip_of(family)
    if not address:
        return whole(f"Service {svc.key} has no {'IPv6 ' if family == 6 else ''}ClusterIP" + (
            f" (ipFamilies {', '.join(svc.ip_families) or 'none'})" if svc.cluster_ip else "")), []
    if family == 6 and not src.ipv6:
        return whole(f"{src.key} has no IPv6 address"), []
    if not (src.kind == "pod" or (src.kind == "ecs" and src.node)):
        return whole(f"{src.key} is not in the cluster: ClusterIPs are reachable from pods and nodes only"), []
    if not svc.proxied:
        return whole(unprogrammed_reason(svc)), []
    index = next((i for i, p in enumerate(svc.ports) if p.port == port and p.protocol.lower() == proto), None)
    if index is None:
        return whole(f"Service {svc.key} does not expose {port}/{proto}: dropped"), []
    targets = [e for e in svc.cluster_endpoints(index) if e.address(family)]
    if not targets:
        return whole(no_endpoint_reason(svc, index, family)), []
    if svc.internal_traffic_policy == "Local":
        targets = [e for e in svc.local_endpoints(index, src.node) if e.address(family)]
        if not targets:
            return whole(f"internalTrafficPolicy Local and no endpoint on {src.node}: dropped"), []
    return None, [(plan.host(e.pod), e.ports[index], _to_endpoint(plan, src, address, plan.host(e.pod),
                                                                 e.ports[index], proto, family)) for e in targets]


def _to_endpoint(plan: Plan, src: HostPlan, address: str, dst: HostPlan, port: int, proto: str,
                 family: int = 4) -> Verdict:
    """From a client to the endpoint its node's kube-proxy chose, at the Service `address`."""
    if dst.host_network and plan.network_host(src).key == plan.network_host(dst).key:
        return self_service_verdict(plan, dst, address)
    return reach(plan, src, dst, port, proto, family, service=True)


def self_service_verdict(plan: Plan, dst: HostPlan, address: str) -> Verdict:
    """A node (or a host-network pod on it) through a Service to a host-network pod on that node.
    Upstream the node's kernel delivers it to itself, from the node's address; in kubevpc the node
    bridge DNATs it and sends it back into the node, which would drop a packet from its own address
    as a martian and answer it through its loopback: so the bridge SNATs it to the Service address
    the node asked for, which the pod sees as its client (controller/services.py)."""
    reason = f"the node {dst.node} to {dst.key}, a host-network pod on itself: SNATed to the Service address {address}"
    return Verdict(True, reason, address, (Step("node bridge", f"node {dst.node}'s bridge sends it back into the "
                                                f"node, SNATed to {address} (kubevpc: a packet from the node's own "
                                                "address would be a martian there)", True),))


def unprogrammed_reason(svc: ServicePlan) -> str:
    """Why a connection to the ClusterIP of a Service kube-proxy leaves alone goes nowhere."""
    return (f"Service {svc.key} is labelled {svc.proxy_off_label()}: kube-proxy does not program it, and "
            "nothing else answers for its ClusterIP: dropped at the node, the connection times out")


def no_endpoint_reason(svc: ServicePlan, index: int, family: int = 4) -> str:
    """Why kube-proxy refuses connections to port `index` of a Service: no endpoint is ready, and
    none is serving while its pod terminates (a terminating pod that fails readiness is not); in
    IPv6, none has an IPv6 address (host-network pods have none as endpoints)."""
    if family == 6 and svc.cluster_endpoints(index):
        return f"Service {svc.key} has no ready endpoint with an IPv6 address: refused"
    dying = [e.name for e in svc.endpoints if e.terminating and e.ports[index]]
    extra = f" (terminating {', '.join(dying)}: not serving either)" if dying else ""
    return f"Service {svc.key} has no ready endpoint{extra}: refused"


def fallback_note(endpoints) -> str:
    """For a reason: whether kube-proxy fell back to endpoints of pods being deleted (KEP-1669)."""
    if not endpoints or any(e.ready for e in endpoints):
        return ""
    return " (none is ready: kube-proxy falls back to endpoints still serving while their pods terminate)"


def _network(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str, service: bool = False) -> Verdict:
    if vpc_of(plan, src) != vpc_of(plan, dst):
        peering = plan.peering(vpc_of(plan, src), vpc_of(plan, dst))
        if peering is not None:
            return across_peering(plan, peering, src, dst, port, proto)
        reason = f"{src.key} and {dst.key} are in different VPCs, which are not peered"
        return Verdict(False, reason, steps=(Step("VPC", f"{src.key} is in {vpc_of(plan, src)}, {dst.key} in "
                                                         f"{vpc_of(plan, dst)}: VPCs are isolated, and these "
                                                         "are not peered", False),))
    mode = plan.cluster.mode if plan.cluster else ""
    if on_one_node(src, dst):
        if through_the_vswitch(src, dst, service):
            return through(_through_the_vpc(plan, src, dst, port, proto, mode), src, dst)
        return switched(src, dst, src.ip)
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
            v = security_groups(plan, wire, attachment_of(plan, x.ip), attachment_of(plan, y.ip))
            steps += [Step(s.stage, f"VXLAN {x.name} to {y.name}: {s.text}", s.passes) for s in v.steps]
            if not v.allowed:
                return Verdict(False, f"VXLAN from {x.name} to {y.name} blocked: {v.reason}", steps=tuple(steps))
        steps.append(Step("VXLAN", f"node {b_node.name}'s bridge decapsulates it and delivers it to {dst.key}; "
                                   "pod security groups do not apply in this mode", True))
        return Verdict(True, f"VXLAN from {a_node.name} to {b_node.name}", src.ip, tuple(steps))
    return _through_the_vpc(plan, src, dst, port, proto, mode)


def _through_the_vpc(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str, mode: str) -> Verdict:
    """Across the VPC's vRouter (or one vSwitch): the source's address as it leaves its node, the
    route there and the way back (by the route tables of the two ends' vSwitches), the security
    groups."""
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
    vpc = next(v for v in plan.vpcs if v.name == vpc_of(plan, dst))
    if dst.kind == "pod" and mode == "vxlan":
        name, routes = table_routes(plan, vpc, src_ip)
        route = best_route(vpc, dst.ip, tuple(r for r in routes if r.kind == "custom"))
        if route is None or route.next_hop != dst.node:
            reason = (f"{dst.ip} is an overlay address: no VPC route leads to it "
                      f"(add a custom route to node {dst.node} to make it reachable)")
            reason = f"{table_label(vpc, name)}: {reason}" if name else reason
            return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    wire = Wire(src_ip, dst.ip, proto, port)
    there = route_step(plan, vpc.name, src_ip, dst.ip, pod_node(plan, dst))
    steps.append(there)
    if there.passes is False:
        return Verdict(False, there.text, steps=tuple(steps))
    v = security_groups(plan, wire, attachment_of(plan, src_ip), attachment_of(plan, dst.ip))
    steps += v.steps
    back = way_back(plan, vpc, dst.ip, src_ip, pod_node(plan, src) if src_ip == src.ip else "") if v.allowed else None
    if back is not None:
        steps.append(back)
        if back.passes is False:
            return Verdict(False, back.text, steps=tuple(steps))
    return Verdict(v.allowed, v.reason, seen if v.allowed else "", tuple(steps))


def pod_node(plan: Plan, h: HostPlan) -> str:
    """The node whose pod CIDR holds h's address (a pod in vxlan and vpc-route modes), else ""."""
    mode = plan.cluster.mode if plan.cluster else ""
    return h.node if h.kind == "pod" and not h.host_network and mode in ("vxlan", "vpc-route") else ""


def way_back(plan: Plan, vpc, from_ip: str, to_ip: str, to_node: str) -> Step | None:
    """The replies' route, from the destination back to the address it saw: a step when it fails,
    or when a custom route table decides it (a VPC with one route table always routes replies
    between its vSwitches and to its pods' CIDRs)."""
    step = route_step(plan, vpc.name, from_ip, to_ip, to_node)
    if step.passes is False or table_routes(plan, vpc, from_ip)[0]:
        return Step("route", f"replies: {step.text}", step.passes)
    return None
