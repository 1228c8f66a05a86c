"""The checks of a run: probes derived from the scenario plus its `expect:` list, each with the
evaluator's verdict (kubevpc.evaluator.reach) and the client address the server should see.
kubevpc.lab.checks runs them."""
from __future__ import annotations

from dataclasses import dataclass

from ..planning import HostPlan, Plan, resolve_endpoint
from .matrix import expect
from .reach import reach


@dataclass(frozen=True)
class Check:
    title: str              # what the check shows, e.g. "pod to pod across vSwitches"
    source: str
    dest: str
    port: int
    proto: str
    expect: bool            # should it connect?
    reason: str             # the evaluator's reason
    seen_source: str = ""   # the client address the server should see
    declared: bool = False  # from the scenario's expect list
    family: int = 4         # 6: to the destination's IPv6 address (dual stack)


def _first_port(h: HostPlan, proto: str = "TCP"):
    return next((s for s in h.servers if s.protocol == proto), None)


def _check(plan: Plan, title: str, src: HostPlan, dst: HostPlan, proto: str = "TCP", port: int | None = None,
           declared: bool = False, expect: bool | None = None, family: int = 4) -> Check | None:
    if port is None:
        server = _first_port(dst, proto)
        if server is None:
            return None
        port = server.port
    v = reach(plan, src, dst, port, proto.lower(), family)
    if expect is not None and expect != v.allowed:
        reason = f"declared {'allow' if expect else 'deny'}; the evaluator says: {v.reason}"
    else:
        reason = v.reason
    return Check(title, src.key, dst.key, port, proto.lower(), v.allowed if expect is None else expect, reason,
                 v.seen_source if (expect is None or expect == v.allowed) else "", declared, family)


def default_checks(plan: Plan) -> list[Check]:
    """One check per kind of path the foundation promises, where the scenario has one."""
    out: list[Check | None] = []
    # not the cluster DNS (it has its own tests), nor host-network pods (their paths are their nodes')
    workloads = [p for p in plan.own_pods if p.app == "server"]
    pods = [p for p in workloads if p.servers]
    all_pods = workloads
    nodes = {n.name: n for n in plan.nodes}

    def pick(pred, items):
        return next((x for x in items if pred(x)), None)

    if all_pods and pods:
        a = all_pods[0]
        same = pick(lambda p: p.node == a.node and p.key != a.key, pods)
        same_vsw = pick(lambda p: p.node != a.node and nodes[p.node].vswitch == nodes[a.node].vswitch, pods)
        cross = pick(lambda p: nodes[p.node].vswitch != nodes[a.node].vswitch, pods)
        for title, dst in (("pod to pod, same node", same), ("pod to pod, across nodes on one vSwitch", same_vsw),
                           ("pod to pod, across vSwitches", cross)):
            if dst:
                out.append(_check(plan, title, a, dst))
                out.append(_check(plan, title + " (UDP)", a, dst, "UDP"))
    plain = [h for h in plan.instances if not h.node]
    served = [h for h in plain if h.servers]
    cluster_vpc = plan.cluster.vpc if plan.cluster else ""
    if all_pods:
        for ecs in served:
            for s in ecs.servers:
                out.append(_check(plan, "pod to ECS" if plan.vswitch(ecs.vswitch).vpc == cluster_vpc else
                                  "pod to another VPC", all_pods[0], ecs, s.protocol, s.port))
        if pods:
            for ecs in plain:
                if plan.vswitch(ecs.vswitch).vpc == cluster_vpc:
                    out.append(_check(plan, "ECS to pod", ecs, pods[-1]))
    for dst in served:
        for src in plan.instances:
            if src.vswitch != dst.vswitch and src.key != dst.key:
                same_vpc = plan.vswitch(src.vswitch).vpc == plan.vswitch(dst.vswitch).vpc
                out.append(_check(plan, "ECS to ECS across vSwitches" if same_vpc else "ECS to another VPC",
                                  src, dst, dst.servers[0].protocol, dst.servers[0].port))
    if plan.cluster and plan.cluster.dual_stack:       # the same paths in IPv6, where both ends have it
        out += [_check(plan, c.title + " (IPv6)", plan.host(c.source), plan.host(c.dest), c.proto.upper(), c.port,
                       family=6) for c in list(out) if c and plan.host(c.source).ipv6 and plan.host(c.dest).ipv6]
    return [c for c in out if c is not None]


def declared_checks(plan: Plan) -> list[Check]:
    mode = plan.cluster.mode if plan.cluster else ""
    out = []
    for e in plan.expect:
        if e.get("modes") and mode not in e["modes"]:
            continue
        if e["to"].startswith("svc/"):
            out.append(_service_check(plan, e))
            continue
        src, dst = resolve_endpoint(plan, e["from"]), resolve_endpoint(plan, e["to"])
        family = e.get("family", 4)
        out.append(_check(plan, f"expect: {e['from']} -> {e['to']}" + (" (IPv6)" if family == 6 else ""), src, dst,
                          e["protocol"], e["port"], declared=True, expect=e["result"] == "allow", family=family))
    return out


def _service_check(plan: Plan, e: dict) -> Check:
    """A declared check to a Service's ClusterIP (svc/<namespace>/<name>): the evaluator judges
    the endpoints the connection may land on (kubevpc.evaluator.matrix.expect)."""
    src = resolve_endpoint(plan, e["from"])
    dest = f"svc/{plan.service(e['to'].removeprefix('svc/')).key}"
    proto = e["protocol"].lower()
    allowed, reason = expect(plan, src.key, dest, e["port"], proto)
    want = e["result"] == "allow"
    if allowed is None:
        reason = f"declared {e['result']}; the evaluator says it depends on the endpoint: {reason}"
    elif allowed != want:
        reason = f"declared {e['result']}; the evaluator says: {reason}"
    return Check(f"expect: {e['from']} -> {e['to']}", src.key, dest, e["port"], proto, want, reason, declared=True)
