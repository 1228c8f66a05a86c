"""Kinds a manifest may hold that kubevpc does not emulate: those it skips, with one warning each,
because they do not touch the network, and those it refuses, because they would and it cannot
reproduce them.

Users paste what they run in production: a Deployment comes with its ConfigMap, ServiceAccount,
RBAC objects, HorizontalPodAutoscaler and PodDisruptionBudget. None of those changes which packet
goes where, so refusing the whole file for them would only make people edit their manifests. A kind
that does change the network (an EndpointSlice written by hand, a Gateway, an Istio ServiceEntry, a
CiliumNetworkPolicy) is different: skipping it would make the emulator answer where the cluster
would not, so it stays an error, with the reason.

Kinds are matched by API group and kind, whatever the version (`autoscaling/v1` and
`autoscaling/v2` HorizontalPodAutoscalers alike), as the API server serves one object under every
version of its group.

Decisions worth stating:
- A ConfigMap is read only in kube-system, where Terway reads its configuration (eni-config and a
  node's own, kubevpc.k8s.config); one in any other namespace is skipped.
- A Secret is read only when it can be an Ingress's TLS certificate: type kubernetes.io/tls, or a
  tls.crt or tls.key key (ingress-nginx reads those keys whatever the type). Any other Secret is
  skipped: an Ingress naming one would get kubevpc's self-signed certificate either way.
- Jobs and CronJobs are skipped, with their own reason: their pods run to completion and make
  connections, while kubevpc's pods are servers that answer them; a Pod is the way to probe from.
"""
from __future__ import annotations

from typing import Any

from .config import TERWAY_NAMESPACE

NOT_NETWORK = "skipped: does not affect the network"
RUN_TO_COMPLETION = ("skipped: its pods run to completion and are not emulated (kubevpc's pods are servers; "
                     "probe from a Pod or with `kubevpc matrix` instead)")

# (API group, kind) -> why it is skipped; "" is the core group (apiVersion v1)
SKIPPED: dict[tuple[str, str], str] = {
    **{("", kind): NOT_NETWORK for kind in (
        "ConfigMap", "Secret", "ServiceAccount", "LimitRange", "ResourceQuota", "PersistentVolumeClaim",
        "PersistentVolume", "PodTemplate", "Event")},
    **{("rbac.authorization.k8s.io", kind): NOT_NETWORK for kind in (
        "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")},
    ("autoscaling", "HorizontalPodAutoscaler"): NOT_NETWORK,
    ("autoscaling.k8s.io", "VerticalPodAutoscaler"): NOT_NETWORK,
    ("policy", "PodDisruptionBudget"): NOT_NETWORK,
    ("policy", "PodSecurityPolicy"): NOT_NETWORK,
    ("batch", "Job"): RUN_TO_COMPLETION,
    ("batch", "CronJob"): RUN_TO_COMPLETION,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): NOT_NETWORK,
    ("scheduling.k8s.io", "PriorityClass"): NOT_NETWORK,
    **{("storage.k8s.io", kind): NOT_NETWORK for kind in ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment")},
    ("node.k8s.io", "RuntimeClass"): NOT_NETWORK,
    ("coordination.k8s.io", "Lease"): NOT_NETWORK,
    ("apps", "ControllerRevision"): NOT_NETWORK,
    **{("admissionregistration.k8s.io", kind): NOT_NETWORK for kind in (
        "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding")},
    **{("monitoring.coreos.com", kind): NOT_NETWORK for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")},
}

# (API group, kind) -> why it is refused: it would change the network, and kubevpc does not emulate it
REFUSED: dict[tuple[str, str], str] = {
    ("", "Endpoints"): "Endpoints written by hand would change where a Service sends, and kubevpc makes a "
                       "Service's endpoints only from its selector; expected a Service with a selector",
    ("discovery.k8s.io", "EndpointSlice"): "an EndpointSlice written by hand would change where a Service sends, "
                                           "and kubevpc makes a Service's endpoints only from its selector; "
                                           "expected a Service with a selector",
    ("", "ReplicationController"): "it makes pods, which kubevpc makes only from Pods, Deployments, StatefulSets "
                                   "and DaemonSets; expected a Deployment",
    ("apps", "ReplicaSet"): "it makes pods, which kubevpc makes only from Pods, Deployments, StatefulSets and "
                            "DaemonSets; expected a Deployment",
    ("", "Node"): "nodes are ECS instances named in the scenario's cluster.nodes, not Kubernetes objects",
    ("networking.k8s.io", "IngressClass"): "kubevpc's ingress controllers serve the Ingresses of their class "
                                           "annotation and have no IngressClass; expected none",
    **{("gateway.networking.k8s.io", kind): "the Gateway API routes traffic, and kubevpc does not emulate it; "
                                            "expected an Ingress" for kind in (
        "Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute", "ReferenceGrant")},
    **{("networking.istio.io", kind): "an Istio mesh routes traffic through sidecars, and kubevpc does not "
                                      "emulate one" for kind in (
        "ServiceEntry", "VirtualService", "DestinationRule", "Gateway", "Sidecar", "EnvoyFilter", "WorkloadEntry")},
    **{("security.istio.io", kind): "an Istio mesh filters traffic through sidecars, and kubevpc does not "
                                    "emulate one" for kind in ("AuthorizationPolicy", "PeerAuthentication")},
    **{("cilium.io", kind): "Cilium's policies filter traffic, and kubevpc emulates networking.k8s.io/v1 "
                            "NetworkPolicy only; expected a NetworkPolicy" for kind in (
        "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")},
    **{(group, kind): "Calico's policies filter traffic, and kubevpc emulates networking.k8s.io/v1 NetworkPolicy "
                      "only; expected a NetworkPolicy" for group in ("crd.projectcalico.org", "projectcalico.org")
       for kind in ("NetworkPolicy", "GlobalNetworkPolicy")},
    **{("policy.networking.k8s.io", kind): "AdminNetworkPolicy filters traffic, and kubevpc emulates "
                                           "networking.k8s.io/v1 NetworkPolicy only" for kind in (
        "AdminNetworkPolicy", "BaselineAdminNetworkPolicy")},
    ("k8s.cni.cncf.io", "NetworkAttachmentDefinition"): "Multus attaches more interfaces to pods, and kubevpc's "
                                                         "pods have one",
}


def group_of(api_version: str) -> str:
    """The API group of an apiVersion: "" for "v1", "apps" for "apps/v1"."""
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def skip_reason(obj: dict[str, Any]) -> str | None:
    """Why kubevpc skips this object (it does not touch the network), or None when it reads it or
    refuses it."""
    group, kind = group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))
    reason = SKIPPED.get((group, kind))
    if reason is None or group:
        return reason
    if kind == "ConfigMap" and _namespace(obj) == TERWAY_NAMESPACE and obj.get("apiVersion") == "v1":
        return None                    # Terway's configuration may be here: read and checked
    if kind == "Secret" and obj.get("apiVersion") == "v1" and _tls_secret(obj):
        return None                    # an Ingress's TLS certificate: read and checked
    return reason


def refusal(obj: dict[str, Any]) -> str | None:
    """Why kubevpc refuses this object (it would change the network, and is not emulated), or None."""
    return REFUSED.get((group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))))


def _namespace(obj: dict[str, Any]) -> object:
    meta = obj.get("metadata")
    return meta.get("namespace", "default") if isinstance(meta, dict) else None


def _tls_secret(obj: dict[str, Any]) -> bool:
    if obj.get("type") == "kubernetes.io/tls":
        return True
    keys = [k for field in ("data", "stringData") if isinstance(obj.get(field), dict) for k in obj[field]]
    return "tls.crt" in keys or "tls.key" in keys
