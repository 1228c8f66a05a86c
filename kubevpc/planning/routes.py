"""Stage "routes": each VPC's route table (system routes of its vSwitches, declared entries, and
in vpc-route mode the pod CIDR routes the cloud controller manager adds), within its quota."""
from __future__ import annotations

import ipaddress

from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .model import NodePlan, Route


def plan_routes(ctx: Context, i: int, vpc, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan],
                natgw_vpc: dict[str, str]) -> tuple[Route, ...]:
    """The routes of VPC number `i` of the scenario."""
    routes = [Route(destination=v.cidr, kind="system", description=f"vSwitch {v.name}")
              for v in cloud.vswitches if v.vpc == vpc.name]
    for j, entry in enumerate(vpc.routeTable.routes):
        route = _declared(ctx, ("cloud", "vpcs", i, "routeTable", "routes", j), vpc, entry, cloud, cluster,
                          natgw_vpc, routes)
        if route is not None:
            routes.append(route)
    if cluster.mode == "vpc-route" and vpc.name == cluster.vpc:
        for node in nodes:
            clash = next((j for j, e in enumerate(vpc.routeTable.routes) if str(e.destination) == node.pod_cidr), None)
            if clash is not None:
                ctx.bad(("cloud", "vpcs", i, "routeTable", "routes", clash, "destination"), node.pod_cidr,
                        f"is the pod CIDR of node {node.name}, which vpc-route mode routes to that node "
                        "itself; expected another destination")
                continue
            routes.append(Route(destination=node.pod_cidr, kind="pod", next_hop=node.name,
                                description=f"pod CIDR of node {node.name} (cloud controller manager)"))
    entries = [r for r in routes if r.kind != "system"]
    if len(entries) > vpc.routeTable.quota:
        n_pod = sum(1 for r in entries if r.kind == "pod")
        ctx.bad(("cloud", "vpcs", i, "routeTable", "quota"), vpc.routeTable.quota,
                f"route table quota exceeded: {len(entries)} custom entries needed "
                f"({n_pod} pod CIDR routes for vpc-route mode + {len(entries) - n_pod} declared); "
                "expected a larger quota, fewer nodes, or another network mode")
    return tuple(routes)


def _declared(ctx: Context, path: tuple, vpc, entry, cloud: Cloud, cluster: Cluster, natgw_vpc: dict[str, str],
              routes: list[Route]) -> Route | None:
    hop = cluster.instances.get(entry.nextHop)
    natgw = natgw_vpc.get(entry.nextHop)
    if natgw is not None and hop is None:
        if natgw != vpc.name:
            ctx.bad(path + ("nextHop",), entry.nextHop, f"NAT gateway of VPC {natgw}; expected an ECS "
                    f"instance or a NAT gateway of VPC {vpc.name}")
            return None
    elif hop is None or cloud.vswitch(hop.vswitch).vpc != vpc.name:
        ctx.bad(path + ("nextHop",), entry.nextHop, f"expected an ECS instance or a NAT gateway of VPC {vpc.name}")
        return None
    for v in cloud.vswitches:
        if v.vpc == vpc.name and entry.destination.subnet_of(ipaddress.IPv4Network(v.cidr)):
            ctx.bad(path + ("destination",), str(entry.destination),
                    f"within vSwitch {v.name} ({v.cidr}); expected a destination that is not the same as "
                    "or inside a vSwitch CIDR (a broader one, like 0.0.0.0/0, is fine: the vSwitch's "
                    "system route is more specific and wins)")
    if any(r.destination == str(entry.destination) for r in routes):
        ctx.bad(path + ("destination",), str(entry.destination), "duplicate route destination")
    return Route(destination=str(entry.destination), kind="natgw" if hop is None else "custom",
                 next_hop=entry.nextHop, description=entry.description)
