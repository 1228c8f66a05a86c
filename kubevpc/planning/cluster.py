"""Stage "cluster": the cluster section checked against the cloud; its VPC, pod MTU and node pod
CIDRs, and the ClusterPlan."""
from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from .cloud import Cloud
from ..scenario.load import dotted
from .context import Context
from .ipv6 import check_dual_stack
from .model import ClusterPlan


@dataclass
class Cluster:
    spec: object | None             # the scenario's cluster section (None: no cluster)
    nodes: list[str]                # node names, in order (bridges are numbered so)
    instances: dict                 # every ECS instance by name
    vpc: str = ""
    pod_mtu: int = 1500
    pod_cidrs: dict[str, ipaddress.IPv4Network] = field(default_factory=dict)   # by node (not eni)

    @property
    def mode(self) -> str:
        return self.spec.mode if self.spec else ""

    def index(self, node: str) -> int:
        return self.nodes.index(node)

    def plan(self) -> ClusterPlan | None:
        cl = self.spec
        if not cl:
            return None
        return ClusterPlan(name=cl.name, mode=cl.mode, vpc=self.vpc, pod_cidr=str(cl.podCIDR),
                           service_cidr=str(cl.serviceCIDR), vni=cl.vxlan.vni, vxlan_port=cl.vxlan.port,
                           pod_mtu=self.pod_mtu, underlay_mtu=cl.underlayMTU,
                           allow_snippet_annotations=cl.ingress.allowSnippetAnnotations,
                           additional_pod_cidrs=tuple(str(c) for c in cl.additionalPodCIDRs), dual_stack=cl.dualStack,
                           service_cidr6=str(cl.serviceCIDRv6) if cl.dualStack and cl.serviceCIDRv6 else "")


def plan_cluster(ctx: Context, cloud: Cloud) -> Cluster:
    cl = ctx.sc.cluster
    instances = {e.name: e for e in ctx.sc.cloud.instances}
    out = Cluster(spec=cl, nodes=list(cl.nodes) if cl else [], instances=instances)
    if not cl:
        return out
    for k, n in enumerate(cl.nodes):
        if n not in instances:
            ctx.bad(("cluster", "nodes", k), n, f"no such ECS instance; expected one of {sorted(instances)}")
        elif cl.nodes.index(n) != k:
            ctx.bad(("cluster", "nodes", k), n, "node listed twice")
    node_vpcs = {cloud.vswitch(instances[n].vswitch).vpc for n in cl.nodes if n in instances}
    if len(node_vpcs) > 1:
        ctx.bad(("cluster", "nodes"), sorted(node_vpcs), "expected every node in the same VPC")
    out.vpc = next(iter(node_vpcs), "")
    vpc_net = cloud.vpcs[out.vpc].cidr if out.vpc else None
    if vpc_net is not None and cl.serviceCIDR.overlaps(vpc_net):
        ctx.bad(("cluster", "serviceCIDR"), str(cl.serviceCIDR), f"overlaps the VPC CIDR {vpc_net}")
    if cl.mode != "eni":
        _check_pod_cidr(ctx, cl, vpc_net)
    elif cl.additionalPodCIDRs:
        ctx.bad(("cluster", "additionalPodCIDRs"), [str(c) for c in cl.additionalPodCIDRs], MORE_BLOCKS["eni"])
    _check_peers(ctx, cl, cloud, out.vpc)
    _check_eni(ctx, cl, cloud, out.vpc)
    check_dual_stack(ctx, cl, cloud.vpcs.get(out.vpc))
    out.pod_mtu = cl.underlayMTU - 50 if cl.mode == "vxlan" else cl.underlayMTU
    ctx.problems.checkpoint()
    if cl.mode != "eni":
        blocks = itertools.chain.from_iterable(c.subnets(new_prefix=cl.nodeCIDRMaskSize) for c in pod_cidrs(cl))
        out.pod_cidrs = {n: next(blocks) for n in out.nodes}
    return out


def pod_cidrs(cl) -> list:
    """The cluster's pod CIDR blocks, in the order nodes take their CIDRs from them."""
    return [cl.podCIDR, *cl.additionalPodCIDRs]


def _check_pod_cidr(ctx: Context, cl, vpc_net) -> None:
    """Each pod CIDR block outside the VPC, serviceCIDR and each other, cut into node CIDRs of
    nodeCIDRMaskSize; together they hold one node CIDR per node (in vpc-route mode, more blocks
    can be added: CCE's VPC network, ACK's Flannel "add pod CIDR block")."""
    blocks = list(zip([("cluster", "podCIDR")] + [("cluster", "additionalPodCIDRs", i)
                                                   for i in range(len(cl.additionalPodCIDRs))], pod_cidrs(cl)))
    if cl.additionalPodCIDRs and cl.mode != "vpc-route":
        ctx.bad(("cluster", "additionalPodCIDRs"), [str(c) for c in cl.additionalPodCIDRs], MORE_BLOCKS[cl.mode])
    for k, (path, net) in enumerate(blocks):
        if vpc_net is not None and net.overlaps(vpc_net):
            ctx.bad(path, str(net), f"overlaps the VPC CIDR {vpc_net}; expected a pod CIDR outside the VPC")
        if net.overlaps(cl.serviceCIDR):
            ctx.bad(path, str(net), f"overlaps serviceCIDR {cl.serviceCIDR}")
        for other_path, other in blocks[:k]:
            if net.overlaps(other):
                ctx.bad(path, str(net), f"overlaps {dotted(other_path)} {other}; expected disjoint pod CIDR blocks")
        if cl.nodeCIDRMaskSize < net.prefixlen:
            ctx.bad(("cluster", "nodeCIDRMaskSize"), cl.nodeCIDRMaskSize,
                    f"expected a mask at least as long as {dotted(path)}'s /{net.prefixlen}")
    if ctx.problems:
        return
    room = sum(2 ** (cl.nodeCIDRMaskSize - net.prefixlen) for _, net in blocks)
    if room < len(cl.nodes):
        what = " and ".join(f"{dotted(p)} {net}" for p, net in blocks)
        refused = cl.nodes[room:]        # nodes take node CIDRs in order: the last ones get none
        ctx.bad(("cluster", "additionalPodCIDRs" if cl.additionalPodCIDRs else "podCIDR"),
                [str(net) for _, net in blocks] if cl.additionalPodCIDRs else str(cl.podCIDR),
                f"{what} hold{'' if cl.additionalPodCIDRs else 's'} only {room} node CIDRs of /{cl.nodeCIDRMaskSize}, "
                f"the cluster has {len(cl.nodes)} nodes: {', '.join(refused)} get{'s' if len(refused) == 1 else ''} "
                "no node CIDR" + ("; expected a larger block, or another in cluster.additionalPodCIDRs"
                                  if cl.mode == "vpc-route" else "; expected a larger podCIDR or a longer "
                                  "cluster.nodeCIDRMaskSize"))


MORE_BLOCKS = {
    "vxlan": "more pod CIDR blocks for vpc-route mode only (CCE adds container CIDR blocks to VPC network clusters; a "
             "container tunnel network keeps the one it was created with); expected none, or cluster.mode vpc-route",
    "eni": "more pod CIDR blocks for vpc-route mode only: Terway takes pod addresses from vSwitches; expected none, "
           "and another pod vSwitch in eni-config's vswitches (or cluster.eni.vswitches) instead",
}


def _check_peers(ctx: Context, cl, cloud: Cloud, vpc: str) -> None:
    """A VPC peered with the cluster's may not overlap its Service CIDR, nor its pod CIDR blocks
    (podCIDR, each of additionalPodCIDRs) outside eni mode: the nodes would take the peer's
    addresses for Services or pods and never route them to the peering (as for the cluster's own VPC)."""
    nets = [(("serviceCIDR",), "serviceCIDR", cl.serviceCIDR)]
    if cl.mode != "eni":
        nets += [(("podCIDR",), "podCIDR", cl.podCIDR)] + [
            (("additionalPodCIDRs", i), "pod CIDR block", c) for i, c in enumerate(cl.additionalPodCIDRs)]
    for k, p in enumerate(ctx.sc.cloud.peerings):
        if vpc not in p.vpcs or len(set(p.vpcs)) != 2 or not all(v in cloud.vpcs for v in p.vpcs):
            continue
        peer = cloud.vpcs[next(v for v in p.vpcs if v != vpc)]
        for key, what, net in nets:
            if net.overlaps(peer.cidr):
                ctx.bad(("cluster", *key), str(net), f"overlaps {peer.name} ({peer.cidr}), which peering connection "
                        f"{p.name} joins to the cluster's VPC; expected a {what} outside every peered VPC")


def _check_eni(ctx: Context, cl, cloud: Cloud, vpc: str) -> None:
    for k, v in enumerate(cl.eni.vswitches):
        if v not in cloud.index:
            ctx.bad(("cluster", "eni", "vswitches", k), v, f"no such vSwitch; expected one of {sorted(cloud.index)}")
        elif cloud.vswitch(v).vpc != vpc:
            ctx.bad(("cluster", "eni", "vswitches", k), v, f"expected a vSwitch of the cluster's VPC {vpc}")
    for k, g in enumerate(cl.eni.securityGroups or ()):
        if g not in cloud.groups:
            ctx.bad(("cluster", "eni", "securityGroups", k), g,
                    f"no such security group; expected one of {sorted(cloud.groups)}")
