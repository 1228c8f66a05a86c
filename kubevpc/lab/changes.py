"""What a change to a running scenario does to its manifests, before it is planned again: objects
parsed and checked as the API server would, applied, scaled or deleted by kind, namespace and
name, Services keeping their ClusterIP and NodePorts; and, once planned, which pods the new plan
adds and removes (a running pod never moves or changes shape). Pure: the Lab (kubevpc/lab/lab.py)
plans the result and carries it out."""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError

from ..errors import KubevpcError
from ..k8s import Ingress, Secret
from ..k8s import (ConfigMap, DaemonSet, Deployment, Namespace, NetworkPolicy, Pod, Service, StatefulSet, kind_of,
                   refusal, skip_reason)
from ..scenario.load import LIST, Loaded, Manifest, Source, all_kinds, pydantic_problems
from ..planning import TERMINAL_PHASES, HostPlan, NodePlan, Plan, Uplink, make_plan


RUNTIME_KINDS = (Service, NetworkPolicy, Namespace, Ingress, Secret, Pod, Deployment, StatefulSet, DaemonSet, ConfigMap)


def parse_objects(objects, origin: str = "<api>", warn: Callable[[str], None] = lambda s: None) -> list:
    """Objects that may change while running, validated as the API server would; a `kind: List`
    stands for its items. Objects of kinds that do not touch the network are skipped, each told to
    `warn` (kubevpc.k8s.skipped)."""
    out = []
    for obj in _flattened(objects):
        skipped = skip_reason(obj)
        if skipped is not None:
            warn(f"{origin}: {kind_of(obj)[1]}/{_name(obj)}: {skipped}")
            continue
        cls = all_kinds().get(kind_of(obj))
        if cls not in RUNTIME_KINDS:
            why = refusal(obj)
            raise KubevpcError(f"{'/'.join(kind_of(obj))} is not emulated: {why}" if why else
                               "only Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods, Deployments, "
                               "StatefulSets, DaemonSets and ConfigMaps can be applied while the scenario runs, not "
                               f"{'/'.join(kind_of(obj))}")
        try:
            parsed = cls.model_validate(obj)
        except ValidationError as exc:
            raise KubevpcError(f"{kind_of(obj)[1]} {_name(obj)} is invalid: " + "; ".join(
                f"{p.path}: {p.expected}" for p in pydantic_problems(Source(origin, obj, {}), exc))) from None
        meta = parsed.metadata
        # problems the planner finds in it name the origin and the object's own paths
        out.append(Manifest(obj=parsed, file=origin, path=f"{origin}/{cls.__name__}/{meta.namespace}/{meta.name}",
                            source=Source(origin, obj, {}), prefix=()))
    return out


def _flattened(objects) -> list:
    """The objects, each `kind: List` (kubectl's) replaced by its items."""
    out = []
    for obj in objects:
        if isinstance(obj, dict) and kind_of(obj) == LIST:
            items = obj.get("items")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise KubevpcError("a List's items must be a list of Kubernetes objects (mappings)")
            out += items
        elif isinstance(obj, dict):
            out.append(obj)
        else:
            raise KubevpcError(f"expected Kubernetes objects (mappings), not a {type(obj).__name__}")
    return out


def _name(obj: dict) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name", "?"))[:253] if isinstance(meta, dict) else "?"


def applied(manifests, entries: list) -> list:
    """The manifests with each entry added, or in place of the object of its kind, namespace and name."""
    manifests = list(manifests)
    for entry in entries:
        cls, meta = type(entry.obj), entry.obj.metadata
        at = find_manifest(manifests, cls, meta.namespace, meta.name)
        if at is None:
            manifests.append(entry)
        else:
            manifests[at] = entry
    return manifests


SCALABLE = {"deploy": Deployment, "deployment": Deployment, "deployments": Deployment,
            "sts": StatefulSet, "statefulset": StatefulSet, "statefulsets": StatefulSet}


def scaled(manifests, workload: str, replicas: int) -> list:
    """The manifests with a Deployment's (`deploy/<ns>/<name>`) or a StatefulSet's
    (`sts/<ns>/<name>`) replicas set."""
    kind, _, rest = workload.partition("/")
    ns, _, name = rest.rpartition("/")
    if kind not in SCALABLE or not name:
        raise KubevpcError(f"cannot scale {workload!r}; expected deploy/<namespace>/<name>, deploy/<name>, "
                           "sts/<namespace>/<name> or sts/<name>")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise KubevpcError(f"replicas {replicas!r}: expected a whole number, 0 or more")
    cls = SCALABLE[kind]
    at = find_manifest(manifests, cls, ns or "default", name)
    if at is None:
        raise KubevpcError(f"no {cls.__name__} {ns or 'default'}/{name} in this scenario")
    m = manifests[at]
    obj = m.obj.model_copy(update={"spec": m.obj.spec.model_copy(update={"replicas": replicas})})
    manifests = list(manifests)
    manifests[at] = dataclasses.replace(m, obj=obj)
    return manifests


def with_network_policies(manifests, objects, origin: str = "<api>") -> list:
    """The manifests with these NetworkPolicies in place of all others."""
    for obj in objects:
        if kind_of(obj) != ("networking.k8s.io/v1", "NetworkPolicy"):
            raise KubevpcError(f"expected NetworkPolicies, not {'/'.join(kind_of(obj))}")
    kept = [m for m in manifests if not isinstance(m.obj, NetworkPolicy)]
    return kept + parse_objects(objects, origin)


DELETABLE = {"svc": Service, "service": Service, "netpol": NetworkPolicy, "networkpolicy": NetworkPolicy,
             "ing": Ingress, "ingress": Ingress, "pod": Pod, "po": Pod, "deploy": Deployment,
             "deployment": Deployment, "sts": StatefulSet, "statefulset": StatefulSet, "ds": DaemonSet,
             "daemonset": DaemonSet}


def deleted(manifests, plan: Plan, ref: str) -> tuple[list, frozenset[str]]:
    """The manifests without the object `ref` names (KIND/<ns>/<name>), and the pods deleted on
    their own: a pod of a Deployment stays in its manifest, and the Deployment replaces it under
    a new name, as the ReplicaSet controller does; a StatefulSet's is created again under its own
    name once it is gone (`recreated`). The cluster's own pod (the DNS) is refused."""
    kind, _, rest = ref.partition("/")
    ns, _, name = rest.rpartition("/")
    if kind.lower() not in DELETABLE or not name:
        raise KubevpcError(f"cannot delete {ref!r}; expected svc/, netpol/, ingress/, pod/, deploy/, sts/ or ds/ "
                           "followed by <namespace>/<name>")
    cls = DELETABLE[kind.lower()]
    at = find_manifest(manifests, cls, ns or "default", name)
    key = f"pod/{ns or 'default'}/{name}"
    if at is None and cls is Pod and key in {h.key for h in plan.pods}:
        if plan.host(key).app == "dns":
            raise KubevpcError(f"pod {ns or 'default'}/{name} is the cluster's own (the DNS); it cannot be deleted")
        return list(manifests), frozenset({key})
    if at is None:
        raise KubevpcError(f"no {cls.__name__} {ns or 'default'}/{name} in this scenario")
    return manifests[:at] + manifests[at + 1:], frozenset()


@dataclass(frozen=True)
class Replanned:
    """A change planned: the scenario as it now is, its plan, the pods the change adds and removes,
    the readiness and labels set while running (those of removed pods forgotten), and the node
    uplinks (ENIs) it attaches, by node."""

    loaded: Loaded
    plan: Plan
    added: list[HostPlan]
    removed: list[HostPlan]
    ready: dict[str, bool]
    labels: dict
    uplinks: list[tuple[str, Uplink]] = dataclasses.field(default_factory=list)
    nodes: list[NodePlan] = dataclasses.field(default_factory=list)     # nodes added (kubevpc/lab/nodes.py)


def replan(loaded: Loaded, previous: Plan, run: str, manifests, ready: dict[str, bool], labels: dict,
           terminating: frozenset[str] = frozenset(), deleted: frozenset[str] = frozenset(),
           now: float = 0.0) -> Replanned:
    """Plan the changed manifests against the running plan: pods that stay keep their node,
    address and port, and every Service its ClusterIP and NodePorts, whatever comes or goes before
    it; `terminating` pods stay as they are, `deleted` ones go; `now` (wall-clock) releases the
    fixed addresses whose TTL has passed (kubevpc.planning.make_plan)."""
    manifests = [dataclasses.replace(m, obj=keep_allocations(m.obj, previous)) if isinstance(m.obj, Service)
                 else m for m in manifests]
    loaded = dataclasses.replace(loaded, manifests=tuple(manifests))
    plan = make_plan(loaded, run, ready, labels, previous=previous, terminating=terminating, deleted=deleted, now=now)
    added, removed = pods_changed(previous, plan)
    gone = {h.key for h in removed}
    nodes = nodes_added(previous, plan)
    return Replanned(pinned(loaded, {n.name: n.ip for n in nodes}), plan, added, removed,
                     {k: v for k, v in ready.items() if k not in gone}, {k: v for k, v in labels.items() if k not in gone},
                     uplinks_added(previous, plan), nodes)


def recreated(manifests, removed) -> list[str]:
    """The pods of `removed` (hosts) that a StatefulSet or a DaemonSet of the manifests wants back
    under the same name: their controllers create each again once the old one is gone (a
    DaemonSet's pod is `<name>-<node>`; the plan decides whether its node still matches)."""
    wanted = {f"pod/{m.obj.metadata.namespace}/{m.obj.metadata.name}-{i}" for m in manifests
              if isinstance(m.obj, StatefulSet) for i in range(m.obj.spec.replicas)}
    daemons = {(m.obj.metadata.namespace, m.obj.metadata.name) for m in manifests if isinstance(m.obj, DaemonSet)}
    return sorted(h.key for h in removed if h.kind == "pod" and (
        h.key in wanted or (h.name.endswith(f"-{h.node}") and (h.namespace, h.name[:-len(h.node) - 1]) in daemons)))


def find_manifest(manifests, cls, namespace: str, name: str) -> int | None:
    return next((i for i, m in enumerate(manifests) if isinstance(m.obj, cls)
                 and (m.obj.metadata.namespace, m.obj.metadata.name) == (namespace, name)), None)


def keep_allocations(svc, plan: Plan):
    """The API server keeps a Service's ClusterIP and NodePorts across updates: so do we."""
    try:
        old = plan.service(f"{svc.metadata.namespace}/{svc.metadata.name}")
    except KeyError:
        return svc
    spec = svc.spec.model_dump(exclude_none=True)
    if svc.spec.clusterIP is None and old.cluster_ip:
        spec["clusterIP"] = old.cluster_ip
    kept = {(p.port, p.protocol): p.node_port for p in old.ports if p.node_port}
    if svc.spec.healthCheckNodePort is None and old.health_check_node_port and \
            svc.spec.type == "LoadBalancer" and svc.spec.externalTrafficPolicy == "Local":
        spec["healthCheckNodePort"] = old.health_check_node_port
    if svc.spec.type in ("NodePort", "LoadBalancer"):
        for p in spec.get("ports", []):
            if "nodePort" not in p and (p["port"], p.get("protocol", "TCP")) in kept:
                p["nodePort"] = kept[(p["port"], p.get("protocol", "TCP"))]
    return Service.model_validate({"apiVersion": "v1", "kind": "Service",
                                   "metadata": svc.metadata.model_dump(), "spec": spec})


def pinned(loaded: Loaded, ips: dict[str, str]) -> Loaded:
    """The scenario with these instances' addresses (by name) written in: an ECS instance keeps the
    primary address it was given when it was created, whatever is freed below it later."""
    if not ips:
        return loaded
    sc = loaded.scenario
    instances = [e.model_copy(update={"ip": ipaddress.IPv4Address(ips[e.name])}) if e.name in ips else e
                 for e in sc.cloud.instances]
    return dataclasses.replace(loaded, scenario=sc.model_copy(
        update={"cloud": sc.cloud.model_copy(update={"instances": instances})}))


def nodes_added(old: Plan, new: Plan) -> list[NodePlan]:
    """The nodes a change adds (kubevpc/lab/nodes.py). A running node keeps its name, address,
    bridge and pod CIDR: a change that would alter one is refused."""
    for a, b in zip(old.nodes, new.nodes):
        if (a.name, a.ip, a.bridge, a.pod_cidr) != (b.name, b.ip, b.bridge, b.pod_cidr):
            raise KubevpcError(f"node {a.name} would change ({a.name} {a.ip} {a.pod_cidr or '-'} -> {b.name} {b.ip} "
                               f"{b.pod_cidr or '-'}), which a running scenario cannot do; restart the scenario "
                               "with the change instead")
    if len(new.nodes) < len(old.nodes):
        raise KubevpcError(f"node {old.nodes[len(new.nodes)].name} would be removed, which a running scenario "
                           "cannot do; restart the scenario with the change instead")
    return list(new.nodes[len(old.nodes):])


def uplinks_added(old: Plan, new: Plan) -> list[tuple[str, Uplink]]:
    """The uplinks (ENIs) a change attaches to running nodes: in eni mode, a node whose pods take
    addresses from a pod vSwitch it has no uplink to gets one. A node keeps every uplink it has, in
    order; one that would lose or renumber one is refused."""
    out = []
    for a, b in zip(old.nodes, new.nodes):
        if b.uplinks[:len(a.uplinks)] != a.uplinks:
            raise KubevpcError(f"node {a.name}'s uplinks would change ({', '.join(u.vswitch for u in a.uplinks)} -> "
                               f"{', '.join(u.vswitch for u in b.uplinks)}), which a running scenario cannot do; "
                               "restart the scenario with the change instead")
        out += [(b.name, u) for u in b.uplinks[len(a.uplinks):]]
    return out


def pods_changed(old: Plan, new: Plan) -> tuple[list[HostPlan], list[HostPlan]]:
    """The pods and SLB namespaces a change adds and removes. Everything else must stay as it is,
    but for uplinks attached to running nodes (`uplinks_added`) and nodes added (`nodes_added`,
    with their instances, bridges and uplinks; other bridges keep their numbers): a change that would add or remove
    other hosts, detach an uplink, renumber a running SLB, or move, renumber or reshape a running
    pod, is refused."""
    def comes_and_goes(h: HostPlan) -> bool:
        return h.kind in ("pod", "slb")

    joined = nodes_added(old, new)          # nodes added: their instance, bridge and uplinks are new
    attached = {name for _, u in uplinks_added(old, new) + [(n.name, u) for n in joined for u in n.uplinks]
                for name in (u.port, u.peer, u.patch, u.patch_peer)}
    instances, bridges = {n.ecs for n in joined}, {n.bridge for n in joined}

    def fixed(p: Plan):
        ours = {h.veth for h in p.hosts if comes_and_goes(h)}
        return ([h for h in p.hosts if not comes_and_goes(h) and h.key not in instances],
                {b.name: [x for x in b.ports if not (x.kind == "veth" and x.name in ours) and x.name not in attached]
                 for b in p.bridges if b.name not in bridges}, {b.name: (b.dpid, b.zone) for b in p.bridges
                                                                if b.name not in bridges})
    if fixed(old) != fixed(new):
        was = {h.key for h in old.hosts if not comes_and_goes(h)}
        now = {h.key for h in new.hosts if not comes_and_goes(h)}
        what = ", ".join(sorted(now - was)) or ", ".join(f"-{k}" for k in sorted(was - now))
        raise KubevpcError("this change adds or removes node uplinks" + (f" ({what})" if what else "") +
                           ", which a running scenario cannot do; restart the scenario with the change instead")
    before = {h.key: h for h in old.hosts if comes_and_goes(h)}
    after = {h.key: h for h in new.hosts if comes_and_goes(h)}
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        if a.kind == "slb":
            if a != b:
                raise KubevpcError(f"{key} would change its address or port ({a.vswitch} {a.ip} -> {b.vswitch} "
                                   f"{b.ip}): a running SLB cannot; delete the Service and create it again")
            continue
        for field, what in (("node", "node"), ("servers", "ports"), ("app", "program"), ("host_network", "hostNetwork")):
            if getattr(a, field) != getattr(b, field):
                raise KubevpcError(f"{key} would change its {what} ({getattr(a, field) or '-'} -> "
                                   f"{getattr(b, field) or '-'}): a running pod cannot; delete it and create it "
                                   "again (a Deployment replaces a pod deleted)")
        if a.phase in TERMINAL_PHASES and b.phase != a.phase:
            raise KubevpcError(f"{key} is in phase {a.phase}, which is final: its containers do not run again "
                               f"(not {b.phase}); delete it and create it again")
    return ([h for k, h in after.items() if k not in before], [h for k, h in before.items() if k not in after])
