"""NetworkPolicy as flows: a pure compiler for the two policy tables of a node bridge.

The egress table sees new connections after Service DNAT, the ingress table the same packets
next; the caller commits what both let through, and established traffic skips them. So every
flow here matches ct_state=+new+trk and ends in goto (allowed) or nothing (dropped).

Priorities, per table:

    60000        exemptions of the specification: a pod to itself, a pod and its own node
    59999..200   one priority per conjunction (per rule, and once more for its named ports)
    100          isolated pod: drop (ipv4_src in egress, ipv4_dst in ingress)
    0            anything else passes: pods that are not isolated, packets of other nodes' pods

A rule is a conjunctive match (OVS "conjunction" action) over up to three dimensions: the
selected local pods, the peers, the ports. n peer CIDRs, m pods and k port matches cost
n + m + k + 1 flows instead of n * m * k. A dimension the rule leaves open (no `from`/`to`,
no `ports`) is left out; one left over needs no conjunction and is m plain flows.

Named ports resolve per pod, so their (pod, port) pairs form one dimension of their own
conjunction: in ingress the selected pod is the destination and pairs replace the pod
dimension; in egress the destination is the peer, and pairs of each peer pod and its port
replace the peer dimension.

Every conjunction gets its own priority. OVS requires that conjunctive flows do not overlap at
one priority and treats two flows with the same match and priority as one flow; distinct
priorities rule out both, and since every rule only allows, which rule allows is immaterial.

A pod with an exclusive ENI (Terway's eniType ENI) gets no isolation and no rule flows as a selected
pod (`enforced`): ACK does not enforce NetworkPolicy on it. It stays a peer of other pods' rules.

Which pods a policy and a peer select is decided here, by the compiler's own label selector
matching (section "selectors"), written from the specification like the evaluator's
(kubevpc.evaluator.netpol) but sharing no code with it: the flows are tested against the evaluator, so a
selector bug the two shared would agree with itself.

Identifiers, stable while the policy list is unchanged (the caller passes policies in manifest
order): policy i (0-based) is cookie object i + 1 (object 0: the shared flows above);
conj_id = (i + 1) << 16 | direction << 15 | family << 14 | rule << 1 | part, direction 0 ingress,
1 egress, family 0 IPv4, 1 IPv6, part 0 numeric ports, 1 named ports; priority = 59999 - 2 * (rules of this direction in the
policies before it, plus the rule's index) - part.
"""
from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubevpc.k8s import (MAX_NETWORK_POLICIES, MAX_RULES_PER_POLICY, NAMESPACE_NAME_LABEL, Direction, LabelSelector,
                         LabelSelectorRequirement, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Rule)
from kubevpc.planning import HostPlan

from .flows import CT_NEW, CT_TRK, ETH_IP, ETH_IPV6, Conjunction, Flow, Goto, ct_state, flow, port_masks

PRIO_EXEMPT = 60000
PRIO_RULES_TOP = 59999
PRIO_RULES_FLOOR = 200            # kubevpc.k8s.MAX_RULES_PER_DIRECTION follows from these two
PRIO_ISOLATED = 100
PRIO_PASS = 0
SHARED = "(shared)"          # policy_flow_counts: exemptions, isolation and pass flows

L4 = {"TCP": (6, "tcp_dst"), "UDP": (17, "udp_dst"), "SCTP": (132, "sctp_dst")}
_NEW = {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW)}
_NEW6 = {"eth_type": ETH_IPV6, "ct_state": ct_state(CT_TRK | CT_NEW)}
_MAX_POLICIES = MAX_NETWORK_POLICIES
_MAX_RULES = MAX_RULES_PER_POLICY

Match = dict[str, Any]
Clause = list[Match] | None       # None: a dimension the rule leaves open


# ------------------------------------------------------------------------------------ selectors
def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector: every matchLabels pair and every matchExpressions requirement
    holds (ANDed); an empty selector selects everything."""
    if any(key not in labels or labels[key] != value for key, value in selector.matchLabels.items()):
        return False
    return all(_requirement_holds(req, labels) for req in selector.matchExpressions)


def _requirement_holds(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    if req.operator == "Exists":
        return req.key in labels
    if req.operator == "DoesNotExist":
        return req.key not in labels
    if req.operator == "In":
        return req.key in labels and labels[req.key] in req.values
    if req.operator == "NotIn":                     # a pod without the key is not in the set
        return req.key not in labels or labels[req.key] not in req.values
    raise ValueError(f"label selector operator {req.operator!r}")


def _is_pod(e: HostPlan) -> bool:
    """A pod as NetworkPolicy sees one: a pod with a network of its own. A host-network pod is its
    node's traffic: no podSelector selects it, as a target or as a peer (an ipBlock holding the
    node's address matches it, as any address)."""
    return e.namespace != "" and not getattr(e, "host_network", False)


def enforced(e: HostPlan) -> bool:
    """Does NetworkPolicy isolate this pod when a policy selects it? Not on an exclusive ENI: ACK,
    "Configure exclusive ENI mode for a node pool", Limitations: "Pods assigned an exclusive ENI do
    not support eBPF network acceleration or Kubernetes NetworkPolicy"
    (https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/configure-a-node-pool-level-container-network):
    the ENI is in the pod's namespace, and the node's policy datapath never sees its packets. As a
    peer it is matched like any pod (the other pod's node enforces that policy)."""
    return getattr(e, "eni_type", "Default") != "ENI"


def _namespace_labels(namespaces: Mapping[str, Mapping[str, str]], name: str) -> dict[str, str]:
    """A namespace's labels as the API server keeps them: kubernetes.io/metadata.name is its name."""
    labels = dict(namespaces.get(name, {}))
    labels[NAMESPACE_NAME_LABEL] = name
    return labels


def policy_types(policy: NetworkPolicy) -> frozenset[str]:
    """The directions a policy isolates its pods in: policyTypes as given, else as the API server
    defaults it (pkg/apis/networking/v1/defaults.go): Ingress, and Egress once `egress` has a rule."""
    spec = policy.spec
    if spec.policyTypes:
        return frozenset(spec.policyTypes)
    return frozenset(("Ingress", "Egress") if spec.egress else ("Ingress",))


def policy_selects(policy: NetworkPolicy, pod: HostPlan) -> bool:
    """Does the policy apply to this pod: a pod of the policy's namespace its podSelector matches?"""
    return _is_pod(pod) and pod.namespace == policy.metadata.namespace and \
        selector_matches(policy.spec.podSelector, pod.labels)


def peer_selects(peer: NetworkPolicyPeer, policy_ns: str, e: HostPlan,
                 namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    """Is `e` a pod this (podSelector/namespaceSelector) peer selects? Without namespaceSelector,
    pods of the policy's own namespace; without podSelector, every pod of the namespaces chosen."""
    if not _is_pod(e):
        return False
    if peer.namespaceSelector is None:
        in_namespace = e.namespace == policy_ns
    else:
        in_namespace = selector_matches(peer.namespaceSelector, _namespace_labels(namespaces, e.namespace))
    return in_namespace and (peer.podSelector is None or selector_matches(peer.podSelector, e.labels))


@dataclass(frozen=True)
class PolicyTables:
    """Table ids: allowed packets go on to *_next, denied ones are dropped. Where the connection's
    destination is read: the packet's own fields by default; a node bridge decides before its
    Service DNAT is committed, so it passes the registers that hold the chosen endpoint's address
    and port (the same registers hold the packet's own destination for other connections)."""

    egress: int
    egress_next: int
    ingress: int
    ingress_next: int
    dst_ip: str = "ipv4_dst"
    dst_port: str = ""              # "": the protocol's own field (tcp_dst, udp_dst, sctp_dst)
    dst_ip6: str = "ipv6_dst"       # where the IPv6 destination is read (dual stack)


@dataclass(frozen=True)
class _Side:
    """What differs between the directions: which address is the selected pod's."""

    direction: Direction
    bit: int
    pod_field: str
    peer_field: str
    dst_field: str                  # the destination address (pod_field in ingress, peer_field in egress)
    port_field: str                 # the destination port: "" for the protocol's own field
    family: int = 4                 # 6: the IPv6 twins (dual stack)

    @property
    def new(self) -> Match:
        """What every flow of the side matches: a new connection of its family."""
        return _NEW6 if self.family == 6 else _NEW


def _sides(tables: PolicyTables, family: int = 4) -> tuple[_Side, _Side]:
    """Egress, then ingress."""
    src, dst = ("ipv6_src", tables.dst_ip6) if family == 6 else ("ipv4_src", tables.dst_ip)
    return (_Side("Egress", 1, src, dst, dst, tables.dst_port, family),
            _Side("Ingress", 0, dst, src, dst, tables.dst_port, family))


def _conj_id(obj: int, side: _Side, rule: int, part: int) -> int:
    return obj << 16 | side.bit << 15 | (side.family == 6) << 14 | rule << 1 | part


def policy_flows(policies: Iterable[NetworkPolicy], namespaces: Mapping[str, Mapping[str, str]],
                 all_endpoints: Iterable[HostPlan], local_pods: Iterable[HostPlan],
                 tables: PolicyTables, family: int = 4, memo: dict | None = None) -> list[Flow]:
    """The flows of both policy tables of the bridge that holds `local_pods` (all on one node).

    `all_endpoints` are every pod of the cluster (peers are selected among them, and egress named
    ports resolve on them) and the nodes' own instances (for the node exemption); anything else
    is reached by ipBlock only and need not be listed. Policies keep the caller's order, which
    fixes cookie objects, conj_ids and priorities (see the module docstring). `family` 6: the IPv6
    twins, over the hosts' IPv6 addresses (those without one take no part): pod and namespace
    selectors select peers' IPv6 addresses, an ipBlock matches the family of its cidr only.

    `memo`: what does not depend on the node (each rule's peers), shared by the calls for every
    node of one plan, which pass the same policies, namespaces and endpoints; it spares
    selecting a rule's peers once per node (the bulk of the work for many policies)."""
    policies, endpoints, local = list(policies), list(all_endpoints), list(local_pods)
    memo = {} if memo is None else memo
    if family == 6:
        endpoints = memo[("ipv6 endpoints",)] if ("ipv6 endpoints",) in memo else \
            memo.setdefault(("ipv6 endpoints",), _as_ipv6(endpoints))
        local = _as_ipv6(local)
    if len(policies) > _MAX_POLICIES:
        raise ValueError(f"{len(policies)} NetworkPolicies; at most {_MAX_POLICIES} fit in a conj_id")
    nodes = {p.node for p in local}
    node_ips = sorted({e.ip for e in endpoints if not e.namespace and e.node and e.node in nodes})
    types = [policy_types(policy) for policy in policies]
    enforceable = [p for p in local if enforced(p)]     # no isolation on an exclusive ENI
    out: list[Flow] = []
    for side, table, nxt in zip(_sides(tables, family), (tables.egress, tables.ingress),
                                (tables.egress_next, tables.ingress_next)):
        selected = [[p for p in enforceable if policy_selects(policy, p)] if side.direction in types[i] else []
                    for i, policy in enumerate(policies)]
        out += _isolation(side, table, nxt, policies, local, node_ips, selected)
        seq = 0
        for index, policy in enumerate(policies):
            rules = policy.spec.rules(side.direction)
            if len(rules) > _MAX_RULES:
                raise ValueError(f"{policy.key}: {len(rules)} {side.direction.lower()} rules; at most {_MAX_RULES}")
            for r, rule in enumerate(rules):
                priority = PRIO_RULES_TOP - 2 * seq
                if priority - 1 < PRIO_RULES_FLOOR:
                    raise ValueError(f"too many {side.direction.lower()} rules for the priorities "
                                     f"{PRIO_RULES_FLOOR}..{PRIO_RULES_TOP}")
                seq += 1
                if selected[index]:
                    peers = _RulePeers(memo, (side, index, r), rule, policy.metadata.namespace, endpoints,
                                       namespaces, side)
                    out += _rule_flows(side, table, nxt, priority, index + 1, r, policy, rule, selected[index], peers)
    return out


def _as_ipv6(hosts: list[HostPlan]) -> list[HostPlan]:
    """The hosts with an IPv6 address, each as if that were its address."""
    return [h.model_copy(update={"ip": h.ipv6}) for h in hosts if getattr(h, "ipv6", "")]


def policy_flow_counts(policies: Iterable[NetworkPolicy], flows: Iterable[Flow]) -> dict[str, int]:
    """How many of `flows` (from policy_flows) each policy costs, and the shared ones (SHARED)."""
    by_obj = Counter(f.obj for f in flows if f.feature == "netpol")
    return {SHARED: by_obj[0]} | {p.key: by_obj[i + 1] for i, p in enumerate(policies)}


# ------------------------------------------------------------------------------------ isolation
def _isolation(side: _Side, table: int, nxt: int, policies: list[NetworkPolicy], local: list[HostPlan],
               node_ips: list[str], selected: list[list[HostPlan]]) -> list[Flow]:
    """Drop for isolated pods, with the specification's exemptions above it; pass below.
    `selected[i]`: the local pods policy i isolates in this direction."""
    what = side.direction.lower()
    chosen = [{id(p) for p in pods} for pods in selected]
    by = {p.ip: [pol.key for pol, ids in zip(policies, chosen) if id(p) in ids] for p in local}
    isolated = [p for p in local if by[p.ip]]
    out = []
    for p in isolated:
        src = "ipv6_src" if side.family == 6 else "ipv4_src"
        out += [flow(table, PRIO_EXEMPT, {**side.new, src: p.ip, side.dst_field: _addr(side.dst_field, p.ip)},
                     [Goto(nxt)], "netpol",
                     note=f"{p.namespace}/{p.name} to itself: a pod cannot block access to itself"),
                flow(table, PRIO_ISOLATED, {**side.new, side.pod_field: _addr(side.pod_field, p.ip)}, [], "netpol",
                     note=f"{p.namespace}/{p.name} is isolated for {what} by NetworkPolicy {', '.join(by[p.ip])}: "
                          "what no rule allows is dropped")]
    if isolated:
        out += [flow(table, PRIO_EXEMPT, {**side.new, side.peer_field: _addr(side.peer_field, ip)}, [Goto(nxt)], "netpol",
                     note=f"{ip} is this node: traffic between a pod and its node is always allowed")
                for ip in node_ips]
    out.append(flow(table, PRIO_PASS, side.new, [Goto(nxt)], "netpol",
                    note=f"not isolated for {what}, or not a pod of this node: passes"))
    return out


# ---------------------------------------------------------------------------------------- rules
class _RulePeers:
    """A rule's peers as its flows match them: the same on every node, so they are worked out once
    per plan and kept in the memo policy_flows was given, under (side, policy index, rule index)."""

    def __init__(self, memo: dict, key: tuple, rule: Rule, ns: str, endpoints: list[HostPlan],
                 namespaces: Mapping[str, Mapping[str, str]], side: _Side):
        self.memo, self.key, self.rule, self.ns = memo, key, rule, ns
        self.endpoints, self.namespaces, self.side = endpoints, namespaces, side

    def _kept(self, what: str, make):
        key = (*self.key, what)
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    @property
    def nets(self) -> list | None:
        """The fewest CIDRs holding the peers; None for a rule without `from`/`to` (every peer)."""
        return self._kept("nets", lambda: _peer_networks(self.rule.peers, self.ns, self.endpoints, self.namespaces,
                                                          self.side.family) if self.rule.peers else None)

    @property
    def clause(self) -> Clause:
        """The peer dimension: None when it leaves the peer open."""
        def make() -> Clause:
            nets = self.nets
            return None if nets is None or _everything(nets) else [_net_match(self.side.peer_field, n) for n in nets]
        return self._kept("clause", make)

    def named_pairs(self, named: list[NetworkPolicyPort]) -> list[Match]:
        """Egress to named ports: (peer pod, port) pairs, each pod's container port of that name."""
        def make() -> list[Match]:
            nets = self.nets
            targets = [e for e in self.endpoints if _is_pod(e) and (nets is None or _inside(e.ip, nets))]
            return _pairs(self.side.peer_field, self.side.port_field, targets, named)
        return self._kept("pairs", make)


def _rule_flows(side: _Side, table: int, nxt: int, priority: int, obj: int, r: int, policy: NetworkPolicy,
                rule: Rule, selected: list[HostPlan], peers: _RulePeers) -> list[Flow]:
    name = f"{policy.key} {side.direction.lower()} rule {r}"
    pods: Clause = [{side.pod_field: _addr(side.pod_field, p.ip)} for p in selected]
    numeric = [p for p in rule.ports if not isinstance(p.port, str)]
    named = [p for p in rule.ports if isinstance(p.port, str)]
    # only named ports: an empty port dimension, and the numeric conjunction yields no flow
    ports: Clause = _unique([m for p in numeric for m in _port_matches(p.protocol, p.port, p.endPort,
                                                                       side.port_field)]) \
        if rule.ports else None
    out = _conjunction(table, nxt, priority, _conj_id(obj, side, r, 0), [pods, peers.clause, ports], obj, name,
                       side.new)
    if named:
        if side.direction == "Ingress":
            clauses = [_pairs(side.pod_field, side.port_field, selected, named), peers.clause]
        else:
            clauses = [pods, peers.named_pairs(named)]
        out += _conjunction(table, nxt, priority - 1, _conj_id(obj, side, r, 1), clauses, obj,
                            f"{name}, named ports", side.new)
    return out


def _conjunction(table: int, nxt: int, priority: int, cid: int, clauses: Sequence[Clause], obj: int,
                 name: str, new: Match = _NEW) -> list[Flow]:
    """One flow per value of each dimension, and the conj_id flow that allows."""
    present = [c for c in clauses if c is not None]
    if any(not c for c in present):
        return []                       # a dimension nothing fits: the rule allows nothing here
    if len(present) == 1:
        return [flow(table, priority, {**new, **m}, [Goto(nxt)], "netpol", obj, f"{name}: allowed")
                for m in present[0]]
    n = len(present)
    out = [flow(table, priority, {**new, **m}, [Conjunction(cid, k, n)], "netpol", obj,
                f"{name}: dimension {k} of {n}")
           for k, clause in enumerate(present, start=1) for m in clause]
    out.append(flow(table, priority, {"conj_id": cid}, [Goto(nxt)], "netpol", obj,
                    f"{name}: every dimension matched, allowed"))
    return out


# ---------------------------------------------------------------------------------------- peers
def _peer_networks(peers: list[NetworkPolicyPeer], ns: str, endpoints: list[HostPlan],
                   namespaces: Mapping[str, Mapping[str, str]], family: int = 4) -> list:
    """The fewest CIDRs of `family` that hold exactly the rule's peers: selected pods' addresses and
    ipBlocks of that family with their excepts cut out (an ipBlock matches its own family only, as
    upstream). Cutting them out here, rather than dropping excepted addresses with a higher
    priority flow, keeps one rule's except from overruling other rules."""
    nets: list = []
    for peer in peers:
        if peer.ipBlock is not None:
            nets += _block(peer.ipBlock.network, peer.ipBlock.excepted, family)
            continue
        nets += [_host_network(e.ip) for e in _selected_peers(peer, ns, endpoints, namespaces)]
    return list(ipaddress.collapse_addresses(nets))


def _selected_peers(peer: NetworkPolicyPeer, ns: str, endpoints: list[HostPlan],
                    namespaces: Mapping[str, Mapping[str, str]]) -> list[HostPlan]:
    """The endpoints peer_selects selects, deciding the namespaceSelector once per namespace."""
    by_namespace: dict[str, bool] = {}

    def in_namespace(name: str) -> bool:
        if name not in by_namespace:
            by_namespace[name] = name == ns if peer.namespaceSelector is None else \
                selector_matches(peer.namespaceSelector, _namespace_labels(namespaces, name))
        return by_namespace[name]
    return [e for e in endpoints if _is_pod(e) and in_namespace(e.namespace)
            and (peer.podSelector is None or selector_matches(peer.podSelector, e.labels))]


@functools.lru_cache(maxsize=1 << 16)
def _host_network(ip: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address as the one-address network collapse_addresses takes (made once per address)."""
    return ipaddress.ip_network(ip)


def _block(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network,
           excepted: list[ipaddress.IPv4Network | ipaddress.IPv6Network], family: int = 4) -> list:
    if cidr.version != family:
        return []                       # an ipBlock matches its own family only
    excepted = [ex for ex in excepted if ex.version == family]
    nets = [cidr]
    for ex in excepted:
        nets = [part for n in nets if not n.subnet_of(ex)
                for part in (n.address_exclude(ex) if ex.subnet_of(n) else [n])]
    return nets


def _everything(nets: list[ipaddress.IPv4Network]) -> bool:
    return any(n.prefixlen == 0 for n in nets)


def _inside(ip: str, nets: list) -> bool:
    addr = _host_network(ip).network_address
    return any(addr in n for n in nets)


def _addr(field: str, ip: str) -> str | int:
    """An address as a match value: as written for address fields, an integer for registers."""
    return int(ipaddress.ip_address(ip)) if _is_reg(field) else ip


def _is_reg(field: str) -> bool:
    return field.startswith(("reg", "xxreg"))


def _net_match(field: str, net) -> Match:
    if net.prefixlen == net.max_prefixlen:
        return {field: _addr(field, str(net.network_address))}
    if _is_reg(field):
        return {field: (int(net.network_address), int(net.netmask))}
    return {field: (str(net.network_address), str(net.netmask))}


# ---------------------------------------------------------------------------------------- ports
def _port_matches(protocol: str, port: int | None, end: int | None, port_field: str) -> list[Match]:
    proto, field = L4[protocol]
    field = port_field or field
    if port is None:
        return [{"ip_proto": proto}]
    return [{"ip_proto": proto, field: block if block[1] != 0xFFFF else block[0]}
            for block in port_masks(port, end or port)]


def _pairs(field: str, port_field: str, pods: list[HostPlan], named: list[NetworkPolicyPort]) -> list[Match]:
    """(pod, port) matches for named ports: each pod's container port of that name and protocol."""
    return _unique([{field: _addr(field, p.ip), "ip_proto": L4[n.protocol][0], port_field or L4[n.protocol][1]: s.port}
                    for p in pods for n in named for s in p.servers
                    if s.name == n.port and s.protocol == n.protocol])


def _unique(matches: list[Match]) -> list[Match]:
    """Drop repeated matches: OVS would take two equal flows at one priority for one."""
    return list({tuple(m.items()): m for m in matches}.values())
