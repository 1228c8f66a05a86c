"""Stages "cloud" and "addresses": VPCs, vSwitches and security groups checked and planned, then
every ECS instance's address (declared ones first, the rest lowest free)."""
from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass

from .context import AddressPool, Context
from .ipv6 import check_vpcs6, instance_ipv6s, vswitch6
from .model import RESERVED_TAIL, RFC1918, VSwitchPlan, mac_for, usable


@dataclass
class Cloud:
    vpcs: dict                      # name -> the scenario's VPC
    vswitches: list[VSwitchPlan]    # in scenario order (their bridges are numbered so)
    index: dict[str, int]           # vSwitch name -> position in `vswitches`
    groups: dict                    # security group name -> the scenario's group
    zone_base: int                  # conntrack zones of this run start after it
    ipv6s: dict = None              # instance name -> its IPv6 address (dual stack), by plan_addresses

    def vswitch(self, name: str) -> VSwitchPlan:
        return self.vswitches[self.index[name]]


def plan_cloud(ctx: Context) -> Cloud:
    sc = ctx.sc
    vpcs = {v.name: v for v in sc.cloud.vpcs}
    ctx.problems.unique([("cloud", "vpcs", i, "name") for i in range(len(sc.cloud.vpcs))],
                        [v.name for v in sc.cloud.vpcs], "VPC")
    _check_vpcs(ctx)
    check_vpcs6(ctx)
    ctx.problems.checkpoint()
    vswitches: list[VSwitchPlan] = []
    index: dict[str, int] = {}
    for vpc in sc.cloud.vpcs:
        for vsw in vpc.vswitches:
            idx = len(vswitches)
            index[vsw.name] = idx
            gw = str(list(vsw.cidr)[-RESERVED_TAIL])
            vswitches.append(vswitch6(vsw, VSwitchPlan(
                name=vsw.name, vpc=vpc.name, zone=vsw.zone, cidr=str(vsw.cidr), gateway=gw,
                gateway_mac=mac_for(gw), bridge=ctx.names.vswitch(idx),
                vrouter_port=sum(1 for v in vswitches if v.vpc == vpc.name) + 1)))
    cloud = Cloud(vpcs=vpcs, vswitches=vswitches, index=index, groups=_security_groups(ctx, vpcs),
                  zone_base=zlib.crc32(ctx.run.encode()) % 50000 + 1)
    return cloud


def _check_vpcs(ctx: Context) -> None:
    seen: set[str] = set()
    for i, vpc in enumerate(ctx.sc.cloud.vpcs):
        if not any(vpc.cidr.subnet_of(ipaddress.IPv4Network(r)) for r in RFC1918):
            ctx.bad(("cloud", "vpcs", i, "cidr"), str(vpc.cidr), "expected a private range "
                    "(10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 and their subnets)")
        if not 8 <= vpc.cidr.prefixlen <= 24:
            ctx.bad(("cloud", "vpcs", i, "cidr"), str(vpc.cidr), "expected a VPC mask between /8 and /24")
        for j, vsw in enumerate(vpc.vswitches):
            path = ("cloud", "vpcs", i, "vswitches", j)
            if vsw.name in seen:
                ctx.bad(path + ("name",), vsw.name, "duplicate vSwitch name; expected unique names")
            seen.add(vsw.name)
            if not vsw.cidr.subnet_of(vpc.cidr):
                ctx.bad(path + ("cidr",), str(vsw.cidr), f"expected a subnet of the VPC CIDR {vpc.cidr}")
            if not 16 <= vsw.cidr.prefixlen <= 29:
                ctx.bad(path + ("cidr",), str(vsw.cidr), "expected a vSwitch mask between /16 and /29")
            for k in range(j):
                other = vpc.vswitches[k]
                if vsw.cidr.overlaps(other.cidr):
                    ctx.bad(path + ("cidr",), str(vsw.cidr),
                            f"overlaps vSwitch {other.name!r} ({other.cidr}); expected disjoint vSwitch CIDRs")


def _security_groups(ctx: Context, vpcs: dict) -> dict:
    groups = {}
    for i, sg in enumerate(ctx.sc.cloud.securityGroups):
        if sg.name in groups:
            ctx.bad(("cloud", "securityGroups", i, "name"), sg.name, "duplicate security group name")
        groups[sg.name] = sg
        if sg.vpc not in vpcs:
            ctx.bad(("cloud", "securityGroups", i, "vpc"), sg.vpc, f"no such VPC; expected one of {sorted(vpcs)}")
    for i, sg in enumerate(ctx.sc.cloud.securityGroups):
        for j, rule in enumerate(sg.rules):
            path = ("cloud", "securityGroups", i, "rules", j)
            if [rule.cidr, rule.ipv6Cidr, rule.group].count(None) != 2:
                ctx.bad(path, rule.model_dump(exclude_defaults=True, mode="json"),
                        "expected exactly one peer: cidr (an IPv4 CIDR), ipv6Cidr (an IPv6 CIDR, Alibaba's "
                        "Ipv6SourceCidrIp or Ipv6DestCidrIp) or group (a security group name)")
            if rule.group is not None:
                peer = groups.get(rule.group)
                if peer is None:
                    ctx.bad(path + ("group",), rule.group,
                            f"no such security group; expected one of {sorted(groups)}")
                elif peer.vpc != sg.vpc:
                    ctx.bad(path + ("group",), rule.group, f"expected a group in the same VPC ({sg.vpc})")
            if rule.port_range is not None and rule.protocol not in ("tcp", "udp"):
                ctx.bad(path + ("ports",), rule.ports, "ports apply only to tcp and udp rules")
    return groups


def plan_addresses(ctx: Context, cloud: Cloud) -> tuple[dict[str, str], AddressPool]:
    """Every instance's address by name, and the pool later stages take addresses from."""
    instances = ctx.sc.cloud.instances
    ctx.problems.unique([("cloud", "instances", i, "name") for i in range(len(instances))],
                        [e.name for e in instances], "instance")
    pool = AddressPool(ctx, cloud.vswitches)
    ips: dict[str, str] = {}
    for i, ecs in enumerate(instances):
        path = ("cloud", "instances", i)
        if ecs.vswitch not in cloud.index:
            ctx.bad(path + ("vswitch",), ecs.vswitch, f"no such vSwitch; expected one of {sorted(cloud.index)}")
            continue
        _check_instance_groups(ctx, cloud, ecs, path)
        if ecs.ip is not None:
            net = ipaddress.IPv4Network(cloud.vswitch(ecs.vswitch).cidr)
            if ecs.ip not in net:
                ctx.bad(path + ("ip",), str(ecs.ip), f"outside its vSwitch {ecs.vswitch} ({net})")
            elif ecs.ip not in usable(net):
                ctx.bad(path + ("ip",), str(ecs.ip), f"reserved address of {net}: the first and "
                        "the last three addresses of a vSwitch belong to the cloud")
            elif str(ecs.ip) in pool.taken[ecs.vswitch]:
                ctx.bad(path + ("ip",), str(ecs.ip), "address already taken by another instance")
            else:
                pool.taken[ecs.vswitch].add(str(ecs.ip))
                ips[ecs.name] = str(ecs.ip)
    pool.hold_previous()
    for i, ecs in enumerate(instances):
        if ecs.name not in ips and ecs.vswitch in cloud.index:
            ip = pool.allocate(ecs.vswitch, ("cloud", "instances", i, "vswitch"), f"instance {ecs.name}")
            if ip:
                ips[ecs.name] = ip
    cloud.ipv6s = instance_ipv6s(ctx, {v.name: v for v in cloud.vswitches}, ips)
    ctx.problems.checkpoint()
    return ips, pool


def _check_instance_groups(ctx: Context, cloud: Cloud, ecs, path: tuple) -> None:
    vpc = cloud.vswitch(ecs.vswitch).vpc
    for k, g in enumerate(ecs.securityGroups):
        if g not in cloud.groups:
            ctx.bad(path + ("securityGroups", k), g, f"no such security group; expected one of {sorted(cloud.groups)}")
        elif cloud.groups[g].vpc != vpc:
            ctx.bad(path + ("securityGroups", k), g,
                    f"security group is in VPC {cloud.groups[g].vpc!r}, the instance in {vpc!r}")
