"""Custom route tables and VPC peering connections (scenarios/route-tables.yaml and
scenarios/peering.yaml): planning and its refusals, the vRouter's flows walked with
tests/unit/netsim.py (the first packet there, and a reply back) against the evaluator, and the
table the evaluator names."""
from __future__ import annotations

import pytest
import yaml

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import reach
from kubevpc.planning import Plan, make_plan, resolve_endpoint
from kubevpc.scenario.load import load

from .netsim import Network
from .plans import E2E_DATA, MODES, REPO, plan_of
from .problems import check, line_of, the
from .test_validation import refuse, write

ROUTING = REPO / "scenarios" / "route-tables.yaml"
PEERING = REPO / "scenarios" / "peering.yaml"


# ============================================================================ flows and evaluator
def connects(plan: Plan, net: Network, src: str, dst: str, port: int) -> tuple[bool, str, list]:
    """What the flows do with a connection: its first packet delivered to dst's server port, and a
    reply from there delivered back to whoever the server saw (the source, or its node when SNATed);
    (connected, the address the server saw, the ends of both walks)."""
    s, d = plan.network_host(resolve_endpoint(plan, src)), plan.network_host(resolve_endpoint(plan, dst))
    ends = net.send(s, d.ip, port)
    there = [e for e in ends if e.kind == "delivered" and e.host == d.key and e.packet["ipv4_dst"] == d.ip]
    if not there:
        return False, "", ends
    seen = there[0].packet["ipv4_src"]
    home = s if seen == s.ip else plan.host(plan.node(s.node).ecs)
    back = net.send(d, seen, 40000, sport=port, reply=True)
    ok = any(e.kind == "delivered" and e.host == home.key for e in back)
    return ok, seen, ends + back


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", [ROUTING, PEERING], ids=["routing", "peering"])
def test_the_flows_agree_with_the_evaluator(scenario, mode):
    plan = plan_of(scenario, mode)
    assert_flows_agree(plan, [c for c in default_checks(plan) + declared_checks(plan) if c.proto == "tcp"])


def assert_flows_agree(plan: Plan, checks: list) -> None:
    """Each check, some allowed and some refused: the evaluator says what the scenario declares, and
    the flows connect it (with the client address the evaluator says) exactly when it is allowed."""
    net = Network(plan)
    assert any(c.expect for c in checks) and any(not c.expect for c in checks)
    for c in checks:
        v = reach(plan, resolve_endpoint(plan, c.source), resolve_endpoint(plan, c.dest), c.port)
        assert v.allowed == c.expect, f"{c.title}: the evaluator disagrees with the scenario: {c.reason}"
        ok, seen, ends = connects(plan, net, c.source, c.dest, c.port)
        assert ok == c.expect, f"{c.source} -> {c.dest}:{c.port}: flows {ok}, evaluator {c.reason}; " + \
            "; ".join(map(str, ends))
        if ok:
            assert seen == v.seen_source, (c.source, c.dest, seen, v.seen_source)


@pytest.mark.parametrize("mode", MODES)
def test_the_same_destination_from_a_vswitch_on_the_system_table_is_dropped_at_the_vrouter(mode):
    """The twin of rt-app's route to the peering: ecs-db's vSwitch routes by the system table,
    which has no route to vpc-b; and a reply to vsw-app2, which vpc-b does not route back."""
    plan = plan_of(ROUTING, mode)
    net, b = Network(plan), plan.host("ecs/ecs-b")
    ends = net.send(plan.host("ecs/ecs-db"), b.ip, 80)
    assert [(e.kind, e.path[-1][0], e.path[-1][1].table) for e in ends] == [("dropped", plan.vpcs[0].bridge, 20)]
    crossed = net.send(plan.host("ecs/ecs-app"), b.ip, 80)[0]
    assert (crossed.kind, crossed.host) == ("delivered", "ecs/ecs-b")
    assert [f.table for bridge, f in crossed.path if bridge == plan.vpcs[0].bridge] == [0, 21]
    assert [f.table for bridge, f in crossed.path if bridge == plan.vpcs[1].bridge] == [0, 20, 30]
    back = net.send(b, plan.host("ecs/ecs-app2").ip, 40000, sport=80, reply=True)
    assert [(e.kind, e.path[-1][0], e.path[-1][1].table) for e in back] == [("dropped", plan.vpcs[1].bridge, 20)]


def test_classify_loads_the_table_of_the_vswitch_and_a_peering_takes_only_its_vpc():
    plan = plan_of(ROUTING, "vpc-route")
    vpc = plan.vpcs[0]
    assert [(t.name, t.number, t.vswitches) for t in vpc.route_tables] == [
        ("rt-nodes", 1, ("vsw-n2",)), ("rt-app", 2, ("vsw-app", "vsw-app2"))]
    net = Network(plan)
    flows = net.tables[vpc.bridge]
    port = {v.name: v.vrouter_port for v in plan.vswitches}
    for vsw, number in (("vsw-n1", None), ("vsw-n2", 1), ("vsw-app", 2), ("vsw-app2", 2)):
        f = flows.lookup(0, {"eth_type": 0x0800, "in_port": port[vsw], "ipv4_dst": "172.16.1.1"})
        assert (f.actions[0].value if number else None) == number and f.actions[-1].table == (21 if number else 20)
    # from the peering: vpc-b may reach vpc-a's addresses, not its pods' CIDR (nor anything else)
    peering = plan.peerings[0]
    for dst, table in (("192.168.3.1", 20), ("10.244.0.2", None), ("198.18.0.1", None)):
        f = flows.lookup(0, {"eth_type": 0x0800, "in_port": peering.ofport, "ipv4_dst": dst})
        assert (f.actions[-1].table if f.actions else None) == table, (dst, f.to_ofctl())


def test_vpc_route_puts_pod_routes_in_the_system_table_and_the_tables_of_node_vswitches():
    plan = plan_of(ROUTING, "vpc-route")
    vpc = plan.vpcs[0]
    pods = lambda routes: [(r.destination, r.next_hop) for r in routes if r.kind == "pod"]  # noqa: E731
    want = [("10.244.0.0/24", "node-1"), ("10.244.1.0/24", "node-2")]
    assert pods(vpc.routes) == want
    assert [pods(t.routes) for t in vpc.route_tables] == [want, []]        # rt-nodes has node-2's vSwitch
    # every table holds every vSwitch's system route
    for t in vpc.route_tables:
        assert [r.destination for r in t.routes if r.kind == "system"] == [r.destination for r in vpc.routes
                                                                             if r.kind == "system"]
    # a pod CIDR routed by two tables to one node is one attachment (its node's security groups)
    owners = [a.owner for a in plan.attachments if a.owner.startswith("route/")]
    assert owners == ["route/10.244.0.0/24", "route/10.244.1.0/24"]
    for mode in ("vxlan", "eni"):
        assert not [r for t in plan_of(ROUTING, mode).vpcs[0].route_tables for r in t.routes if r.kind == "pod"]


def test_a_peering_is_a_patch_pair_between_the_two_vrouters():
    plan = plan_of(ROUTING, "vxlan", run="kv12ab")
    (p,) = plan.peerings
    assert (p.name, p.vpcs, p.ports, p.ofport) == ("pcx-ab", ("vpc-a", "vpc-b"), ("kv12abpc0a", "kv12abpc0b"), 200)
    ends = [next(port for port in plan.bridge(v.bridge).ports if port.ofport == 200) for v in plan.vpcs]
    assert [(e.name, e.kind, e.peer) for e in ends] == [("kv12abpc0a", "patch", "kv12abpc0b"),
                                                       ("kv12abpc0b", "patch", "kv12abpc0a")]
    assert [r.kind for r in plan.vpcs[1].routes] == ["system", "peering", "peering"]


# ============================================================================ the table named
def test_the_evaluator_and_explain_name_the_table_that_decided():
    plan = plan_of(ROUTING, "vpc-route")
    e = explain(plan, "ecs/ecs-app", "ecs/ecs-b", 80)
    texts = [s.text for s in e.steps if s.stage == "route"]
    assert e.allowed and "route table rt-app: route to peering connection 172.16.0.0/16 -> pcx-ab" in texts[0]
    assert texts[1].startswith("route table of vpc-b: system route 172.16.1.0/24")
    assert texts[2] == "replies: route table of vpc-b: route to peering connection 192.168.3.0/24 -> pcx-ab"
    # the twin from the system table, the one-sided peering, and rt-app without pod routes
    assert explain(plan, "ecs/ecs-db", "ecs/ecs-b", 80).reason.startswith(
        "route table of vpc-a has no route to 172.16.1.1 through peering connection pcx-ab (no entry for it)")
    assert "carries nothing without routes on both sides" in explain(plan, "ecs/ecs-app2", "ecs/ecs-b", 80).reason
    assert explain(plan, "ecs/ecs-app", "pod/web-0", 8080).reason == "route table rt-app: no entry for 10.244.0.2: dropped"
    assert explain(plan, "pod/web-0", "ecs/ecs-app", 80).reason == \
        "replies: route table rt-app: no entry for 10.244.0.2: dropped"
    ok = explain(plan, "pod/web-1", "pod/web-0", 8080)
    assert ok.allowed and "route table rt-nodes: pod route (vpc-route mode) 10.244.0.0/24 -> node-1" in \
        [s.text for s in ok.steps]


def test_peering_twin_of_the_default_scenarios_refusal():
    default = plan_of(REPO / "scenarios" / "default.yaml", "eni")
    peered = plan_of(PEERING, "eni")
    args = ("ecs/ecs-other", "pod/default/web-1", 8080)
    refused = explain(default, *args)
    assert not refused.allowed and "not peered" in refused.reason
    allowed = explain(peered, *args)
    assert allowed.allowed and allowed.reason.startswith("through peering connection pcx-prod-other")
    assert allowed.seen_source == peered.host("ecs/ecs-other").ip
    # security groups match the peer VPC by CIDR; the pods' CIDR is not the peer VPC's (vxlan)
    assert "sg-db" in explain(peered, "ecs/ecs-other", "ecs/ecs-db", 6379).reason
    assert "a pod address" in explain(plan_of(PEERING, "vxlan"), *args).reason


# ============================================================================ refusals
def scenario() -> dict:
    return yaml.safe_load(ROUTING.read_text())


def vpc(d: dict, name: str) -> dict:
    return next(v for v in d["cloud"]["vpcs"] if v["name"] == name)


def rt(d: dict, name: str) -> dict:
    return next(t for t in vpc(d, "vpc-a")["routeTables"] if t["name"] == name)


def test_a_vswitch_in_two_route_tables(tmp_path):
    d = scenario()
    rt(d, "rt-nodes")["vswitches"].append("vsw-app2")
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].vswitches[1]"), f, "vsw-app2",
          line_of(text, "- vsw-app2", after="name: rt-app"), "already associated with route table rt-nodes",
          "one custom route table at most")


@pytest.mark.parametrize("name", ["vsw-zz", "vsw-b"])
def test_a_route_table_names_a_vswitch_of_its_own_vpc(tmp_path, name):
    d = scenario()
    rt(d, "rt-app")["vswitches"] = [name]
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].vswitches[0]"), f, name, line_of(text, f"- {name}"),
          "no such vSwitch in VPC vpc-a", "vsw-n1")


def test_route_table_names_are_unique(tmp_path):
    d = scenario()
    rt(d, "rt-app")["name"] = "rt-nodes"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].name"), f, "rt-nodes",
          line_of(text, "name: rt-nodes", after="name: rt-nodes"), "duplicate route table name")


def test_a_custom_route_to_an_unknown_next_hop(tmp_path):
    d = scenario()
    rt(d, "rt-app")["routes"].append({"destination": "10.9.0.0/16", "nextHop": "ecs-fw"})
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].routes[1].nextHop"), f, "ecs-fw", line_of(text, "ecs-fw"),
          "ECS instance or a NAT gateway of VPC vpc-a", "peering connection")


def test_a_custom_route_inside_a_vswitch_or_twice_in_one_table(tmp_path):
    d = scenario()
    rt(d, "rt-app")["routes"] += [{"destination": "192.168.1.0/25", "nextHop": "node-1"},
                                  {"destination": "172.16.0.0/16", "nextHop": "pcx-ab"}]
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].routes[1].destination"), f, "192.168.1.0/25",
          line_of(text, "192.168.1.0/25"), "within vSwitch vsw-n1")
    check(the(problems, "cloud.vpcs[0].routeTables[1].routes[2].destination"), f, "172.16.0.0/16",
          line_of(text, "172.16.0.0/16", after="192.168.1.0/25"), "duplicate route destination")


def test_the_quota_of_each_table_counts_its_own_entries_and_names_it(tmp_path):
    d = scenario()
    rt(d, "rt-nodes")["quota"] = 2          # its peering route and the two pod CIDR routes of vpc-route mode
    plan_of_file = write(tmp_path, d)
    for mode in ("vxlan", "eni"):
        make_plan(load(str(plan_of_file), mode=mode), "kv")
    problems, f, text = refuse(tmp_path, d, mode="vpc-route")
    check(the(problems, "cloud.vpcs[0].routeTables[0].quota"), f, 2, line_of(text, "quota: 2"),
          "route table rt-nodes quota exceeded", "3 custom entries", "2 pod CIDR routes", "1 declared")


def test_a_declared_pod_cidr_clashes_only_in_a_table_with_pod_routes(tmp_path):
    d = scenario()
    rt(d, "rt-nodes")["routes"].append({"destination": "10.244.0.0/24", "nextHop": "node-1"})
    problems, f, text = refuse(tmp_path, d, mode="vpc-route")
    check(the(problems, "cloud.vpcs[0].routeTables[0].routes[1].destination"), f, "10.244.0.0/24",
          line_of(text, "10.244.0.0/24"), "pod CIDR of node node-1")
    d = scenario()
    rt(d, "rt-app")["routes"].append({"destination": "10.244.0.0/24", "nextHop": "node-1"})
    plan = make_plan(load(str(write(tmp_path, d)), mode="vpc-route"), "kv")
    assert [(r.kind, r.next_hop) for r in plan.vpcs[0].route_tables[1].routes if r.destination == "10.244.0.0/24"] \
        == [("custom", "node-1")]


@pytest.mark.parametrize("second, words", [("vpc-zz", ("no such VPC", "vpc-b")), ("vpc-a", ("the same VPC twice",))])
def test_a_peering_joins_two_vpcs_of_the_scenario(tmp_path, second, words):
    d = scenario()
    d["cloud"]["peerings"][0]["vpcs"] = ["vpc-a", second]
    problems, f, text = refuse(tmp_path, d)
    second_line = line_of(text, "vpcs:", after="peerings:") + 2          # vpcs: / - vpc-a / - <second>
    check(the(problems, "cloud.peerings[0].vpcs[1]"), f, second, second_line, *words)


def test_peered_vpcs_with_overlapping_cidrs_are_refused(tmp_path):
    d = scenario()
    vpc(d, "vpc-b").update(cidr="192.168.0.0/16", routeTable={"routes": []})
    vpc(d, "vpc-b")["vswitches"][0]["cidr"] = "192.168.9.0/24"
    for t in vpc(d, "vpc-a")["routeTables"]:
        t["routes"] = []
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.peerings[0].vpcs[1]"), f, "vpc-b", line_of(text, "- vpc-b", after="peerings:"),
          "overlaps vpc-a's (192.168.0.0/16)", "refuses to peer VPCs whose CIDR blocks overlap")


def test_one_peering_per_pair_unique_names_no_clash_with_next_hops(tmp_path):
    d = scenario()
    d["cloud"]["peerings"] += [{"name": "pcx-ba", "vpcs": ["vpc-b", "vpc-a"]},
                               {"name": "pcx-ab", "vpcs": ["vpc-a", "vpc-b"]},
                               {"name": "ecs-db", "vpcs": ["vpc-a", "vpc-b"]}]
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.peerings[1].vpcs"), f, ["vpc-b", "vpc-a"], line_of(text, "vpcs:", after="name: pcx-ba"),
          "already peered by pcx-ab")
    check(the(problems, "cloud.peerings[2].name"), f, "pcx-ab", line_of(text, "name: pcx-ab", after="name: pcx-ba"),
          "duplicate peering connection name")
    check(the(problems, "cloud.peerings[3].name"), f, "ecs-db", line_of(text, "name: ecs-db", after="peerings:"),
          "also the name of an ECS instance")


def test_a_route_through_a_peering_stays_inside_the_peer_vpc_of_a_peering_of_its_own(tmp_path):
    d = scenario()
    rt(d, "rt-app")["routes"][0]["destination"] = "172.0.0.0/8"
    d["cloud"]["vpcs"].append({"name": "vpc-c", "cidr": "10.10.0.0/16",
                               "vswitches": [{"name": "vsw-c", "cidr": "10.10.1.0/24"}],
                               "routeTable": {"routes": [{"destination": "172.16.0.0/16", "nextHop": "pcx-ab"}]}})
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTables[1].routes[0].destination"), f, "172.0.0.0/8",
          line_of(text, "172.0.0.0/8"), "outside vpc-b (172.16.0.0/16)", "not transitive")
    check(the(problems, "cloud.vpcs[2].routeTable.routes[0].nextHop"), f, "pcx-ab",
          line_of(text, "nextHop: pcx-ab", after="name: vpc-c"), "between vpc-a and vpc-b", "of VPC vpc-c")


# ============================================================================ to the internet
@pytest.mark.parametrize("mode", MODES)
def test_a_nat_gateway_route_in_a_custom_table_takes_only_that_tables_vswitches_out(tmp_path, mode):
    """tests/e2e/data/internet.yaml with its route to the NAT gateway moved from the system table to
    a custom table of vsw-a: vsw-a's sources (nodes, their pods) go out through the NAT gateway; an
    instance of vsw-b with an SNAT entry of its own does not (the edge translates only the sources
    of the tables that route to it); an EIP goes out whatever the table."""
    d = yaml.safe_load((E2E_DATA / "internet.yaml").read_text())
    v = d["cloud"]["vpcs"][0]
    v["routeTables"] = [{"name": "rt-out", "vswitches": ["vsw-a"], "routes": v["routeTable"]["routes"]}]
    v["routeTable"] = {"routes": []}
    plan = make_plan(load(str(write(tmp_path, d)), mode=mode), "kv")
    net, server = Network(plan), plan.host("inet/server")
    got = {}
    for src in ("ecs/node-1", "pod/default/client", "ecs/ecs-private", "ecs/bastion"):
        h = plan.network_host(resolve_endpoint(plan, src))
        v = reach(plan, h, server, 80)
        ends = net.send(h, server.ip, 80)
        flows = [e.packet["ipv4_src"] for e in ends if e.kind == "delivered" and e.host == server.key]
        assert bool(flows) == v.allowed and (not flows or flows[0] == v.seen_source), (src, v.reason, *map(str, ends))
        got[src] = v.allowed
    assert got == {"ecs/node-1": True, "pod/default/client": True, "ecs/ecs-private": False, "ecs/bastion": True}
    assert "rt-out" in " ".join(s.text for s in reach(plan, plan.host("ecs/node-1"), server, 80).steps)


def test_kubevpc_plan_lists_every_route_table_and_peering(capsys, monkeypatch):
    from kubevpc.cli import main
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", str(ROUTING), "--mode", "vpc-route"]) == 0
    out = capsys.readouterr().out
    rows = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "vpc-a rt-app (vsw-app, vsw-app2) 172.16.0.0/16 peering pcx-ab" in rows
    assert "vpc-a rt-nodes (vsw-n2) 10.244.0.0/24 pod node-1" in rows
    assert "vpc-b system 192.168.3.0/24 peering pcx-ab" in rows
    assert any(r.startswith("pcx-ab vpc-a <-> vpc-b") for r in rows)


@pytest.mark.parametrize("mode, key", [("vxlan", "podCIDR"), ("vpc-route", "podCIDR"), ("eni", "serviceCIDR")])
def test_a_peered_vpc_may_not_overlap_the_clusters_pod_or_service_cidr(tmp_path, mode, key):
    d = scenario()
    d["cluster"]["podCIDR"] = "172.16.0.0/16" if key == "podCIDR" else "10.244.0.0/16"
    d["cluster"]["serviceCIDR"] = "172.16.128.0/20" if key == "serviceCIDR" else "172.21.0.0/20"
    problems, f, text = refuse(tmp_path, d, mode=mode)
    value = d["cluster"][key]
    check(the(problems, f"cluster.{key}"), f, value, line_of(text, f"{key}: {value}"),
          "overlaps vpc-b (172.16.0.0/16)", "peering connection pcx-ab")
