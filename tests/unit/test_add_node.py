"""Nodes added to a running scenario (kubevpc/lab/nodes.py, Lab.add_node, `kubevpc add-node`), as
scaling out a node pool does: planned as a node declared in the scenario would be, in each mode
(node CIDRs from podCIDR and then from cluster.additionalPodCIDRs, the route, the VXLAN peers,
Terway's uplinks), with everything that runs left as it is; the request checked with errors naming
what was asked and what was expected; exhaustion naming every block; the flows of the new node
walked beside the evaluator, with their refused twins; the control channel and the CLI.
Expected values by hand."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from kubevpc import cli
from kubevpc.control import diff, handle, request, summary
from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.evaluator.reach import reach
from kubevpc.lab import Lab, changes
from kubevpc.lab.nodes import ORIGIN, with_node
from kubevpc.planning import make_plan
from kubevpc.planning.bridges import DPID_BASE, _numbers
from kubevpc.scenario.load import load

from .netsim import Network
from .test_services import write

REPO = Path(__file__).resolve().parents[2]
EXPANSION = REPO / "scenarios" / "pod-cidr-expansion.yaml"
DEFAULT = REPO / "scenarios" / "default.yaml"
TERWAY = REPO / "scenarios" / "terway.yaml"
SERVICES = REPO / "tests" / "e2e" / "data" / "services.yaml"
RUN = "kvan"


def joined(path, mode: str | None = None, name: str = "node-3", vswitch: str = "vsw-b", **kwargs):
    """The running plan of a scenario, and the change that adds node `name` to it."""
    loaded = load(str(path), mode)
    plan = make_plan(loaded, RUN)
    change = changes.replan(with_node(loaded, plan, name, vswitch, **kwargs), plan, RUN, list(loaded.manifests), {}, {})
    return plan, change


def again(change, name: str, vswitch: str, **kwargs):
    """One more node added to the plan a change made."""
    loaded = with_node(change.loaded, change.plan, name, vswitch, **kwargs)
    return changes.replan(loaded, change.plan, RUN, list(loaded.manifests), {}, {})


def problems_of(path, mode=None, name="node-3", vswitch="vsw-b", **kwargs) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        joined(path, mode, name, vswitch, **kwargs)
    return [str(p) for p in info.value.problems]


# ------------------------------------------------------------------------------- planning
def test_vpc_route_a_node_takes_the_added_block_once_podcidr_is_full():
    plan, change = joined(EXPANSION)
    (node,) = change.nodes
    assert (node.name, node.ip, node.vswitch, node.pod_cidr, node.gateway) == (
        "node-3", "192.168.2.2", "vsw-b", "10.250.0.0/24", "10.250.0.1")
    assert [n.pod_cidr for n in plan.nodes] == ["10.244.0.0/24", "10.244.1.0/24"], "podCIDR was full"
    routes = {(r.destination, r.next_hop) for r in change.plan.vpcs[0].routes if r.kind == "pod"}
    assert routes == {("10.244.0.0/24", "node-1"), ("10.244.1.0/24", "node-2"), ("10.250.0.0/24", "node-3")}
    assert change.plan.host("ecs/node-3").security_groups == ("sg-nodes",), "the first node's groups"
    assert (change.added, change.removed, change.uplinks) == ([], [], [])
    assert "node-3" in change.loaded.scenario.cluster.nodes


def test_vpc_route_a_node_takes_podcidr_first_while_it_has_room(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    data["cluster"]["podCIDR"] = "10.244.0.0/22"
    _, change = joined(write(tmp_path, data))
    assert change.nodes[0].pod_cidr == "10.244.2.0/24"


def test_vxlan_the_other_nodes_gain_it_as_a_vxlan_peer():
    plan, change = joined(DEFAULT, "vxlan", "node-4", "vsw-i")
    new = change.plan.node("node-4")
    assert (new.pod_cidr, new.ip, new.bridge) == ("10.244.3.0/24", "192.168.2.2", f"{RUN}-n3")
    assert [(t.peer, t.remote_ip) for t in new.tunnels] == [
        ("node-1", "192.168.1.1"), ("node-2", "192.168.1.2"), ("node-3", "192.168.2.1")]
    for old in plan.nodes:
        now = change.plan.node(old.name)
        assert now.tunnels[:len(old.tunnels)] == old.tunnels
        assert [(t.peer, t.remote_ip, t.peer_pod_cidr) for t in now.tunnels[len(old.tunnels):]] == [
            ("node-4", "192.168.2.2", "10.244.3.0/24")]


def test_eni_the_new_node_gets_its_uplinks_as_terways_configuration_says():
    _, change = joined(TERWAY, None, "node-4", "vsw-b")
    assert [u.vswitch for u in change.nodes[0].uplinks] == ["vsw-b", "vsw-pods-b"]
    assert change.nodes[0].pod_cidr == ""
    _, change = joined(TERWAY, None, "node-4", "vsw-b", labels={"terway-config": "eni-config-db"})
    assert [u.vswitch for u in change.nodes[0].uplinks] == ["vsw-b", "vsw-db"], "its node pool's own ConfigMap"
    assert change.loaded.scenario.cluster.nodeLabels["node-4"] == {"terway-config": "eni-config-db"}


def _strip(flows) -> set[str]:
    return {re.sub(r"cookie=0x[0-9a-f]+,", "", f) for f in flows}


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route", "eni"])
def test_what_runs_keeps_its_hosts_numbers_ports_and_flows(mode):
    plan, change = joined(DEFAULT, mode, "node-4", "vsw-i")
    new = change.plan
    assert [h for h in new.hosts if h.key != "ecs/node-4"] == list(plan.hosts)
    for b in plan.bridges:
        now = new.bridge(b.name)
        assert (now.dpid, now.zone) == (b.dpid, b.zone), b.name
        assert now.ports[:len(b.ports)] == b.ports, b.name
    assert new.bridge(f"{RUN}-n3").dpid == DPID_BASE + len(plan.bridges) + 1, "numbered after every running bridge"
    before, after = compile_plan(plan), compile_plan(new)
    for b in plan.bridges:       # flows are added, none taken away (security group flows may get new cookies)
        assert _strip(before[b.name].ofctl()) <= _strip(after[b.name].ofctl()), b.name


def test_bridges_keep_their_numbers_and_new_ones_count_on():
    assert _numbers(["a", "b", "c"], {}) == [0, 1, 2]
    held = {"a": DPID_BASE + 1, "edge": DPID_BASE + 2, "b": DPID_BASE + 3}
    assert _numbers(["a", "b", "new", "edge"], held) == [0, 2, 3, 1]


def test_running_pods_stay_and_pods_created_later_may_land_on_it():
    plan, change = joined(EXPANSION)
    assert {h.key: (h.node, h.ip) for h in change.plan.pods} == {h.key: (h.node, h.ip) for h in plan.pods}
    scaled = changes.scaled(change.loaded.manifests, "deploy/web", 3)
    after = changes.replan(change.loaded, change.plan, RUN, scaled, {}, {})
    assert [(h.key, h.node, h.ip) for h in after.added] == [("pod/default/web-2", "node-3", "10.250.0.2")]
    assert {h.key: (h.node, h.ip) for h in after.plan.pods if h.key != "pod/default/web-2"} == \
        {h.key: (h.node, h.ip) for h in plan.pods}
    assert after.nodes == [], "the node joined in the change before"


def test_the_new_instance_keeps_the_address_it_was_given():
    _, change = joined(EXPANSION)
    ecs = next(e for e in change.loaded.scenario.cloud.instances if e.name == "node-3")
    assert str(ecs.ip) == "192.168.2.2"
    assert make_plan(change.loaded, RUN).node("node-3").ip == "192.168.2.2"


def test_when_every_block_is_full_the_error_names_each_block_its_mask_and_the_node():
    _, change = joined(EXPANSION)
    with pytest.raises(ScenarioError) as info:
        again(change, "node-4", "vsw-a")
    (problem,) = info.value.problems
    assert problem.path == "cluster.additionalPodCIDRs" and problem.value == ["10.244.0.0/23", "10.250.0.0/24"]
    for words in ("cluster.podCIDR 10.244.0.0/23 and cluster.additionalPodCIDRs[0] 10.250.0.0/24 hold only 3 node "
                  "CIDRs of /24", "the cluster has 4 nodes: node-4 gets no node CIDR",
                  "expected a larger block, or another in cluster.additionalPodCIDRs"):
        assert words in problem.expected, problem.expected
    # twin: the same node with a vxlan cluster whose podCIDR still has room joins
    plan, change = joined(DEFAULT, "vxlan", "node-4", "vsw-i")
    assert change.nodes[0].pod_cidr == "10.244.3.0/24"


def test_a_vxlan_podcidr_full_names_it_and_what_would_help(tmp_path):
    data = yaml.safe_load(DEFAULT.read_text())
    data["cluster"]["podCIDR"] = "10.244.0.0/22"      # four node CIDRs of /24: three nodes and one more
    path = write(tmp_path, data)
    _, change = joined(path, "vxlan", "node-4", "vsw-i")
    with pytest.raises(ScenarioError) as info:
        again(change, "node-5", "vsw-i")
    assert info.value.problems[0].expected == (
        "cluster.podCIDR 10.244.0.0/22 holds only 4 node CIDRs of /24, the cluster has 5 nodes: node-5 gets no node "
        "CIDR; expected a larger podCIDR or a longer cluster.nodeCIDRMaskSize")


def test_the_route_tables_quota_is_checked(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    data["cloud"]["vpcs"][0]["routeTable"] = {"quota": 2}       # node-1's and node-2's routes
    problems = problems_of(write(tmp_path, data))
    assert any("cloud.vpcs[0].routeTable.quota: 2: system route table quota exceeded: 3 custom entries needed "
               "(3 pod CIDR routes" in p for p in problems), problems


def test_a_full_vswitch_names_it_and_the_node(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    data["cloud"]["vpcs"][0]["vswitches"][1]["cidr"] = "192.168.2.0/29"     # four addresses
    data["cloud"]["instances"] += [{"name": f"vm-{i}", "vswitch": "vsw-b"} for i in range(3)]
    problems = problems_of(write(tmp_path, data))
    assert any("vSwitch vsw-b (192.168.2.0/29) has no free address left for instance node-3; expected a larger "
               "vSwitch CIDR" in p for p in problems), problems


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("path, mode, kwargs, want", [
    (EXPANSION, None, {"name": "node-1"}, "name: 'node-1': a node of the cluster has this name already; expected a "
                                          "new name"),
    (EXPANSION, None, {"name": "ecs-client"}, "name: 'ecs-client': an ECS instance has this name already"),
    (EXPANSION, None, {"name": "Node_3"}, "name: 'Node_3': expected a lowercase name of letters, digits and '-'"),
    (EXPANSION, None, {"vswitch": "nosuch"}, "vswitch: 'nosuch': no such vSwitch; expected a vSwitch of the "
                                             "cluster's VPC vpc: one of ['vsw-a', 'vsw-b']"),
    (DEFAULT, "vpc-route", {"vswitch": "vsw-other"}, "vswitch: 'vsw-other': vSwitch of VPC vpc-other; expected a "
                                                     "vSwitch of the cluster's VPC vpc-prod"),
    (EXPANSION, None, {"security_groups": ["sg-nodes", "sg-x"]}, "securityGroups[1]: 'sg-x': no such security group; "
                                                                 "expected one of ['sg-nodes', 'sg-pool']"),
    (DEFAULT, "vpc-route", {"vswitch": "vsw-i", "security_groups": ["sg-other"]},
     "securityGroups[0]: 'sg-other': security group of VPC vpc-other; expected one of the cluster's VPC vpc-prod: "
     "['sg-db', 'sg-nodes']"),
    (EXPANSION, None, {"ip": "192.168.1.10"}, "ip: '192.168.1.10': outside vSwitch vsw-b (192.168.2.0/24)"),
    (EXPANSION, None, {"ip": "192.168.2.253"}, "ip: '192.168.2.253': reserved address of 192.168.2.0/24"),
    (EXPANSION, None, {"ip": "192.168.2.1"}, "ip: '192.168.2.1': address held by ecs/ecs-client; expected a free "
                                             "address of vSwitch vsw-b"),
    (EXPANSION, None, {"ip": "192.168.2.300"}, "ip: '192.168.2.300': expected an IPv4 address like 10.0.1.10"),
    (EXPANSION, None, {"labels": {"bad key!": "x"}}, "labels: {'bad key!': 'x'}: label key 'bad key!' is not a valid "
                                                     "Kubernetes label key"),
])
def test_a_bad_request_names_what_was_asked_and_what_was_expected(path, mode, kwargs, want):
    args = {"name": "node-3", "vswitch": "vsw-b", **kwargs}
    problems = problems_of(path, mode, **args)
    assert any(p.startswith(f"{ORIGIN}: ") and want in p for p in problems), problems


def test_a_good_address_is_taken_as_given():
    _, change = joined(EXPANSION, ip="192.168.2.9")
    assert change.nodes[0].ip == "192.168.2.9"


def test_a_scenario_without_a_cluster_has_no_node_to_add(tmp_path):
    data = yaml.safe_load(EXPANSION.read_text())
    del data["cluster"], data["manifests"], data["expect"]
    loaded = load(str(write(tmp_path, data)))
    with pytest.raises(KubevpcError, match="this scenario has no cluster"):
        with_node(loaded, make_plan(loaded, RUN), "node-3", "vsw-b")


def test_a_change_that_would_renumber_a_running_node_is_refused():
    plan, change = joined(EXPANSION)
    with pytest.raises(KubevpcError, match="node node-3 would be removed"):
        changes.nodes_added(change.plan, plan)
    moved = change.plan.model_copy(update={"nodes": (change.plan.nodes[1], change.plan.nodes[0])})
    with pytest.raises(KubevpcError, match="node node-1 would change"):
        changes.nodes_added(change.plan, moved)


# ---------------------------------------------------------------------------------- flows
def _scaled():
    _, change = joined(EXPANSION, security_groups=["sg-pool"])
    after = changes.replan(change.loaded, change.plan, RUN, changes.scaled(change.loaded.manifests, "deploy/web", 3),
                           {}, {})
    return after.plan


def _delivered(net: Network, plan, src: str, dst: str, port: int, ip: str = "") -> list:
    ends = net.send(plan.host(src), ip or plan.host(dst).ip, port)
    return [e for e in ends if e.kind == "delivered" and e.host == dst]


def reached_unsnated(plan, pairs, port: int = 80) -> Network:
    """Each (source, destination) delivered with the source's own address, as the evaluator says."""
    net = Network(plan)
    for src, dst in pairs:
        got = _delivered(net, plan, src, dst, port)
        assert got and got[0].packet["ipv4_src"] == plan.host(src).ip, (src, dst)
        assert reach(plan, plan.host(src), plan.host(dst), port).allowed, (src, dst)
    return net


def test_the_new_nodes_pod_reaches_the_old_nodes_pods_and_back_as_the_evaluator_says():
    plan = _scaled()
    net = reached_unsnated(plan, (("pod/default/web-2", "pod/default/web-0"), ("pod/default/web-0", "pod/default/web-2"),
                                  ("pod/default/web-1", "pod/default/web-2"), ("ecs/ecs-client", "pod/default/web-2")))
    # twin: node-3's sg-pool admits podCIDR's pods on port 80 only; sg-nodes admits the added block's on any
    assert not _delivered(net, plan, "pod/default/web-0", "pod/default/web-2", 8080)
    assert not reach(plan, plan.host("pod/default/web-0"), plan.host("pod/default/web-2"), 8080).allowed
    assert _delivered(net, plan, "pod/default/web-2", "pod/default/web-0", 8080)
    assert reach(plan, plan.host("pod/default/web-2"), plan.host("pod/default/web-0"), 8080).allowed
    assert _delivered(net, plan, "ecs/ecs-client", "pod/default/web-2", 8080), "sg-pool admits the VPC"


def test_a_cluster_ip_reaches_the_new_nodes_pod():
    plan = _scaled()
    net = Network(plan)
    vip = plan.service("default/web").cluster_ip
    assert _delivered(net, plan, "pod/default/web-0", "pod/default/web-2", 80, vip)
    assert [e.name for e in plan.service("default/web").endpoints] == ["web-0", "web-1", "web-2"]
    assert not _delivered(net, plan, "pod/default/web-0", "pod/default/web-2", 81, vip), "a port it does not expose"


# ------------------------------------------------------------------------ control and CLI
@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab(str(SERVICES), run="kvut")


def test_the_control_channel_checks_an_add_node_request(lab):
    answer = handle(lab, request("add_node", "node-4", 5))
    assert (answer["ok"], answer["kind"]) == (False, "usage")
    assert answer["error"].startswith("bad arguments for add_node(name: str, vswitch: str, security_groups: ")
    assert answer["problems"] == ["vswitch: Input should be a valid string (got 5)"]
    answer = handle(lab, request("add_node", "node-4", "nosuch"))
    assert (answer["kind"], answer["error"]) == ("usage", "add_node: the change was rejected (1 problem(s)); "
                                                          "nothing changed")
    assert answer["problems"][0].startswith(f"{ORIGIN}: vswitch: 'nosuch': no such vSwitch")
    # twin: a good request gets past every check, to the lab, which is not up
    answer = handle(lab, request("add_node", "node-4", "vsw-b", security_groups=["sg-nodes"], labels={"pool": "b"}))
    assert (answer["ok"], answer["kind"], answer["error"]) == (False, "runtime", "add_node: the lab is not up")


def test_changes_list_the_node_that_joined():
    plan, change = joined(EXPANSION)
    assert diff(summary(plan), summary(change.plan)) == ["node/node-3: created on vsw-b, 192.168.2.2, pod CIDR "
                                                         "10.250.0.0/24"]


@pytest.mark.parametrize("argv, want", [
    (["add-node", "node-4", "--vswitch", "vsw-b"],
     {"run": None, "name": "node-4", "vswitch": "vsw-b", "ip": None, "security_groups": None, "labels": []}),
    (["add-node", "kvab", "node-4", "--vswitch", "vsw-b", "--ip", "192.168.2.9", "--security-group", "a",
      "--security-group", "b", "--label", "pool=b"],
     {"run": "kvab", "name": "node-4", "ip": "192.168.2.9", "security_groups": ["a", "b"], "labels": ["pool=b"]}),
    (["add-node", "--run", "kvab", "node-4", "--vswitch", "vsw-b", "--json"],
     {"run": None, "run_option": "kvab", "name": "node-4", "json": True}),
])
def test_add_node_arguments(argv, want):
    args = vars(cli.parser().parse_args(argv))
    assert {k: args[k] for k in want} == want


def test_add_node_needs_a_name_and_a_vswitch(capsys):
    for argv in (["add-node", "--vswitch", "vsw-b"], ["add-node", "node-4"]):
        with pytest.raises(SystemExit) as exc:
            cli.parser().parse_args(argv)
        assert exc.value.code == 2
    assert "usage: kubevpc add-node" in capsys.readouterr().err


def test_add_node_cli_errors(state, capsys):
    assert cli.main(["add-node", "kvab", "node-4", "--vswitch", "vsw-b", "--run", "kvcd"]) == cli.EXIT_USAGE
    assert "the run is named twice (kvab and --run kvcd)" in capsys.readouterr().err
    assert cli.main(["add-node", "node-4", "--vswitch", "vsw-b", "--label", "pool-"]) == cli.EXIT_USAGE
    assert "--label pool-: expected KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["add-node", "--run", "nosuch", "node-4", "--vswitch", "vsw-b"]) == cli.EXIT_RUNTIME
    assert "error: no run named nosuch on this machine" in capsys.readouterr().err


# ------------------------------------------------------------------------- the build side
class FakeBuilder:
    """What topologies/nodes.py asks of a Builder, recording the steps it is asked for; the
    commands go to `log` through a patched `sh`."""

    def __init__(self, plan, tmp_path, log: list):
        from types import SimpleNamespace
        from kubevpc.rundir import RunDir
        self.plan, self.log = plan, log
        self.ledger = SimpleNamespace(dir=str(tmp_path), record=lambda kind, *names, token="": log.append(
            ("record", kind, *names)))
        self.offloads = SimpleNamespace(link_mtu=9216)
        self.net = SimpleNamespace(datapath=SimpleNamespace(kind="netdev"), controller_target="unix:/run/kv.sock",
                                   rundir=RunDir(str(tmp_path)), hosts={}, servers={}, nodeservers={})
        for step in ("_namespaces", "_links", "_addresses", "_servers"):
            setattr(self, step, lambda hosts, step=step: log.append((step, *(h.key for h in hosts))))

    def _tunnels(self, nodes):
        self.log.append(("_tunnels", *(n.name for n in nodes if n.tunnels)))

    def _buffers(self, names):
        self.log.append(("_buffers", *names))


@pytest.fixture
def commands(monkeypatch):
    import topologies.nodes
    import topologies.uplinks
    log: list = []

    def sh(cmd, stdin=None, timeout=60, check=True):
        log.append(("sh", tuple(cmd), stdin))
        return ""
    for module in (topologies.nodes, topologies.uplinks):
        monkeypatch.setattr(module, "sh", sh)
    monkeypatch.setattr(topologies.uplinks, "no_ipv6", lambda names: log.append(("no_ipv6", *names)))
    return log


def _ovs(log) -> list[tuple]:
    return [entry[1] for entry in log if entry[0] == "sh" and entry[1][0] == "ovs-vsctl"]


def test_a_node_is_made_as_the_builder_makes_one_and_recorded_before_it_exists(tmp_path, commands):
    from topologies.build import bridge_command, ports_command
    from topologies.shell import vsctl_order
    from topologies.nodes import add_nodes, connect_bridges
    plan, change = joined(DEFAULT, "vxlan", "node-4", "vsw-i")
    node = change.nodes[0]
    builder = FakeBuilder(plan, tmp_path, commands)
    add_nodes(builder, change.plan, change.nodes)
    assert builder.plan is change.plan
    steps = [e[0] for e in commands if e[0] != "sh"]
    assert steps[:5] == ["_namespaces", "_links", "_addresses", "_tunnels", "record"]
    assert commands[0] == ("_namespaces", "ecs/node-4") and ("_tunnels", "node-4") in commands
    # the running nodes' VXLAN devices learn the new node's gateway MAC at its address
    fdb = next(e for e in commands if e[0] == "sh" and e[1][0] == "bridge")
    assert fdb[2] == "".join(f"fdb replace {node.gateway_mac} dev {RUN}x{k} dst {node.ip}\n" for k in range(3))
    # its bridge, as the builder's `bridges` step makes it (all but the controller), recorded first
    b = change.plan.bridge(node.bridge)
    up = {name for u in node.uplinks for name in (u.port, u.patch)}
    made = _ovs(commands)[0]
    assert list(made[2:]) == vsctl_order(bridge_command(b, "netdev", RUN) + ports_command(b.name, [
        p for p in b.ports if p.name not in up]))
    assert "set-controller" not in made and "datapath_type=netdev" in made and "fail_mode=secure" in made
    assert commands.index(("record", "bridge", node.bridge)) < commands.index(("sh", made, None))
    # its uplink: the veth pair recorded, then made; its four ports at their planned numbers
    (u,) = node.uplinks
    assert ("record", "link", u.port, u.peer) in commands
    ports = _ovs(commands)[1]
    for name, ofport in ((u.port, u.ofport), (u.peer, u.vswitch_ofport), (u.patch, u.patch_ofport),
                         (u.patch_peer, u.vswitch_patch_ofport)):
        assert ports[ports.index(name) + 5] == f"ofport_request={ofport}", name
    assert ("_buffers", change.plan.host("ecs/node-4").veth, f"{RUN}x3") in commands
    # connected only when asked, to the run's controller
    assert not any("set-controller" in c for c in _ovs(commands))
    connect_bridges(builder, change.nodes)
    assert _ovs(commands)[-1][2:] == ("--", "set-controller", node.bridge, "unix:/run/kv.sock", "--", "set",
                                      "controller", node.bridge, "max_backoff=1000")


def test_a_node_that_fails_half_way_is_taken_out_again(tmp_path, commands):
    from topologies.nodes import add_nodes
    plan, change = joined(EXPANSION)
    builder = FakeBuilder(plan, tmp_path, commands)

    def broken(names):
        raise RuntimeError("no buffers today")
    builder._buffers = broken
    removed = []
    import topologies.nodes
    with pytest.MonkeyPatch.context() as mp:       # the ledger's remove, which would touch the machine
        mp.setattr(topologies.nodes, "remove", lambda entries: removed.extend((e.kind, e.name) for e in entries))
        with pytest.raises(RuntimeError, match="no buffers today"):
            add_nodes(builder, change.plan, change.nodes)
    node = change.nodes[0]
    h = change.plan.host(node.ecs)
    assert builder.plan is plan, "the builder keeps its plan"
    assert {("bridge", node.bridge), ("link", h.veth), ("netns", h.netns), ("link", node.uplinks[0].port)} <= \
        set(removed)
    vsw = change.plan.vswitch("vsw-b").bridge
    assert ("--", "--if-exists", "del-port", vsw, node.uplinks[0].patch_peer) == _ovs(commands)[-1][-5:]
