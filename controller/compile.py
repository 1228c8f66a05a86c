"""Pure compilers: a Plan in, the flows of every bridge out. No switch, no os-ken, no clock.

Each feature's flows are made in its own module and returned as lists (and select groups); this
module says which features make up each bridge role, in which order. The order is the order of
`FlowSet.flows`, in which the controller sends what is missing. docs/design.md explains the
walk of a packet.

    vRouter    vrouter.py, ipv6.py (dual stack)
    vSwitch    vswitch.py (classify, ARP, conntrack), ipv6.py (dual stack), slb.py, vswitch.py (l2, output), secgroup.py,
               flowlog.py (with flow logs), secgroup.py (anti-spoofing)
    edge       edge.py
    internet   internet.py
    node       node.py (classify, ARP, unSNAT and conntrack), services.py, csumhop.py (with the checksum hop),
               policy.py, node.py (commit), podroute.py, ipv6.py and node6.py (dual stack), node.py (uplink)
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from kubevpc.planning import BridgePlan, Plan

from .csumhop import csum_hop_flows
from .edge import edge_flows
from .flowlog import flowlog_flows
from .flows import Flow, FlowSet, Group
from .internet import internet_flows
from .ipv6 import node6_flows, vrouter6_flows, vswitch6_flows
from .node6 import dual_stack, node6_pipeline_flows
from .node import arp_flows, classify_flows, commit_flows, conntrack_flows, uplink_flows
from .pipeline import NODE, REG_EP_IP, REG_EP_IP6, REG_EP_PORT
from .podroute import route_flows
from .policy import PolicyTables, policy_flows
from .secgroup import anti_spoofing_flows, security_group_flows
from .services import service_flows
from .slb import slb_flows
from .vrouter import vrouter_flows
from .vswitch import l2_flows, switching_flows


def compile_plan(plan: Plan, health: dict | None = None, loads: dict | None = None) -> dict[str, FlowSet]:
    """Every bridge's desired flows. `health`: the SLB health checkers' view ({listener: {"ip:port":
    healthy}}); None counts every backend healthy (the static view of `kubevpc flows`). `loads`:
    the wlc listeners' established connections ({listener: {"ip:port": n}}); None counts none."""
    with paused_gc():
        return _compile(plan, health, loads)


@contextlib.contextmanager
def paused_gc():
    """Python's cyclic garbage collector held off while flows are made. A compile makes tens of
    thousands of objects that all outlive it, and each full collection the allocations set off
    walks the whole growing heap again: 460 of 730 ms of compiling 1,000 NetworkPolicies
    (kubevpc.bench.netpol). Flows hold no reference cycles, so nothing waits on the collector;
    it runs again, once, after. A caller that paused it already keeps it paused."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _compile(plan: Plan, health: dict | None, loads: dict | None) -> dict[str, FlowSet]:
    return dict(compile_bridges(plan, health, loads))


def compile_bridges(plan: Plan, health: dict | None = None, loads: dict | None = None) -> Iterator[tuple[str, FlowSet]]:
    """compile_plan one bridge at a time, in the plan's order: (name, its FlowSet). The controller
    sends each bridge its flows as soon as they are made, so that Open vSwitch takes one bridge's
    while the next is compiled (controller/planwatch.py)."""
    memo: dict = {}             # what every node's policy tables share (policy_flows)
    for bridge in plan.bridges:
        groups: list[Group] = []
        if bridge.role == "vrouter":
            flows = vrouter_flows(plan, bridge) + vrouter6_flows(plan, bridge)
        elif bridge.role == "vswitch":
            flows, groups = vswitch_bridge(plan, bridge, health, loads)
        elif bridge.role == "edge":
            flows = edge_flows(plan, bridge)
        elif bridge.role == "internet":
            flows = internet_flows(plan, bridge)
        else:
            flows, groups = node_bridge(plan, bridge, memo)
        fs = FlowSet(bridge.name)
        fs.add(*flows)
        for g in groups:
            fs.add_group(g)
        yield bridge.name, fs


def vswitch_bridge(plan: Plan, bridge: BridgePlan, health: dict | None = None,
                   loads: dict | None = None) -> tuple[list[Flow], list[Group]]:
    """A vSwitch: switching, its SLB listeners, security groups (and flow logs)."""
    slb, groups = slb_flows(plan, bridge, health, loads)
    flowlog = flowlog_flows(plan) if plan.flow_log_window > 0 else []
    return [*switching_flows(plan, bridge), *vswitch6_flows(plan, bridge), *slb, *l2_flows(plan, bridge),
            *security_group_flows(plan, bridge), *flowlog, *anti_spoofing_flows(plan, bridge)], groups


def node_bridge(plan: Plan, bridge: BridgePlan, memo: dict | None = None) -> tuple[list[Flow], list[Group]]:
    """A node bridge: the node's own tables, its Services, its pods' NetworkPolicy, its routes.
    `memo`: shared by the node bridges of one plan (node_policy_flows)."""
    node = plan.node(bridge.owner)
    services, groups = service_flows(plan, node, bridge.zone)
    return [*classify_flows(plan, node), *arp_flows(plan, node), *conntrack_flows(node, bridge.zone), *services,
            *csum_hop_flows(plan, node, bridge), *node_policy_flows(plan, node.name, memo), *commit_flows(bridge.zone), *route_flows(plan, node),
            *node6_flows(plan, node), *node6_pipeline_flows(plan, node, bridge.zone), *uplink_flows(node)], groups


# ------------------------------------------------------------------------ NetworkPolicy on nodes
POLICY_TABLES = PolicyTables(egress=NODE.table("egress_policy"), egress_next=NODE.table("ingress_policy"),
                             ingress=NODE.table("ingress_policy"), ingress_next=NODE.table("endpoint"),
                             dst_ip=REG_EP_IP, dst_port=REG_EP_PORT, dst_ip6=REG_EP_IP6)


def policy_endpoints(plan: Plan) -> list:
    """What NetworkPolicy peers are chosen among: the pods, and the nodes' own instances (for the
    exemption of traffic between a pod and its node). SLB and plain ECS addresses meet ipBlocks only."""
    nodes = {n.name for n in plan.nodes}
    return [h for h in plan.hosts if h.kind == "pod" or (h.kind == "ecs" and h.name in nodes)]


def node_policy_flows(plan: Plan, node: str, memo: dict | None = None) -> list:
    """Both policy tables of a node's bridge: its pods' egress and ingress (and their IPv6 twins in
    a dual-stack cluster). `memo`: an empty dict shared by the calls for every node of this plan
    (and of no other), so that what does not depend on the node is worked out once."""
    memo = {} if memo is None else memo
    if "endpoints" not in memo:
        memo["endpoints"] = policy_endpoints(plan)
    args = (plan.network_policies, plan.namespaces, memo["endpoints"], [p for p in plan.own_pods if p.node == node],
            POLICY_TABLES)
    return policy_flows(*args, memo=memo) + (policy_flows(*args, family=6, memo=memo) if dual_stack(plan) else [])
