"""NetworkPolicy (networking.k8s.io/v1): an evaluator written from the specification,
independently of the flow compiler (controller/policy.py), so that comparing the two, or probing
the network against this one, tests the compiler. The model is in kubevpc.k8s.

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
- ACK does not enforce NetworkPolicy on a pod with an exclusive ENI (Terway's eniType ENI): a
  policy that selects one isolates it in neither direction, though it is still a peer of other
  policies by its labels and address (`enforced`).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Protocol

from ..k8s import NAMESPACE_NAME_LABEL, Direction, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from .verdict import Step, Verdict


# ------------------------------------------------------------------------------------ endpoints
class NamedPort(Protocol):
    port: int
    protocol: str
    name: str


class Endpoint(Protocol):
    """What the evaluator needs of a host; kubevpc.planning.HostPlan is one.
    Anything that is not a pod (an ECS instance, an outside address) has namespace ""."""

    ip: str
    name: str
    namespace: str
    labels: dict[str, str]
    servers: tuple[NamedPort, ...]     # pods: container ports, whose names named ports resolve to
    node: str                          # pods: their node; a node's own instance: its name


def is_pod(ep: Endpoint) -> bool:
    """A pod for NetworkPolicy: one with a network of its own. A pod with hostNetwork is its node's
    traffic, which no podSelector selects (as target or as peer), as upstream has it; its address,
    the node's, is matched by an ipBlock like any other."""
    return bool(ep.namespace) and not getattr(ep, "host_network", False)


def namespace_labels(namespaces: Mapping[str, Mapping[str, str]], name: str) -> dict[str, str]:
    """A namespace's labels, with kubernetes.io/metadata.name set as the API server does."""
    return {**namespaces.get(name, {}), NAMESPACE_NAME_LABEL: name}


def enforced(pod: Endpoint) -> bool:
    """Is NetworkPolicy enforced on this pod? Not on an exclusive ENI (eniType ENI): Terway moves
    the ENI into the pod's namespace, so the node's policy datapath never sees its packets, and ACK
    says so: "Pods assigned an exclusive ENI do not support eBPF network acceleration or Kubernetes
    NetworkPolicy" (Configure exclusive ENI mode for a node pool, Limitations:
    https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/configure-a-node-pool-level-container-network).
    Anything without an eni_type (not an eni pod) is enforced."""
    return getattr(pod, "eni_type", "Default") != "ENI"


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
    if not enforced(pod):
        return Verdict(True, f"{what} of {_who(pod)} not isolated: NetworkPolicy "
                             f"{', '.join(p.key for p in isolating)} selects it, but ACK does not enforce "
                             "NetworkPolicy on a pod with an exclusive ENI")
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

    def one(allowed: bool, reason: str) -> Verdict:
        return Verdict(allowed, reason, steps=(Step("NetworkPolicy", reason, allowed),))
    if not is_pod(src) and not is_pod(dst):
        return one(True, "no pod at either end: NetworkPolicy does not apply")
    if is_pod(src) and is_pod(dst) and src.ip == dst.ip:
        return one(True, f"{_who(dst)} to itself: a pod cannot block access to itself")
    for pod, other in ((dst, src), (src, dst)):
        if is_pod(pod) and not is_pod(other) and other.node and other.node == pod.node:
            return one(True, f"between {_who(pod)} and its node {pod.node}: always allowed")
    verdicts: list[Verdict] = []
    for direction, pod in (("Egress", src), ("Ingress", dst)):
        if is_pod(pod):
            v = _direction(direction, policies, namespaces, src, dst, port, protocol)
            verdicts.append(v)
            if not v.allowed:
                return Verdict(False, v.reason, steps=tuple(Step("NetworkPolicy", x.reason, x.allowed)
                                                            for x in verdicts))
    return Verdict(True, "; ".join(v.reason for v in verdicts),
                   steps=tuple(Step("NetworkPolicy", v.reason, True) for v in verdicts))


def egress_of(policies: Iterable[NetworkPolicy], namespaces: Mapping[str, Mapping[str, str]],
              src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Verdict:
    """The egress of the source pod alone, on dst:port/protocol: for a connection masqueraded on
    the way (a Service's), whose ingress at dst is judged on the address it arrives with."""
    if not is_pod(src):
        return Verdict(True, "the source is not a pod: no egress policy")
    v = _direction("Egress", list(policies), namespaces, src, dst, port, protocol.upper())
    return Verdict(v.allowed, v.reason, steps=(Step("NetworkPolicy", v.reason, v.allowed),))
