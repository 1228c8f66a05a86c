"""`kubevpc explain`: the evaluator's verdict for one connection, as the chain it followed.

Nothing is built and nothing touches the machine: the chain comes from the plan, through the
evaluators (reach.py and vpc.py for the VPC and the cluster, northsouth.py for the internet,
netpol.py for NetworkPolicy), which are written independently of the flow compiler. A
destination may be an endpoint (pod/, ecs/, node/, inet/), a Service's ClusterIP (svc/), an
intranet SLB (slb/<namespace>/<name>), an EIP (eip/<name>, or a public address), a node's
NodePort (node/<name> and the NodePort), a Service's external IP (its address), an address a
custom route sends to an ECS instance (kubevpc.evaluator.routed), or an address any of these hold. Where a connection
may land on several endpoints (a Service, an SLB), each is a branch with its own chain, and the
verdict is "depends" when they disagree.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, replace

from ..errors import KubevpcError
from ..planning import HostPlan, Plan, ServicePlan, SlbPlan, resolve_endpoint
from .dualstack import with_policy6
from .externalip import external_ip_targets, services_at
from .northsouth import inbound, to_host
from .routed import reach_routed, routed_vpc
from .reach import fallback_note, no_endpoint_reason, reach, service_targets, with_policy
from .verdict import Step, Verdict, Wire
from .vpc import attachment_of, egress, route_step, security_groups, vpc_of


@dataclass(frozen=True)
class Explanation:
    source: str
    dest: str
    port: int
    proto: str
    allowed: bool | None           # None: it depends on the endpoint a connection lands on
    reason: str
    seen_source: str               # the client address the server sees ("" when refused or it depends)
    steps: tuple[Step, ...]
    branches: tuple["Branch", ...] = ()

    def as_dict(self) -> dict:
        return {"source": self.source, "dest": self.dest, "port": self.port, "protocol": self.proto,
                "allowed": self.allowed, "reason": self.reason, "seen_source": self.seen_source,
                "steps": [asdict(s) for s in self.steps],
                "branches": [{"target": b.target, **b.explanation.as_dict()} for b in self.branches]}


@dataclass(frozen=True)
class Branch:
    target: str                    # where this branch lands, e.g. "pod/default/web-1 10.244.1.2:8080"
    explanation: Explanation


def explain(plan: Plan, source: str, dest: str, port: int, proto: str = "tcp", family: int = 4) -> Explanation:
    """Explain a connection from `source` (an endpoint reference) to `dest` port/proto. An IPv6
    destination (a literal, or an endpoint with family 6) is explained by kubevpc.evaluator.dualstack."""
    proto = proto.lower()
    if proto not in ("tcp", "udp"):
        raise KubevpcError(f"protocol {proto!r}: expected tcp or udp")
    src = _host(plan, source)
    head = (source_step(plan, src),)
    if family == 6 or ":" in dest:
        return _ipv6(plan, src, dest, port, proto, head)
    kind, target = classify(plan, dest, port, proto)
    if kind == "svc":
        return _service(plan, src, target, dest, port, proto, head)
    if kind == "public":
        return _public(plan, src, target, dest, port, proto, head)
    if kind == "external-ip":
        return _external_ip(plan, src, target, dest, port, proto, head)
    if kind == "slb":
        return _slb(plan, src, src.ip, target, dest, port, proto, head + (
            Step("SLB", f"intranet SLB {target.service} at {target.vip} (vSwitch {target.vswitch})"),))
    if kind == "routed":
        v = reach_routed(plan, src, target, port, proto)
        return Explanation(src.key, dest, port, proto, False, v.reason, "", head + v.steps)
    if kind == "nodeport":
        node_host, svc, index = target
        return _nodeport(plan, src, src.ip, node_host, svc, index, dest, port, proto, head)
    dst: HostPlan = target
    v = reach(plan, src, dst, port, proto) if src.key != dst.key else Verdict(True, "to itself", src.ip, (
        Step("host", "to itself, inside its namespace", True),))
    return _final(plan, src, dest, port, proto, head, v, dst)


def _ipv6(plan: Plan, src: HostPlan, dest: str, port: int, proto: str, head: tuple[Step, ...]) -> Explanation:
    """A connection to an IPv6 address (dual stack): an endpoint's, a Service's IPv6 ClusterIP, or
    a NodePort at a node's IPv6 address."""
    svc = next((s for s in plan.services if s.cluster_ip_of(6) == dest), None) if ":" in dest else None
    if svc is not None or dest.startswith("svc/"):
        return _service(plan, src, svc or classify(plan, dest, port, proto)[1], dest, port, proto, head, 6)
    dst = next((h for h in plan.hosts if h.ipv6 and h.ipv6 == dest), None) if ":" in dest else _host(plan, dest)
    if dst is None:
        raise KubevpcError(f"nothing in this scenario holds {dest}: expected an instance's or a pod's IPv6 address, "
                           "or a Service's IPv6 ClusterIP")
    if dst.kind == "ecs" and dst.node and not any(s.port == port and s.protocol.lower() == proto
                                                  for s in plan.servers_at(dst)):
        np = _nodeport_of(plan, port, proto)
        if np is not None:
            return _nodeport(plan, src, src.ipv6, dst, *np, dest, port, proto, head, family=6)
    v = reach(plan, src, dst, port, proto, family=6)
    steps = head + v.steps
    if v.allowed and not any(s.port == port and s.protocol.lower() == proto for s in plan.servers_at(dst)):
        v = Verdict(False, f"the network lets it through, but nothing listens on {dst.key} {port}/{proto}: refused")
        steps += (Step("destination", f"nothing listens on {dst.key} {port}/{proto}: the host refuses it", False),)
    elif v.allowed:
        steps += (Step("destination", f"{dst.key} [{dst.ipv6}]:{port}/{proto} answers", True),
                  Step("client address", f"the server sees {v.seen_source}"))
    return Explanation(src.key, dest, port, proto, v.allowed, v.reason, v.seen_source if v.allowed else "", steps)


# ------------------------------------------------------------------------------------ the parts
def source_step(plan: Plan, h: HostPlan) -> Step:
    where = [f"on node {h.node}"] if h.kind == "pod" and h.node else []
    if h.host_network:
        where = [f"hostNetwork: in node {h.node}'s namespace, its connections are the node's"]
    if h.vswitch:
        where.append(f"vSwitch {h.vswitch}")
    if h.kind == "internet":
        where.append("the emulated internet")
    if h.security_groups:
        where.append("security groups " + ", ".join(h.security_groups))
    return Step("source", f"{h.key} {h.ip}" + (f" ({'; '.join(where)})" if where else ""))


def classify(plan: Plan, dest: str, port: int, proto: str):
    """What kind of destination `dest` is: ("host", HostPlan), ("svc", ServicePlan), ("slb", SlbPlan),
    ("public", address), ("external-ip", address), ("routed", address: behind a custom route to an
    instance) or ("nodeport", (node host, Service, port index))."""
    if dest.startswith("svc/"):
        try:
            return "svc", plan.service(dest.removeprefix("svc/"))
        except KeyError:
            raise KubevpcError(f"no Service {dest!r}; this scenario has "
                               f"{', '.join(s.key for s in plan.services) or 'none'}") from None
    if dest.startswith("eip/"):
        eip = next((e for e in plan.eips if e.name == dest[4:]), None)
        if eip is None:
            raise KubevpcError(f"no EIP {dest[4:]!r}; this scenario has {', '.join(e.name for e in plan.eips) or 'none'}")
        return "public", eip.ip
    if dest.startswith("slb/"):
        slb = next((s for s in plan.slbs if s.host == dest or f"slb/{s.service}" == dest), None)
        if slb is None:
            raise KubevpcError(f"no SLB {dest!r}; this scenario has {', '.join('slb/' + s.service for s in plan.slbs) or 'none'}")
        return "slb", slb
    if _is_address(dest):
        return _by_address(plan, dest, port, proto)
    h = _host(plan, dest)
    if h.kind == "slb":
        return "slb", next(s for s in plan.slbs if s.host == h.key)
    if h.kind == "ecs" and h.node and not any(s.port == port and s.protocol.lower() == proto
                                              for s in plan.servers_at(h)):
        np = _nodeport_of(plan, port, proto)
        if np is not None:
            return "nodeport", (h, *np)
    return "host", h


def _by_address(plan: Plan, ip: str, port: int, proto: str):
    svc = next((s for s in plan.services if s.cluster_ip == ip), None)
    if svc is not None:
        return "svc", svc
    if any(e.ip == ip for e in plan.eips) or any(s.public_ip == ip for s in plan.slbs):
        return "public", ip
    if services_at(plan, ip):
        return "external-ip", ip
    h = next((h for h in plan.hosts if h.ip == ip), None)
    if plan.internet and ip in plan.internet.resolvers and plan.resolvers:
        # every VPC's resolver holds it (reach() takes the source's own), at this address
        return "host", plan.resolvers[0].model_copy(update={"ip": ip})
    if h is None and routed_vpc(plan, ip) is not None:
        return "routed", ip
    if h is None:
        raise KubevpcError(f"nothing in this scenario holds {ip}: expected an endpoint's, a ClusterIP, an EIP, an "
                           "SLB's address, a Service's external IP or an address a custom route sends to an ECS "
                           "instance")
    if h.kind == "slb":
        return "slb", next(s for s in plan.slbs if s.host == h.key)
    return classify(plan, h.key, port, proto)


def _nodeport_of(plan: Plan, port: int, proto: str) -> tuple[ServicePlan, int] | None:
    for svc in plan.services:
        for i, p in enumerate(svc.ports):
            if p.node_port == port and p.protocol.lower() == proto:
                return svc, i
    return None


def _addr(h: HostPlan, family: int) -> str:
    return h.ipv6 if family == 6 else h.ip


def _at(ip: str) -> str:
    """An address before a port: [IPv6]."""
    return f"[{ip}]" if ":" in ip else ip


def _final(plan: Plan, src: HostPlan, dest: str, port: int, proto: str, head: tuple[Step, ...], v: Verdict,
           dst: HostPlan | None = None, family: int = 4) -> Explanation:
    steps = head + v.steps
    if v.allowed and dst is not None:
        if not any(s.port == port and s.protocol.lower() == proto for s in plan.servers_at(dst)) and dst.kind != "slb":
            v = Verdict(False, f"the network lets it through, but nothing listens on {dst.key} {port}/{proto}: "
                               "refused", steps=v.steps)
            steps += (Step("destination", f"nothing listens on {dst.key} {port}/{proto}: the host refuses it", False),)
        else:
            steps += (Step("destination", f"{dst.key} {_at(_addr(dst, family))}:{port}/{proto} answers", True),)
    if v.allowed:
        own = _addr(src, family)
        steps += (Step("client address", f"the server sees {v.seen_source}" +
                       ("" if v.seen_source == own else f", not {src.key}'s own {own}")),)
    return Explanation(src.key, dest, port, proto, v.allowed, v.reason, v.seen_source if v.allowed else "", steps)


def _merge(src: HostPlan, dest: str, port: int, proto: str, head: tuple[Step, ...],
           branches: list[Branch], what: str = "endpoint") -> Explanation:
    """A destination that spreads connections over branches (endpoints, or an SLB's backends):
    allowed, refused, or it depends."""
    verdicts = {b.explanation.allowed for b in branches}
    if verdicts == {True}:
        allowed, reason = True, f"every one of {len(branches)} {what}(s) connects"
    elif verdicts == {False}:
        allowed, reason = False, f"no {what} connects; e.g. {branches[0].target}: {branches[0].explanation.reason}"
    else:
        good = [b.target.split()[0] for b in branches if b.explanation.allowed]
        allowed, reason = None, f"only some {what}s connect ({', '.join(good)}): it depends on the one chosen"
    seen = {b.explanation.seen_source for b in branches}
    return Explanation(src.key, dest, port, proto, allowed, reason, seen.pop() if allowed and len(seen) == 1 else "",
                       head, tuple(branches))


def _service(plan: Plan, src: HostPlan, svc: ServicePlan, dest: str, port: int, proto: str,
             head: tuple[Step, ...], family: int = 4) -> Explanation:
    whole, targets = service_targets(plan, src, svc, port, proto, family)
    if whole is not None:
        return Explanation(src.key, dest, port, proto, False, whole.reason, "", head + whole.steps)
    node = src.node or src.name
    local = " (internalTrafficPolicy Local: endpoints on this node only)" if svc.internal_traffic_policy == "Local" else ""
    affinity = f"; sessionAffinity ClientIP keeps a client on one ({svc.affinity_timeout} s)" if svc.session_affinity else ""
    index = next(i for i, p in enumerate(svc.ports) if p.port == port and p.protocol.lower() == proto)
    keys = {h.key for h, _, _ in targets}
    fallback = fallback_note([e for e in svc.endpoints if e.pod in keys and e.ports[index]])
    vip = svc.cluster_ip_of(family)
    head += (Step("Service", f"Service {svc.key} {_at(vip)}:{port}/{proto}: kube-proxy on node {node} DNATs each "
                             f"new connection to one of {len(targets)} {'terminating' if fallback else 'ready'} "
                             f"endpoint(s){fallback}{local}{affinity}"),)
    branches = []
    for h, target, v in targets:
        first = Step("Service", f"DNAT {_at(vip)}:{port} to {h.key} {_at(_addr(h, family))}:{target}{_dying(h)}")
        e = _final(plan, src, f"{h.key}:{target}", target, proto, (first,), v, h, family)
        branches.append(Branch(f"{h.key} {_at(_addr(h, family))}:{target}", e))
    return _merge(src, dest, port, proto, head, branches)


def _external_ip(plan: Plan, src: HostPlan, ip: str, dest: str, port: int, proto: str,
                 head: tuple[Step, ...]) -> Explanation:
    steps, whole, targets = external_ip_targets(plan, src, ip, port, proto)
    head += tuple(steps)
    if whole is not None:
        return Explanation(src.key, dest, port, proto, False, whole.reason, "", head + whole.steps)
    branches = []
    for h, target, v in targets:
        first = Step("Service", f"DNAT {ip}:{port} to {h.key} {h.ip}:{target}")
        branches.append(Branch(f"{h.key} {h.ip}:{target}", _final(plan, src, f"{h.key}:{target}", target, proto, (first,),
                                                                 v, h)))
    return _merge(src, dest, port, proto, head, branches)


def _public(plan: Plan, src: HostPlan, ip: str, dest: str, port: int, proto: str,
            head: tuple[Step, ...]) -> Explanation:
    if src.kind != "internet":
        reason = (f"{ip} is a public address of the emulated internet; kubevpc does not explain a connection from "
                  "inside a VPC to its own public addresses")
        return Explanation(src.key, dest, port, proto, False, reason, "", head + (Step("NAT", reason, False),))
    steps, whole, target = inbound(plan, src, ip, port, proto)
    head += tuple(steps)
    if whole is not None:
        return Explanation(src.key, dest, port, proto, False, whole.reason, "", head + whole.steps[len(steps):])
    if isinstance(target, SlbPlan):
        return _slb(plan, src, src.ip, target, dest, port, proto, head, from_edge=True)
    host, to_port = target.host, target.port
    v = with_policy(plan, to_host(plan, src, host, to_port, proto), src, host, to_port, proto)
    return replace(_final(plan, src, dest, to_port, proto, head, v, host), port=port)


def _slb(plan: Plan, src: HostPlan, client_ip: str, slb: SlbPlan, dest: str, port: int, proto: str,
         head: tuple[Step, ...], from_edge: bool = False) -> Explanation:
    listener = next((li for li in slb.listeners if li.port == port and li.protocol.lower() == proto), None)
    if listener is None:
        reason = f"SLB {slb.service} has no listener {port}/{proto}"
        return Explanation(src.key, dest, port, proto, False, reason, "", head + (Step("SLB", reason, False),))
    if not from_edge:
        vpc = plan.vswitch(slb.vswitch).vpc
        if src.kind == "internet" or vpc_of(plan, src) != vpc:
            reason = f"the SLB's VIP {slb.vip} is in VPC {vpc}, which {src.key} cannot reach"
            return Explanation(src.key, dest, port, proto, False, reason, "", head + (Step("VPC", reason, False),))
        att = attachment_of(plan, src.ip)
        if att is not None:
            out = egress(plan, Wire(src.ip, slb.vip, proto, port), att)
            head += out.steps
            if not out.allowed:
                return Explanation(src.key, dest, port, proto, False, out.reason, "", head)
    svc = plan.service(slb.service)
    index = next(i for i, p in enumerate(svc.ports) if p.port == port and p.protocol.lower() == proto)
    rotation, out = [], []
    for b in listener.backends:
        why = _out_of_rotation(svc, index, b)
        if why:
            out.append(Step("SLB", f"backend {b.id} is out of rotation: {why}"))
        else:
            rotation.append(b)
    if not rotation:
        reason = f"no backend of SLB {slb.service} is in rotation: it drops the connection"
        return Explanation(src.key, dest, port, proto, False, reason, "", head + tuple(out) + (Step("SLB", reason, False),))
    head += (*out, Step("SLB", f"listener {port}/{proto} ({slb.scheduler}) sends each connection to one of "
                               f"{len(rotation)} backend(s) in rotation, with the client's address {client_ip} kept "
                               "(a layer-4 listener)"))
    branches = []
    for b in rotation:
        first = Step("SLB", f"to backend {b.id} {b.ip}:{b.port}")
        if b.id.startswith("pod/"):
            e = _leg(plan, src, client_ip, plan.host(b.id), b.port, proto, (first,))
        else:
            node_host = next(h for h in plan.instances if h.name == b.id)
            e = _nodeport(plan, src, client_ip, node_host, svc, index, f"{b.id}:{b.port}", b.port, proto, (first,),
                          via_slb=True)
        branches.append(Branch(f"{b.id} {b.ip}:{b.port}", e))
    return _merge(src, dest, port, proto, head, branches, "backend")


def _out_of_rotation(svc: ServicePlan, index: int, b) -> str:
    """Why an SLB's health check takes a backend out of rotation ("" when it passes). A pod backend
    (eni mode) is checked on the pod itself. A node is checked on its NodePort, which kube-proxy
    does not program for a Service labelled to switch it off: refused; with externalTrafficPolicy
    Local, on the healthCheckNodePort, which answers 503 unless the node has a local endpoint that
    is ready: one serving while its pod terminates does not count (pkg/proxy/healthcheck, fed by
    LocalReadyEndpoints), so the SLB drains a node whose pods are all being deleted."""
    if b.id.startswith("pod/"):
        return ""
    if not svc.proxied:
        return (f"its health check on port {b.check_port} is refused: Service {svc.key} is labelled "
                f"{svc.proxy_off_label()}, so kube-proxy programs neither its NodePort nor its health check port")
    if svc.external_traffic_policy == "Local" and not [e for e in svc.ready_endpoints(index) if e.node == b.id]:
        return (f"its health check (healthCheckNodePort {svc.health_check_node_port}) answers 503, as {b.id} has no "
                f"local endpoint of {svc.key} that is ready (externalTrafficPolicy Local)")
    return ""


def _dying(h: HostPlan) -> str:
    return " (terminating, still serving)" if h.terminating else ""


def _leg(plan: Plan, src: HostPlan, client_ip: str, dst: HostPlan, port: int, proto: str,
         head: tuple[Step, ...]) -> Explanation:
    """A packet with the client's address `client_ip` from the VPC's side to a host: its route,
    the host's security groups, NetworkPolicy (the client is the source, as the pod sees it)."""
    steps = (route_step(plan, vpc_of(plan, dst), client_ip, dst.ip),)
    v = security_groups(plan, Wire(client_ip, dst.ip, proto, port), None, attachment_of(plan, dst.ip))
    v = Verdict(v.allowed, v.reason, client_ip if v.allowed else "", steps + v.steps)
    return _final(plan, src, f"{dst.key}:{port}", port, proto, head, with_policy(plan, v, src, dst, port, proto), dst)


def _nodeport(plan: Plan, src: HostPlan, client_ip: str, node_host: HostPlan, svc: ServicePlan, index: int,
              dest: str, port: int, proto: str, head: tuple[Step, ...], via_slb: bool = False,
              family: int = 4) -> Explanation:
    """A connection to a node's NodePort, from the client address `client_ip`: the node's
    security groups, then kube-proxy's DNAT by externalTrafficPolicy. `via_slb`: an SLB sends it
    (the client's own egress was met on the way to the SLB). `family` 6: at the node's IPv6
    address, to the endpoints' (dual stack)."""
    p = svc.ports[index]
    node_ip = _addr(node_host, family)
    if family == 6 and not (svc.has_family(6) and node_ip and client_ip):
        reason = (f"Service {svc.key} has no IPv6 (ipFamilies {', '.join(svc.ip_families)}): nothing listens on "
                  f"{node_host.key} [{node_ip}]:{port}: the node refuses it") if node_ip and client_ip else \
            f"{src.key if not client_ip else node_host.key} has no IPv6 address"
        return Explanation(src.key, dest, port, proto, False, reason, "", head + (Step("Service", reason, False),))
    if src.kind != "internet" and node_host.key != src.key:
        steps = (route_step(plan, vpc_of(plan, node_host), client_ip, node_ip),)
        src_att = attachment_of(plan, client_ip) if client_ip == _addr(src, family) and not via_slb else None
        v = security_groups(plan, Wire(client_ip, node_ip, proto, port), src_att, attachment_of(plan, node_ip))
    else:
        steps = ()
        v = security_groups(plan, Wire(client_ip, node_ip, proto, port), None, attachment_of(plan, node_ip))
    head += steps + v.steps
    if not v.allowed:
        return Explanation(src.key, dest, port, proto, False, v.reason, "", head)
    node = node_host.node
    local = svc.external_traffic_policy == "Local"
    ready = [e for e in (svc.local_endpoints(index, node) if local else svc.cluster_endpoints(index))
             if e.address(family)]
    reason = _nodeport_closed(svc, index, node_host, ready, family)
    if reason:
        return Explanation(src.key, dest, port, proto, False, reason, "", head + (Step("Service", reason, False),))
    how = (f"keeps the client's address {client_ip} (externalTrafficPolicy Local: endpoints on {node} only)" if local
           else f"masquerades it to {node_ip} (externalTrafficPolicy Cluster)")
    fallback = fallback_note(ready)
    head += (Step("Service", f"NodePort {p.node_port}/{proto} of Service {svc.key}: kube-proxy on {node} DNATs each "
                             f"connection to one of {len(ready)} {'terminating' if fallback else 'ready'} "
                             f"endpoint(s){fallback} and {how}"),)
    branches = []
    for e in ready:
        pod, target = plan.host(e.pod), e.ports[index]
        first = Step("Service", f"DNAT to {pod.key} {_at(_addr(pod, family))}:{target}{_dying(pod)}")
        if local:
            v = Verdict(True, "on the same node: switched by the node bridge", client_ip,
                        (Step("node bridge", f"node {node}'s bridge delivers it to {pod.key}", True),))
            v = with_policy6(plan, v, src, pod, target, proto) if family == 6 else \
                with_policy(plan, v, src, pod, target, proto)
            ex = _final(plan, src, f"{pod.key}:{target}", target, proto, (first,), v, pod, family)
        elif pod.host_network and pod.node == node:
            v = Verdict(True, f"delivered to node {node} itself: not masqueraded", client_ip, (Step(
                "node bridge", f"{pod.key} has hostNetwork on {node}: the bridge delivers it to the node, and "
                "kube-proxy's masquerade (nat POSTROUTING) never sees what a node takes itself", True),))
            ex = _final(plan, src, f"{pod.key}:{target}", target, proto, (first,), v, pod)
        else:
            ex = _final(plan, src, f"{pod.key}:{target}", target, proto, (first,),
                        reach(plan, node_host, pod, target, proto, family), pod, family)
        branches.append(Branch(f"{pod.key} {_at(_addr(pod, family))}:{target}", ex))
    return _merge(src, dest, port, proto, head, branches)


def _nodeport_closed(svc: ServicePlan, index: int, node_host: HostPlan, chosen: list, family: int = 4) -> str:
    """Why kube-proxy on a node takes no connection at a NodePort ("" when it balances them over
    `chosen`): the Service is not kube-proxy's (nothing listens there: the node refuses it), it has
    no usable endpoint (refused), or none on this node under externalTrafficPolicy Local (dropped)."""
    port = svc.ports[index].node_port
    if not svc.proxied:
        return (f"Service {svc.key} is labelled {svc.proxy_off_label()}: kube-proxy does not program its NodePort "
                f"{port}, and nothing listens on {node_host.key} {port}: the node refuses it")
    if not [e for e in svc.cluster_endpoints(index) if e.address(family)]:
        return no_endpoint_reason(svc, index, family)
    if not chosen:
        return f"externalTrafficPolicy Local and no endpoint on {node_host.node}: dropped"
    return ""


def _host(plan: Plan, ref: str) -> HostPlan:
    try:
        return resolve_endpoint(plan, ref)
    except KeyError:
        raise KubevpcError(f"no endpoint {ref!r}; expected pod/<namespace>/<name>, ecs/<name>, node/<name> or "
                           f"inet/<name>; this scenario has {', '.join(h.key for h in plan.hosts if h.kind != 'slb')}") \
            from None


def _is_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------- text
MARK = {True: "✓", False: "✗", None: "·"}


def lines(e: Explanation, indent: str = "") -> list[str]:
    """The explanation as text: one line a step, a branch indented under its target."""
    out = [f"{indent}{MARK[s.passes]} {s.stage}: {s.text}" for s in e.steps]
    for b in e.branches:
        out.append(f"{indent}→ {b.target}: {verdict_word(b.explanation.allowed)}")
        out += lines(b.explanation, indent + "    ")
    return out


def verdict_word(allowed: bool | None) -> str:
    return {True: "connects", False: "refused", None: "depends on the endpoint"}[allowed]
