"""Stage "eni config": the vSwitches each node's eni pods take addresses from, in which order, and
the security groups they carry, as Terway is configured (kubevpc/k8s/config.py): the ConfigMap
kube-system/eni-config, with a node's own ConfigMap (named by its label terway-config) merged over
it; without an eni-config, the scenario's cluster.eni. A PodNetworking that selects a pod wins
over both (planning/workloads.py, pod_networking), as in Terway.

Terway's eni_conf lists vSwitches per zone; a node uses those of its own zone, or its own vSwitch
when the zone has none. Its `vswitch_selection_policy` "ordered" means, in Terway's code, the
vSwitch with the most free addresses first ("most"); anything else there means random, which
kubevpc, to stay reproducible, takes as the list in order: the first vSwitch with a free address.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from .. import k8s
from ..scenario.load import Source, pydantic_problems
from .cloud import Cloud
from .cluster import Cluster
from .context import Context

FIRST, MOST = "first", "most"        # the first vSwitch in order with a free address; the one with the most


@dataclass(frozen=True)
class NodeEni:
    """A node's eni pods' defaults: their vSwitches (of the node's zone, in order, never empty), how
    one is chosen, their security groups (None: the node's own), and where that comes from."""

    vswitches: tuple[str, ...]
    policy: str
    security_groups: tuple[str, ...] | None
    source: str


def plan_eni_config(ctx: Context, cloud: Cloud, cluster: Cluster) -> dict[str, NodeEni]:
    """Every node's NodeEni (eni mode; {} otherwise), with a problem for each wrong reference."""
    cl = cluster.spec
    if not cl:
        return {}
    labelled = _node_labels(ctx, cluster)
    maps = {m.obj.metadata.name: m for m in ctx.loaded.manifests
            if isinstance(m.obj, k8s.ConfigMap) and m.obj.metadata.namespace == k8s.TERWAY_NAMESPACE}
    if cluster.mode != "eni":
        _refuse_outside_eni(ctx, cluster.mode, maps.get(k8s.ENI_CONFIG), labelled)
        return {}
    docs: dict[str, dict] = {}
    for name in [k8s.ENI_CONFIG] + sorted(set(labelled.values())):
        m = maps.get(name)
        if m is not None:
            docs[name] = _document(ctx, cloud, cluster, m)
        elif name != k8s.ENI_CONFIG:
            for node in sorted(n for n, v in labelled.items() if v == name):
                ctx.bad(("cluster", "nodeLabels", node, k8s.NODE_CONFIG_LABEL), name,
                        f"no ConfigMap {k8s.TERWAY_NAMESPACE}/{name} in the manifests; expected the ConfigMap that "
                        f"holds node {node}'s Terway configuration (its eni_conf)")
    if k8s.ENI_CONFIG in maps and (cl.eni.vswitches or cl.eni.securityGroups is not None):
        ctx.bad(("cluster", "eni"), cl.eni.model_dump(exclude_defaults=True),
                f"the ConfigMap {k8s.TERWAY_NAMESPACE}/{k8s.ENI_CONFIG} configures the pods' vSwitches and security "
                "groups; expected either it or cluster.eni, not both")
    if ctx.problems:
        return {}
    return {n: _node_eni(cloud, cluster, n, docs, labelled.get(n)) for n in cluster.nodes}


def _node_labels(ctx: Context, cluster: Cluster) -> dict[str, str]:
    """cluster.nodeLabels checked; the nodes labelled terway-config, with the ConfigMap each names."""
    out = {}
    for node, labels in ctx.sc.cluster.nodeLabels.items():
        if node not in cluster.nodes:
            ctx.bad(("cluster", "nodeLabels", node), node, f"no such node of the cluster; expected one of "
                    f"{cluster.nodes}")
            continue
        try:
            k8s.check_labels(labels)
        except ValueError as exc:
            ctx.bad(("cluster", "nodeLabels", node), labels, str(exc))
            continue
        if k8s.NODE_CONFIG_LABEL in labels:
            out[node] = labels[k8s.NODE_CONFIG_LABEL]
    return out


def _refuse_outside_eni(ctx: Context, mode: str, m, labelled: dict[str, str]) -> None:
    why = (f"Terway's configuration applies in eni mode only (ACK's Flannel clusters have no Terway); expected "
           f"cluster.mode eni, not {mode}")
    if m is not None:
        ctx.bad(m.prefix + ("metadata", "name"), k8s.ENI_CONFIG, why, m.source)
    for node, name in sorted(labelled.items()):
        ctx.bad(("cluster", "nodeLabels", node, k8s.NODE_CONFIG_LABEL), name, why)


def _document(ctx: Context, cloud: Cloud, cluster: Cluster, m) -> dict:
    """A ConfigMap's eni_conf, checked: its vSwitches of the cluster's VPC, each in the zone it is
    listed under, and its security groups of that VPC. {} when it has none, or on a problem."""
    text = m.obj.data.get(k8s.ENI_CONF_KEY)
    at = m.prefix + ("data", k8s.ENI_CONF_KEY)
    if text is None:
        return {}
    try:
        doc = k8s.eni_conf_document(text)
    except ValueError as exc:
        ctx.bad(at, "<eni_conf>", str(exc), m.source)
        return {}
    try:
        conf = k8s.EniConf.model_validate(doc)
    except ValidationError as exc:
        src = Source(m.source.file, _nested(at, doc), m.source.lines) if m.source else Source("", _nested(at, doc))
        ctx.problems.items.extend(pydantic_problems(src, exc, at))
        return {}
    ok = True
    for zone, names in conf.vswitches.items():
        for k, name in enumerate(names):
            ok &= _check_vswitch(ctx, cloud, cluster, at + ("vswitches", zone, k), name, zone, m.source)
    for where, groups in (("security_group", [conf.security_group] if conf.security_group else []),
                          ("security_groups", conf.security_groups)):
        for k, g in enumerate(groups):
            path = at + ((where,) if where == "security_group" else (where, k))
            if g not in cloud.groups:
                ok = False
                ctx.bad(path, g, f"no such security group; expected one of {sorted(cloud.groups)}", m.source)
            elif cloud.groups[g].vpc != cluster.vpc:
                ok = False
                ctx.bad(path, g, f"expected a security group of the cluster's VPC {cluster.vpc}", m.source)
    return doc if ok else {}


def _nested(path: tuple, doc):
    """`doc` placed at `path` of an otherwise empty document, for pydantic_problems to walk."""
    for part in reversed(path):
        doc = [None] * part + [doc] if isinstance(part, int) else {part: doc}
    return doc


def _check_vswitch(ctx: Context, cloud: Cloud, cluster: Cluster, path: tuple, name: str, zone: str, src) -> bool:
    if name not in cloud.index:
        ctx.bad(path, name, f"no such vSwitch; expected one of {sorted(cloud.index)}", src)
    elif cloud.vswitch(name).vpc != cluster.vpc:
        ctx.bad(path, name, f"vSwitch of VPC {cloud.vswitch(name).vpc}; expected a vSwitch of the cluster's VPC "
                f"{cluster.vpc}", src)
    elif cloud.vswitch(name).zone != zone:
        ctx.bad(path, name, f"vSwitch of zone {cloud.vswitch(name).zone}, listed under zone {zone}; expected a "
                f"vSwitch of zone {zone} there", src)
    else:
        return True
    return False


def _node_eni(cloud: Cloud, cluster: Cluster, node: str, docs: dict[str, dict], own: str | None) -> NodeEni:
    """A node's pod vSwitches and groups: its own ConfigMap merged over eni-config, else cluster.eni,
    else its own vSwitch and groups."""
    cl, ecs = cluster.spec, cluster.instances[node]
    home = cloud.vswitch(ecs.vswitch)
    merged = k8s.merge_patch(docs.get(k8s.ENI_CONFIG, {}), docs.get(own, {}) if own else {})
    conf = k8s.EniConf.model_validate(merged)
    where = f"ConfigMap {k8s.TERWAY_NAMESPACE}/{own} (node label {k8s.NODE_CONFIG_LABEL})" if own and own in docs \
        else f"ConfigMap {k8s.TERWAY_NAMESPACE}/{k8s.ENI_CONFIG}"
    if conf.vswitches.get(home.zone):
        vsws, source = tuple(conf.vswitches[home.zone]), where
    elif any(cloud.vswitch(v).zone == home.zone for v in cl.eni.vswitches if v in cloud.index):
        vsws = tuple(v for v in cl.eni.vswitches if v in cloud.index and cloud.vswitch(v).zone == home.zone)
        source = "cluster.eni.vswitches"
    else:
        vsws, source = (home.name,), f"node {node}'s own vSwitch"
    policy = MOST if conf.vswitch_selection_policy in ("ordered", "most") else FIRST
    groups = conf.groups or (tuple(cl.eni.securityGroups) if cl.eni.securityGroups is not None else None)
    return NodeEni(vswitches=tuple(dict.fromkeys(vsws)), policy=policy, security_groups=groups, source=source)
