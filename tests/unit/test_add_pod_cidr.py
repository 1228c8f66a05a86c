"""A pod CIDR block added to a running vpc-route cluster (kubevpc/lab/nodes.py with_pod_cidr,
Lab.add_pod_cidr, `kubevpc add-pod-cidr`), as CCE adds a container CIDR block to a VPC network
cluster: the block goes after cluster.additionalPodCIDRs, nothing that runs changes (hosts, ports,
bridge numbers, addresses, node CIDRs, routes), each node's flows gain the block among the pods'
CIDRs they route without SNAT, and the next node added takes its node CIDR from it. Every refusal
names the value and what was expected; vxlan and eni are refused with the loader's reasons. The new
node's pod walked through the flows beside the evaluator, with its refused twin; the control channel
and the CLI. Expected values by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from kubevpc import cli
from kubevpc.control import ControlServer, diff, handle, request, socket_path, summary
from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.evaluator.reach import reach
from kubevpc.lab import Lab, changes
from kubevpc.lab.nodes import BLOCK_ORIGIN, named_as_request, with_node, with_pod_cidr
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from .netsim import Network
from .test_add_node import _delivered, _strip, reached_unsnated
from .test_control import make_run
from .test_services import write

REPO = Path(__file__).resolve().parents[2]
EXPANSION = REPO / "scenarios" / "pod-cidr-expansion.yaml"
DEFAULT = REPO / "scenarios" / "default.yaml"
PEERING = REPO / "scenarios" / "peering.yaml"
SERVICES = REPO / "tests" / "e2e" / "data" / "services.yaml"
RUN = "kvpc"
BLOCK = "10.251.0.0/24"


def running(path=EXPANSION, mode: str | None = None):
    """A running scenario with node-3 added (the declared blocks full, in pod-cidr-expansion.yaml)."""
    loaded = load(str(path), mode)
    plan = make_plan(loaded, RUN)
    if path == EXPANSION:
        loaded = with_node(loaded, plan, "node-3", "vsw-b")
        change = changes.replan(loaded, plan, RUN, list(loaded.manifests), {}, {})
        loaded, plan = change.loaded, change.plan
    return loaded, plan


def added(loaded, plan, cidr: str = BLOCK):
    """The change that adds block `cidr`, its problems named as the request's."""
    with_block = with_pod_cidr(loaded, plan, cidr)
    with named_as_request(with_block):
        return changes.replan(with_block, plan, RUN, list(with_block.manifests), {}, {})


def refused(cidr: str, path=EXPANSION, mode: str | None = None) -> list[str]:
    loaded, plan = running(path, mode)
    with pytest.raises(ScenarioError) as info:
        added(loaded, plan, cidr)
    return [str(p) for p in info.value.problems]


# ------------------------------------------------------------------------------- planning
def test_the_block_goes_after_the_others_and_the_next_node_takes_its_node_cidr_from_it():
    loaded, plan = running()
    change = added(loaded, plan)
    assert change.loaded.scenario.cluster.additionalPodCIDRs[-1].compressed == BLOCK
    assert change.plan.cluster.pod_cidrs == ("10.244.0.0/23", "10.250.0.0/24", BLOCK)
    assert (change.nodes, change.added, change.removed, change.uplinks) == ([], [], [], [])
    # a fourth node, refused before the block (every block full), now joins with a node CIDR of it
    with pytest.raises(ScenarioError, match="node-4 gets no node CIDR"):
        with_node_change(loaded, plan)
    after = with_node_change(change.loaded, change.plan)
    (node,) = after.nodes
    assert (node.name, node.pod_cidr, node.gateway) == ("node-4", BLOCK, "10.251.0.1")
    routes = {(r.destination, r.next_hop) for r in after.plan.vpcs[0].routes if r.kind == "pod"}
    assert routes == {("10.244.0.0/24", "node-1"), ("10.244.1.0/24", "node-2"), ("10.250.0.0/24", "node-3"),
                      (BLOCK, "node-4")}


def with_node_change(loaded, plan, groups: list[str] | None = None):
    grown = with_node(loaded, plan, "node-4", "vsw-a", groups)
    return changes.replan(grown, plan, RUN, list(grown.manifests), {}, {})


def test_a_larger_block_serves_several_nodes_in_order(tmp_path):
    loaded, plan = running()
    change = added(loaded, plan, "10.252.0.0/23")
    first = with_node_change(change.loaded, change.plan)
    grown = with_node(first.loaded, first.plan, "node-5", "vsw-a")
    second = changes.replan(grown, first.plan, RUN, list(grown.manifests), {}, {})
    assert [n.pod_cidr for n in first.nodes + second.nodes] == ["10.252.0.0/24", "10.252.1.0/24"]


def test_nothing_that_runs_changes_but_the_blocks_and_their_flows():
    loaded, plan = running()
    change = added(loaded, plan)
    new = change.plan
    assert new.model_copy(update={"cluster": plan.cluster}) == plan, "only the cluster's blocks differ"
    assert new.cluster.model_copy(update={"additional_pod_cidrs": plan.cluster.additional_pod_cidrs}) == plan.cluster
    before, after = compile_plan(plan), compile_plan(new)
    assert set(after) == set(before)
    for name in before:
        gained = _strip(after[name].ofctl()) - _strip(before[name].ofctl())
        assert _strip(before[name].ofctl()) <= _strip(after[name].ofctl()), name
        if name in {n.bridge for n in plan.nodes}:      # each node routes the block's pods without SNAT
            (flow,) = gained
            assert "priority=105" in flow and "ipv4_dst=10.251.0.0/255.255.255.0" in flow, flow
        else:
            assert gained == set(), name


def test_changes_list_the_blocks():
    loaded, plan = running()
    change = added(loaded, plan)
    assert diff(summary(plan), summary(change.plan)) == [
        f"cluster/cluster: pod CIDR blocks 10.244.0.0/23, 10.250.0.0/24 -> 10.244.0.0/23, 10.250.0.0/24, {BLOCK}"]


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("cidr, want", [
    ("10.251.0.1/24", "expected an IPv4 CIDR with no host bits set, like 10.0.0.0/16 (10.251.0.1/24 has host bits set)"),
    ("nonsense", "expected an IPv4 CIDR with no host bits set, like 10.0.0.0/16"),
    ("2001:db8::/64", "expected an IPv4 CIDR with no host bits set"),
    ("10.251.0.0/25", "a /25 block cannot hold one node CIDR of /24 (cluster.nodeCIDRMaskSize); expected a prefix of "
                      "/24 or shorter"),
    ("192.168.9.0/24", "overlaps the VPC CIDR 192.168.0.0/16; expected a pod CIDR outside the VPC"),
    ("172.21.0.0/24", "overlaps serviceCIDR 172.21.0.0/20"),
    ("10.244.1.0/24", "overlaps cluster.podCIDR 10.244.0.0/23; expected disjoint pod CIDR blocks"),
    ("10.250.0.0/16", "overlaps cluster.additionalPodCIDRs[0] 10.250.0.0/24; expected disjoint pod CIDR blocks"),
])
def test_a_bad_block_names_its_value_and_what_was_expected(cidr, want):
    problems = refused(cidr)
    assert any(p.startswith(f"{BLOCK_ORIGIN}: cidr: {cidr!r}: ") and want in p for p in problems), problems


def test_a_block_the_loader_refuses_elsewhere_is_refused_too(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    data["cloud"]["internet"] = {"cidr": "198.18.0.0/24", "publicCIDR": "198.19.0.0/24"}
    problems = refused("198.18.0.0/16", write(tmp_path, data))
    assert any("cloud.internet.cidr: '198.18.0.0/24': overlaps cluster.additionalPodCIDRs (198.18.0.0/16)" in p
               for p in problems), problems


def test_a_peered_vpc_is_no_place_for_a_block():
    problems = refused("172.16.0.0/24", PEERING, "vpc-route")
    assert problems == [f"{BLOCK_ORIGIN}: cidr: '172.16.0.0/24': overlaps vpc-other (172.16.0.0/16), which peering "
                        "connection pcx-prod-other joins to the cluster's VPC; expected a pod CIDR block outside every "
                        "peered VPC"]
    # twin: outside both VPCs, the block is taken
    loaded, plan = running(PEERING, "vpc-route")
    assert added(loaded, plan, "10.251.0.0/24").plan.cluster.additional_pod_cidrs == ("10.251.0.0/24",)


def test_the_loader_refuses_a_declared_block_in_a_peered_vpc(tmp_path):
    data = yaml.safe_load(PEERING.read_text())
    data["cluster"].update(mode="vpc-route", podCIDR="10.244.0.0/24", nodeCIDRMaskSize=26,
                           additionalPodCIDRs=["172.16.8.0/24"])
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(write(tmp_path, data))), RUN)
    (problem,) = info.value.problems
    assert (problem.path, problem.value) == ("cluster.additionalPodCIDRs[0]", "172.16.8.0/24")
    assert problem.expected.startswith("overlaps vpc-other (172.16.0.0/16), which peering connection pcx-prod-other")


@pytest.mark.parametrize("mode, words", [
    ("vxlan", "cluster.mode is vxlan: more pod CIDR blocks for vpc-route mode only (CCE adds container CIDR blocks to "
              "VPC network clusters; a container tunnel network keeps the one it was created with)"),
    ("eni", "cluster.mode is eni: more pod CIDR blocks for vpc-route mode only: Terway takes pod addresses from "
            "vSwitches; expected none, and another pod vSwitch"),
])
def test_vxlan_and_eni_are_refused_with_the_loaders_reasons(mode, words):
    problems = refused(BLOCK, DEFAULT, mode)
    assert problems == [problems[0]] and problems[0].startswith(f"{BLOCK_ORIGIN}: cidr: {BLOCK!r}: {words}"), problems
    # twin: the same block in vpc-route mode is taken
    loaded, plan = running(DEFAULT, "vpc-route")
    assert added(loaded, plan).plan.cluster.additional_pod_cidrs == (BLOCK,)


def test_a_scenario_without_a_cluster_has_no_block_to_add(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    del data["cluster"], data["manifests"], data["expect"]
    loaded = load(str(write(tmp_path, data)))
    with pytest.raises(KubevpcError, match="this scenario has no cluster"):
        with_pod_cidr(loaded, make_plan(loaded, RUN), BLOCK)


# ---------------------------------------------------------------------------------- flows
def _scaled(groups: list[str] | None = None):
    """The block added, node-4 joined from it (in `groups`, default the first node's), web scaled
    to 4: web-3 on node-4."""
    loaded, plan = running()
    change = added(loaded, plan)
    joined = with_node_change(change.loaded, change.plan, groups)
    after = changes.replan(joined.loaded, joined.plan, RUN, changes.scaled(joined.loaded.manifests, "deploy/web", 4),
                           {}, {})
    assert [(h.key, h.node, h.ip) for h in after.added] == [("pod/default/web-2", "node-3", "10.250.0.2"),
                                                            ("pod/default/web-3", "node-4", "10.251.0.2")]
    return after.plan


def test_the_new_blocks_pod_reaches_an_old_nodes_pod_and_back_as_the_evaluator_says():
    reached_unsnated(_scaled(), (("pod/default/web-3", "pod/default/web-0"), ("pod/default/web-0", "pod/default/web-3"),
                                 ("pod/default/web-2", "pod/default/web-3"), ("ecs/ecs-client", "pod/default/web-3")))
    # twin: node-4 in sg-pool, which admits podCIDR's pods on port 80 only: web-0 reaches web-3 on
    # 80 and not on 8080, by the flows and by the evaluator
    plan = _scaled(["sg-pool"])
    net = Network(plan)
    for port, allowed in ((80, True), (8080, False)):
        assert bool(_delivered(net, plan, "pod/default/web-0", "pod/default/web-3", port)) is allowed, port
        assert reach(plan, plan.host("pod/default/web-0"), plan.host("pod/default/web-3"), port).allowed is allowed


def test_without_the_block_among_the_pods_cidrs_the_node_would_snat_it():
    """What the added route flow is for: the old nodes send web-3's block unSNATed only because
    the plan's cluster names it (a node whose plan lacks the block would SNAT, as to the internet)."""
    plan = _scaled()
    stale = plan.model_copy(update={"cluster": plan.cluster.model_copy(update={"additional_pod_cidrs": (
        "10.250.0.0/24",)})})
    got = _delivered(Network(stale), stale, "pod/default/web-0", "pod/default/web-3", 80)
    assert got[0].packet["ipv4_src"] == plan.node("node-1").ip, "SNATed to node-1"


# ------------------------------------------------------------------------ control and CLI
@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab(str(EXPANSION), run="kvpu")


def test_the_control_channel_checks_an_add_pod_cidr_request(lab):
    answer = handle(lab, request("add_pod_cidr", 5))
    assert (answer["ok"], answer["kind"]) == (False, "usage")
    assert answer["error"].startswith("bad arguments for add_pod_cidr(cidr: str)")
    answer = handle(lab, request("add_pod_cidr", "10.251.0.0/25"))
    assert (answer["kind"], answer["error"]) == ("usage", "add_pod_cidr: the change was rejected (1 problem(s)); "
                                                          "nothing changed")
    assert answer["problems"] == [f"{BLOCK_ORIGIN}: cidr: '10.251.0.0/25': a /25 block cannot hold one node CIDR of "
                                  "/24 (cluster.nodeCIDRMaskSize); expected a prefix of /24 or shorter"]
    # twin: a good request gets past every check, to the lab, which is not up; nothing changed
    answer = handle(lab, request("add_pod_cidr", BLOCK))
    assert (answer["ok"], answer["kind"], answer["error"]) == (False, "runtime", "add_pod_cidr: the lab is not up")
    assert lab.plan.cluster.additional_pod_cidrs == ("10.250.0.0/24",)


def fake_change(lab):
    """Lab._change as planning does it, nothing built: the plan and scenario follow the change."""
    def change(manifests, ready, labels, deadline, deleted, grace, loaded):
        done = changes.replan(loaded, lab.plan, lab.run, list(manifests), ready, {})
        lab.loaded, lab.plan = done.loaded, done.plan
        return {"flows_updated_s": 0.01, "datapath_s": 0.02}
    return change


def test_a_block_added_answers_the_blocks_and_the_change(monkeypatch, lab):
    monkeypatch.setattr(lab, "_change", fake_change(lab))
    loaded, plan = lab.loaded, lab.plan
    try:
        answer = handle(lab, request("add_pod_cidr", BLOCK))
    finally:
        lab.loaded, lab.plan = loaded, plan
    assert answer["ok"], answer
    assert answer["result"]["pod_cidrs"] == ["10.244.0.0/23", "10.250.0.0/24", BLOCK]
    assert answer["changes"] == [f"cluster/cluster: pod CIDR blocks 10.244.0.0/23, 10.250.0.0/24 -> 10.244.0.0/23, "
                                 f"10.250.0.0/24, {BLOCK}"]


def test_what_the_planner_refuses_is_a_usage_error_and_changes_nothing(monkeypatch, lab):
    monkeypatch.setattr(lab, "_change", fake_change(lab))
    plan = lab.plan
    answer = handle(lab, request("add_pod_cidr", "10.244.0.0/24"))
    assert (answer["kind"], answer["error"]) == ("usage", "add_pod_cidr: the change was rejected (1 problem(s)); "
                                                          "nothing changed")
    assert answer["problems"] == [f"{BLOCK_ORIGIN}: cidr: '10.244.0.0/24': overlaps cluster.podCIDR 10.244.0.0/23; "
                                  "expected disjoint pod CIDR blocks"]
    assert lab.plan is plan


@pytest.mark.parametrize("argv, want", [
    (["add-pod-cidr", BLOCK], {"run": None, "cidr": BLOCK, "run_option": None}),
    (["add-pod-cidr", "kvab", BLOCK, "-o", "json"], {"run": "kvab", "cidr": BLOCK, "output": "json"}),
    (["add-pod-cidr", "--run", "kvab", BLOCK], {"run": None, "run_option": "kvab", "cidr": BLOCK}),
])
def test_add_pod_cidr_arguments(argv, want):
    args = vars(cli.parser().parse_args(argv))
    assert {k: args[k] for k in want} == want


def test_add_pod_cidr_needs_a_block(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["add-pod-cidr"])
    assert exc.value.code == 2
    assert "usage: kubevpc add-pod-cidr" in capsys.readouterr().err


def test_add_pod_cidr_cli_errors(state, capsys):
    assert cli.main(["add-pod-cidr", "kvab", BLOCK, "--run", "kvcd"]) == cli.EXIT_USAGE
    assert "the run is named twice (kvab and --run kvcd)" in capsys.readouterr().err
    assert cli.main(["add-pod-cidr", "--run", "nosuch", BLOCK]) == cli.EXIT_RUNTIME
    assert "error: no run named nosuch on this machine" in capsys.readouterr().err


@pytest.fixture
def served(state):
    """A live run `kvpcs` serving the (unbuilt) vpc-route lab, and one `kvpcx` serving a vxlan one."""
    labs, servers = {}, []
    for run, path in (("kvpcs", EXPANSION), ("kvpcx", SERVICES)):
        make_run(run)
        labs[run] = Lab(str(path), run=run)
        servers.append(ControlServer(labs[run], socket_path(run), read_deadline=0.5).start())
    yield labs
    for server in servers:
        server.stop()


def test_add_pod_cidr_through_a_served_run(served, monkeypatch, capsys):
    assert cli.main(["add-pod-cidr", "kvpcs", "10.251.0.1/24"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "error: add_pod_cidr: the change was rejected (1 problem(s)); nothing changed" in err
    assert f"  {BLOCK_ORIGIN}: cidr: '10.251.0.1/24': expected an IPv4 CIDR with no host bits set" in err
    assert cli.main(["add-pod-cidr", "kvpcx", BLOCK]) == cli.EXIT_USAGE
    assert f"  {BLOCK_ORIGIN}: cidr: '{BLOCK}': cluster.mode is vxlan: more pod CIDR blocks for vpc-route mode only" \
        in capsys.readouterr().err
    # twin: a good block reaches the lab, which is not up (exit 3, a runtime error)
    assert cli.main(["add-pod-cidr", "kvpcs", BLOCK]) == cli.EXIT_RUNTIME
    assert "error: add_pod_cidr: the lab is not up" in capsys.readouterr().err
    # once the lab carries changes out: what the planner refuses exits 2, a good block is added
    monkeypatch.setattr(served["kvpcs"], "_change", fake_change(served["kvpcs"]))
    assert cli.main(["add-pod-cidr", "kvpcs", "10.244.0.0/24"]) == cli.EXIT_USAGE
    assert f"  {BLOCK_ORIGIN}: cidr: '10.244.0.0/24': overlaps cluster.podCIDR 10.244.0.0/23" in capsys.readouterr().err
    assert cli.main(["add-pod-cidr", "kvpcs", BLOCK]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"pod CIDR block {BLOCK} added (run kvpcs)" in out
    assert f"cluster/cluster: pod CIDR blocks 10.244.0.0/23, 10.250.0.0/24 -> 10.244.0.0/23, 10.250.0.0/24, {BLOCK}" \
        in out
    assert cli.main(["add-pod-cidr", "kvpcs", "10.252.0.0/24", "-o", "json"]) == cli.EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["run"] == "kvpcs" and answer["result"]["pod_cidrs"][-2:] == [BLOCK, "10.252.0.0/24"]
