"""The ingress controllers' state document, from the plan: the Ingresses, every Service's ready
endpoints and the TLS Secrets (kubevpc.render.nginx.State is its schema; kubevpc.render.nginx
makes nginx.conf of it). Ready endpoints only, as ingress-nginx takes them from EndpointSlices
(internal/ingress/controller/endpointslices.go skips those not ready):
a pod being deleted leaves its upstreams at once, even if it still serves (kube-proxy's fallback
to terminating endpoints is not ingress-nginx's), and a Service labelled to switch kube-proxy off
is served all the same, since NGINX sends to the pods, not to the ClusterIP."""
from __future__ import annotations

from typing import Any

from kubevpc.k8s import tls_pair


def tls_secrets(plan: Any) -> dict[str, dict[str, str]]:
    """The scenario's TLS Secrets, ``namespace/name`` -> their PEM pair."""
    secrets = {}
    for sec in plan.secrets:
        try:
            cert, key = tls_pair(sec)
        except ValueError:
            continue            # not a TLS Secret; the controller warns about an Ingress naming it
        secrets[f"{sec.metadata.namespace}/{sec.metadata.name}"] = {"tls.crt": cert.decode(), "tls.key": key.decode()}
    return secrets


def undeclared_tls(plan: Any, secrets: dict) -> dict[str, list[str]]:
    """The TLS Secrets Ingresses name that ``secrets`` lacks, with the hosts they must serve (sorted)."""
    wanted: dict[str, set[str]] = {}
    for ing in plan.ingresses:
        for tls in ing.spec.tls:
            if tls.secretName:
                wanted.setdefault(f"{ing.metadata.namespace}/{tls.secretName}", set()).update(tls.hosts)
    return {name: sorted(hosts) for name, hosts in wanted.items() if name not in secrets and hosts}


def state_document(plan: Any, ip: str, secrets: dict, generation: int) -> dict:
    """What the ingress controller listening on ``ip`` serves."""
    services = {svc.key: {"ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                                     "endpoints": [f"{e.ip}:{e.ports[i]}" for e in svc.ready_endpoints(i)]}
                                    for i, p in enumerate(svc.ports) if p.protocol in ("TCP", "UDP")]}
                for svc in plan.services if not svc.external_name}
    return {"generation": generation, "listen": [ip],
            "allow_snippet_annotations": bool(plan.cluster and plan.cluster.allow_snippet_annotations),
            "ingresses": [i.model_dump(mode="json", exclude_none=True) for i in plan.ingresses],
            "services": services, "secrets": secrets}
