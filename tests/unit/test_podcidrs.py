"""Pod CIDR blocks added in vpc-route mode (scenarios/podcidrs.yaml): nodes beyond podCIDR's room
take their node CIDR from cluster.additionalPodCIDRs, in order; the VPC routes each, the node
bridges send pods' traffic to every block through the vRouter unmasqueraded, and the evaluator
agrees; exhaustion names every block and what was asked; other modes refuse with the clouds'
reasons. Expected values by hand."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from controller.pipeline import NODE
from kubevpc.errors import ScenarioError
from kubevpc.evaluator.reach import reach
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from .netsim import Network
from .problems import check, line_of, the
from .test_services import write

DATA = Path(__file__).resolve().parents[2] / "scenarios" / "podcidrs.yaml"
RUN = "kvpc"


def base() -> dict:
    return yaml.safe_load(DATA.read_text())


def refused(tmp_path: Path, data: dict, mode: str | None = None):
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), RUN)
    return info.value.problems, path, path.read_text()


def test_nodes_beyond_the_first_blocks_room_take_the_next_block():
    plan = make_plan(load(str(DATA)), RUN)
    assert [(n.name, n.pod_cidr, n.gateway) for n in plan.nodes] == [
        ("node-1", "10.244.0.0/24", "10.244.0.1"), ("node-2", "10.244.1.0/24", "10.244.1.1"),
        ("node-3", "10.250.0.0/24", "10.250.0.1")]
    assert plan.host("pod/default/web-2").ip == "10.250.0.2"
    assert plan.cluster.pod_cidrs == ("10.244.0.0/23", "10.250.0.0/24")
    routes = {(r.destination, r.next_hop) for r in plan.vpcs[0].routes if r.kind == "pod"}
    assert routes == {("10.244.0.0/24", "node-1"), ("10.244.1.0/24", "node-2"), ("10.250.0.0/24", "node-3")}


def test_pods_reach_every_block_through_the_vrouter_unmasqueraded():
    plan = make_plan(load(str(DATA)), RUN)
    route = NODE.table("route")
    for node in plan.nodes:
        kept = {dict(f.match).get("ipv4_dst") for f in compile_plan(plan)[node.bridge].flows
                if f.table == route and f.priority == 105}
        net = lambda c: (str(ipaddress.IPv4Network(c).network_address), str(ipaddress.IPv4Network(c).netmask))  # noqa: E731
        assert kept == {net("192.168.0.0/16"), net("10.244.0.0/23"), net("10.250.0.0/24")}, node.name
    net = Network(plan)
    for src, dst in (("pod/default/web-0", "pod/default/web-2"), ("pod/default/web-2", "pod/default/web-1"),
                     ("ecs/ecs-client", "pod/default/web-2")):
        ends = net.send(plan.host(src), plan.host(dst).ip, 80)
        got = [e for e in ends if e.kind == "delivered" and e.host == dst]
        assert got and got[0].packet["ipv4_src"] == plan.host(src).ip, [str(e) for e in ends]
        assert reach(plan, plan.host(src), plan.host(dst), 80).allowed


def test_too_little_room_names_every_block_and_what_was_asked(tmp_path):
    data = base()
    data["cluster"]["podCIDR"] = "10.244.0.0/24"      # one node CIDR in each block: two for three nodes
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "cluster.additionalPodCIDRs"), path, ["10.244.0.0/24", "10.250.0.0/24"],
          line_of(text, "additionalPodCIDRs:"), "cluster.podCIDR 10.244.0.0/24 and cluster.additionalPodCIDRs[0] "
          "10.250.0.0/24 hold only 2", "node CIDRs of /24, the cluster has 3 nodes",
          "another in cluster.additionalPodCIDRs")
    # a node's own block full of pods is the per-node error, naming it
    data = base()
    data["cluster"]["nodeCIDRMaskSize"] = 28
    data["manifests"][0]["spec"]["replicas"] = 3 * 14
    problems, path, text = refused(tmp_path, data)
    assert any("node-3's pod CIDR 10.244.0.32/28 is exhausted (13 pods)" in p.expected for p in problems)


def test_blocks_that_overlap_are_refused(tmp_path):
    data = base()
    data["cluster"]["additionalPodCIDRs"] = ["10.244.1.0/24", "192.168.9.0/24", "172.21.0.0/24"]
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "cluster.additionalPodCIDRs[0]"), path, "10.244.1.0/24", line_of(text, "10.244.1.0/24"),
          "overlaps cluster.podCIDR 10.244.0.0/23")
    check(the(problems, "cluster.additionalPodCIDRs[1]"), path, "192.168.9.0/24", line_of(text, "192.168.9.0/24"),
          "overlaps the VPC CIDR")
    check(the(problems, "cluster.additionalPodCIDRs[2]"), path, "172.21.0.0/24", line_of(text, "172.21.0.0/24"),
          "overlaps serviceCIDR")


@pytest.mark.parametrize("mode, words", [("vxlan", ("VPC network clusters", "container tunnel network")),
                                         ("eni", ("Terway takes pod addresses from vSwitches", "pod vSwitch"))])
def test_other_modes_refuse_more_blocks_with_the_clouds_reason(tmp_path, mode, words):
    problems, path, text = refused(tmp_path, base(), mode=mode)
    check(the(problems, "cluster.additionalPodCIDRs"), path, ["10.250.0.0/24"], line_of(text, "additionalPodCIDRs:"),
          "vpc-route mode only", *words)


def test_a_block_smaller_than_a_node_cidr_is_refused(tmp_path):
    data = base()
    data["cluster"]["additionalPodCIDRs"] = ["10.250.0.0/25"]
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "cluster.nodeCIDRMaskSize"), path, 24, line_of(text, "nodeCIDRMaskSize"),
          "at least as long as cluster.additionalPodCIDRs[0]'s /25")
