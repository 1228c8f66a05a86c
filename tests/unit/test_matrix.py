"""NetworkPolicy in scenarios: validation, the plan, the expected reachability matrix, and the
flows each node gets. No root: plans and compiled flows only (tests/e2e/test_netpol.py probes)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan, node_policy_flows
from controller.pipeline import NODE
from controller.policy import SHARED, policy_flow_counts
from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.evaluator.matrix import BLOCKED, CONNECTS, MIXED, Cell, Matrix, expected_matrix, parse_ports, select
from kubevpc.evaluator.reach import reach
from kubevpc.lab.changes import parse_objects
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

from .problems import check, line_of

ROOT = Path(__file__).resolve().parents[2]
NETPOL = ROOT / "tests" / "e2e" / "data" / "netpol.yaml"
DEMO = ROOT / "scenarios" / "netpol.yaml"
MODES = ("vxlan", "vpc-route", "eni")


def scenario(**changes) -> dict:
    data = yaml.safe_load(NETPOL.read_text())
    data.update(changes)
    return data


def policy(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def plan_with(tmp_path: Path, *policies: dict, mode: str = "vxlan", labels=None):
    data = scenario()
    data["manifests"] = data["manifests"] + list(policies)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path), mode=mode), "t", labels=labels)


def verdict(plan, src: str, dst: str, port: int = 80, proto: str = "tcp") -> bool:
    return reach(plan, plan.host(src), plan.host(dst), port, proto).allowed


DENY_X = policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})


# ------------------------------------------------------------------------------------ validation
def test_a_policy_in_an_undeclared_namespace_is_refused_with_file_and_line(tmp_path):
    data = scenario()
    data["manifests"].append(policy("nowhere", "p", {"podSelector": {}}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), "t")
    [p] = info.value.problems
    check(p, path, "nowhere", line_of(path.read_text(), "namespace: nowhere"), "namespace not declared")


def test_an_invalid_policy_is_refused_by_the_loader_with_its_path(tmp_path):
    data = scenario()
    data["manifests"].append(policy("x", "p", {"podSelector": {}, "ingress": [
        {"ports": [{"port": 80, "endPort": 79}]}]}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    [p] = info.value.problems
    assert p.file == str(path) and p.path.startswith(f"manifests[{len(data['manifests']) - 1}].spec.ingress[0]")
    assert "endPort 79" in p.expected


def test_networkpolicy_is_a_supported_kind_and_its_aliases_survive_the_plan_file(tmp_path):
    p = policy("x", "p", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                                  "except": ["10.1.0.0/16"]}}]}]})
    plan = plan_with(tmp_path, p)
    [np] = plan.network_policies
    assert np.spec.ingress[0].from_[0].ipBlock.except_ == ["10.1.0.0/16"]
    again = type(plan).model_validate_json(plan.model_dump_json())      # what the controller reads
    assert again.network_policies == plan.network_policies
    assert again.namespaces["x"] == {"ns": "x"} and again.namespaces["default"] == {}


def test_label_overrides_change_the_pods_labels_only(tmp_path):
    plan = plan_with(tmp_path, labels={"pod/y/a": {"pod": "b", "extra": "1"}, "pod/y/b": {"pod": None}})
    assert plan.host("pod/y/a").labels == {"pod": "b", "extra": "1"}
    assert plan.host("pod/y/b").labels == {}
    assert plan.host("pod/x/a").labels == {"pod": "a"}


# ------------------------------------------------------------------------------------ reach
@pytest.mark.parametrize("mode", MODES)
def test_reach_applies_networkpolicy_after_the_network(tmp_path, mode):
    plan = plan_with(tmp_path, DENY_X, mode=mode)
    assert not verdict(plan, "pod/y/a", "pod/x/b") and verdict(plan, "pod/x/b", "pod/y/a")
    assert verdict(plan, "pod/x/a", "pod/x/a"), "a pod reaches itself"
    assert verdict(plan, "ecs/node-1", "pod/x/a"), "a pod's own node is exempt"
    assert not verdict(plan, "ecs/node-2", "pod/x/a"), "another node is not"
    v = reach(plan, plan.host("pod/y/a"), plan.host("pod/x/b"), 80, "tcp")
    assert v.reason.startswith("NetworkPolicy:") and "x/deny" in v.reason


def test_network_refusals_come_before_networkpolicy(tmp_path):
    """vxlan: an ECS instance cannot reach an overlay pod address, whatever the policies say."""
    plan = plan_with(tmp_path, policy("x", "all", {"podSelector": {}, "ingress": [{}]}))
    v = reach(plan, plan.host("ecs/ecs-out"), plan.host("pod/x/a"), 80, "tcp")
    assert not v.allowed and "overlay" in v.reason


# ------------------------------------------------------------------------------------ matrix
def test_expected_matrix_of_the_demo_scenario():
    plan = make_plan(load(str(DEMO)), "t")
    m = expected_matrix(plan, select(plan, ["pods"]), select(plan, ["pods"]), parse_ports(["80/tcp", "81/tcp"]))
    g80, g81 = m.grid(80, "tcp"), m.grid(81, "tcp")
    names = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    at = lambda grid, s, d: grid[names.index(s)][names.index(d)]  # noqa: E731
    assert at(g80, "y/b", "x/a") == CONNECTS and at(g81, "y/b", "x/a") == BLOCKED     # a takes 80 from y
    assert at(g80, "y/b", "x/b") == BLOCKED and at(g80, "x/a", "x/b") == BLOCKED       # x is closed
    assert at(g80, "z/a", "x/a") == BLOCKED                                            # z may not send to x
    assert at(g80, "z/a", "y/c") == CONNECTS and at(g80, "x/c", "z/b") == CONNECTS
    assert all(at(g80, n, n) == CONNECTS for n in names), "every pod reaches itself"


def test_a_service_cell_is_mixed_when_its_endpoints_disagree(tmp_path):
    """svc-a selects pod=a: with x/b relabelled it has two endpoints, and only x/a is closed."""
    plan = plan_with(tmp_path, policy("x", "closed", {"podSelector": {"matchLabels": {"closed": "yes"}},
                                                      "policyTypes": ["Ingress"]}),
                     labels={"pod/x/b": {"pod": "a"}, "pod/x/a": {"closed": "yes"}})
    assert [e.pod for e in plan.service("x/svc-a").endpoints] == ["pod/x/a", "pod/x/b"]
    m = expected_matrix(plan, ["pod/y/b", "pod/x/a"], ["svc/x/svc-a"], [(80, "tcp"), (81, "tcp")])
    assert m.cell("pod/y/b", "svc/x/svc-a", 80).expected is None
    assert "pod/x/b" in m.cell("pod/y/b", "svc/x/svc-a", 80).reason
    assert m.grid(80, "tcp") == [[MIXED], [CONNECTS]], "x/a reaches itself, and x/b is open"
    assert m.cell("pod/y/b", "svc/x/svc-a", 81).expected is False
    assert "does not expose" in m.cell("pod/y/b", "svc/x/svc-a", 81).reason
    ecs = expected_matrix(plan, ["ecs/ecs-out"], ["svc/x/svc-a"], [(80, "tcp")]).cells[0]
    assert ecs.expected is False and "reachable from pods and nodes only" in ecs.reason


def test_nothing_listening_is_expected_to_fail():
    plan = make_plan(load(str(NETPOL)), "t")
    m = expected_matrix(plan, ["pod/x/a"], ["ecs/ecs-out", "node/node-2"], [(80, "udp"), (80, "tcp")])
    assert m.cell("pod/x/a", "ecs/ecs-out", 80, "udp").expected is False     # ecs-out serves TCP only
    assert m.cell("pod/x/a", "ecs/ecs-out", 80, "tcp").expected is True
    assert "nothing listens" in m.cell("pod/x/a", "node/node-2", 80, "tcp").reason


def test_differences_text_and_json():
    cells = [Cell("pod/x/a", "pod/x/b", 80, "tcp", True, "r", True, "answered"),
             Cell("pod/x/b", "pod/x/a", 80, "tcp", False, "r", True, "answered"),
             Cell("pod/x/a", "pod/x/a", 80, "tcp", True, "r", True, "answered"),
             Cell("pod/x/b", "pod/x/b", 80, "tcp", None, "r", False, "timeout")]
    m = Matrix(["pod/x/a", "pod/x/b"], ["pod/x/a", "pod/x/b"], [(80, "tcp")], cells)
    assert [(c.source, c.dest) for c in m.differences] == [("pod/x/b", "pod/x/a")]
    assert m.grid(80, "tcp", "comparison") == [[".", "."], ["X", "."]]
    assert m.grid(80, "tcp", "expected") == [[".", "."], ["X", "~"]]
    assert m.grid(80, "tcp", "observed") == [[".", "."], [".", "X"]]
    text = m.text()
    assert "comparison, 80/tcp:\n-\tx/a\tx/b\nx/a\t.\t.\nx/b\tX\t." in text
    doc = m.as_dict()
    assert doc["differences"] == 1 and sum(c["differs"] for c in doc["cells"]) == 1


# ------------------------------------------------------------------------------------ choosing
def test_select_groups_references_patterns_and_errors():
    plan = make_plan(load(str(NETPOL)), "t")
    assert select(plan, ["pods"])[:3] == ["pod/x/a", "pod/x/b", "pod/x/c"]
    assert "pod/kube-system/kube-dns-0" not in select(plan, ["pods"])
    assert select(plan, ["pod/y/*", "ecs", "nodes", "svc/x/svc-a", "pod/y/a"]) == [
        "pod/y/a", "pod/y/b", "pod/y/c", "ecs/ecs-out", "node/node-1", "node/node-2", "node/node-3", "svc/x/svc-a"]
    assert select(plan, ["ecs/node-1"]) == ["node/node-1"]
    for bad, words in (("pod/q/*", "matches no endpoint"), ("pod/x/zz", "no endpoint"), ("svc/x/nope", "no Service")):
        with pytest.raises(KubevpcError, match=words):
            select(plan, [bad])


def test_parse_ports():
    assert parse_ports(["80,81/udp"]) == [(80, "tcp"), (80, "udp"), (81, "udp")]
    assert parse_ports(["80/TCP", "80"]) == [(80, "tcp"), (80, "udp")]
    for bad in ("0", "65536", "http", "80/sctp", ""):
        with pytest.raises(KubevpcError):
            parse_ports([bad])


# ------------------------------------------------------------------------------------ flows
@pytest.mark.parametrize("mode", MODES)
def test_each_node_gets_the_policy_flows_of_its_own_pods(tmp_path, mode):
    plan = plan_with(tmp_path, DENY_X, policy("y", "from-x", {"podSelector": {"matchLabels": {"pod": "b"}},
                                                             "ingress": [{"from": [{"namespaceSelector": {
                                                                 "matchLabels": {"ns": "x"}}}]}]}), mode=mode)
    compiled = compile_plan(plan)
    t_in = NODE.table("ingress_policy")
    for node in plan.nodes:
        flows = compiled[node.bridge].flows
        assert [f for f in node_policy_flows(plan, node.name) if f not in flows] == []
        drops = {dict(f.match).get("reg2") for f in flows if f.table == t_in and f.priority == 100}
        local_x = {int(__import__("ipaddress").IPv4Address(h.ip)) for h in plan.pods
                   if h.node == node.name and h.namespace == "x"}
        assert local_x <= drops, node.name           # every x pod of this node is isolated here, and only here
        assert len(drops) == len(local_x) + (1 if node.name == "node-2" else 0)   # y/b is on node-2
    counts = policy_flow_counts(plan.network_policies, [f for fs in compiled.values() for f in fs.flows])
    assert counts["x/deny"] == 0 and counts["y/from-x"] == 3 + 1 + 1 and counts[SHARED] > 0


def test_lab_checks_objects_before_touching_anything():
    with pytest.raises(KubevpcError, match="only Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods, "
                       "Deployments, StatefulSets, DaemonSets and ConfigMaps can be applied while the scenario runs, not "
                       "network.alibabacloud.com/v1beta1/PodNetworking"):
        parse_objects([{"apiVersion": "network.alibabacloud.com/v1beta1", "kind": "PodNetworking",
                        "metadata": {"name": "p"}}])
    with pytest.raises(KubevpcError, match="Pod p is invalid: spec: required key is missing"):
        parse_objects([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}])
    with pytest.raises(KubevpcError, match=r"NetworkPolicy p is invalid: spec.ingress\[0\].ports\[0\]"):
        parse_objects([policy("x", "p", {"ingress": [{"ports": [{"port": "Not_A_Name"}]}]})])
    [m] = parse_objects([copy.deepcopy(DENY_X)])
    assert m.obj.key == "x/deny" and m.file == "<api>"


def test_more_rules_than_the_flows_can_hold_are_refused(tmp_path, monkeypatch):
    import kubevpc.k8s as k8s
    monkeypatch.setattr(k8s, "MAX_RULES_PER_POLICY", 2)
    monkeypatch.setattr(k8s, "MAX_RULES_PER_DIRECTION", 3)
    data = scenario()
    data["manifests"] += [policy("x", "three", {"podSelector": {}, "ingress": [{}, {}, {}]}),
                          policy("y", "two", {"podSelector": {}, "ingress": [{}, {}]})]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), "t")
    by = {p.path: p for p in info.value.problems}
    n = len(data["manifests"])
    assert "at most 2 ingress rules in one NetworkPolicy" in by[f"manifests[{n - 2}].spec.ingress"].expected
    assert by[f"manifests[{n - 1}].spec.ingress"].value == 5
    assert "all NetworkPolicies together" in by[f"manifests[{n - 1}].spec.ingress"].expected


def test_declared_checks_to_services():
    from kubevpc.evaluator.checks import declared_checks
    plan = make_plan(load(str(DEMO)), "t")
    by = {(c.source, c.dest): c for c in declared_checks(plan)}
    allow = by[("pod/y/b", "svc/x/svc-a")]
    assert allow.expect and allow.port == 80 and "via pod/x/a:80" in allow.reason
    deny = by[("pod/z/b", "svc/x/svc-a")]
    assert not deny.expect and "NetworkPolicy" in deny.reason and "z/not-to-x" in deny.reason
    assert not by[("pod/x/b", "pod/x/a")].expect


def test_an_expectation_to_an_unknown_service_is_refused(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["expect"] = [{"from": "pod/y/b", "to": "svc/x/nope", "port": 80, "result": "allow"}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), "t")
    [p] = info.value.problems
    assert p.path == "expect[0].to" and p.value == "svc/x/nope" and "svc/<namespace>/<name>" in p.expected
