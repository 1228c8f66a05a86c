"""Stage "routes": each VPC's route tables, each within its quota. The system table and every
custom table hold the system route of each vSwitch, then their declared entries; in vpc-route mode
the pod CIDR routes the cloud controller manager adds go into the system table and into every
custom table associated with a node's vSwitch (ACK's CCM writes them to each table listed in its
cloud-config, "Configure multiple route tables for a VPC":
https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/configure-multiple-route-tables-for-a-vpc).
A vSwitch routes by the custom table it is associated with, or else by the system table."""
from __future__ import annotations

import ipaddress

from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .model import OFPORT_VROUTER_PEER0, NodePlan, PeeringPlan, Route, RouteTablePlan


def check_route_tables(ctx: Context, cloud: Cloud) -> None:
    """Custom route tables: unique names (in the scenario), vSwitches of their own VPC, and each
    vSwitch associated with one table at most (Alibaba: a vSwitch has exactly one route table)."""
    tables = [(i, j, t) for i, vpc in enumerate(ctx.sc.cloud.vpcs) for j, t in enumerate(vpc.routeTables)]
    ctx.problems.unique([("cloud", "vpcs", i, "routeTables", j, "name") for i, j, _ in tables],
                        [t.name for _, _, t in tables], "route table")
    owner: dict[str, str] = {}
    for i, j, t in tables:
        vpc = ctx.sc.cloud.vpcs[i]
        for k, name in enumerate(t.vswitches):
            path = ("cloud", "vpcs", i, "routeTables", j, "vswitches", k)
            if name not in cloud.index or cloud.vswitch(name).vpc != vpc.name:
                mine = sorted(v.name for v in vpc.vswitches)
                ctx.bad(path, name, f"no such vSwitch in VPC {vpc.name}; expected one of {mine}")
            elif name in owner:
                ctx.bad(path, name, f"already associated with route table {owner[name]}; expected each vSwitch "
                        "in one custom route table at most (the others use the system route table)")
            else:
                owner[name] = t.name


def plan_routes(ctx: Context, i: int, vpc, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan],
                natgw_vpc: dict[str, str], peerings: list[PeeringPlan]
                ) -> tuple[tuple[Route, ...], tuple[RouteTablePlan, ...]]:
    """The system route table of VPC number `i` of the scenario, and its custom route tables."""
    system = [Route(destination=v.cidr, kind="system", description=f"vSwitch {v.name}")
              for v in cloud.vswitches if v.vpc == vpc.name]
    hops = _Hops(cluster, cloud, natgw_vpc, {p.name: p for p in peerings})
    node_vswitches = {n.vswitch for n in nodes}
    path = ("cloud", "vpcs", i, "routeTable")
    routes = _table(ctx, path, "system route table", vpc, vpc.routeTable, system, hops, nodes)
    tables = []
    for j, t in enumerate(vpc.routeTables):
        with_pods = nodes if node_vswitches & set(t.vswitches) else []
        table = _table(ctx, ("cloud", "vpcs", i, "routeTables", j), f"route table {t.name}", vpc, t, system,
                       hops, with_pods)
        tables.append(RouteTablePlan(name=t.name, vswitches=tuple(t.vswitches), routes=table, quota=t.quota,
                                     number=j + 1))
    return routes, tuple(tables)


class _Hops:
    """What a route's nextHop may name: an ECS instance, a NAT gateway, a peering connection."""

    def __init__(self, cluster: Cluster, cloud: Cloud, natgw_vpc: dict[str, str], peerings: dict[str, PeeringPlan]):
        self.cluster, self.cloud, self.natgw_vpc, self.peerings = cluster, cloud, natgw_vpc, peerings


def _table(ctx: Context, path: tuple, label: str, vpc, spec, system: list[Route], hops: _Hops,
           nodes: list[NodePlan]) -> tuple[Route, ...]:
    """One route table: the system routes, its declared entries, the pod CIDR routes of `nodes`
    (vpc-route mode), within its quota."""
    routes = list(system)
    for j, entry in enumerate(spec.routes):
        route = _declared(ctx, path + ("routes", j), vpc, entry, hops, routes)
        if route is not None:
            routes.append(route)
    if hops.cluster.mode == "vpc-route" and vpc.name == hops.cluster.vpc:
        for node in nodes:
            clash = next((j for j, e in enumerate(spec.routes) if str(e.destination) == node.pod_cidr), None)
            if clash is not None:
                ctx.bad(path + ("routes", clash, "destination"), node.pod_cidr,
                        f"is the pod CIDR of node {node.name}, which vpc-route mode routes to that node "
                        "itself; expected another destination")
                continue
            routes.append(Route(destination=node.pod_cidr, kind="pod", next_hop=node.name,
                                description=f"pod CIDR of node {node.name} (cloud controller manager)"))
    entries = [r for r in routes if r.kind != "system"]
    if len(entries) > spec.quota:
        n_pod = sum(1 for r in entries if r.kind == "pod")
        ctx.bad(path + ("quota",), spec.quota,
                f"{label} quota exceeded: {len(entries)} custom entries needed "
                f"({n_pod} pod CIDR routes for vpc-route mode + {len(entries) - n_pod} declared); "
                "expected a larger quota, fewer nodes, or another network mode")
    return tuple(routes)


def _declared(ctx: Context, path: tuple, vpc, entry, hops: _Hops, routes: list[Route]) -> Route | None:
    kind = _next_hop(ctx, path, vpc, entry, hops)
    if kind is None:
        return None
    for v in hops.cloud.vswitches:
        if v.vpc == vpc.name and entry.destination.subnet_of(ipaddress.IPv4Network(v.cidr)):
            ctx.bad(path + ("destination",), str(entry.destination),
                    f"within vSwitch {v.name} ({v.cidr}); expected a destination that is not the same as "
                    "or inside a vSwitch CIDR (a broader one, like 0.0.0.0/0, is fine: the vSwitch's "
                    "system route is more specific and wins)")
    if any(r.destination == str(entry.destination) for r in routes):
        ctx.bad(path + ("destination",), str(entry.destination), "duplicate route destination")
    return Route(destination=str(entry.destination), kind=kind, next_hop=entry.nextHop, description=entry.description)


def _next_hop(ctx: Context, path: tuple, vpc, entry, hops: _Hops) -> str | None:
    """The route's kind by its next hop (custom: an ECS instance, natgw, peering), or None after
    saying what is wrong with it."""
    hop = hops.cluster.instances.get(entry.nextHop)
    natgw = hops.natgw_vpc.get(entry.nextHop)
    peering = hops.peerings.get(entry.nextHop)
    if hop is None and natgw is not None:
        if natgw != vpc.name:
            ctx.bad(path + ("nextHop",), entry.nextHop, f"NAT gateway of VPC {natgw}; expected an ECS "
                    f"instance or a NAT gateway of VPC {vpc.name}")
            return None
        return "natgw"
    if hop is None and peering is not None:
        return "peering" if _peering_route(ctx, path, vpc, entry, peering, hops) else None
    if hop is None or hops.cloud.vswitch(hop.vswitch).vpc != vpc.name:
        ctx.bad(path + ("nextHop",), entry.nextHop, f"expected an ECS instance or a NAT gateway of VPC {vpc.name}, "
                "or a peering connection of it")
        return None
    return "custom"


def _peering_route(ctx: Context, path: tuple, vpc, entry, peering: PeeringPlan, hops: _Hops) -> bool:
    """A route through a peering connection: of one of its two VPCs, to a destination inside the
    other (Alibaba: "add a route that points to the CIDR block of the peer VPC"; a peering is not
    transitive)."""
    if vpc.name not in peering.vpcs:
        ctx.bad(path + ("nextHop",), entry.nextHop, f"peering connection between {peering.vpcs[0]} and "
                f"{peering.vpcs[1]}; expected one of VPC {vpc.name}")
        return False
    peer = hops.cloud.vpcs[peering.other(vpc.name)]
    if not entry.destination.subnet_of(peer.cidr):
        ctx.bad(path + ("destination",), str(entry.destination), f"outside {peer.name} ({peer.cidr}), the peer "
                f"VPC of {peering.name}; expected a destination inside it (a peering connection is not "
                "transitive: it carries only what is addressed to the peer VPC)")
        return False
    return True


def plan_peerings(ctx: Context, cloud: Cloud) -> list[PeeringPlan]:
    """VPC peering connections: two different VPCs whose CIDR blocks do not overlap, one
    connection per pair, each a patch port pair between the two vRouters. Alibaba: "A VPC peering
    connection connects two VPCs whose CIDR blocks do not overlap"
    (https://www.alibabacloud.com/help/en/vpc/vpc-peer-to-peer-connection)."""
    peerings = ctx.sc.cloud.peerings
    ctx.problems.unique([("cloud", "peerings", k, "name") for k in range(len(peerings))],
                        [p.name for p in peerings], "peering connection")
    taken = {e.name: "an ECS instance" for e in ctx.sc.cloud.instances}
    taken.update({g.name: "a NAT gateway" for g in ctx.sc.cloud.natGateways})
    pairs: dict[frozenset, str] = {}
    out = []
    for k, p in enumerate(peerings):
        path = ("cloud", "peerings", k)
        if p.name in taken:
            ctx.bad(path + ("name",), p.name, f"also the name of {taken[p.name]}; expected a name no instance or "
                    "NAT gateway has (a route's nextHop names one of them)")
        if not _peer_vpcs(ctx, path, p, cloud):
            continue
        pair = frozenset(p.vpcs)
        if pair in pairs:
            ctx.bad(path + ("vpcs",), list(p.vpcs), f"already peered by {pairs[pair]}; expected one peering "
                    "connection between two VPCs")
        pairs.setdefault(pair, p.name)
        out.append(PeeringPlan(name=p.name, vpcs=(p.vpcs[0], p.vpcs[1]), ports=ctx.names.peering(k),
                               ofport=OFPORT_VROUTER_PEER0 + k))
    return out


def _peer_vpcs(ctx: Context, path: tuple, p, cloud: Cloud) -> bool:
    """Its two VPCs exist, differ and do not overlap."""
    for m, name in enumerate(p.vpcs):
        if name not in cloud.vpcs:
            ctx.bad(path + ("vpcs", m), name, f"no such VPC; expected one of {sorted(cloud.vpcs)}")
            return False
    a, b = (cloud.vpcs[n] for n in p.vpcs)
    if a.name == b.name:
        ctx.bad(path + ("vpcs", 1), b.name, "the same VPC twice; expected two different VPCs")
        return False
    if a.cidr.overlaps(b.cidr):
        ctx.bad(path + ("vpcs", 1), b.name, f"its CIDR {b.cidr} overlaps {a.name}'s ({a.cidr}); Alibaba Cloud "
                "refuses to peer VPCs whose CIDR blocks overlap: expected VPCs with disjoint CIDR blocks")
        return False
    return True
