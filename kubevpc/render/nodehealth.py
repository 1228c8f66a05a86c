"""kube-proxy's health check ports on a node, from the plan: the configuration of the node's
health check server (kubevpc.daemons.nodehealth)."""
from __future__ import annotations

from typing import Any


def health_ports(plan: Any, node: str) -> dict:
    """Each Service with externalTrafficPolicy Local, by its healthCheckNodePort: its ready
    endpoints on ``node``."""
    ports = {}
    for svc in plan.services:
        if svc.health_check_node_port:
            local = {e.pod for i in range(len(svc.ports)) for e in svc.ready_endpoints(i) if e.node == node}
            ports[str(svc.health_check_node_port)] = {"namespace": svc.namespace, "name": svc.name,
                                                      "local_endpoints": len(local)}
    return {"ports": ports}
