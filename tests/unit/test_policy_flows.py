"""The NetworkPolicy flow compiler (controller/policy.py) against the evaluator (kubevpc.evaluator.netpol).

The flow-table simulator (tests/unit/fakeoftable.py) runs every packet of the x/y/z world
through the compiled policy tables of the nodes it crosses, and must agree with the evaluator
on every pair of endpoints, port and protocol, for a dozen policy sets.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict

import pytest

from controller.flows import CT_NEW, CT_TRK, ETH_IP, Conjunction, Flow, Goto
from controller.policy import (L4, PRIO_ISOLATED, PRIO_PASS, SHARED, PolicyTables, policy_flow_counts,
                               policy_flows)
from kubevpc.evaluator.netpol import evaluate
from kubevpc.planning import ServerPort
from tests.unit.fakeoftable import FakeOFTable
from tests.unit.test_netpol import ALL, NAMESPACES, Ep, policy

TABLES = PolicyTables(egress=27, egress_next=28, ingress=28, ingress_next=29)
# as a node bridge uses them: the destination read from the chosen endpoint's registers
REG_TABLES = PolicyTables(egress=27, egress_next=28, ingress=28, ingress_next=29, dst_ip="reg2", dst_port="reg3")
DONE = 29
NODES = ("n1", "n2", "n3")


def packet(src: str, dst: str, protocol: str, port: int) -> dict:
    """Also the registers a node bridge loads with the destination before its policy tables."""
    proto, field = L4[protocol]
    return {"eth_type": ETH_IP, "ct_state": CT_TRK | CT_NEW, "ipv4_src": src, "ipv4_dst": dst,
            "ip_proto": proto, field: port, "conj_id": 0, "reg2": int(ipaddress.IPv4Address(dst)), "reg3": port}


def passes(flows: list[Flow], pkt: dict) -> bool:
    """Walk the policy tables from the egress table: through to DONE, or dropped."""
    return FakeOFTable(flows).walk(pkt, TABLES.egress, until=DONE).end == DONE


def compile_nodes(policies, endpoints=ALL, tables=TABLES) -> dict[str, list[Flow]]:
    pods = [e for e in endpoints if e.namespace]
    return {n: policy_flows(policies, NAMESPACES, endpoints, [p for p in pods if p.node == n], tables) for n in NODES}


def simulate(compiled: dict[str, list[Flow]], src: Ep, dst: Ep, port: int, protocol: str) -> bool:
    """The packet crosses the node bridge of each end that is on a node (pod or node itself)."""
    pkt = packet(src.ip, dst.ip, protocol, port)
    path = dict.fromkeys(n for n in (src.node, dst.node) if n)
    return all(passes(compiled[n], pkt) for n in path)


# ---------------------------------------------------------------------------- the comparison
POLICY_SETS = {
    "none": [],
    "deny ingress x": ["{metadata: {name: deny}, spec: {podSelector: {}}}"],
    "deny egress x": ["{metadata: {name: deny}, spec: {podSelector: {}, policyTypes: [Egress]}}"],
    "deny both, allow y to x/a on 80": [
        "{metadata: {name: deny}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}",
        """{metadata: {name: from-y}, spec: {podSelector: {matchLabels: {pod: a}},
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}}"""],
    "pod and namespace selectors, AND and OR": [
        """{metadata: {name: p}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [
            {from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}},
                    {podSelector: {matchLabels: {pod: c}}}]},
            {from: [{namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}}],
             ports: [{port: 81}]}]}}""",
        """{metadata: {name: q, namespace: y}, spec: {podSelector: {matchExpressions: [
            {key: pod, operator: NotIn, values: [a]}]}, ingress: [{from: [{namespaceSelector: {matchExpressions: [
            {key: ns, operator: In, values: [x, z]}]}, podSelector: {matchExpressions: [
            {key: pod, operator: DoesNotExist}]}}]}]}}"""],
    "ipBlock with except, both directions": [
        """{metadata: {name: p}, spec: {podSelector: {}, ingress: [{from: [
            {ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24, 10.244.1.4/32, 10.244.3.4/32, 10.244.3.0/25]}}]}],
            egress: [{to: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.12/32]}},
                           {ipBlock: {cidr: 10.244.3.0/24}}], ports: [{port: 80}, {port: 81, protocol: UDP}]}]}}"""],
    "everything but the pod network": [
        """{metadata: {name: p, namespace: z}, spec: {podSelector: {},
            ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}],
            egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]}]}}"""],
    "named ports in both directions": [
        "{metadata: {name: http}, spec: {podSelector: {}, ingress: [{ports: [{port: http}]}]}}",
        """{metadata: {name: http-out, namespace: y}, spec: {podSelector: {matchLabels: {pod: c}},
            policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}]}]}}""",
        """{metadata: {name: from-y-named, namespace: z}, spec: {podSelector: {}, ingress: [{from: [
            {namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-81-udp, protocol: UDP}, {port: http}]},
            {ports: [{port: serve-80-udp}]}]}}"""],
    "named egress to an ipBlock, numeric and named in one rule": [
        """{metadata: {name: p}, spec: {podSelector: {}, policyTypes: [Egress], egress: [
            {to: [{ipBlock: {cidr: 10.244.1.0/24}}, {ipBlock: {cidr: 192.168.2.0/24}}],
             ports: [{port: http}, {port: 81}, {port: serve-80-udp, protocol: UDP}]}]}}"""],
    "ranges and protocols": [
        """{metadata: {name: p}, spec: {podSelector: {}, ingress: [{ports: [{port: 79, endPort: 8080}]},
            {from: [{podSelector: {}}], ports: [{protocol: UDP}, {port: 80, protocol: SCTP}]}]}}""",
        """{metadata: {name: q, namespace: y}, spec: {podSelector: {}, policyTypes: [Egress],
            egress: [{ports: [{port: 8081, endPort: 65535}, {port: 1, endPort: 80, protocol: UDP}]}]}}"""],
    "stacked across namespaces": [
        """{metadata: {name: to-y}, spec: {podSelector: {}, policyTypes: [Egress],
            egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}""",
        """{metadata: {name: from-z, namespace: y}, spec: {podSelector: {},
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}}""",
        """{metadata: {name: from-x, namespace: y}, spec: {podSelector: {matchLabels: {pod: b}},
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]}}""",
        "{metadata: {name: deny, namespace: z}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}",
        """{metadata: {name: egress-only, namespace: z}, spec: {podSelector: {}, policyTypes: [Egress],
            egress: [{to: [{podSelector: {}}]}], ingress: [{from: [{namespaceSelector: {}}]}]}}"""],
    "rules that allow nothing, policies that select nothing": [
        """{metadata: {name: p}, spec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {pod: zzz}}}]},
            {ports: [{port: nosuch}]}], egress: [{to: [{ipBlock: {cidr: 'fd00::/8'}}]}]}}""",
        "{metadata: {name: q, namespace: y}, spec: {podSelector: {matchLabels: {pod: zzz}}}}",
        """{metadata: {name: r, namespace: z}, spec: {podSelector: {}, egress: [],
            ingress: [{}, {from: [{podSelector: {}}]}]}}"""],
    "overlapping rules and peers": [
        """{metadata: {name: p}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [
            {from: [{podSelector: {}}, {ipBlock: {cidr: 10.244.1.0/24}}, {namespaceSelector: {}}],
             ports: [{port: 80}, {port: 80, endPort: 81}]},
            {from: [{ipBlock: {cidr: 10.244.1.0/25, except: [10.244.1.0/30]}}]}]}}""",
        """{metadata: {name: q}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [
            {from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: http}, {port: 8081}]}]}}"""],
}
PROBES = [(80, "TCP"), (81, "TCP"), (8080, "TCP"), (8081, "TCP"), (80, "UDP"), (81, "UDP"), (80, "SCTP")]


def _policies(name: str):
    return [policy(text) for text in POLICY_SETS[name]]


def check_structure(flows: list[Flow]) -> None:
    """What OVS requires of conjunctive flows, and one flow per match and priority."""
    seen = set()
    for f in flows:
        key = (f.table, f.priority, f.match)
        assert key not in seen, f"two flows with one match and priority: {f.to_ofctl()}"
        seen.add(key)
        assert f.feature == "netpol"
        conj = [a for a in f.actions if isinstance(a, Conjunction)]
        assert not conj or len(conj) == len(f.actions), f"conjunction with other actions: {f.to_ofctl()}"
    by_id = defaultdict(list)
    for f in flows:
        for a in f.actions:
            if isinstance(a, Conjunction):
                by_id[a.conj_id].append((f, a))
    heads = {dict(f.match)["conj_id"]: f for f in flows if "conj_id" in dict(f.match)}
    assert set(by_id) == set(heads), "every conjunction has exactly its conj_id flow"
    for cid, members in by_id.items():
        head = heads[cid]
        assert {(f.table, f.priority) for f, _ in members} == {(head.table, head.priority)}, cid
        sizes = {a.n_clauses for _, a in members}
        assert len(sizes) == 1 and sizes.pop() >= 2
        assert {a.clause for _, a in members} == set(range(1, members[0][1].n_clauses + 1))


@pytest.mark.parametrize("tables", [TABLES, REG_TABLES], ids=["packet-fields", "registers"])
@pytest.mark.parametrize("name", POLICY_SETS)
def test_flows_agree_with_the_evaluator(name, tables):
    policies = _policies(name)
    compiled = compile_nodes(policies, tables=tables)
    if tables is REG_TABLES:     # nothing may read the packet's own destination
        assert not [f for fl in compiled.values() for f in fl
                    if {"ipv4_dst", "tcp_dst", "udp_dst", "sctp_dst"} & dict(f.match).keys()]
    for flows in compiled.values():
        check_structure(flows)
    wrong = []
    for src in ALL:
        for dst in ALL:
            for port, protocol in PROBES:
                expected = evaluate(policies, NAMESPACES, src, dst, port, protocol)
                if simulate(compiled, src, dst, port, protocol) != expected.allowed:
                    wrong.append(f"{src.key} -> {dst.key} {port}/{protocol}: evaluator says "
                                 f"{expected.allowed} ({expected.reason})")
    assert not wrong, f"{len(wrong)} disagreements, e.g.\n" + "\n".join(wrong[:10])


def test_the_policy_sets_are_not_trivial():
    """Each set (but the empty one) denies something and allows something."""
    for name in POLICY_SETS:
        policies = _policies(name)
        verdicts = {evaluate(policies, NAMESPACES, s, d, port, proto).allowed
                    for s in ALL for d in ALL for port, proto in PROBES}
        assert verdicts == ({True} if name == "none" else {True, False}), name


# ------------------------------------------------------------------------------- flow counts
def _big_world(peers: int, pods: int) -> tuple[list[Ep], list[Ep]]:
    """`pods` servers app=web on n1, `peers` clients role=client on n2, no two addresses adjacent."""
    web = [Ep(f"web-{i}", f"10.244.1.{2 * i + 2}", "big", {"app": "web"},
              (ServerPort(port=8000 + i % 2, protocol="TCP", name="api"),), "n1") for i in range(pods)]
    clients = [Ep(f"client-{i}", f"10.244.2.{2 * i + 2}", "big", {"role": "client"}, (), "n2") for i in range(peers)]
    return web, clients


BIG = """{metadata: {name: web, namespace: big}, spec: {podSelector: {matchLabels: {app: web}},
          policyTypes: [Ingress, Egress],
          ingress: [{from: [{podSelector: {matchLabels: {role: client}}}],
                     ports: [{port: 80}, {port: 443}, {port: 8443}]}],
          egress: [{to: [{podSelector: {matchLabels: {role: client}}}], ports: [%s]}]}}"""


def _count(peers: int, pods: int, egress_ports: str = "{port: 53, protocol: UDP}") -> tuple[int, int]:
    web, clients = _big_world(peers, pods)
    p = policy(BIG % egress_ports)
    flows = policy_flows([p], {}, web + clients, web, TABLES)
    counts = policy_flow_counts([p], flows)
    ingress = sum(1 for f in flows if f.table == TABLES.ingress and f.obj == 1)
    return counts["big/web"], ingress


@pytest.mark.parametrize("peers, pods", [(5, 7), (10, 7), (5, 14), (1, 1), (20, 30)])
def test_a_rule_costs_peers_plus_pods_plus_ports_plus_one(peers, pods):
    total, ingress = _count(peers, pods)
    assert ingress == peers + pods + 3 + 1
    assert total == 2 * (peers + pods + 3 + 1) - 2        # egress: 1 port instead of 3


def test_named_ports_cost_pairs_plus_the_other_dimension_plus_one():
    web, clients = _big_world(5, 7)
    p = policy(BIG.replace("{port: 443}", "{port: api}") % "{port: 53, protocol: UDP}")
    flows = policy_flows([p], {}, web + clients, web, TABLES)
    ingress = [f for f in flows if f.table == TABLES.ingress and f.obj == 1]
    assert len(ingress) == (5 + 7 + 2 + 1) + (7 + 5 + 1)    # numeric rule; (pod, api) pairs x peers
    pairs = {(dict(f.match)["ipv4_dst"], dict(f.match)["tcp_dst"]) for f in ingress if "tcp_dst" in dict(f.match)
             and dict(f.match)["tcp_dst"] in (8000, 8001)}
    assert pairs == {(w.ip, 8000 + i % 2) for i, w in enumerate(web)}


def test_shared_flows():
    web, clients = _big_world(5, 7)
    flows = policy_flows([], {}, web + clients, web, TABLES)
    assert [(f.table, f.priority, f.actions) for f in flows] == \
        [(TABLES.egress, PRIO_PASS, (Goto(TABLES.egress_next),)),
         (TABLES.ingress, PRIO_PASS, (Goto(TABLES.ingress_next),))]
    p = policy(BIG % "{port: 53, protocol: UDP}")
    counts = policy_flow_counts([p], policy_flows([p], {}, web + clients, web, TABLES))
    assert counts[SHARED] == 2 * (7 + 7 + 1)   # per direction: itself and drop per pod, pass (no node instance here)
    node = Ep("n1", "192.168.1.11", node="n1")
    flows = policy_flows([p], {}, web + clients + [node], web, TABLES)
    isolated = [f for f in flows if f.priority == PRIO_ISOLATED]
    assert len(isolated) == 14 and all(f.actions == () for f in isolated)
    assert policy_flow_counts([p], flows)[SHARED] == 2 * (7 + 7 + 1 + 1)


# ---------------------------------------------------------------------------------- cookies
def test_cookies_identify_policies_and_stay_put():
    policies = _policies("stacked across namespaces")
    first = compile_nodes(policies)
    again = compile_nodes(_policies("stacked across namespaces"))
    extra = policy("""{metadata: {name: later, namespace: x}, spec: {podSelector: {matchLabels: {pod: c}},
                      ingress: [{from: [{podSelector: {}}], ports: [{port: 81}]}]}}""")
    grown = compile_nodes(policies + [extra])
    for node in NODES:
        cookies = [f.cookie for f in first[node]]
        assert cookies == [f.cookie for f in again[node]]
        assert len(set(cookies)) == len(cookies)
        for f in first[node]:
            assert f.cookie >> 56 == 13 and (f.cookie >> 32) & 0xFFFFFF == f.obj
        # a policy added at the end changes nothing of the policies before it
        assert {f.cookie for f in first[node] if f.obj} <= {f.cookie for f in grown[node]}
        assert {f.obj for f in grown[node] if f.obj} <= set(range(1, len(policies) + 2))
    assert any(f.obj == len(policies) + 1 for f in grown["n2"])      # x/c runs on n2
