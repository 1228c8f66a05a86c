"""Stage "bridges": every Open vSwitch bridge with its ports (vRouters with their VPC's route
table, vSwitches, nodes, edges, the internet router), numbered datapath ids and conntrack zones;
then the security groups with their members."""
from __future__ import annotations

from dataclasses import dataclass

from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .hosts import Wiring
from .internet import Internet
from .model import (OFPORT_EDGE_INTERNET, OFPORT_EDGE_VPC, OFPORT_NODE_HOP_IN, OFPORT_NODE_HOP_OUT, OFPORT_NODE_HOST,
                    OFPORT_VROUTER_EDGE, OFPORT_VROUTER_ON_VSWITCH, Attachment, BridgePlan, GroupPlan, HostPlan,
                    NodePlan, OvsPort, PeeringPlan, Plan, Route, RulePlan, VpcPlan)
from .names import Names
from .routes import plan_routes

DPID_BASE = 0x6B76_0000_0000_0000       # "kv": datapath ids of a run's bridges count up from here


@dataclass
class Bridges:
    bridges: tuple[BridgePlan, ...]
    vpcs: tuple[VpcPlan, ...]


def plan_bridges(ctx: Context, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan], internet: Internet,
                 wiring: Wiring, peerings: list[PeeringPlan]) -> Bridges:
    bridges, vpcs = _vrouters(ctx, cloud, cluster, nodes, internet, peerings, wiring.hosts)
    names = ctx.names
    for v in cloud.vswitches:
        idx = cloud.index[v.name]
        ports = [OvsPort(name=names.vswitch_to_vrouter(idx), ofport=OFPORT_VROUTER_ON_VSWITCH, kind="patch",
                         peer=names.vrouter_to_vswitch(idx))]
        bridges.append(BridgePlan(name=v.bridge, role="vswitch", owner=v.name, dpid=0, zone=0,
                                  ports=tuple(ports + wiring.ports.ports[v.name])))
    hosts = wiring.hosts
    for node in nodes:
        host = next(h for h in hosts if h.key == node.ecs)
        ports = [OvsPort(name=host.veth, ofport=OFPORT_NODE_HOST, kind="veth", peer=host.key)]
        ports += [OvsPort(name=u.port, ofport=u.ofport, kind="link", peer=u.peer) for u in node.uplinks]
        ports += [OvsPort(name=u.patch, ofport=u.patch_ofport, kind="patch", peer=u.patch_peer) for u in node.uplinks]
        ports += [OvsPort(name=t.ifname, ofport=t.ofport, kind="vxlan") for t in node.tunnels[:1]]
        ports += [OvsPort(name=h.veth, ofport=h.ofport, kind="veth", peer=h.key)
                  for h in hosts if h.kind == "pod" and h.node == node.name and not h.host_network]
        bridges.append(BridgePlan(name=node.bridge, role="node", owner=node.name, dpid=0, zone=0, ports=tuple(ports)))
    vpc_index = {v.name: i for i, v in enumerate(ctx.sc.cloud.vpcs)}
    for e in internet.edges:
        i = vpc_index[e.vpc]
        bridges.append(BridgePlan(name=e.bridge, role="edge", owner=e.vpc, dpid=0, zone=0, ports=(
            OvsPort(name=names.edge_to_vrouter(i), ofport=OFPORT_EDGE_VPC, kind="link", peer=names.vrouter_to_edge(i)),
            OvsPort(name=names.edge_to_internet(i), ofport=OFPORT_EDGE_INTERNET, kind="patch",
                    peer=names.internet_to_edge(i)))))
    if internet.plan:
        ports = [OvsPort(name=names.internet_to_edge(vpc_index[e.vpc]), ofport=e.internet_port, kind="patch",
                         peer=names.edge_to_internet(vpc_index[e.vpc])) for e in internet.edges]
        ports += [OvsPort(name=h.veth, ofport=h.ofport, kind="veth", peer=h.key) for h in hosts if h.kind == "internet"]
        bridges.append(BridgePlan(name=internet.plan.bridge, role="internet", owner="internet", dpid=0, zone=0,
                                  ports=tuple(ports)))
    numbers = _numbers([b.name for b in bridges], ctx.previous_bridges)
    numbered = tuple(b.model_copy(update={"dpid": DPID_BASE + i + 1, "zone": (cloud.zone_base + i) % 65535 + 1})
                     for i, b in zip(numbers, bridges))
    return Bridges(bridges=numbered, vpcs=tuple(vpcs))


def has_csum_hops(plan: Plan) -> bool:
    """Do the plan's node bridges have the checksum hop (KUBEVPC_VXLAN_CSUM_HOP)?"""
    return any(p.kind == "hop" for b in plan.bridges for p in b.ports)


def with_csum_hops(plan: Plan) -> Plan:
    """The plan with a checksum hop on every node bridge, in vxlan mode (any other plan as it is):
    a veth pair with both ends on the bridge, at OFPORT_NODE_HOP_OUT (the end Open vSwitch sends
    into: the builder turns its TX checksum offload off, so the kernel completes the checksums of
    what leaves by it) and OFPORT_NODE_HOP_IN (where the packet comes back). The builder asks for
    it on the userspace datapath (topologies/datapath.py offloads_for), and a plan made against a
    running one keeps it (make_plan); the controller compiles its flows from these ports
    (controller/csumhop.py). docs/design.md, "The checksum hop (vxlan)", says why."""
    if plan.cluster is None or plan.cluster.mode != "vxlan":
        return plan
    names, bridges = Names(plan.run), []
    for b in plan.bridges:
        if b.role == "node" and not any(p.kind == "hop" for p in b.ports):
            out, back = names.csum_hop(int(b.name.removeprefix(f"{plan.run}-n")))     # R-n<k>: node k's
            b = b.model_copy(update={"ports": b.ports + (
                OvsPort(name=out, ofport=OFPORT_NODE_HOP_OUT, kind="hop", peer=back),
                OvsPort(name=back, ofport=OFPORT_NODE_HOP_IN, kind="hop", peer=out))})
        bridges.append(b)
    return plan.model_copy(update={"bridges": tuple(bridges)})


def _numbers(names: list[str], previous: dict[str, int]) -> list[int]:
    """Each bridge's number (its datapath id and conntrack zone count from it): its position, or,
    planned against a running scenario (`previous`: dpids by bridge name), the number it runs with;
    a bridge new to it (a node added while running) takes the next number above all of those, so
    that no running bridge is renumbered (its flows hold its zone)."""
    if not previous:
        return list(range(len(names)))
    held = {name: dpid - DPID_BASE - 1 for name, dpid in previous.items()}
    top = max(held.values(), default=-1)
    out = []
    for name in names:
        if name not in held:
            top += 1
            held[name] = top
        out.append(held[name])
    return out


def _vrouters(ctx: Context, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan], internet: Internet,
              peerings: list[PeeringPlan], hosts: list[HostPlan]) -> tuple[list[BridgePlan], list[VpcPlan]]:
    """One vRouter per VPC: a patch to each of its vSwitches, a link to its edge, a veth to its DNS
    resolver, a patch to the other vRouter of each of its peering connections; and its route tables."""
    bridges, vpcs, names = [], [], ctx.names
    for i, vpc in enumerate(ctx.sc.cloud.vpcs):
        ports = [OvsPort(name=names.vrouter_to_vswitch(cloud.index[v.name]), ofport=v.vrouter_port, kind="patch",
                         peer=names.vswitch_to_vrouter(cloud.index[v.name]))
                 for v in cloud.vswitches if v.vpc == vpc.name]
        if any(e.vpc == vpc.name for e in internet.edges):
            ports.append(OvsPort(name=names.vrouter_to_edge(i), ofport=OFPORT_VROUTER_EDGE, kind="link",
                                 peer=names.edge_to_vrouter(i)))
        for p in peerings:
            if vpc.name in p.vpcs:
                side = p.vpcs.index(vpc.name)
                ports.append(OvsPort(name=p.ports[side], ofport=p.ofport, kind="patch", peer=p.ports[1 - side]))
        ports += [OvsPort(name=h.veth, ofport=h.ofport, kind="veth", peer=h.key)
                  for h in hosts if h.kind == "resolver" and h.name == vpc.name]
        bridges.append(BridgePlan(name=names.vrouter(i), role="vrouter", owner=vpc.name, dpid=0, zone=0,
                                  ports=tuple(ports)))
        routes, tables = plan_routes(ctx, i, vpc, cloud, cluster, nodes, internet.natgw_vpc, peerings)
        vpcs.append(VpcPlan(name=vpc.name, cidr=str(vpc.cidr), bridge=names.vrouter(i), routes=routes,
                            quota=vpc.routeTable.quota, route_tables=tables,
                            ipv6_cidr=str(vpc.ipv6Cidr) if vpc.ipv6Cidr else "",
                            routes6=tuple(Route(destination=v.ipv6_cidr, kind="system", description=f"vSwitch {v.name}")
                                          for v in cloud.vswitches if v.vpc == vpc.name and v.ipv6_cidr)))
    return bridges, vpcs


def route_attachments(vpcs: tuple[VpcPlan, ...], attachments: list[Attachment]) -> list[Attachment]:
    """A route's destination sits behind its next hop's port: that instance's security groups apply
    to it (for vpc-route mode: pod traffic leaves and enters through the ECS's ENI). A destination
    routed to the same instance by several route tables is one attachment."""
    att_of = {a.owner: a for a in attachments}
    routes = [r for vpc in vpcs for table in (vpc.routes, *(t.routes for t in vpc.route_tables)) for r in table
              if r.kind in ("custom", "pod")]
    unique = list(dict.fromkeys((r.destination, r.next_hop) for r in routes))
    return [att_of[f"ecs/{hop}"].model_copy(update={"ip": dest, "owner": f"route/{dest}", "ipv6": ""})
            for dest, hop in unique]


def plan_groups(ctx: Context, attachments: list[Attachment]) -> tuple[GroupPlan, ...]:
    groups = []
    for sg in ctx.sc.cloud.securityGroups:
        members = [a.ip for a in attachments if sg.name in a.security_groups]
        members6 = [a.ipv6 for a in attachments if sg.name in a.security_groups and a.ipv6]
        rules = tuple(RulePlan(direction=r.direction, protocol=r.protocol,
                               port_min=r.port_range.first if r.port_range else 0,
                               port_max=r.port_range.last if r.port_range else 0,
                               cidr=str(r.cidr) if r.cidr else "", group=r.group or "",
                               ipv6_cidr=str(r.ipv6Cidr) if r.ipv6Cidr else "",
                               policy=r.policy, priority=r.priority, description=r.description) for r in sg.rules)
        groups.append(GroupPlan(name=sg.name, vpc=sg.vpc, rules=rules, members=tuple(sorted(set(members))),
                                members6=tuple(sorted(set(members6)))))
    return tuple(groups)
