"""Stage "workloads": the Kubernetes objects of the manifests checked, Pods, Deployments,
StatefulSets and DaemonSets expanded into pods placed on nodes (deterministically), the cluster
DNS pod added, and Terway's PodNetworking resolved for each pod it selects."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import k8s
from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .qos import pod_bandwidth
from .model import APP_ANNOTATION, APPS, DNS_POD, READY_ANNOTATION, HostPlan, ServerPort


@dataclass(frozen=True)
class PodSpec:
    """One pod to place: what the manifests say of it, and where they say it."""

    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    servers: tuple[ServerPort, ...]
    ready: bool
    app: str                        # server, ingress, or dns (the cluster DNS pod kubevpc adds)
    path: tuple
    source: object                  # the manifest's Source (None: made by kubevpc)
    annotations: dict[str, str] = field(default_factory=dict)
    phase: str = "Running"          # status.phase
    grace_period: int = 30          # spec.terminationGracePeriodSeconds
    terminating: HostPlan | None = None   # deleted and running out its grace period: as it runs
    host_network: bool = False      # spec.hostNetwork: in its node's namespace, with the node's address
    port_paths: tuple[tuple, ...] = ()    # where each of `servers` is declared (its containerPort)
    bandwidth: tuple[int, int] = (0, 0)   # ingress, egress limits in bit/s (0: none), from its annotations
    meta_path: tuple = ("metadata",)      # where its metadata is declared, under `path` (a Deployment's template)
    owner: str = ""                 # the kind of workload that made it: Deployment, StatefulSet, DaemonSet ("": a Pod)
    hostname: str = ""              # spec.hostname and spec.subdomain: a StatefulSet's pod is
    subdomain: str = ""             # <pod>.<serviceName> (its DNS name under that headless Service)

    @property
    def key(self) -> str:
        return f"pod/{self.namespace}/{self.name}"


def relabel(labels: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    out = dict(labels)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def namespace_labels(ctx: Context) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"default": {}, "kube-system": {}}
    for m in ctx.loaded.manifests:
        if isinstance(m.obj, k8s.Namespace):
            out[m.obj.metadata.name] = dict(m.obj.metadata.labels)
    return out


def expand_pods(ctx: Context, node_names: list[str]) -> list[PodSpec]:
    """Pods and Deployments as pods placed on nodes, in manifest order, then the cluster DNS pod."""
    namespaces = {"default", "kube-system"} | {m.obj.metadata.name for m in ctx.loaded.manifests
                                               if isinstance(m.obj, k8s.Namespace)}
    out: list[PodSpec] = []
    seen: dict[tuple[str, str, str], str] = {}
    for m in ctx.loaded.manifests:
        obj, path, msrc = m.obj, m.prefix, m.source
        key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
        if key in seen:
            ctx.bad(path + ("metadata", "name"), obj.metadata.name, f"duplicate {obj.kind} in namespace "
                    f"{obj.metadata.namespace}", msrc)
        seen[key] = m.path
        if isinstance(obj, (k8s.Namespace, k8s.PodNetworking)):      # cluster-scoped
            continue
        if obj.metadata.namespace not in namespaces:
            ctx.bad(path + ("metadata", "namespace"), obj.metadata.namespace,
                    "namespace not declared; expected a Namespace object in the manifests", msrc)
            continue
        if not node_names:
            ctx.bad(path, obj.kind, f"a {obj.kind} needs a cluster section with nodes", msrc)
            continue
        if isinstance(obj, k8s.Ingress) and not (ctx.sc.cluster and ctx.sc.cluster.ingress.allowSnippetAnnotations):
            for key in k8s.snippet_annotations(obj):
                ctx.bad(path + ("metadata", "annotations", key), obj.metadata.annotations[key],
                        k8s.snippet_refusal(key), msrc)
        if isinstance(obj, (k8s.Service, k8s.NetworkPolicy, k8s.Ingress, k8s.Secret, k8s.ConfigMap)):
            continue
        out += _pods_of(ctx, m, node_names, seen)
    out += _terminating(ctx, out)
    cl = ctx.sc.cluster
    if cl is not None and cl.dns.enabled and node_names:
        if ("Pod", "kube-system", DNS_POD) in seen:
            ctx.bad(("cluster", "dns", "enabled"), True, f"pod kube-system/{DNS_POD} is the cluster DNS; "
                    "expected no pod of that name, or cluster.dns.enabled: false")
        out.append(PodSpec(namespace="kube-system", name=DNS_POD, node=node_names[0], labels={"k8s-app": "kube-dns"},
                           servers=(ServerPort(port=53, protocol="UDP", name="dns"),
                                    ServerPort(port=53, protocol="TCP", name="dns-tcp")),
                           ready=True, app="dns", path=("cluster", "dns"), source=None))
    return out


def _terminating(ctx: Context, made: list[PodSpec]) -> list[PodSpec]:
    """Pods deleted with a grace period, kept as the running plan has them until it ends. A
    manifest may not make a pod of the same name meanwhile, as the API server refuses to."""
    names = {p.key: p for p in made}
    out = []
    for key in sorted(ctx.terminating):
        h = ctx.previous.get(key)
        if h is None:
            continue
        if key in names:
            p = names[key]
            ctx.bad(p.path + ("metadata", "name"), p.name, f"pod {p.namespace}/{p.name} is still terminating (deleted "
                    "with a grace period); expected another name, or the same once it is gone", p.source)
            continue
        out.append(PodSpec(namespace=h.namespace, name=h.name, node=h.node, labels=dict(h.labels),
                           servers=h.servers, ready=h.ready, app=h.app, path=("<terminating>", key), source=None,
                           phase=h.phase, grace_period=h.grace_period, terminating=h, host_network=h.host_network,
                           hostname=h.hostname, subdomain=h.subdomain))
    return out


def _replica_names(ctx: Context, obj: k8s.Deployment, pod_manifests: set[tuple[str, str]]) -> list[str]:
    """A Deployment's pods, `<name>-<index>`: those running stay (scaling down removes the highest
    indexes), and new ones take indexes above every one of its pods running, terminating or just
    deleted, so a replaced pod comes back under a new name, as the ReplicaSet controller's do."""
    ns, name, replicas = obj.metadata.namespace, obj.metadata.name, obj.spec.replicas
    pattern = re.compile(re.escape(name) + r"-(0|[1-9][0-9]{0,8})")
    ours = {}
    for h in ctx.previous.values():
        m = pattern.fullmatch(h.name)
        if h.kind == "pod" and h.namespace == ns and m and (ns, h.name) not in pod_manifests:
            ours[h.key] = int(m.group(1))
    running = sorted(i for k, i in ours.items() if not (ctx.previous[k].terminating or k in ctx.terminating
                                                         or k in ctx.deleted))[:replicas]
    top = max(ours.values(), default=-1)
    while len(running) < replicas:
        top += 1
        running.append(top)
    return [f"{name}-{i}" for i in running]


def _pods_of(ctx: Context, m, node_names: list[str], seen: dict) -> list[PodSpec]:
    """The pods of one Pod, Deployment, StatefulSet or DaemonSet manifest."""
    obj, path, msrc = m.obj, m.prefix, m.source
    phase = "Running"
    if isinstance(obj, k8s.Pod):
        spec, labels, annotations = obj.spec, obj.metadata.labels, obj.metadata.annotations
        meta, phase = ("metadata",), obj.status.phase
    else:
        spec, labels = obj.spec.template.spec, obj.spec.template.metadata.labels
        annotations = obj.spec.template.metadata.annotations
        meta = ("spec", "template", "metadata")
    ready = annotations.get(READY_ANNOTATION, "true")
    if ready not in ("true", "false"):
        ctx.bad(path + meta + ("annotations", READY_ANNOTATION), ready, 'expected "true" or "false"', msrc)
    app = annotations.get(APP_ANNOTATION, "server")
    if app not in APPS:
        ctx.bad(path + meta + ("annotations", APP_ANNOTATION), app, f"expected one of {', '.join(APPS)}", msrc)
    at = ("spec",) if isinstance(obj, k8s.Pod) else ("spec", "template", "spec")
    bandwidth = pod_bandwidth(ctx, annotations, path + meta, msrc, spec.hostNetwork)
    ports, port_paths = _server_ports(ctx, spec, path, msrc, path + at)
    if spec.nodeName is not None and spec.nodeName not in node_names:
        ctx.bad(path + at + ("nodeName",), spec.nodeName, f"no such node; expected one of {node_names}", msrc)
        return []
    if spec.hostNetwork and app != "server":
        ctx.bad(path + at + ("hostNetwork",), True, f"kubevpc runs the {app} pod (annotation {APP_ANNOTATION}) in a "
                "network namespace of its own; expected hostNetwork false, or no such annotation", msrc)
    out = []
    for name, placed in _placed(ctx, obj, node_names):
        before = ctx.previous.get(f"pod/{obj.metadata.namespace}/{name}")
        r = 0 if isinstance(obj, (k8s.Pod, k8s.DaemonSet)) else int(name.rpartition("-")[2])
        node = placed or spec.nodeName or (before.node if before else node_names[r % len(node_names)])
        pkey = ("Pod", obj.metadata.namespace, name)
        if pkey in seen and not isinstance(obj, k8s.Pod):
            ctx.bad(path + ("metadata", "name"), name, f"a pod of this {obj.kind} has the name of another pod", msrc)
        seen[pkey] = m.path
        out.append(PodSpec(namespace=obj.metadata.namespace, name=name, node=node,
                           labels=_pod_labels(obj, labels, name, r), servers=tuple(ports), ready=ready != "false",
                           app=APPS.get(app, "server"), path=path, source=msrc, annotations=dict(annotations),
                           phase=phase, grace_period=spec.terminationGracePeriodSeconds, host_network=spec.hostNetwork,
                           port_paths=tuple(port_paths), owner="" if isinstance(obj, k8s.Pod) else obj.kind,
                           bandwidth=bandwidth, meta_path=meta, **_stable_name(obj, name)))
    return out


def _placed(ctx: Context, obj, node_names: list[str]) -> list[tuple[str, str | None]]:
    """The pods of a Pod, Deployment, StatefulSet or DaemonSet: each one's name, and its node when
    the workload decides it (a DaemonSet's; None: by nodeName, or round-robin by index)."""
    if isinstance(obj, k8s.Pod):
        return [(obj.metadata.name, None)]
    if isinstance(obj, k8s.DaemonSet):
        return _daemon_pods(ctx, obj, node_names)
    if isinstance(obj, k8s.StatefulSet):
        return [(name, None) for name in _ordinal_names(ctx, obj)]
    pod_manifests = {(x.obj.metadata.namespace, x.obj.metadata.name) for x in ctx.loaded.manifests
                     if isinstance(x.obj, k8s.Pod)}
    return [(name, None) for name in _replica_names(ctx, obj, pod_manifests)]


def node_labels(ctx: Context, node: str) -> dict[str, str]:
    """A node's labels: the well-known ones the kubelet sets (hostname, os, arch) and the
    scenario's cluster.nodeLabels."""
    declared = ctx.sc.cluster.nodeLabels.get(node, {}) if ctx.sc.cluster else {}
    return {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", **declared}


def _daemon_pods(ctx: Context, obj: k8s.DaemonSet, node_names: list[str]) -> list[tuple[str, str | None]]:
    """A DaemonSet's pods: one on each node whose labels its template's nodeSelector matches, named
    `<name>-<node>` (the DaemonSet controller names them `<name>-<random>`; kubevpc's names are
    stable, so tests and `kubevpc explain` can name them). A node whose pod is terminating, or is
    deleted by this change, gets its new one only once the old is gone, as the DaemonSet controller
    does (pkg/controller/daemon: podsShouldBeOnNode creates a pod only on a node that has none);
    the Lab does so in a change of its own (kubevpc.lab.changes.recreated)."""
    selector = obj.spec.template.spec.nodeSelector
    ns, name = obj.metadata.namespace, obj.metadata.name
    out: list[tuple[str, str | None]] = []
    for node in node_names:
        labels = node_labels(ctx, node)
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        key = f"pod/{ns}/{name}-{node}"
        before = ctx.previous.get(key)
        if key in ctx.terminating or (before is not None and (before.terminating or key in ctx.deleted)):
            continue
        out.append((f"{name}-{node}", node))
    return out


def _ordinal_names(ctx: Context, obj: k8s.StatefulSet) -> list[str]:
    """A StatefulSet's pods, `<name>-0` .. `<name>-(replicas-1)`. One whose previous incarnation is
    terminating, or is deleted by this change, is left out: the StatefulSet controller creates it
    again under the same name only once the old one is gone (the Lab does so in a change of its
    own, kubevpc.lab.changes.recreated)."""
    ns, name = obj.metadata.namespace, obj.metadata.name
    out = []
    for i in range(obj.spec.replicas):
        key = f"pod/{ns}/{name}-{i}"
        before = ctx.previous.get(key)
        if key in ctx.terminating or (before is not None and (before.terminating or key in ctx.deleted)):
            continue
        out.append(f"{name}-{i}")
    return out


def _pod_labels(obj, labels: dict[str, str], name: str, r: int) -> dict[str, str]:
    """A pod's labels: its template's, and what its controller adds (the ReplicaSet's
    pod-template-hash; the StatefulSet's revision hash, pod name and index; the DaemonSet's revision
    hash and template generation)."""
    if isinstance(obj, k8s.Deployment):
        return dict(labels) | {"pod-template-hash": "kubevpc"}
    if isinstance(obj, k8s.StatefulSet):
        return dict(labels) | {"controller-revision-hash": f"{obj.metadata.name}-kubevpc",
                               "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": str(r)}
    if isinstance(obj, k8s.DaemonSet):
        return dict(labels) | {"controller-revision-hash": f"{obj.metadata.name}-kubevpc",
                               "pod-template-generation": "1"}
    return dict(labels)


def _stable_name(obj, name: str) -> dict[str, str]:
    """A StatefulSet's pod has its own name as hostname and the governing Service as subdomain."""
    if isinstance(obj, k8s.StatefulSet) and obj.spec.serviceName:
        return {"hostname": name, "subdomain": obj.spec.serviceName}
    return {}


def _server_ports(ctx: Context, spec, path: tuple, msrc, at: tuple) -> tuple[list[ServerPort], list[tuple]]:
    """The pod's container ports as its server's, and the path of each (`at`: the pod spec's)."""
    ports, paths, port_names = [], [], set()
    for i, c in enumerate(spec.containers):
        for j, p in enumerate(c.ports):
            if p.name and p.name in port_names:
                ctx.bad(path, p.name, "duplicate container port name in the pod", msrc)
            port_names.add(p.name)
            if p.protocol == "SCTP":
                continue        # accepted by the model; this kernel cannot carry SCTP
            ports.append(ServerPort(port=p.containerPort, protocol=p.protocol, name=p.name or ""))
            paths.append(at + ("containers", i, "ports", j, "containerPort"))
    return ports, paths


def check_policy_limits(ctx: Context) -> None:
    """What the flows can hold (kubevpc.k8s.MAX_*): beyond it, an error, not a controller failure."""
    found = [m for m in ctx.loaded.manifests if isinstance(m.obj, k8s.NetworkPolicy)]
    if len(found) > k8s.MAX_NETWORK_POLICIES:
        ctx.bad(found[k8s.MAX_NETWORK_POLICIES].prefix, len(found),
                f"at most {k8s.MAX_NETWORK_POLICIES} NetworkPolicies", found[k8s.MAX_NETWORK_POLICIES].source)
    for direction, key in (("Ingress", "ingress"), ("Egress", "egress")):
        total = 0
        for m in found:
            rules = m.obj.spec.rules(direction)
            total += len(rules)
            if len(rules) > k8s.MAX_RULES_PER_POLICY:
                ctx.bad(m.prefix + ("spec", key), len(rules),
                        f"at most {k8s.MAX_RULES_PER_POLICY} {key} rules in one NetworkPolicy", m.source)
            if total > k8s.MAX_RULES_PER_DIRECTION:
                ctx.bad(m.prefix + ("spec", key), total, f"at most {k8s.MAX_RULES_PER_DIRECTION} "
                        f"{key} rules in all NetworkPolicies together (two flow priorities each)", m.source)
                break


@dataclass(frozen=True)
class PodNetworkingChoice:
    """What the PodNetworking that selects a pod says of it: its security groups (None: the
    default), the vSwitches of its node's zone it takes an address from, in order, and how one is
    chosen ("first" with a free address, or "most" free), how its address is held, and the kind
    of ENI it is on (eniOptions.eniType)."""

    name: str
    security_groups: tuple[str, ...] | None = None
    vswitches: tuple[str, ...] | None = None
    policy: str = "first"
    allocation: k8s.AllocationType = k8s.AllocationType()
    eni_type: str = "Default"


def pod_networking(ctx: Context, cluster: Cluster, cloud: Cloud, pods: list[PodSpec]) -> dict[str, PodNetworkingChoice]:
    """Terway's PodNetworking: for each pod it selects (by the pod's annotation naming it, else
    the first in manifest order whose selectors match), what it says of the pod. A terminating pod
    keeps what it has (kubevpc/planning/eni.py)."""
    found = [m for m in ctx.loaded.manifests if isinstance(m.obj, k8s.PodNetworking)]
    if not found or not cluster.spec:
        return {}
    if cluster.mode != "eni":
        for m in found:
            ctx.bad(m.prefix + ("kind",), "PodNetworking", f"PodNetworking (Terway) applies in eni mode only; "
                    f"expected cluster.mode eni, not {cluster.mode}", m.source)
        return {}
    ctx.problems.unique([m.prefix + ("metadata", "name") for m in found], [m.obj.metadata.name for m in found],
                        "PodNetworking")
    for m in found:
        _check_pod_networking(ctx, cluster, cloud, m)
    if ctx.problems:
        return {}
    by_name = {m.obj.metadata.name: m.obj for m in found}
    namespaces = namespace_labels(ctx)
    out = {}
    for pod in pods:
        if pod.app == "dns" or pod.terminating is not None or pod.host_network:   # a host-network pod has no ENI
            continue
        wanted = pod.annotations.get(k8s.POD_NETWORKING_ANNOTATION)
        if wanted is not None and wanted not in by_name:
            ctx.bad(pod.path + ("metadata", "annotations", k8s.POD_NETWORKING_ANNOTATION), wanted,
                    f"no such PodNetworking; expected one of {sorted(by_name)}", pod.source)
            continue
        ns_labels = {**namespaces.get(pod.namespace, {}), k8s.NAMESPACE_NAME_LABEL: pod.namespace}
        pn = by_name[wanted] if wanted else next(
            (m.obj for m in found if m.obj.selects(pod.labels, ns_labels)), None)
        if pn is not None:
            choice = _choice(ctx, cluster, cloud, pod, pn)
            if choice is not None:
                out[pod.key] = choice
    return out


def _choice(ctx: Context, cluster: Cluster, cloud: Cloud, pod: PodSpec, pn: k8s.PodNetworking
            ) -> PodNetworkingChoice | None:
    """What `pn` gives `pod`: its vSwitchOptions of the node's zone (a problem when there is none)."""
    vsws = None
    if pn.spec.vSwitchOptions:
        zone = cloud.vswitch(cluster.instances[pod.node].vswitch).zone
        vsws = tuple(v for v in pn.spec.vSwitchOptions if cloud.vswitch(v).zone == zone)
        if not vsws:
            ctx.bad(pod.path, f"{pod.namespace}/{pod.name}",
                    f"PodNetworking {pn.metadata.name} has no vSwitch in zone {zone} of node {pod.node}; "
                    f"expected one of its vSwitchOptions there", pod.source)
            return None
    policy = "most" if pn.spec.vSwitchSelectOptions.vSwitchSelectionPolicy == "most" else "first"
    return PodNetworkingChoice(name=pn.metadata.name, security_groups=tuple(pn.spec.securityGroupIDs) or None,
                               vswitches=vsws, policy=policy, allocation=pn.spec.allocationType,
                               eni_type=pn.spec.eniOptions.eniType)


def _check_pod_networking(ctx: Context, cluster: Cluster, cloud: Cloud, m) -> None:
    for k, g in enumerate(m.obj.spec.securityGroupIDs):
        if g not in cloud.groups:
            ctx.bad(m.prefix + ("spec", "securityGroupIDs", k), g,
                    f"no such security group; expected one of {sorted(cloud.groups)}", m.source)
        elif cloud.groups[g].vpc != cluster.vpc:
            ctx.bad(m.prefix + ("spec", "securityGroupIDs", k), g,
                    f"expected a security group of the cluster's VPC {cluster.vpc}", m.source)
    for k, v in enumerate(m.obj.spec.vSwitchOptions):
        if v not in cloud.index or cloud.vswitch(v).vpc != cluster.vpc:
            ctx.bad(m.prefix + ("spec", "vSwitchOptions", k), v,
                    f"expected a vSwitch of the cluster's VPC {cluster.vpc}", m.source)
