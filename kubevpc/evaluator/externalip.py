"""Connections to a Service's external IPs (spec.externalIPs): who reaches which endpoint, with
which client address. Written from kube-proxy's behaviour (pkg/proxy/iptables/proxier.go: the
"external destinations" chain of a Service port) and the cloud's routing, independently of the
flows controller/services.py makes of the same Services, like the rest of kubevpc.evaluator.

What it holds to:
- kube-proxy on every node takes a new connection to an external IP and a port the Service
  exposes, as it takes the ClusterIP's; no ready endpoint at all: refused, whoever asks. kubevpc
  drops a new connection to any other port of the address (kube-proxy leaves it to the node's
  routing, which sends it back where it came from).
- A client in the cluster (a pod, a node) is handled by its own node before anything leaves it.
  With externalTrafficPolicy Cluster it is masqueraded to that node and may land on any ready
  endpoint. With Local, a pod is short-circuited like the ClusterIP (any ready endpoint, its
  address kept) and the node itself is masqueraded to its own address.
- A client in the VPC reaches an external IP only where the VPC's route table sends it to a node
  (a custom route entry, next hop the node's instance). The route's destination sits behind the
  node's port, so the node's security groups apply to it as to the node, the client's on the way
  out. That node's kube-proxy then treats it as traffic from outside the cluster: with Cluster,
  masqueraded to the node, any ready endpoint; with Local, the node's own ready endpoints only,
  the client's address kept, and none: dropped.
- From the internet, or from a VPC the route table of which does not send it to a node:
  unreachable.
- NetworkPolicy judges the client's egress on the endpoint, and the endpoint's ingress on the
  source as it arrives at the endpoint's node: the client's own address on the node that
  balanced it (the masquerade comes after), the node's address on another node when masqueraded.
"""
from __future__ import annotations

from ..planning import HostPlan, Plan, ServicePlan
from .netpol import egress_of
from .reach import reach, self_service_verdict, with_policy
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, best_route, security_groups, table_label, table_routes, vpc_of

Target = tuple[HostPlan, int, Verdict]      # an endpoint, its target port, the connection to it


def services_at(plan: Plan, ip: str) -> list[ServicePlan]:
    """The Services whose external IPs hold `ip` (several may, on different ports)."""
    return [s for s in plan.services if ip in s.external_ips and s.proxied]


def external_ip_targets(plan: Plan, src: HostPlan, ip: str, port: int, proto: str = "tcp"
                        ) -> tuple[list[Step], Verdict | None, list[Target]]:
    """A connection from src to the external IP `ip` and port: the steps up to the node that
    balances it, and either a verdict for the whole connection (unreachable, dropped, refused)
    or, per endpoint it may land on, the endpoint, its target port and the connection to it."""
    proto = proto.lower()
    src = plan.network_host(src)            # a host-network pod's connections are its node's
    steps, balancer, whole = _to_a_node(plan, src, ip, port, proto)
    if whole is not None:
        return steps, whole, []
    node = balancer.node
    svcs = services_at(plan, ip)
    hit = next(((s, i) for s in svcs for i, p in enumerate(s.ports) if p.port == port and p.protocol.lower() == proto),
               None)
    if hit is None:
        return steps, _stop(f"{ip} is an external IP of {', '.join(s.key for s in svcs)}, which does not expose "
                            f"{port}/{proto}: dropped"), []
    svc, index = hit
    ready = svc.cluster_endpoints(index)        # terminating ones serving, when none is ready
    if not ready:
        return steps, _stop(f"Service {svc.key} has no ready endpoint: refused"), []
    local = svc.external_traffic_policy == "Local"
    outside = not _in_cluster(src)
    if outside and local:
        ready = svc.local_endpoints(index, node)
        if not ready:
            return steps, _stop(f"externalTrafficPolicy Local and no endpoint of {svc.key} on {node}: dropped"), []
    masq = not local or (src.kind == "ecs" and not outside)     # Local still masquerades the node itself
    if not local:
        how = f"masquerades it to {balancer.ip} (externalTrafficPolicy Cluster)"
    elif masq:
        how = f"masquerades it to {balancer.ip} (the node itself, whatever the policy)"
    elif outside:
        how = f"keeps the client's address {src.ip} (externalTrafficPolicy Local: endpoints on {node} only)"
    else:
        how = f"keeps the pod's address {src.ip} (short-circuited like the ClusterIP: Local is for clients outside)"
    steps.append(Step("Service", f"external IP {ip}:{port}/{proto} of Service {svc.key}: kube-proxy on {node} DNATs "
                                 f"each new connection to one of {len(ready)} "
                                 f"{'ready' if any(e.ready for e in ready) else 'terminating (still serving)'} "
                                 f"endpoint(s) and {how}"))
    return steps, None, [(plan.host(e.pod), e.ports[index],
                          _leg(plan, src, balancer, plan.host(e.pod), e.ports[index], proto, masq, ip)) for e in ready]


def _stop(reason: str, stage: str = "Service") -> Verdict:
    return Verdict(False, reason, steps=(Step(stage, reason, False),))


def _in_cluster(h: HostPlan) -> bool:
    return h.kind == "pod" or (h.kind == "ecs" and bool(h.node))


def _to_a_node(plan: Plan, src: HostPlan, ip: str, port: int, proto: str
               ) -> tuple[list[Step], HostPlan | None, Verdict | None]:
    """Where the connection meets kube-proxy: the client's own node, or the node a route of the
    client's VPC sends the address to (with the security groups on the way)."""
    if _in_cluster(src):
        node = plan.node(src.node)
        return [Step("Service", f"{ip} is an external IP: kube-proxy on {src.node} takes the connection before it "
                                "leaves the node")], plan.host(node.ecs), None
    if src.kind == "internet":
        return [], None, _stop(f"{ip} is a Service's external IP: the internet does not route it to the VPC", "route")
    if src.kind != "ecs":
        return [], None, _stop(f"{src.key} opens no connections of its own", "source")
    vpc_name = vpc_of(plan, src)
    vpc = next(v for v in plan.vpcs if v.name == vpc_name)
    table, routes = table_routes(plan, vpc, src.ip)      # the route table of the client's vSwitch
    label = table_label(vpc, table)
    route = best_route(vpc, ip, routes)
    nodes = {n.name: n for n in plan.nodes}
    if vpc_name != plan.cluster.vpc or route is None or route.kind != "custom" or route.next_hop not in nodes:
        to = (f"sends it to {route.next_hop or route.description}, which is not a node of the cluster" if route
              else "has no entry for it")
        return [], None, _stop(f"{label} {to}: {ip} is unreachable (add a custom route with a "
                               "node as next hop)", "route")
    steps = [Step("route", f"{label}: route {route.destination} sends {ip} to node "
                           f"{route.next_hop}", True)]
    sg = security_groups(plan, Wire(src.ip, ip, proto, port), attachment_of(plan, src.ip), attachment_of(plan, ip))
    steps += sg.steps
    if not sg.allowed:
        return steps, None, Verdict(False, sg.reason)
    return steps, plan.host(nodes[route.next_hop].ecs), None


def _leg(plan: Plan, src: HostPlan, balancer: HostPlan, pod: HostPlan, port: int, proto: str, masq: bool,
         ip: str) -> Verdict:
    """From the balancing node to the endpoint chosen, with NetworkPolicy as the flows judge it. A
    host-network endpoint on the balancing node takes it as the node would: unmasqueraded (the
    masquerade is in nat POSTROUTING, which what a node takes itself never crosses), and from the
    node itself SNATed to the external IP (kubevpc.evaluator.reach.self_service_verdict)."""
    seen = balancer.ip if masq else src.ip
    if pod.host_network and pod.node == balancer.node:
        if src.key == balancer.key:
            return self_service_verdict(plan, pod, ip)
        return Verdict(True, f"delivered to node {pod.node} itself: not masqueraded", src.ip, (Step(
            "node bridge", f"{pod.key} has hostNetwork on {pod.node}: the bridge delivers it to the node", True),))
    if pod.key == src.key:
        v = Verdict(True, "hairpin: back to itself, masqueraded", balancer.ip, (Step(
            "node bridge", f"{pod.key} reaches itself: masqueraded to {balancer.ip} so the reply comes back", True),))
        return with_policy(plan, v, src, pod, port, proto)
    if pod.node == balancer.node:
        v = Verdict(True, "on the balancing node: switched by its bridge", seen, (Step(
            "node bridge", f"node {pod.node}'s bridge delivers it to {pod.key}", True),))
        return with_policy(plan, v, src, pod, port, proto)
    if not masq:
        return reach(plan, src, pod, port, proto)
    out = egress_of(plan.network_policies, plan.namespaces, src, pod, port, proto)
    if not out.allowed:
        return Verdict(False, f"NetworkPolicy: {out.reason}", steps=out.steps)
    v = reach(plan, balancer, pod, port, proto)
    return Verdict(v.allowed, v.reason, v.seen_source, (out.steps if src.kind == "pod" else ()) + v.steps)
