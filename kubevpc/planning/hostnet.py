"""Check "host ports": the ports of pods with spec.hostNetwork, which listen on their node's
address beside everything else the node serves there. Two such pods on one node may not take
one port and protocol, as the scheduler's NodePorts filter refuses to place them ("node(s) didn't
have free ports for the requested pod ports", pkg/scheduler/framework/plugins/nodeports); nor
may one take a port the node holds already: a NodePort or a healthCheckNodePort (kube-proxy's,
on every node), the node's own servers, the refusal port, or the VXLAN port in vxlan mode.
kubevpc refuses the scenario where the scheduler would leave the pod Pending."""
from __future__ import annotations

from .cluster import Cluster
from .context import Context
from .model import REJECT_PORT, TERMINAL_PHASES, HostPlan, ServicePlan
from .workloads import PodSpec


def check_host_ports(ctx: Context, cluster: Cluster, pods: list[PodSpec], hosts: list[HostPlan],
                     services: tuple[ServicePlan, ...]) -> None:
    """Every port of a host-network pod against what its node holds, pods in order (a pod of the
    running scenario keeps its node, so a newcomer is the one refused). A pod in a terminal phase
    holds nothing; a terminating one still runs."""
    held: dict[tuple[str, int, str], str] = {}       # (node, port, protocol) -> the pod that has it
    node_ports = {(p.node_port, p.protocol): s.key for s in services for p in s.ports if p.node_port}
    health = {s.health_check_node_port: s.key for s in services if s.health_check_node_port}
    ecs = {h.node: h for h in hosts if h.kind == "ecs" and h.node}
    for pod in pods:
        if not pod.host_network or pod.phase in TERMINAL_PHASES:
            continue
        for i, sp in enumerate(pod.servers):
            path = pod.port_paths[i] if i < len(pod.port_paths) else pod.path
            why = _node_holds(cluster, ecs[pod.node], node_ports, health, sp.port, sp.protocol)
            other = held.setdefault((pod.node, sp.port, sp.protocol), f"{pod.namespace}/{pod.name}")
            if not why and other != f"{pod.namespace}/{pod.name}":
                why = (f"{sp.port}/{sp.protocol} is already taken on node {pod.node} by host-network pod {other}: "
                       "node(s) didn't have free ports for the requested pod ports (the scheduler's NodePorts "
                       "filter leaves such a pod Pending)")
            if why:
                ctx.bad(path, sp.port, f"pod {pod.namespace}/{pod.name} has hostNetwork: {why}; expected another "
                        "containerPort" + (", or another node" if "host-network pod" in why else ""), pod.source)


def _node_holds(cluster: Cluster, node: HostPlan, node_ports: dict, health: dict, port: int, proto: str) -> str:
    """Why `port`/`proto` at a node's address is not free for a pod ("" when it is)."""
    if port == REJECT_PORT:
        return (f"port {REJECT_PORT} is where kubevpc sends the connections a Service refuses, so nothing may "
                "listen there on a node")
    if cluster.mode == "vxlan" and proto == "UDP" and port == cluster.spec.vxlan.port:
        return f"UDP {port} is the node's VXLAN port (cluster.vxlan.port)"
    if (port, proto) in node_ports:
        return f"{port}/{proto} is a NodePort of Service {node_ports[(port, proto)]}, which kube-proxy takes on " \
               "every node's address"
    if proto == "TCP" and port in health:
        return f"{port}/TCP is the healthCheckNodePort of Service {health[port]}, which kube-proxy serves on every node"
    if any(s.port == port and s.protocol == proto for s in node.servers):
        return f"{port}/{proto} is served on node {node.name} by the node itself (its instance's ports)"
    return ""
