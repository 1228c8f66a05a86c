"""IPv4/IPv6 dual stack, as Alibaba Cloud has it: a VPC's IPv6 /56, a vSwitch's /64 in it, an IPv6
address for every ECS instance on such a vSwitch, and, in a cluster created with ACK's "IPv6
dual-stack" (Terway only), one for every eni pod too. An address's IPv6 twin is its IPv4 host
number in the vSwitch's /64 (model.mirror6), unless an instance declares its own.

Alibaba Cloud: "Enable IPv6 for a VPC" (a /56 per VPC, a /64 per vSwitch); ACK: "Create an ACK
managed cluster that supports IPv4/IPv6 dual-stack" (Terway only, the VPC needs IPv6).
"""
from __future__ import annotations

import ipaddress

from .context import Context
from .model import VSwitchPlan, mirror6

VPC_PREFIX, VSWITCH_PREFIX = 56, 64     # what Alibaba gives a VPC and a vSwitch


def check_vpcs6(ctx: Context) -> None:
    """Each VPC's /56 and each vSwitch's /64 inside it, disjoint; a vSwitch may have one only in a
    VPC that has one."""
    for i, vpc in enumerate(ctx.sc.cloud.vpcs):
        if vpc.ipv6Cidr is not None and vpc.ipv6Cidr.prefixlen != VPC_PREFIX:
            ctx.bad(("cloud", "vpcs", i, "ipv6Cidr"), str(vpc.ipv6Cidr),
                    f"expected a /{VPC_PREFIX}: Alibaba Cloud gives a VPC an IPv6 CIDR block of /{VPC_PREFIX}")
        for j, vsw in enumerate(vpc.vswitches):
            if vsw.ipv6Cidr is None:
                continue
            path = ("cloud", "vpcs", i, "vswitches", j, "ipv6Cidr")
            if vpc.ipv6Cidr is None:
                ctx.bad(path, str(vsw.ipv6Cidr), f"VPC {vpc.name} has no ipv6Cidr; expected IPv6 enabled on "
                        "the VPC (its ipv6Cidr) before a vSwitch of it gets an IPv6 CIDR")
            elif not vsw.ipv6Cidr.subnet_of(vpc.ipv6Cidr):
                ctx.bad(path, str(vsw.ipv6Cidr), f"expected a subnet of the VPC's ipv6Cidr {vpc.ipv6Cidr}")
            if vsw.ipv6Cidr.prefixlen != VSWITCH_PREFIX:
                ctx.bad(path, str(vsw.ipv6Cidr), f"expected a /{VSWITCH_PREFIX}: a vSwitch's IPv6 CIDR block "
                        f"is a /{VSWITCH_PREFIX} of its VPC's /{VPC_PREFIX}")
            for k in range(j):
                other = vpc.vswitches[k].ipv6Cidr
                if other is not None and vsw.ipv6Cidr.overlaps(other):
                    ctx.bad(path, str(vsw.ipv6Cidr), f"overlaps vSwitch {vpc.vswitches[k].name!r} ({other}); "
                            "expected disjoint vSwitch IPv6 CIDRs")


def vswitch6(vsw, plan: VSwitchPlan) -> VSwitchPlan:
    """The vSwitch's plan with its /64 and the gateway's IPv6 address (the v4 gateway's host number)."""
    if vsw.ipv6Cidr is None:
        return plan
    return plan.model_copy(update={"ipv6_cidr": str(vsw.ipv6Cidr),
                                   "gateway6": mirror6(str(vsw.ipv6Cidr), plan.cidr, plan.gateway)})


def instance_ipv6s(ctx: Context, vswitches: dict[str, VSwitchPlan], ips: dict[str, str]) -> dict[str, str]:
    """Every instance's IPv6 address on a vSwitch with a /64: the declared one, else its v4 twin.
    A declared one must be in the /64, not the subnet's first address (the subnet-router anycast
    address) nor the gateway's, and held by no other instance."""
    out: dict[str, str] = {}
    declared: dict[str, int] = {}
    for i, ecs in enumerate(ctx.sc.cloud.instances):
        vsw = vswitches.get(ecs.vswitch)
        if vsw is None or ecs.name not in ips:
            continue
        if ecs.ipv6 is not None and _declared_ok(ctx, ("cloud", "instances", i, "ipv6"), ecs, vsw):
            out[ecs.name] = str(ecs.ipv6)
            declared[ecs.name] = i
        elif vsw.ipv6_cidr and ecs.ipv6 is None:
            out[ecs.name] = mirror6(vsw.ipv6_cidr, vsw.cidr, ips[ecs.name])
    seen: dict[str, str] = {}
    for name, ip6 in sorted(out.items(), key=lambda kv: kv[0] in declared):
        if ip6 in seen and name in declared:
            ctx.bad(("cloud", "instances", declared[name], "ipv6"), ip6,
                    f"address already held by instance {seen[ip6]}; expected a free address")
        seen.setdefault(ip6, name)
    return out


def _declared_ok(ctx: Context, path: tuple, ecs, vsw: VSwitchPlan) -> bool:
    if not vsw.ipv6_cidr:
        ctx.bad(path, str(ecs.ipv6), f"vSwitch {vsw.name} has no ipv6Cidr; expected an instance on a vSwitch "
                "with an IPv6 CIDR block")
        return False
    net = ipaddress.IPv6Network(vsw.ipv6_cidr)
    if ecs.ipv6 not in net:
        ctx.bad(path, str(ecs.ipv6), f"outside its vSwitch {vsw.name} ({net})")
        return False
    if ecs.ipv6 == net.network_address or str(ecs.ipv6) == vsw.gateway6:
        ctx.bad(path, str(ecs.ipv6), f"reserved address of {net}: the subnet's first address and the "
                f"gateway's ({vsw.gateway6}) belong to the cloud")
        return False
    return True


SERVICE_PREFIXES = (108, 120)    # kube-apiserver: an IPv6 service range is a /108 or smaller


def check_service_cidr6(ctx: Context, cl, vpc) -> None:
    """cluster.serviceCIDRv6, ACK's "IPv6 Service CIDR": only in a dual-stack cluster; a /108 to
    /120 (kube-apiserver refuses an IPv6 service range larger than a /108; a /120 leaves 254
    ClusterIPs), not overlapping the VPC's IPv6 block. Inside 2001:db8::/32 or fd00::/8, as every
    emulated IPv6 address (the schema checks that)."""
    net, path = cl.serviceCIDRv6, ("cluster", "serviceCIDRv6")
    if net is None:
        return
    if not cl.dualStack:
        ctx.bad(path, str(net), "an IPv6 Service CIDR is chosen for an IPv4/IPv6 dual-stack cluster only; expected "
                "cluster.dualStack: true, or no serviceCIDRv6")
    elif not SERVICE_PREFIXES[0] <= net.prefixlen <= SERVICE_PREFIXES[1]:
        ctx.bad(path, str(net), f"expected a /{SERVICE_PREFIXES[0]} to /{SERVICE_PREFIXES[1]}: kube-apiserver refuses "
                f"an IPv6 service range larger than a /{SERVICE_PREFIXES[0]}, and a /{SERVICE_PREFIXES[1]} leaves 254 "
                "ClusterIPs")
    elif vpc is not None and vpc.ipv6Cidr is not None and net.overlaps(vpc.ipv6Cidr):
        ctx.bad(path, str(net), f"overlaps the VPC's ipv6Cidr {vpc.ipv6Cidr}; expected a block of its own")


def check_dual_stack(ctx: Context, cl, vpc) -> None:
    """cluster.dualStack: ACK offers IPv6 dual-stack with Terway only, in a VPC with IPv6."""
    check_service_cidr6(ctx, cl, vpc)
    if not cl.dualStack:
        return
    if cl.mode != "eni":
        ctx.bad(("cluster", "dualStack"), True, f"not available in {cl.mode} mode: ACK supports IPv4/IPv6 "
                "dual-stack only with the Terway network plugin (mode eni); Flannel is IPv4 only")
    elif vpc is not None and vpc.ipv6Cidr is None:
        ctx.bad(("cluster", "dualStack"), True, f"the cluster's VPC {vpc.name} has no ipv6Cidr; expected IPv6 "
                "enabled on the VPC (and its vSwitches) for an IPv4/IPv6 dual-stack cluster")


class PodIPv6:
    """Each eni pod's IPv6 twin in a dual-stack cluster; a vSwitch without a /64 refused once."""

    def __init__(self, ctx: Context, dual_stack: bool, instances: dict[str, str]):
        self.ctx, self.on, self.refused = ctx, dual_stack, set()
        self.held = {ip6: name for name, ip6 in instances.items()}     # instances' addresses

    def address(self, vsw: VSwitchPlan, ip: str, spec) -> str | None:
        """"" when the cluster is single stack; None (with a problem) when the vSwitch has no /64."""
        if not self.on:
            return ""
        if vsw.ipv6_cidr:
            ip6 = mirror6(vsw.ipv6_cidr, vsw.cidr, ip)
            if ip6 in self.held:
                self.ctx.bad(spec.path, ip6, f"pod {spec.namespace}/{spec.name}'s IPv6 address (its IPv4 host "
                             f"number in {vsw.ipv6_cidr}) is declared by instance {self.held[ip6]}; expected that "
                             "instance to declare another ipv6", spec.source)
                return None
            return ip6
        if vsw.name not in self.refused:
            self.refused.add(vsw.name)
            self.ctx.bad(spec.path, vsw.name, f"pod {spec.namespace}/{spec.name} takes its addresses from vSwitch "
                         f"{vsw.name}, which has no ipv6Cidr; expected every vSwitch of a dual-stack cluster's "
                         "pods to have an IPv6 CIDR block", spec.source)
        return None
