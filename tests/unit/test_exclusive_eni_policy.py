"""NetworkPolicy and exclusive ENIs (Terway's eniType ENI, scenarios/exclusive-eni.yaml): ACK does not
enforce NetworkPolicy on a pod with an exclusive ENI ("Pods assigned an exclusive ENI do not support
eBPF network acceleration or Kubernetes NetworkPolicy", Configure exclusive ENI mode for a node pool,
Limitations). A policy that selects one isolates it in neither direction, while the shared (Default)
and trunk (Trunk) pods it selects are isolated; as a peer, an exclusive pod is matched like any pod.
Walked through the compiled flows (tests/unit/netsim.py) beside the evaluator, which must agree on
each packet; and the warning that planning gives for such a policy."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from controller.compile import compile_plan
from controller.pipeline import NODE
from kubevpc import cli
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import reach
from kubevpc.lab import changes
from kubevpc.lab.lab import Lab
from kubevpc.planning import Plan, make_plan, plan_warnings
from kubevpc.scenario.load import load

from .netsim import End, Network
from .problems import check, line_of
from .test_exclusive_eni import RUN, SCENARIO, base, dual_stack, pod, write

ROOT = Path(__file__).resolve().parents[2]
EGRESS, INGRESS = NODE.table("egress_policy"), NODE.table("ingress_policy")
NOT_ENFORCED = "ACK does not enforce NetworkPolicy on a pod with an exclusive ENI"
EXCLUSIVE = ("eni-server", "eni-client", "eni-pods-server")


def deny_all(direction: str) -> dict:
    """A policy that isolates every pod of default in `direction` and allows nothing."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"deny-{direction.lower()}"}, "spec": {"podSelector": {}, "policyTypes": [direction]}}


def with_policies(tmp_path: Path, *policies: dict, ipv6: bool = False) -> Plan:
    """exclusive-eni.yaml with these NetworkPolicies in place of its own (and its expectations,
    which are about its own), in dual stack with `ipv6`."""
    data = {**base(), "expect": []}
    data["manifests"] = [m for m in data["manifests"] if m["kind"] != "NetworkPolicy"] + list(policies)
    if ipv6:
        dual_stack(data)
    return make_plan(load(str(write(tmp_path, data))), RUN)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(load(str(SCENARIO)), RUN)


def send(plan: Plan, net: Network, src: str, dst: str, port: int, family: int = 4) -> tuple[bool, list[End]]:
    """The first packet of src -> dst:port (to dst's MAC on its vSwitch, else to the gateway): whether
    it reaches dst, and where each branch ended. The evaluator must agree."""
    s, d = plan.host(pod(src) if "/" not in src else src), plan.host(pod(dst))
    ends = net.send(s, d.ipv6 if family == 6 else d.ip, port, eth_dst=d.mac if s.vswitch == d.vswitch else "")
    got = any(e.kind == "delivered" and e.host == d.key for e in ends)
    v = reach(plan, s, d, port, "tcp", family)
    assert got == v.allowed, f"{src} -> {dst}:{port} IPv{family}: flows {got}, evaluator {v.allowed} ({v.reason}); " + \
        "; ".join(map(str, ends))
    return got, ends


def dropped_by_policy(plan: Plan, ends: list[End], node: str, table: int) -> bool:
    """Every branch dropped on the node's bridge by a policy table's isolation flow (priority 100)."""
    return bool(ends) and all(e.kind == "dropped" and e.path[-1][0] == plan.node(node).bridge
                              and (e.path[-1][1].table, e.path[-1][1].priority) == (table, 100) for e in ends)


def isolated(plan: Plan, node: str, table: int, family: int = 4) -> set[str]:
    """The addresses the node's bridge isolates in a policy table (its priority-100 drops)."""
    field = {(EGRESS, 4): "ipv4_src", (INGRESS, 4): "reg2", (EGRESS, 6): "ipv6_src", (INGRESS, 6): "xxreg2"}[
        (table, family)]
    flows = compile_plan(plan)[plan.node(node).bridge].flows
    return {str(ipaddress.ip_address(v if isinstance(v, int) else v)) for f in flows
            if (f.table, f.priority) == (table, 100) and (v := dict(f.match).get(field)) is not None}


def ips(plan: Plan, *names: str, family: int = 4) -> set[str]:
    return {plan.host(pod(n)).ipv6 if family == 6 else plan.host(pod(n)).ip for n in names}


# --------------------------------------------------------------------------- the scenario's policy
def test_the_scenarios_policy_is_not_enforced_on_the_exclusive_server(plan):
    """backend-ingress selects eni-server and shared-server and takes nothing from trunk-client:
    eni-server still answers it on 80 (through the vSwitch, where sg-app admits it), its shared twin
    drops it on node-1."""
    net = Network(plan)
    assert send(plan, net, "trunk-client", "eni-server", 80)[0], "exclusive: the policy is not enforced"
    ok, ends = send(plan, net, "trunk-client", "shared-server", 80)
    assert not ok and dropped_by_policy(plan, ends, "node-1", INGRESS), "twin: shared, isolated by the policy"
    assert send(plan, net, "shared-client", "shared-server", 80)[0], "the policy admits every other pod"
    assert isolated(plan, "node-1", INGRESS) == ips(plan, "shared-server")


def test_an_exclusive_pod_is_still_a_peer(tmp_path):
    """A policy on shared-server that admits eni-server only: eni-server, exclusive, is matched as a
    peer by its labels (shared-server's node enforces the policy); shared-client is not."""
    only = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "only-eni-server"},
            "spec": {"podSelector": {"matchLabels": {"tier": "backend"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "eni-server"}}}]}]}}
    plan = with_policies(tmp_path, only)
    net = Network(plan)
    assert send(plan, net, "eni-server", "shared-server", 80)[0], "the exclusive pod is the allowed peer"
    ok, ends = send(plan, net, "shared-client", "shared-server", 80)
    assert not ok and dropped_by_policy(plan, ends, "node-1", INGRESS), "twin: another client"


# --------------------------------------------------------------------------- deny all, each way
def test_deny_all_ingress_isolates_every_pod_but_the_exclusive_ones(tmp_path):
    plan = with_policies(tmp_path, deny_all("Ingress"))
    net = Network(plan)
    assert send(plan, net, "eni-client", "eni-server", 80)[0], "exclusive server: not isolated"
    assert send(plan, net, "eni-client", "eni-pods-server", 80)[0], "on another vSwitch too"
    assert send(plan, net, "remote-client", "eni-server", 80)[0], "and from another node"
    for client, server, port in (("eni-client", "shared-server", 80), ("remote-client", "shared-server", 80),
                                 ("shared-client", "shared-server", 81), ("trunk-client", "trunk-server", 81)):
        ok, ends = send(plan, net, client, server, port)
        assert not ok and dropped_by_policy(plan, ends, "node-1", INGRESS), f"twin: {server} is isolated"
    shared = {h.name for h in plan.own_pods if h.node == "node-1" and h.namespace == "default"} - set(EXCLUSIVE)
    assert isolated(plan, "node-1", INGRESS) == ips(plan, *shared)
    assert not isolated(plan, "node-1", INGRESS) & ips(plan, *EXCLUSIVE)


def test_deny_all_egress_isolates_every_client_but_the_exclusive_ones(tmp_path):
    plan = with_policies(tmp_path, deny_all("Egress"))
    net = Network(plan)
    assert send(plan, net, "eni-client", "eni-server", 80)[0], "exclusive client: not isolated"
    assert send(plan, net, "eni-client", "trunk-server", 80)[0]
    for client, server, port, node in (("shared-client", "eni-server", 80, "node-1"),
                                       ("shared-client", "shared-server", 81, "node-1"),
                                       ("trunk-client", "trunk-server", 81, "node-1"),
                                       ("remote-client", "shared-server", 80, "node-2")):
        ok, ends = send(plan, net, client, server, port)
        assert not ok and dropped_by_policy(plan, ends, node, EGRESS), f"twin: {client} is isolated"
    assert not isolated(plan, "node-1", EGRESS) & ips(plan, *EXCLUSIVE)
    assert ips(plan, "shared-client", "trunk-client", "shared-server") <= isolated(plan, "node-1", EGRESS)


def test_in_ipv6_too(tmp_path):
    plan = with_policies(tmp_path, deny_all("Ingress"), ipv6=True)
    net = Network(plan)
    assert send(plan, net, "eni-client", "eni-server", 80, 6)[0]
    ok, ends = send(plan, net, "eni-client", "shared-server", 80, 6)
    assert not ok and dropped_by_policy(plan, ends, "node-1", INGRESS), "twin: the shared server is isolated"
    assert not isolated(plan, "node-1", INGRESS, 6) & ips(plan, *EXCLUSIVE, family=6)
    assert ips(plan, "shared-server", "trunk-server", family=6) <= isolated(plan, "node-1", INGRESS, 6)


# ------------------------------------------------------------------------------------ evaluator
def test_the_evaluator_says_why(tmp_path, plan):
    e = explain(plan, pod("trunk-client"), pod("eni-server"), 80, "tcp")
    [step] = [s for s in e.steps if s.stage == "NetworkPolicy" and "eni-server" in s.text]
    assert e.allowed and step.passes and NOT_ENFORCED in step.text and "default/backend-ingress" in step.text
    e = explain(plan, pod("trunk-client"), pod("shared-server"), 80, "tcp")
    assert not e.allowed and e.reason.startswith("NetworkPolicy: ingress of default/shared-server denied")
    assert not any(NOT_ENFORCED in s.text for s in e.steps)
    egress = with_policies(tmp_path, deny_all("Egress"))
    e = explain(egress, pod("eni-client"), pod("trunk-server"), 80, "tcp")
    assert e.allowed and any(NOT_ENFORCED in s.text and s.text.startswith("egress of default/eni-client")
                             for s in e.steps)
    e = explain(egress, pod("trunk-client"), pod("trunk-server"), 80, "tcp")
    assert not e.allowed and "egress of default/trunk-client denied" in e.reason, "twin: a trunk client is isolated"


# ------------------------------------------------------------------------------------- warnings
def test_planning_warns_once_per_policy_that_selects_an_exclusive_pod(tmp_path, plan):
    [w] = plan_warnings(load(str(SCENARIO)), plan)
    text = SCENARIO.read_text()
    check(w, SCENARIO, "NetworkPolicy/default/backend-ingress",
          line_of(text, "apiVersion: networking.k8s.io/v1"), "selects pod default/eni-server",
          "ACK does not enforce NetworkPolicy on such pods")
    assert w.expected == "selects pod default/eni-server, which has an exclusive ENI: ACK does not enforce " \
                         "NetworkPolicy on such pods"
    data = {**base(), "expect": []}
    data["manifests"].append(deny_all("Ingress"))
    data["manifests"].append({**deny_all("Egress"), "spec": {"podSelector": {"matchLabels": {"tier": "none"}}}})
    path = write(tmp_path, data)
    ld = load(str(path))
    warned = plan_warnings(ld, make_plan(ld, RUN))
    assert [(w.value, w.expected) for w in warned] == [
        ("NetworkPolicy/default/backend-ingress", w.expected),
        ("NetworkPolicy/default/deny-ingress", "selects pods default/eni-server, default/eni-client, "
         "default/eni-pods-server, which have exclusive ENIs: ACK does not enforce NetworkPolicy on such pods")]


def test_no_warning_without_an_exclusive_pod_selected():
    for path in (ROOT / "scenarios" / "netpol.yaml", ROOT / "tests" / "e2e" / "data" / "podsg.yaml"):
        ld = load(str(path))
        assert plan_warnings(ld, make_plan(ld, RUN)) == []


def test_validate_prints_the_warning_and_passes(capsys):
    assert cli.main(["validate", str(SCENARIO)]) == cli.EXIT_OK
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {SCENARIO}:{line_of(SCENARIO.read_text(), 'apiVersion: networking.k8s.io/v1')}: "
                   "manifests[18]: 'NetworkPolicy/default/backend-ingress': selects pod default/eni-server, "
                   "which has an exclusive ENI: ACK does not enforce NetworkPolicy on such pods"]


def test_a_lab_says_it_and_a_change_that_brings_a_new_one():
    said: list[str] = []
    lab = Lab(str(SCENARIO), run=RUN, say=said.append)          # nothing built: it plans only
    assert len(said) == 1 and "backend-ingress" in said[0] and said[0].startswith("warning: ")
    change = changes.replan(lab.loaded, lab.plan, RUN, changes.with_network_policies(
        lab.loaded.manifests, [deny_all("Ingress")]), {}, {})
    lab._warn_new(change)
    assert len(said) == 2 and "'NetworkPolicy/default/deny-ingress': selects pods default/eni-server" in said[1]
    lab._warn_new(changes.replan(lab.loaded, lab.plan, RUN, list(lab.loaded.manifests), {}, {}))
    assert len(said) == 2, "nothing new: nothing said"
