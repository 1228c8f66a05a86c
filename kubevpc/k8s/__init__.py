"""The Kubernetes objects a scenario may carry, parsed from ordinary manifests: every kind in one
package, one module a group of kinds.

Manifests are what users run in production, so fields we do not emulate (images, resources,
probes, ...) are accepted and ignored; the fields we do use are checked as the API server would.

    meta            strict decoding (K8s), ObjectMeta, labels, label selectors, name checks
    workloads       Namespace, Pod, Deployment, StatefulSet, DaemonSet
    service         Service
    networkpolicy   NetworkPolicy, and how many of them the flows can hold (MAX_*)
    podnetworking   Terway's PodNetworking
    config          ConfigMap, and Terway's eni_conf inside one
    ingress         Ingress and Secret, TLS pairs, snippet annotations
    skipped         kinds skipped (they do not touch the network) and kinds refused with a reason
"""
from __future__ import annotations

from typing import Any

from .config import (ENI_CONF_KEY, ENI_CONFIG, NODE_CONFIG_LABEL, TERWAY_NAMESPACE, ConfigMap, EniConf,
                     eni_conf_document, merge_patch)
from .ingress import (ANNOTATION_PREFIX, CLASS_ANNOTATION, HTTPIngressPath, HTTPIngressRuleValue, Ingress,
                      IngressBackend, IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, Secret,
                      ServiceBackendPort, check_tls_pair, self_signed, snippet_annotations, snippet_refusal, tls_pair)
from .meta import (DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_VALUE, NAMESPACE_NAME_LABEL, PORT_NAME, K8s,
                   LabelSelector, LabelSelectorRequirement, ObjectMeta, TemplateMeta, check_labels)
from .networkpolicy import (MAX_NETWORK_POLICIES, MAX_RULES_PER_DIRECTION, MAX_RULES_PER_POLICY, Direction, IPBlock,
                            NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
                            NetworkPolicyPort, NetworkPolicySpec, PortProtocol, Rule)
from .podnetworking import (POD_NETWORKING_ANNOTATION, AllocationType, ENIOptions, PodNetworking, PodNetworkingSelector,
                            PodNetworkingSpec, VSwitchSelectOptions, duration_seconds)
from .service import ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig
from .skipped import refusal, skip_reason
from .workloads import (Container, ContainerPort, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, Namespace,
                        Pod, PodSpec, PodStatus, PodTemplate, StatefulSet, StatefulSetSpec)

__all__ = [
    "ENI_CONFIG", "ENI_CONF_KEY", "NODE_CONFIG_LABEL", "TERWAY_NAMESPACE", "ConfigMap", "EniConf", "eni_conf_document",
    "merge_patch", "AllocationType", "ENIOptions", "VSwitchSelectOptions", "duration_seconds", "ANNOTATION_PREFIX", "CLASS_ANNOTATION", "DNS1123_LABEL", "DNS1123_SUBDOMAIN", "KINDS", "LABEL_VALUE",
    "MAX_NETWORK_POLICIES", "MAX_RULES_PER_DIRECTION", "MAX_RULES_PER_POLICY", "NAMESPACE_NAME_LABEL",
    "POD_NETWORKING_ANNOTATION", "PORT_NAME", "ClientIPConfig", "Container", "ContainerPort", "DaemonSet", "DaemonSetSpec", "Deployment",
    "DeploymentSpec", "Direction", "HTTPIngressPath", "HTTPIngressRuleValue", "IPBlock", "Ingress", "IngressBackend",
    "IngressRule", "IngressServiceBackend", "IngressSpec", "IngressTLS", "K8s", "LabelSelector",
    "LabelSelectorRequirement", "Namespace", "NetworkPolicy", "NetworkPolicyEgressRule", "NetworkPolicyIngressRule",
    "NetworkPolicyPeer", "NetworkPolicyPort", "NetworkPolicySpec", "ObjectMeta", "Pod", "PodNetworking",
    "PodNetworkingSelector", "PodNetworkingSpec", "PodSpec", "PodStatus", "PodTemplate", "PortProtocol", "Rule", "Secret",
    "Service", "ServiceBackendPort", "ServicePort", "ServiceSpec", "SessionAffinityConfig", "StatefulSet",
    "StatefulSetSpec", "TemplateMeta",
    "check_labels", "check_tls_pair", "kind_of", "refusal", "skip_reason", "self_signed", "snippet_annotations", "snippet_refusal", "tls_pair",
]

KINDS: dict[tuple[str, str], type[K8s]] = {
    ("v1", "Namespace"): Namespace,
    ("v1", "Pod"): Pod,
    ("apps/v1", "Deployment"): Deployment,
    ("apps/v1", "StatefulSet"): StatefulSet,
    ("apps/v1", "DaemonSet"): DaemonSet,
    ("v1", "Service"): Service,
    ("networking.k8s.io/v1", "NetworkPolicy"): NetworkPolicy,
    ("network.alibabacloud.com/v1beta1", "PodNetworking"): PodNetworking,
    ("networking.k8s.io/v1", "Ingress"): Ingress,
    ("v1", "Secret"): Secret,
    ("v1", "ConfigMap"): ConfigMap,
}


def kind_of(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
