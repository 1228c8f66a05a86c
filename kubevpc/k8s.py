"""The Kubernetes objects a scenario may carry, parsed from ordinary manifests.

Manifests are what users run in production, so fields we do not emulate (images, resources,
probes, ...) are accepted and ignored; the fields we do use are checked as the API server would.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SUPPORTED_KINDS = {("v1", "Namespace"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
                   ("networking.k8s.io/v1", "NetworkPolicy"), ("network.alibabacloud.com/v1beta1", "PodNetworking")}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class K8s(BaseModel):
    """Types are strict, as the API server's JSON decoding is: `replicas: true`, `replicas: 3.0`
    and `port: "80"` are errors, not 1, 3 and 80."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        if not name or len(name) > 63 or not LABEL_VALUE.match(name):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if len(str(value)) > 63 or not LABEL_VALUE.match(str(value)):
            raise ValueError(f"label value {value!r} of {key!r} is not a valid label value")


class ObjectMeta(K8s):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> "ObjectMeta":
        if len(self.name) > 253 or not DNS1123_SUBDOMAIN.match(self.name):
            raise ValueError(f"metadata.name {self.name!r} is not a DNS-1123 subdomain")
        if len(self.namespace) > 63 or not DNS1123_LABEL.match(self.namespace):
            raise ValueError(f"metadata.namespace {self.namespace!r} is not a DNS-1123 label")
        check_labels(self.labels)
        return self


class TemplateMeta(K8s):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> "TemplateMeta":
        check_labels(self.labels)
        return self


class ContainerPort(K8s):
    containerPort: int = Field(ge=1, le=65535)
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"

    @model_validator(mode="after")
    def _check(self) -> "ContainerPort":
        if self.name is not None and (len(self.name) > 15 or not PORT_NAME.match(self.name)):
            raise ValueError(f"port name {self.name!r} must be at most 15 lowercase letters, digits and '-'")
        return self


class Container(K8s):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = []


class PodSpec(K8s):
    containers: list[Container] = Field(min_length=1)
    nodeName: str | None = None


class Pod(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec


class LabelSelectorRequirement(K8s):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(K8s):
    matchLabels: dict[str, str] = {}
    matchExpressions: list[LabelSelectorRequirement] = []

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label selector semantics (an empty selector matches everything)."""
        if any(labels.get(k) != v for k, v in self.matchLabels.items()):
            return False
        for req in self.matchExpressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class PodTemplate(K8s):
    metadata: TemplateMeta = TemplateMeta()
    spec: PodSpec


class DeploymentSpec(K8s):
    replicas: int = Field(default=1, ge=0, le=1000)
    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _check(self) -> "DeploymentSpec":
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError("spec.selector does not match spec.template.metadata.labels "
                             "(the API server rejects such a Deployment)")
        return self


class Deployment(K8s):
    apiVersion: Literal["apps/v1"]
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


class Namespace(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Namespace"]
    metadata: ObjectMeta


# ------------------------------------------------------------------------------------- Service
class ServicePort(K8s):
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int = Field(ge=1, le=65535)
    targetPort: int | str | None = None        # default: port
    nodePort: int | None = None

    @model_validator(mode="after")
    def _check(self) -> "ServicePort":
        if self.name is not None and not DNS1123_LABEL.match(self.name):
            raise ValueError(f"port name {self.name!r} must be a DNS-1123 label")
        if isinstance(self.targetPort, int) and not 1 <= self.targetPort <= 65535:
            raise ValueError(f"targetPort {self.targetPort} must be between 1 and 65535")
        if isinstance(self.targetPort, str) and (len(self.targetPort) > 15 or not PORT_NAME.match(self.targetPort)
                                                 or not re.search("[a-z]", self.targetPort)):
            raise ValueError(f"targetPort {self.targetPort!r} must be a number or a container port name "
                             "(at most 15 lowercase letters, digits and '-', with a letter)")
        return self

    @property
    def target(self) -> int | str:
        return self.port if self.targetPort is None else self.targetPort


class ClientIPConfig(K8s):
    timeoutSeconds: int = Field(default=10800, ge=1, le=86400)


class SessionAffinityConfig(K8s):
    clientIP: ClientIPConfig = ClientIPConfig()


class ServiceSpec(K8s):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = []
    clusterIP: str | None = None               # "None": headless
    externalName: str | None = None
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: SessionAffinityConfig = SessionAffinityConfig()
    externalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    internalTrafficPolicy: Literal["Cluster", "Local"] = "Cluster"
    healthCheckNodePort: int | None = None
    publishNotReadyAddresses: bool = False

    @model_validator(mode="after")
    def _check(self) -> "ServiceSpec":
        """The API server's own checks (pkg/apis/core/validation ValidateService), in its words."""
        headless = self.clusterIP == "None"
        if self.type == "ExternalName":
            if not self.externalName or not DNS1123_SUBDOMAIN.match(self.externalName.rstrip(".").lower()):
                raise ValueError("spec.externalName is required for type ExternalName and must be a DNS name")
        elif self.externalName:
            raise ValueError("spec.externalName is only for type ExternalName")
        if not self.ports and self.type != "ExternalName" and not headless:
            raise ValueError("spec.ports: at least one port is required (except for headless and ExternalName)")
        if len(self.ports) > 1 and any(not p.name for p in self.ports):
            raise ValueError("spec.ports: every port needs a name when there is more than one")
        names = [p.name for p in self.ports if p.name]
        if len(names) != len(set(names)):
            raise ValueError("spec.ports: port names must be unique")
        pairs = [(p.port, p.protocol) for p in self.ports]
        if len(pairs) != len(set(pairs)):
            raise ValueError("spec.ports: each port and protocol pair may appear once")
        if self.type in ("ClusterIP", "ExternalName") and any(p.nodePort for p in self.ports):
            raise ValueError("spec.ports[].nodePort may only be set for type NodePort or LoadBalancer")
        if headless and self.type != "ClusterIP":
            raise ValueError('spec.clusterIP "None" (headless) is only allowed for type ClusterIP')
        if self.externalTrafficPolicy is not None and self.type not in ("NodePort", "LoadBalancer"):
            raise ValueError("spec.externalTrafficPolicy may only be set for type NodePort or LoadBalancer")
        if self.healthCheckNodePort is not None and not (self.type == "LoadBalancer"
                                                         and self.externalTrafficPolicy == "Local"):
            raise ValueError("spec.healthCheckNodePort is only for type LoadBalancer with externalTrafficPolicy Local")
        if self.selector:
            check_labels(self.selector)
        return self

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"


class Service(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec


# ------------------------------------------------------------------------------- NetworkPolicy
# networking.k8s.io/v1, checked as the API server does (pkg/apis/networking/validation);
# the evaluator is kubevpc.evaluator.netpol, the flow compiler controller.policy.
Direction = Literal["Ingress", "Egress"]
PortProtocol = Literal["TCP", "UDP", "SCTP"]
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")


def _check_selector(selector: LabelSelector, where: str) -> None:
    """ValidateLabelSelector: valid keys and values; In/NotIn need values, Exists/DoesNotExist none."""
    check_labels(selector.matchLabels)
    for req in selector.matchExpressions:
        if req.operator in ("In", "NotIn") and not req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} needs at least one value")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} takes no values")
        for value in req.values or [""]:
            check_labels({req.key: value})


def _port_name_problem(name: str) -> str:
    """IsValidPortName (IANA service names), in the API server's words; "" when valid."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not _PORT_NAME_CHARS.match(name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search("[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return ""


class IPBlock(K8s):
    """A CIDR minus its `except` CIDRs. IPv6 blocks are accepted, and never match an IPv4 address."""

    model_config = ConfigDict(populate_by_name=True)

    cidr: str
    except_: list[str] = Field(default=[], alias="except")

    @model_validator(mode="after")
    def _check(self) -> "IPBlock":
        net = _network(self.cidr, "ipBlock.cidr")
        for text in self.except_:
            sub = _network(text, "ipBlock.except")
            if sub.version != net.version or not sub.subnet_of(net) or sub.prefixlen <= net.prefixlen:
                raise ValueError(f"ipBlock.except {text!r} must be a strict subset of `cidr` {self.cidr}")
        return self

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return _network(self.cidr, "ipBlock.cidr")

    @property
    def excepted(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [_network(text, "ipBlock.except") for text in self.except_]


def _network(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The API server parses these CIDRs sloppily: host bits may be set (10.0.0.1/24 is 10.0.0.0/24)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{where} {text!r} is not a valid CIDR") from None


class NetworkPolicyPeer(K8s):
    """podSelector and namespaceSelector together select pods by both (AND); ipBlock stands alone."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="after")
    def _check(self) -> "NetworkPolicyPeer":
        given = [s for s in (self.podSelector, self.namespaceSelector, self.ipBlock) if s is not None]
        if not given:
            raise ValueError("a peer must specify podSelector, namespaceSelector or ipBlock")
        if self.ipBlock is not None and len(given) > 1:
            raise ValueError("a peer may not specify both ipBlock and another peer")
        for name in ("podSelector", "namespaceSelector"):
            if getattr(self, name) is not None:
                _check_selector(getattr(self, name), name)
        return self


class NetworkPolicyPort(K8s):
    """No port: every port of the protocol. A named port is resolved on the destination pod."""

    protocol: PortProtocol = "TCP"
    port: int | str | None = None
    endPort: int | None = None

    @model_validator(mode="after")
    def _check(self) -> "NetworkPolicyPort":
        if isinstance(self.port, int):
            if not 1 <= self.port <= 65535:
                raise ValueError(f"port {self.port} must be between 1 and 65535, inclusive")
            if self.endPort is not None and not self.port <= self.endPort <= 65535:
                raise ValueError(f"endPort {self.endPort} must be between `port` ({self.port}) and 65535")
        elif isinstance(self.port, str):
            if problem := _port_name_problem(self.port):
                raise ValueError(f"port {self.port!r}: {problem}")
            if self.endPort is not None:
                raise ValueError("endPort may not be specified when `port` is non-numeric")
        elif self.endPort is not None:
            raise ValueError("endPort may not be specified when `port` is not specified")
        return self


class _Rule(K8s):
    """No peers: every peer. No ports: every port and protocol."""

    ports: list[NetworkPolicyPort] = []


class NetworkPolicyIngressRule(_Rule):
    model_config = ConfigDict(populate_by_name=True)

    from_: list[NetworkPolicyPeer] = Field(default=[], alias="from")

    @property
    def peers(self) -> list[NetworkPolicyPeer]:
        return self.from_


class NetworkPolicyEgressRule(_Rule):
    to: list[NetworkPolicyPeer] = []

    @property
    def peers(self) -> list[NetworkPolicyPeer]:
        return self.to


Rule = NetworkPolicyIngressRule | NetworkPolicyEgressRule


class NetworkPolicySpec(K8s):
    # required by the OpenAPI schema, but an absent one decodes as {} (every pod): accepted as such
    podSelector: LabelSelector = LabelSelector()
    policyTypes: list[Direction] = []
    ingress: list[NetworkPolicyIngressRule] = []
    egress: list[NetworkPolicyEgressRule] = []

    @model_validator(mode="after")
    def _check(self) -> "NetworkPolicySpec":
        if len(self.policyTypes) > 2:
            raise ValueError("policyTypes may not specify more than two policyTypes")
        _check_selector(self.podSelector, "podSelector")
        return self

    @property
    def types(self) -> frozenset[str]:
        """The defaulted policyTypes (defaults.go): Ingress always, Egress when `egress` has a rule
        (an empty `egress: []` does not count)."""
        if self.policyTypes:
            return frozenset(self.policyTypes)
        return frozenset({"Ingress"} | ({"Egress"} if self.egress else set()))

    def rules(self, direction: Direction) -> Sequence[Rule]:
        return self.ingress if direction == "Ingress" else self.egress


class NetworkPolicy(K8s):
    apiVersion: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


# What kubevpc's flows can hold (controller/policy.py: conj_id and priority layout); the planner
# refuses a scenario beyond them, so the controller never meets one
MAX_NETWORK_POLICIES = 0xFFFF                 # conj_id: 16 bits of policy
MAX_RULES_PER_POLICY = 1 << 14                # ... 14 bits of rule, per direction
MAX_RULES_PER_DIRECTION = (59999 - 200) // 2  # two priorities per rule between 59999 and 200


# ------------------------------------------------------------------------------- PodNetworking
POD_NETWORKING_ANNOTATION = "k8s.aliyun.com/pod-networking"


class PodNetworkingSelector(K8s):
    """Both selectors must match; an absent one does not restrict; with neither, nothing matches."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None


class PodNetworkingSpec(K8s):
    selector: PodNetworkingSelector = PodNetworkingSelector()
    securityGroupIDs: list[str] = Field(default=[], max_length=10)
    vSwitchOptions: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> "PodNetworkingSpec":
        for name in ("podSelector", "namespaceSelector"):
            sel = getattr(self.selector, name)
            if sel is not None:
                _check_selector(sel, f"selector.{name}")
        if not self.securityGroupIDs and not self.vSwitchOptions:
            raise ValueError("expected securityGroupIDs or vSwitchOptions (or both)")
        return self


class PodNetworking(K8s):
    """Terway's PodNetworking (network.alibabacloud.com/v1beta1, cluster-scoped): the pods it
    selects, in eni mode, get their own security groups and take addresses from its vSwitches.
    Fields of the CRD that kubevpc does not emulate (allocationType, eniOptions) are ignored."""

    apiVersion: Literal["network.alibabacloud.com/v1beta1"]
    kind: Literal["PodNetworking"]
    metadata: ObjectMeta
    spec: PodNetworkingSpec

    def selects(self, pod_labels: dict[str, str], namespace_labels: dict[str, str]) -> bool:
        sel = self.spec.selector
        if sel.podSelector is None and sel.namespaceSelector is None:
            return False
        return (sel.podSelector is None or sel.podSelector.matches(pod_labels)) and \
            (sel.namespaceSelector is None or sel.namespaceSelector.matches(namespace_labels))


KINDS: dict[tuple[str, str], type[K8s]] = {
    ("v1", "Namespace"): Namespace,
    ("v1", "Pod"): Pod,
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("networking.k8s.io/v1", "NetworkPolicy"): NetworkPolicy,
    ("network.alibabacloud.com/v1beta1", "PodNetworking"): PodNetworking,
}


def kind_of(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
