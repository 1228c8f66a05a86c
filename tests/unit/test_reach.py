"""The reachability evaluator (kubevpc.evaluator.reach): the default scenario's own `expect:` list, and
truth tables for security groups and the pod network modes written from the specification.

Fixture tests/unit/data/reach.yaml names each instance after the rule it exercises."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubevpc.evaluator.reach import reach
from kubevpc.evaluator.verdict import Verdict
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan, resolve_endpoint

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.yaml"
REACH = DATA / "reach.yaml"
MODES = ("vxlan", "vpc-route", "eni")


# ------------------------------------------------------------------------------------- helpers
_plans: dict[tuple[str, str], Plan] = {}


def plan_of(path: Path, mode: str) -> Plan:
    if (str(path), mode) not in _plans:
        _plans[str(path), mode] = make_plan(load(str(path), mode=mode), "kv")
    return _plans[str(path), mode]


def with_routes(tmp_path: Path, source: Path, vpc: int, routes: list[dict], mode: str = "vxlan") -> Plan:
    """`source` with custom route entries added to one VPC's route table."""
    data = yaml.safe_load(source.read_text())
    data["cloud"]["vpcs"][vpc]["routeTable"] = {"routes": routes}
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path), mode=mode), "kv")


def verdict(plan: Plan, src: str, dst: str, port: int, proto: str = "tcp") -> Verdict:
    return reach(plan, resolve_endpoint(plan, src), resolve_endpoint(plan, dst), port, proto)


def allowed(plan: Plan, src: str, dst: str, port: int, proto: str = "tcp", seen: str | None = None) -> Verdict:
    v = verdict(plan, src, dst, port, proto)
    assert v.allowed, f"{src} -> {dst}:{port}/{proto} should be allowed: {v.reason}"
    assert v.reason
    assert v.seen_source == (seen if seen is not None else resolve_endpoint(plan, src).ip)
    return v


def denied(plan: Plan, src: str, dst: str, port: int, proto: str = "tcp", why: str = "") -> Verdict:
    v = verdict(plan, src, dst, port, proto)
    assert not v.allowed, f"{src} -> {dst}:{port}/{proto} should be denied: {v.reason}"
    assert v.seen_source == ""
    assert why.lower() in v.reason.lower(), v.reason
    return v


def _default_expectations() -> list:
    data = yaml.safe_load(DEFAULT.read_text())
    cases = []
    for i, e in enumerate(data["expect"]):
        for mode in e.get("modes") or MODES:
            cases.append(pytest.param(mode, e, id=f"{mode}-{i}-{e['from']}->{e['to']}:{e['port']}"))
    return cases


# ------------------------------------------------------------------------- the default scenario
@pytest.mark.parametrize("mode, expectation", _default_expectations())
def test_default_scenario_expectations(mode, expectation):
    plan = plan_of(DEFAULT, mode)
    v = verdict(plan, expectation["from"], expectation["to"], expectation["port"],
                expectation.get("protocol", "TCP"))
    assert v.allowed == (expectation["result"] == "allow"), v.reason
    assert v.reason


def test_default_expectations_cover_every_mode():
    """Each mode is checked against at least one allow and one deny of default.yaml."""
    for m in MODES:
        results = {p.values[1]["result"] for p in _default_expectations() if p.values[0] == m}
        assert results == {"allow", "deny"}, m


def test_plan_carries_the_expectations():
    plan = plan_of(DEFAULT, "eni")
    assert [(e["from"], e["to"], e["port"], e["result"]) for e in plan.expect][:2] == [
        ("pod/default/web-0", "ecs/ecs-db", 5432, "allow"), ("pod/default/web-0", "ecs/ecs-db", 6379, "deny")]


# --------------------------------------------------------------------------- security groups
@pytest.mark.parametrize("mode", MODES)
def test_different_vpcs_are_denied_even_when_groups_allow(mode):
    plan = plan_of(REACH, mode)
    denied(plan, "ecs/web-1", "ecs/b-1", 80, why="different VPCs")       # sg-b accepts everything
    denied(plan, "ecs/b-1", "ecs/web-1", 80, why="different VPCs")
    denied(plan, "pod/p1", "ecs/b-1", 80, why="different VPCs")


@pytest.mark.parametrize("mode", MODES)
def test_members_of_the_same_group_reach_each_other(mode):
    plan = plan_of(REACH, mode)
    v = allowed(plan, "ecs/app-1", "ecs/app-2", 12345)                   # sg-app has no rules at all
    assert "members of sg-app" in v.reason
    allowed(plan, "ecs/app-2", "ecs/app-1", 7, proto="udp")
    denied(plan, "ecs/web-1", "ecs/app-2", 12345, why="no rule of sg-app")  # not a member


@pytest.mark.parametrize("mode", MODES)
def test_rules_match_protocol_and_port(mode):
    plan = plan_of(REACH, mode)
    allowed(plan, "ecs/app-1", "ecs/web-1", 80)
    allowed(plan, "ecs/app-1", "ecs/web-1", 443)
    denied(plan, "ecs/app-1", "ecs/web-1", 80, proto="udp", why="udp/80")
    denied(plan, "ecs/app-1", "ecs/web-1", 81, why="tcp/81")


@pytest.mark.parametrize("mode", MODES)
def test_drop_beats_accept_at_equal_priority(mode):
    denied(plan_of(REACH, mode), "ecs/app-1", "ecs/eq-1", 8080, why="dropped by sg-eq (priority 5)")


@pytest.mark.parametrize("mode", MODES)
def test_priority_one_beats_priority_two(mode):
    plan = plan_of(REACH, mode)
    allowed(plan, "ecs/app-1", "ecs/prio-1", 9090)                       # accept 1 over drop 2
    denied(plan, "ecs/app-1", "ecs/prio-1", 9091, why="priority 1")      # drop 1 over accept 2


@pytest.mark.parametrize("mode", MODES)
def test_outbound_is_allowed_by_default_and_an_egress_drop_stops_it(mode):
    plan = plan_of(REACH, mode)
    allowed(plan, "ecs/out-1", "ecs/web-1", 80)                          # no egress rule for 80
    denied(plan, "ecs/out-1", "ecs/web-1", 443, why="egress of ecs/out-1 dropped by sg-egress")
    allowed(plan, "ecs/app-1", "ecs/web-1", 443)                         # the drop is out-1's alone


@pytest.mark.parametrize("mode", MODES)
def test_rule_with_a_group_as_peer(mode):
    plan = plan_of(REACH, mode)
    v = allowed(plan, "ecs/web-1", "ecs/db-1", 5432)                     # web-1 is in sg-web
    assert "sg-peer" in v.reason
    denied(plan, "ecs/app-1", "ecs/db-1", 5432, why="no rule of sg-peer")
    denied(plan, "ecs/web-1", "ecs/db-1", 5433)


@pytest.mark.parametrize("mode", MODES)
def test_a_host_reaches_itself(mode):
    allowed(plan_of(REACH, mode), "ecs/eq-1", "ecs/eq-1", 8080)


# --------------------------------------------------------------------------- pod network modes
def test_vxlan_pod_to_ecs_is_seen_as_its_node():
    plan = plan_of(REACH, "vxlan")
    node_ip = plan.node("node-1").ip
    allowed(plan, "pod/p1", "ecs/open-1", 80, seen=node_ip)
    # SNATed into the VPC CIDR, so a rule for the VPC CIDR lets it in
    allowed(plan, "pod/p1", "ecs/web-1", 80, seen=node_ip)


@pytest.mark.parametrize("mode", ["vpc-route", "eni"])
def test_vpc_route_and_eni_keep_the_pod_address(mode):
    plan = plan_of(REACH, mode)
    v = allowed(plan, "pod/p1", "ecs/open-1", 80)
    assert v.seen_source == plan.host("pod/default/p1").ip != plan.node("node-1").ip


def test_vpc_route_pod_address_is_outside_vpc_cidr_rules():
    # vpc-route keeps 172.20.x: sg-web's 10.0.0.0/16 rule does not cover it
    denied(plan_of(REACH, "vpc-route"), "pod/p1", "ecs/web-1", 80, why="from 172.20.0.2")
    # eni pods hold VPC addresses: it does
    allowed(plan_of(REACH, "eni"), "pod/p1", "ecs/web-1", 80)


@pytest.mark.parametrize("mode", MODES)
def test_pods_reach_pods_on_other_nodes(mode):
    plan = plan_of(REACH, mode)
    allowed(plan, "pod/p1", "pod/p2", 9000)
    allowed(plan, "pod/p2", "pod/p1", 9001)      # node security groups: members reach each other


@pytest.mark.parametrize("mode", MODES)
def test_same_node_traffic_skips_security_groups(mode):
    plan = plan_of(REACH, mode)
    v = allowed(plan, "ecs/node-1", "pod/p1", 9001)
    assert "same node" in v.reason


def test_vxlan_ecs_to_pod_needs_a_route():
    plan = plan_of(REACH, "vxlan")
    denied(plan, "ecs/open-1", "pod/p1", 9000, why="no VPC route")
    denied(plan_of(DEFAULT, "vxlan"), "ecs/ecs-db", "pod/shop/client", 9000, why="overlay address")


def test_vxlan_ecs_to_pod_with_a_custom_route_to_its_node(tmp_path):
    plan = with_routes(tmp_path, REACH, 0, [{"destination": "172.20.0.0/24", "nextHop": "node-1"}])
    allowed(plan, "ecs/open-1", "pod/p1", 9000)                          # sg-node: 9000 from the VPC
    denied(plan, "ecs/open-1", "pod/p1", 9001, why="no rule of sg-node")  # routed, but no SG rule
    denied(plan, "ecs/open-1", "pod/p2", 9000, why="no VPC route")       # p2's node has no route


def test_vxlan_default_scenario_with_a_custom_route(tmp_path):
    plan = with_routes(tmp_path, DEFAULT, 0, [{"destination": "10.244.0.0/24", "nextHop": "node-1"}])
    allowed(plan, "ecs/ecs-db", "pod/shop/client", 9000)                 # sg-nodes: 9000 from sg-db
    denied(plan, "ecs/ecs-db", "pod/default/web-0", 8080, why="sg-nodes")


def test_vxlan_custom_route_to_the_wrong_node(tmp_path):
    plan = with_routes(tmp_path, REACH, 0, [{"destination": "172.20.0.0/24", "nextHop": "node-2"}])
    denied(plan, "ecs/open-1", "pod/p1", 9000, why="node node-1")


def test_vxlan_route_lookup_is_longest_prefix(tmp_path):
    plan = with_routes(tmp_path, REACH, 0, [{"destination": "172.20.0.0/16", "nextHop": "node-2"},
                                            {"destination": "172.20.0.0/24", "nextHop": "node-1"}])
    allowed(plan, "ecs/open-1", "pod/p1", 9000)


def test_vxlan_route_order_does_not_matter_when_the_first_route_is_the_longest(tmp_path):
    # the same two routes, longest first: reach and the vRouter agree here
    plan = with_routes(tmp_path, REACH, 0, [{"destination": "172.20.0.0/24", "nextHop": "node-1"},
                                            {"destination": "172.20.0.0/16", "nextHop": "node-2"}])
    allowed(plan, "ecs/open-1", "pod/p1", 9000)
    allowed(plan, "ecs/open-1", "pod/p2", 9000)                          # the /16 leads to p2's node


@pytest.mark.parametrize("mode", ["vpc-route", "eni"])
def test_ecs_to_pod_without_routes_in_vpc_route_and_eni(mode):
    plan = plan_of(REACH, mode)
    allowed(plan, "ecs/open-1", "pod/p1", 9000)
    denied(plan, "ecs/open-1", "pod/p1", 9001, why="no rule of sg-node")
