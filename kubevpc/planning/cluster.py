"""Stage "cluster": the cluster section checked against the cloud; its VPC, pod MTU and node pod
CIDRs, and the ClusterPlan."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .cloud import Cloud
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

    def eni_security_groups(self, node_ecs) -> tuple[str, ...]:
        """Groups of an eni pod no PodNetworking configures: the cluster's, else its node's."""
        cl = self.spec
        return tuple(cl.eni.securityGroups) if cl.eni.securityGroups is not None else tuple(node_ecs.securityGroups)

    def eni_vswitch(self, cloud: Cloud, node_vsw) -> str:
        """Pods of a node take addresses from the first eni vSwitch in the node's zone, else the node's."""
        for v in self.spec.eni.vswitches:
            if v in cloud.index and cloud.vswitch(v).zone == node_vsw.zone:
                return v
        return node_vsw.name

    def plan(self) -> ClusterPlan | None:
        cl = self.spec
        if not cl:
            return None
        return ClusterPlan(name=cl.name, mode=cl.mode, vpc=self.vpc, pod_cidr=str(cl.podCIDR),
                           service_cidr=str(cl.serviceCIDR), vni=cl.vxlan.vni, vxlan_port=cl.vxlan.port,
                           pod_mtu=self.pod_mtu, underlay_mtu=cl.underlayMTU,
                           allow_snippet_annotations=cl.ingress.allowSnippetAnnotations, dual_stack=cl.dualStack)


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
    _check_eni(ctx, cl, cloud, out.vpc)
    check_dual_stack(ctx, cl, cloud.vpcs.get(out.vpc))
    out.pod_mtu = cl.underlayMTU - 50 if cl.mode == "vxlan" else cl.underlayMTU
    ctx.problems.checkpoint()
    if cl.mode != "eni":
        subnets = cl.podCIDR.subnets(new_prefix=cl.nodeCIDRMaskSize)
        out.pod_cidrs = {n: next(subnets) for n in out.nodes}
    return out


def _check_pod_cidr(ctx: Context, cl, vpc_net) -> None:
    if vpc_net is not None and cl.podCIDR.overlaps(vpc_net):
        ctx.bad(("cluster", "podCIDR"), str(cl.podCIDR),
                f"overlaps the VPC CIDR {vpc_net}; expected a pod CIDR outside the VPC")
    if cl.podCIDR.overlaps(cl.serviceCIDR):
        ctx.bad(("cluster", "podCIDR"), str(cl.podCIDR), f"overlaps serviceCIDR {cl.serviceCIDR}")
    if cl.nodeCIDRMaskSize < cl.podCIDR.prefixlen:
        ctx.bad(("cluster", "nodeCIDRMaskSize"), cl.nodeCIDRMaskSize,
                f"expected a mask at least as long as the pod CIDR's /{cl.podCIDR.prefixlen}")
    elif 2 ** (cl.nodeCIDRMaskSize - cl.podCIDR.prefixlen) < len(cl.nodes):
        ctx.bad(("cluster", "podCIDR"), str(cl.podCIDR),
                f"holds only {2 ** (cl.nodeCIDRMaskSize - cl.podCIDR.prefixlen)} node CIDRs of "
                f"/{cl.nodeCIDRMaskSize}, the cluster has {len(cl.nodes)} nodes")


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
