"""NetworkPolicy (networking.k8s.io/v1), checked as the API server does
(pkg/apis/networking/validation); the evaluator is kubevpc.evaluator.netpol, the flow compiler controller.policy."""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .meta import K8s, Keyed, LabelSelector, ObjectMeta, _check_selector, _port_name_problem

Direction = Literal["Ingress", "Egress"]
PortProtocol = Literal["TCP", "UDP", "SCTP"]


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


class NetworkPolicy(K8s, Keyed):
    apiVersion: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec


# What kubevpc's flows can hold (controller/policy.py: conj_id and priority layout); the planner
# refuses a scenario beyond them, so the controller never meets one
MAX_NETWORK_POLICIES = 0xFFFF                 # conj_id: 16 bits of policy
MAX_RULES_PER_POLICY = 1 << 13                # ... 13 bits of rule, per direction (and one of family)
MAX_RULES_PER_DIRECTION = (59999 - 200) // 2  # two priorities per rule between 59999 and 200
