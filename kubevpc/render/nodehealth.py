"""kube-proxy's health check ports on a node, from the plan: the configuration of the node's
health check server (kubevpc.daemons.nodehealth)."""
from __future__ import annotations

from typing import Any


def health_ports(plan: Any, node: str) -> dict:
    """Each Service with externalTrafficPolicy Local, by its healthCheckNodePort: how many of its
    endpoints on ``node`` are ready. Only ready ones count, not those serving while their pod
    terminates (kube-proxy feeds its health server LocalReadyEndpoints, pkg/proxy/healthcheck), so
    a node whose local pods are all being deleted answers 503 and its load balancer drains it,
    while its NodePort still sends connections to those pods (KEP-1669, since Kubernetes 1.26).
    A Service kube-proxy leaves alone (``proxied`` false: labelled service.kubernetes.io/
    service-proxy-name or service.kubernetes.io/headless) has no health check server."""
    ports = {}
    for svc in plan.services:
        if svc.health_check_node_port and svc.proxied:
            local = {e.pod for i in range(len(svc.ports)) for e in svc.ready_endpoints(i) if e.node == node}
            ports[str(svc.health_check_node_port)] = {"namespace": svc.namespace, "name": svc.name,
                                                      "local_endpoints": len(local)}
    return {"ports": ports}
