"""An ACK cluster of a Terraform document as the scenario's `cluster:` section, and its nodes as ECS
instances: alicloud_cs_managed_kubernetes (or alicloud_cs_kubernetes, a dedicated cluster) and its
alicloud_cs_kubernetes_node_pool resources.

The pod network mode is ACK's network plugin: Terway (an addon named terway-eniip, terway-eni,
..., or pod_vswitch_ids, "[Terway Specific]" in the provider) is `eni`; Flannel (the addon
flannel, or pod_cidr, "[Flannel Specific]") is `vpc-route`, since ACK's Flannel routes each node's
pod CIDR through the VPC's route table rather than encapsulating it.
"""
from __future__ import annotations

from ..k8s.config import NODE_CONFIG_LABEL
from ..k8s.meta import check_labels
from .build import HOP, ORIGIN, Build, network, printable, valid_name
from .tfcloud import VSWITCH, member_groups
from .tfplan import Resource

CLUSTER = ("alicloud_cs_managed_kubernetes", "alicloud_cs_kubernetes")
POOL = ("alicloud_cs_kubernetes_node_pool",)
MAX_POOL_NODES = 100       # nodes made of one pool (or of a cluster's worker_number), at most
MAX_NODES = 500            # nodes made of every pool together, at most
# ACK's basic security group for a cluster ("Configure and manage cluster security groups"): ICMP from
# anywhere; everything between its members and, with Flannel, from the pod CIDR
ACK_ICMP_RULE = {"direction": "ingress", "protocol": "icmp", "cidr": "0.0.0.0/0", "description": "ICMP (ACK's default)"}


def cluster(b: Build) -> None:
    clusters = b.of_type(*CLUSTER)
    for res in clusters[1:]:
        b.skip(res, f"a scenario has one cluster: {clusters[0].address} is the one imported")
    if not clusters:
        for pool in b.of_type(*POOL):
            b.skip(pool, "no cluster of it is imported")
        return
    res = clusters[0]
    mode = _mode(b, res)
    spec: dict = {"name": valid_name(res.text("name") or "") or "cluster", "mode": mode, "nodes": []}
    b.record(res, spec["name"], spec)
    _cidrs(b, res, spec)
    vpc = _cluster_vpc(b, res)
    groups = member_groups(b, res, "security_group_id", vpc) if vpc else []
    if mode == "eni":
        _eni(b, res, spec, groups)
    labels: dict[str, dict] = {}
    for pool in b.of_type(*POOL):
        if b.one(pool, "cluster_id", CLUSTER, "the imported cluster") is res:
            _pool(b, pool, spec, groups, labels)
    _workers(b, res, spec, groups)
    if labels:
        spec["nodeLabels"] = labels
    _not_mapped(b, res)
    if not spec["nodes"]:
        del b.objects[id(res)]
        b.skip(res, "no nodes: expected a node pool (alicloud_cs_kubernetes_node_pool) with desired_size, or "
               "worker_number; a kubevpc cluster needs at least one node")
        return
    b.cluster = spec


def _mode(b: Build, res: Resource) -> str:
    addons = [a.get("name") for a in res.blocks("addons") if isinstance(a.get("name"), str) and a.get("disabled") is not True]
    if any(a.startswith("terway") for a in addons) or res.values.get("pod_vswitch_ids") or "pod_vswitch_ids" in res.exprs:
        return "eni"
    if "flannel" in addons or res.text("pod_cidr"):
        return "vpc-route"
    b.invent(res.address, "mode vpc-route: no network plugin found (no terway or flannel addon, no pod_vswitch_ids, "
             "no pod_cidr); ACK's Flannel routes pod CIDRs through the VPC")
    return "vpc-route"


def _cluster_vpc(b: Build, res: Resource) -> str | None:
    """The VPC of the cluster: that of its vSwitches, or of its first node pool's."""
    candidates = [res] + [p for p in b.of_type(*POOL)]
    for r in candidates:
        for key in ("vswitch_ids", "worker_vswitch_ids", "pod_vswitch_ids"):
            found, _ = b.many(r, key, VSWITCH)
            if found:
                return b.vpc_of["vswitch", b.name_of(found[0])]
    return None


def _cidrs(b: Build, res: Resource, spec: dict) -> None:
    """service_cidr, and in vpc-route mode pod_cidr and node_cidr_mask; cluster_domain."""
    service = network(res.values.get("service_cidr"))
    if service is not None:
        spec["serviceCIDR"] = str(service)
    if spec["mode"] == "vpc-route":
        pod = network(res.values.get("pod_cidr"))
        if pod is not None:
            spec["podCIDR"] = str(pod)
        else:
            b.invent(res.address, "podCIDR 10.244.0.0/16 (the scenario's default): no pod_cidr")
        mask = res.number("node_cidr_mask")
        if mask is not None and 16 <= mask <= 28:
            spec["nodeCIDRMaskSize"] = mask
    domain = res.text("cluster_domain")
    if domain and domain != "cluster.local":
        spec["dns"] = {"clusterDomain": printable(domain, 100)}


def _eni(b: Build, res: Resource, spec: dict, groups: list[str]) -> None:
    """Terway: pods take addresses from pod_vswitch_ids; their ENIs carry the cluster's security group
    (Terway's eni-config security_group), or their nodes' groups when the cluster names none."""
    vsws, missing = b.many(res, "pod_vswitch_ids", VSWITCH)
    if missing:
        b.skipped.append((res.address, f"pod_vswitch_ids: {', '.join(missing[:3])} not mapped: not an imported vSwitch"))
    spec["eni"] = {"vswitches": [b.name_of(v) for v in vsws]}
    if groups:
        spec["eni"]["securityGroups"] = groups


def _pool_groups(b: Build, pool: Resource, spec: dict, groups: list[str], vpc: str) -> list[str]:
    for key in ("security_group_ids", "security_group_id"):
        if pool.values.get(key) or key in pool.exprs:
            found = member_groups(b, pool, key, vpc)
            if found:
                return found
    return groups or [_ack_group(b, spec, vpc)]


def _ack_group(b: Build, spec: dict, vpc: str) -> str:
    """The security group ACK creates for a cluster that names none, with ACK's default rules."""
    made = next((g for g in b.cloud["securityGroups"] if g.get("ack") == spec["name"]), None)
    if made is None:
        name = b.unique(valid_name(f"{spec['name']}-nodes"), "group")
        rules = [dict(ACK_ICMP_RULE)]
        if spec["mode"] == "vpc-route":
            rules.append({"direction": "ingress", "protocol": "all", "cidr": spec.get("podCIDR", "10.244.0.0/16"),
                          "description": "the pod CIDR (ACK's default with Flannel)"})
        made = {"name": name, "vpc": vpc, "description": "the security group ACK creates for the cluster",
                "rules": rules, ORIGIN: spec[ORIGIN], "ack": spec["name"]}
        b.cloud["securityGroups"].append(made)
        b.vpc_of["group", name] = vpc
        b.invent(spec[ORIGIN], f"security group {name}: ACK's default group for a cluster that names none (ICMP from "
                 "anywhere, its members reach each other" + (", the pod CIDR" if spec["mode"] == "vpc-route" else "") + ")")
    return made["name"]


def _pool_size(b: Build, pool: Resource) -> int:
    size = pool.number("desired_size")
    if size is None:
        size = pool.number("node_count")
    if size is None:
        scaling = pool.blocks("scaling_config")
        low = scaling[0].get("min_size") if scaling else None
        size = low if isinstance(low, int) and not isinstance(low, bool) else 0
        if size:
            b.invent(pool.address, f"{size} nodes: no desired_size; the auto scaling group's min_size")
    room = min(MAX_POOL_NODES, MAX_NODES - len(b.nodes))
    if size > room:
        b.skipped.append((pool.address, f"desired_size {size} is mapped to {room} nodes: kubevpc makes at most "
                          f"{MAX_POOL_NODES} of one pool, {MAX_NODES} in all"))
        size = room
    return max(size, 0)


def _pool(b: Build, pool: Resource, spec: dict, groups: list[str], labels: dict) -> None:
    """A node pool's nodes: desired_size (node_count, or the auto scaling min_size) instances named
    <pool>-1, <pool>-2, ... spread over vswitch_ids in turn, with security_group_ids; and the ECS
    instances it takes in (instances)."""
    vsws, missing = b.many(pool, "vswitch_ids", VSWITCH)
    vpcs = {b.vpc_of["vswitch", b.name_of(v)] for v in vsws}
    if not vsws or len(vpcs) > 1 or (spec["nodes"] and vpcs != {_node_vpc(b, spec)}):
        b.skip(pool, "vswitch_ids: expected imported vSwitches of one VPC, the cluster's" +
               (f" ({', '.join(missing[:3])} not imported)" if missing else ""))
        return
    vpc = vpcs.pop()
    pool_groups = _pool_groups(b, pool, spec, groups, vpc)
    base = valid_name(pool.text("node_pool_name", "name") or pool.name)[:34].rstrip("-") or "pool"
    names = []
    for i in range(_pool_size(b, pool)):
        vsw = b.name_of(vsws[i % len(vsws)])
        name = b.unique(f"{base}-{i + 1}", HOP)
        b.cloud["instances"].append({"name": name, "vswitch": vsw, "securityGroups": pool_groups, ORIGIN: pool.address})
        b.vpc_of[HOP, name] = vpc
        names.append(name)
    if names:
        b.invent(pool.address, f"{len(names)} nodes, {names[0]} to {names[-1]}, on "
                 f"{', '.join(b.name_of(v) for v in vsws)} in turn; their addresses left out, for the scenario to give")
    taken, _ = b.many(pool, "instances", ("alicloud_instance",))
    names += [b.name_of(r) for r in taken if b.vpc_of[HOP, b.name_of(r)] == vpc and b.name_of(r) not in b.nodes]
    spec["nodes"] += names
    b.nodes.update(names)
    b.done.add(id(pool))
    pool_labels = _labels(b, pool)
    for n in names if pool_labels else ():
        labels[n] = dict(pool_labels)


def _node_vpc(b: Build, spec: dict) -> str:
    return b.vpc_of[HOP, spec["nodes"][0]]


def _labels(b: Build, pool: Resource) -> dict[str, str]:
    """The pool's `labels` blocks (key, value) that are valid Kubernetes labels."""
    out: dict[str, str] = {}
    for block in pool.blocks("labels"):
        key, value = block.get("key"), block.get("value", "")
        if not isinstance(key, str) or not isinstance(value, str) or key == NODE_CONFIG_LABEL:
            continue
        try:
            check_labels({key: value})
        except ValueError as exc:
            b.skipped.append((pool.address, f"labels: {printable(exc, 100)}; left out"))
            continue
        out[key] = value
    return out


def _workers(b: Build, res: Resource, spec: dict, groups: list[str]) -> None:
    """A cluster's own workers (worker_number on worker_vswitch_ids, before node pools existed)."""
    count = res.number("worker_number") or 0
    vsws, _ = b.many(res, "worker_vswitch_ids", VSWITCH)
    if not count or not vsws:
        return
    vpc = b.vpc_of["vswitch", b.name_of(vsws[0])]
    if spec["nodes"] and vpc != _node_vpc(b, spec):
        return
    worker_groups = groups or [_ack_group(b, spec, vpc)]
    for i in range(max(min(count, MAX_POOL_NODES, MAX_NODES - len(b.nodes)), 0)):
        name = b.unique(f"{spec['name'][:30]}-worker-{i + 1}", HOP)
        b.cloud["instances"].append({"name": name, "vswitch": b.name_of(vsws[i % len(vsws)]),
                                     "securityGroups": worker_groups, ORIGIN: res.address})
        b.vpc_of[HOP, name] = vpc
        spec["nodes"].append(name)
        b.nodes.add(name)


def _not_mapped(b: Build, res: Resource) -> None:
    """Arguments of the cluster that change its network and that kubevpc does not emulate."""
    if res.flag("new_nat_gateway"):
        b.skipped.append((res.address, "new_nat_gateway is not mapped: the NAT gateway ACK creates is not in the "
                          "document; declare alicloud_nat_gateway, alicloud_eip_association and alicloud_snat_entry"))
    if (res.text("ip_stack") or "ipv4") != "ipv4":
        b.skipped.append((res.address, f"ip_stack {printable(res.text('ip_stack'), 20)} is not mapped: the cluster is "
                          "imported IPv4 only (set cluster.dualStack and serviceCIDRv6 by hand)"))
    pod = network(res.values.get("pod_cidr"))
    if res.values.get("pod_cidr") and pod is None:
        b.skipped.append((res.address, f"pod_cidr {printable(res.values.get('pod_cidr'), 40)!r} is not mapped: "
                          "expected an IPv4 CIDR"))


def drop_ack_marks(b: Build) -> None:
    """The invented group's mark, needed only while building."""
    for g in b.cloud["securityGroups"]:
        g.pop("ack", None)
