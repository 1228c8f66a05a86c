"""The compiler's selector matching (controller/policy.py) against the evaluator's (kubevpc.evaluator.netpol
and the Kubernetes models it uses), on many generated selectors, pods and namespaces. The two are
written separately on purpose; here they must agree, one function at a time and as whole policies
whose compiled flows the simulator (tests/unit/fakeoftable.py) runs packets through. Pods come with
each of Terway's eniTypes: one on an exclusive ENI (ENI) is never isolated, as ACK does not enforce
NetworkPolicy on it, but is selected as a peer like any pod."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy import (PolicyTables, enforced, peer_selects, policy_flows, policy_selects, policy_types,
                               selector_matches)
from controller.services import serving
from kubevpc.k8s import LabelSelector, LabelSelectorRequirement, NetworkPolicyPeer
from kubevpc.evaluator.netpol import _peer_matches, evaluate, selects
from kubevpc.evaluator.netpol import enforced as evaluator_enforced
from kubevpc.planning import EndpointPlan, ServicePlan
from tests.unit.fakeoftable import FakeOFTable
from tests.unit.test_netpol import NODES, Ep, policy

KEYS = ("pod", "ns", "team", "app", "kubernetes.io/metadata.name")
VALUES = ("a", "b", "c", "x", "y", "z", "blue", "")
NAMESPACE_NAMES = ("x", "y", "z", "w")
ENI_TYPES = ("Default", "ENI", "Trunk")       # Terway's eniType of an eni pod; ENI: exclusive, no NetworkPolicy

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
labels = st.dictionaries(keys, values, max_size=4)
requirements = st.one_of(
    st.builds(LabelSelectorRequirement, key=keys, operator=st.sampled_from(["In", "NotIn"]),
              values=st.lists(values, min_size=1, max_size=3)),
    st.builds(LabelSelectorRequirement, key=keys, operator=st.sampled_from(["Exists", "DoesNotExist"]),
              values=st.just([])))
selectors = st.builds(LabelSelector, matchLabels=st.dictionaries(keys, values, max_size=2),
                      matchExpressions=st.lists(requirements, max_size=3))
broad = st.one_of(st.just(LabelSelector()), st.builds(LabelSelector, matchExpressions=st.lists(requirements, max_size=1)),
                  selectors)      # selectors that often select something, for whole policies
namespaces = st.fixed_dictionaries({n: labels for n in NAMESPACE_NAMES[:3]})   # w: a namespace without labels


@st.composite
def pods(draw, n: int = 0) -> Ep:
    node = draw(st.sampled_from(("n1", "n2", "n3")))
    return Ep(f"p{n}", f"10.244.{node[1]}.{n + 2}", draw(st.sampled_from(NAMESPACE_NAMES)), draw(labels), (), node,
              draw(st.sampled_from(ENI_TYPES)))


@st.composite
def worlds(draw) -> list[Ep]:
    count = draw(st.integers(min_value=1, max_value=8))
    return [draw(pods(i)) for i in range(count)]


def _selector(sel: LabelSelector) -> dict:
    return sel.model_dump(exclude_defaults=True)


@st.composite
def peers(draw, sels=selectors) -> dict:
    which = draw(st.sampled_from(("pod", "namespace", "both")))
    peer = {}
    if which in ("pod", "both"):
        peer["podSelector"] = _selector(draw(sels))
    if which in ("namespace", "both"):
        peer["namespaceSelector"] = _selector(draw(sels))
    return peer


# ------------------------------------------------------------------------------ one function at a time
@settings(max_examples=400, deadline=None)
@given(selectors, labels)
def test_label_selectors_agree(sel, pod_labels):
    assert selector_matches(sel, pod_labels) == sel.matches(pod_labels)


@settings(max_examples=300, deadline=None)
@given(selectors, pods(), st.sampled_from(NAMESPACE_NAMES))
def test_which_pods_a_policy_selects_agree(sel, pod, ns):
    p = policy({"metadata": {"name": "p"}, "spec": {"podSelector": _selector(sel)}}, namespace=ns)
    assert policy_selects(p, pod) == selects(p, pod)
    assert enforced(pod) == evaluator_enforced(pod) == (pod.eni_type != "ENI")
    node = NODES[0]
    assert policy_selects(p, node) is selects(p, node) is False
    assert enforced(node) and evaluator_enforced(node)


@settings(max_examples=400, deadline=None)
@given(peers(), pods(), namespaces, st.sampled_from(NAMESPACE_NAMES))
def test_which_pods_a_peer_selects_agree(peer, pod, ns_labels, policy_ns):
    p = NetworkPolicyPeer.model_validate(peer)
    assert peer_selects(p, policy_ns, pod, ns_labels) == _peer_matches(p, policy_ns, pod, ns_labels)
    assert peer_selects(p, policy_ns, NODES[1], ns_labels) is False


@given(st.lists(st.sampled_from(["Ingress", "Egress"]), max_size=2, unique=True), st.booleans(), st.booleans())
def test_policy_types_agree(types, ingress, egress):
    spec: dict = {"podSelector": {}}
    if types:
        spec["policyTypes"] = types
    if ingress:
        spec["ingress"] = [{}]
    if egress:
        spec["egress"] = [{}]
    p = policy({"metadata": {"name": "p"}, "spec": spec})
    assert policy_types(p) == p.spec.types


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.integers(min_value=0, max_value=2),
                          st.sampled_from(["n1", "n2"])), max_size=6))
def test_serving_endpoints_agree(eps):
    """The compiler's reading of kube-proxy's endpoint choice (controller.services.serving) and the
    evaluator's (ServicePlan.cluster_endpoints, local_endpoints), written apart, agree: ready ones,
    else those serving while terminating, cluster-wide and per node."""
    svc = ServicePlan(name="s", namespace="x", type="ClusterIP", cluster_ip="172.21.0.11", selector={},
                      ports=(), endpoints=tuple(EndpointPlan(pod=f"pod/x/p{i}", name=f"p{i}", ip=f"10.0.0.{i + 1}",
                                                             node=node, ready=ready, serving=serving,
                                                             terminating=terminating, ports=(port, 80))
                                                for i, (ready, serving, terminating, port, node) in enumerate(eps)))
    for index in (0, 1):
        assert serving(svc, index) == svc.cluster_endpoints(index)
        for node in ("n1", "n2"):
            assert serving(svc, index, node) == svc.local_endpoints(index, node)


# ------------------------------------------------------------------------------ whole policies
TABLES = PolicyTables(egress=27, egress_next=28, ingress=28, ingress_next=29)


def _passes(flows, src: Ep, dst: Ep, port: int) -> bool:
    pkt = {"eth_type": 0x0800, "ct_state": 0x21, "ipv4_src": src.ip, "ipv4_dst": dst.ip, "ip_proto": 6,
           "tcp_dst": port}
    return FakeOFTable(flows).walk(pkt, TABLES.egress, until=29).end == 29


@settings(max_examples=120, deadline=None)
@given(worlds(), namespaces, broad, peers(broad), st.sampled_from(["Ingress", "Egress"]), st.data())
def test_compiled_selectors_agree_with_the_evaluator(world, ns_labels, selected, peer, direction, data):
    """One policy with a generated podSelector and one rule with a generated peer, compiled for
    each node, against the evaluator, for every pair of pods and node instances (pods of every
    eniType: an exclusive one is not isolated, and is still a peer)."""
    ns = data.draw(st.sampled_from(sorted({e.namespace for e in world})))
    rule = {"from" if direction == "Ingress" else "to": [peer], "ports": [{"port": 80}]}
    p = policy({"metadata": {"name": "gen"}, "spec": {"podSelector": _selector(selected), "policyTypes": [direction],
                                                      direction.lower(): [rule]}}, namespace=ns)
    endpoints = world + NODES
    compiled = {n.node: policy_flows([p], ns_labels, endpoints, [e for e in world if e.node == n.node], TABLES)
                for n in NODES}
    for src in endpoints:
        for dst in endpoints:
            if src.ip == dst.ip:
                continue
            for port in (80, 81):
                want = evaluate([p], ns_labels, src, dst, port, "TCP").allowed
                path = dict.fromkeys(x for x in (src.node, dst.node) if x)
                got = all(_passes(compiled[n], src, dst, port) for n in path)
                assert got == want, f"{src.key} -> {dst.key}:{port}"
