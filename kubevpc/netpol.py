"""NetworkPolicy (networking.k8s.io/v1): the manifest model, and an evaluator written from the
specification, independently of the flow compiler (controller/policy.py), so that comparing the
two, or probing the network against this one, tests the compiler.

Sources: the API reference of NetworkPolicySpec / NetworkPolicyPeer / NetworkPolicyPort / IPBlock,
the concept page https://kubernetes.io/docs/concepts/services-networking/network-policies/, the API
server's defaulting (pkg/apis/networking/v1/defaults.go) and validation
(pkg/apis/networking/validation/validation.go).

Semantics decided here, beyond what the specification fixes:

- ipBlock matches an address, whoever holds it: an ECS instance, something outside the VPC, or a
  pod. Upstream says ipBlock is meant for cluster-external addresses and leaves pod addresses to
  the implementation; matching the address is what a flow implementation does by itself.
- Addresses are the ones on the wire after Service DNAT: the caller passes the backend pod.
- The two exceptions of the concept page hold: a pod cannot block traffic to itself, and
  traffic between a pod and the node it runs on is always allowed.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

from pydantic import ConfigDict, Field, model_validator

from .k8s import NAMESPACE_NAME_LABEL, K8s, LabelSelector, ObjectMeta, _check_labels
from .reach import Verdict

Direction = Literal["Ingress", "Egress"]
PortProtocol = Literal["TCP", "UDP", "SCTP"]
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")


# ---------------------------------------------------------------------------------------- model
def _check_selector(selector: LabelSelector, where: str) -> None:
    """ValidateLabelSelector: valid keys and values; In/NotIn need values, Exists/DoesNotExist none."""
    _check_labels(selector.matchLabels)
    for req in selector.matchExpressions:
        if req.operator in ("In", "NotIn") and not req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} needs at least one value")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} takes no values")
        for value in req.values or [""]:
            _check_labels({req.key: value})


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


# ------------------------------------------------------------------------------------ endpoints
class NamedPort(Protocol):
    port: int
    protocol: str
    name: str


class Endpoint(Protocol):
    """What the evaluator and the compiler need of a host; kubevpc.plan.HostPlan is one.
    Anything that is not a pod (an ECS instance, an outside address) has namespace ""."""

    ip: str
    name: str
    namespace: str
    labels: dict[str, str]
    servers: tuple[NamedPort, ...]     # pods: container ports, whose names named ports resolve to
    node: str                          # pods: their node; a node's own instance: its name


def is_pod(ep: Endpoint) -> bool:
    return bool(ep.namespace)


def namespace_labels(namespaces: Mapping[str, Mapping[str, str]], name: str) -> dict[str, str]:
    """A namespace's labels, with kubernetes.io/metadata.name set as the API server does."""
    return {**namespaces.get(name, {}), NAMESPACE_NAME_LABEL: name}


def selects(policy: NetworkPolicy, pod: Endpoint) -> bool:
    """Does the policy apply to this pod (its own namespace, its podSelector)?"""
    return is_pod(pod) and pod.namespace == policy.metadata.namespace and policy.spec.podSelector.matches(pod.labels)


# ------------------------------------------------------------------------------------ evaluator
def _peer_matches(peer: NetworkPolicyPeer, policy_ns: str, ep: Endpoint,
                  namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.ipBlock is not None:
        ip = ipaddress.ip_address(ep.ip)
        return ip in peer.ipBlock.network and not any(ip in net for net in peer.ipBlock.excepted)
    if not is_pod(ep):
        return False
    if peer.namespaceSelector is None:
        in_namespace = ep.namespace == policy_ns
    else:
        in_namespace = peer.namespaceSelector.matches(namespace_labels(namespaces, ep.namespace))
    return in_namespace and (peer.podSelector is None or peer.podSelector.matches(ep.labels))


def _port_matches(rule_port: NetworkPolicyPort, dst: Endpoint, port: int, protocol: str) -> bool:
    if rule_port.protocol != protocol:
        return False
    if rule_port.port is None:
        return True
    if isinstance(rule_port.port, str):
        return is_pod(dst) and any(s.name == rule_port.port and s.protocol == protocol and s.port == port
                                   for s in dst.servers)
    return rule_port.port <= port <= (rule_port.endPort or rule_port.port)


def _who(ep: Endpoint) -> str:
    return f"{ep.namespace}/{ep.name}"


def _direction(direction: Direction, policies: Iterable[NetworkPolicy], namespaces: Mapping[str, Mapping[str, str]],
               src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Verdict:
    """One side of the connection: egress at the source pod, or ingress at the destination pod."""
    pod, peer = (dst, src) if direction == "Ingress" else (src, dst)
    isolating = [p for p in policies if direction in p.spec.types and selects(p, pod)]
    what = direction.lower()
    if not isolating:
        return Verdict(True, f"{what} of {_who(pod)} not isolated")
    for policy in isolating:
        ns = policy.metadata.namespace
        for i, rule in enumerate(policy.spec.rules(direction)):
            if rule.peers and not any(_peer_matches(x, ns, peer, namespaces) for x in rule.peers):
                continue
            if rule.ports and not any(_port_matches(x, dst, port, protocol) for x in rule.ports):
                continue
            return Verdict(True, f"{what} of {_who(pod)} allowed by policy {policy.key} rule {i}")
    flow = f"{src.ip} to port {port}/{protocol}" if direction == "Ingress" else f"{dst.ip}:{port}/{protocol}"
    return Verdict(False, f"{what} of {_who(pod)} denied: isolated by policy "
                          f"{', '.join(p.key for p in isolating)}, no rule allows {flow}")


def evaluate(policies: Iterable[NetworkPolicy], namespaces: Mapping[str, Mapping[str, str]],
             src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Verdict:
    """May a new connection from src to dst:port/protocol be opened, under these policies?

    Egress of the source pod and ingress of the destination pod must both allow it. A pod is
    isolated in a direction once any policy selecting it lists that type; an isolated pod
    accepts what at least one rule of one of those policies allows (policies add up)."""
    policies = list(policies)
    protocol = protocol.upper()
    if not is_pod(src) and not is_pod(dst):
        return Verdict(True, "no pod at either end: NetworkPolicy does not apply")
    if is_pod(src) and is_pod(dst) and src.ip == dst.ip:
        return Verdict(True, f"{_who(dst)} to itself: a pod cannot block access to itself")
    for pod, other in ((dst, src), (src, dst)):
        if is_pod(pod) and not is_pod(other) and other.node and other.node == pod.node:
            return Verdict(True, f"between {_who(pod)} and its node {pod.node}: always allowed")
    verdicts = []
    for direction, pod in (("Egress", src), ("Ingress", dst)):
        if is_pod(pod):
            v = _direction(direction, policies, namespaces, src, dst, port, protocol)
            if not v.allowed:
                return v
            verdicts.append(v.reason)
    return Verdict(True, "; ".join(verdicts))
