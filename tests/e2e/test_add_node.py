"""A node pool scaled out while the scenario runs (Lab.add_node, `kubevpc add-node`), one lab per
mode: vpc-route with tests/e2e/data/addnode-route.yaml (podCIDR holds exactly node-1 and node-2,
so node-3 takes its node CIDR from the block in additionalPodCIDRs), vxlan and eni with
tests/e2e/data/addnode.yaml (the same cluster without the block). node-3 joins on vsw-b in sg-pool;
web is scaled to 3 so that web-2 lands on it. The new pod reaches the old nodes' pods and back, a
ClusterIP reaches it, and every probe has its refused twin (NetworkPolicy, and in vpc-route mode
sg-pool), with the evaluator agreeing on each. A fourth node in vpc-route mode finds every block
full; the run goes on. Then (vpc-route) a pod CIDR block is added while running (Lab.add_pod_cidr,
`kubevpc add-pod-cidr`, as CCE adds a container CIDR block): an overlapping one is refused with
nothing changed, 10.251.0.0/24 is taken with nothing that runs changed, and the same fourth node
joins with its node CIDR from it; web-3, scaled onto it, reaches web-0 and back unSNATed, with
NetworkPolicy's twin; vxlan and eni refuse the block with the loader's reasons (the test is then
skipped there). Teardown leaves nothing of the run, the nodes added while running included.
The tests run in order on one lab per mode."""
from __future__ import annotations

import collections
import ipaddress
import os
import subprocess

import pytest

from kubevpc.errors import ScenarioError
from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Lab, Probe
from kubevpc.lab.checks import run_checks
from kubevpc.ledger import Ledger

from .conftest import lab_in_mode
from .test_pods_runtime import leftovers
from .test_services import name

DATA = os.path.join(os.path.dirname(__file__), "data")
SCENARIOS = {"vpc-route": "addnode-route.yaml", "vxlan": "addnode.yaml", "eni": "addnode.yaml"}
CIDR = {"vpc-route": "10.250.0.0/24", "vxlan": "10.244.2.0/24", "eni": ""}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def lab(request):
    runs = lab_in_mode(os.path.join(DATA, SCENARIOS[request.param]), request.param)
    built = next(runs)
    yield built
    next(runs, None)
    assert leftovers(built.run) == [], "a node added while running must go at teardown too"


def agree(lab: Lab, probes: list[Probe], timeout: float = 1.0) -> list:
    """Probe, and hold every outcome to the evaluator's verdict (kubevpc explain)."""
    results = lab.probe(probes, timeout=timeout)
    for p, r in zip(probes, results):
        v = explain(lab.plan, p.source, p.dest, p.port)
        assert r.ok == v.allowed, f"{p}: {r.outcome} ({r.detail}), the evaluator says {v.allowed}: {v}"
    return results


def test_a_node_joins_with_the_next_free_node_cidr(lab):
    before = {h.key: (h.node, h.ip) for h in lab.plan.hosts}
    took = lab.add_node("node-3", vswitch="vsw-b", security_groups=["sg-pool"])
    assert took["datapath_s"] < 10, took
    node = lab.plan.node("node-3")
    assert node.pod_cidr == CIDR[lab.plan.cluster.mode], "vpc-route: from the added block, podCIDR being full"
    assert {h.key: (h.node, h.ip) for h in lab.plan.hosts if h.key in before} == before, "nothing that runs changed"
    if lab.plan.cluster.mode == "vpc-route":
        assert (node.pod_cidr, "node-3") in {(r.destination, r.next_hop) for r in lab.plan.vpcs[0].routes}
    st = lab.status()
    assert st["bridges"][node.bridge]["programmed"] and st["errors"] == [] and not st.get("refused"), st
    ports = subprocess.run(["ovs-vsctl", "list-ports", node.bridge], capture_output=True, text=True).stdout.split()
    assert {lab.plan.host(node.ecs).veth, node.uplinks[0].port} <= set(ports)
    recorded = {(e.kind, e.name) for e in Ledger(lab.run).entries()}
    assert {("bridge", node.bridge), ("netns", lab.plan.host(node.ecs).netns), ("link", node.uplinks[0].port)} <= recorded
    assert lab.connect("node/node-3", "pod/default/web-0", 80).ok, "the node reaches a pod of an old node"


def test_pods_created_afterwards_land_on_it_and_talk_to_the_old_nodes(lab):
    web0 = lab.host("pod/default/web-0")
    lab.scale("deploy/default/web", 3)
    assert (lab.host("pod/default/web-2").node, lab.host("pod/default/web-0")) == ("node-3", web0), "web-0 stays"
    if CIDR[lab.plan.cluster.mode]:
        assert ipaddress.IPv4Address(lab.address("pod/default/web-2")) in ipaddress.IPv4Network(CIDR[lab.plan.cluster.mode])
    got = agree(lab, [Probe("pod/default/web-2", "pod/default/web-0", 80),
                      Probe("pod/default/web-0", "pod/default/web-2", 80),
                      Probe("pod/default/web-1", "pod/default/web-2", 80),
                      Probe("node/node-1", "pod/default/web-2", 80)], timeout=2)
    assert all(r.ok for r in got), [r.detail for r in got]
    assert got[1].answer["client"].rsplit(":", 1)[0] == web0.ip, "the pod's own address, across nodes"
    # twins: NetworkPolicy web admits 80 and 9090 only
    got = agree(lab, [Probe("pod/default/web-0", "pod/default/web-2", 8080),
                      Probe("pod/default/web-2", "pod/default/web-0", 8080)])
    assert [r.outcome for r in got] == ["timeout", "timeout"]


def test_security_groups_apply_to_the_new_nodes_pods(lab):
    got = agree(lab, [Probe("pod/default/web-0", "pod/default/web-2", 9090),
                      Probe("pod/default/web-2", "pod/default/web-0", 9090)])
    if lab.plan.cluster.mode == "vpc-route":     # sg-pool admits podCIDR's pods on port 80 only
        assert [r.outcome for r in got] == ["timeout", "answered"]
    else:                                        # sg-pool admits the VPC: pods' addresses (eni), tunnels (vxlan)
        assert [r.outcome for r in got] == ["answered", "answered"]


def test_a_cluster_ip_reaches_the_pod_on_the_new_node(lab):
    results = agree(lab, [Probe("pod/default/web-1", "svc/default/web", 80)] * 30, timeout=2)
    assert {r.outcome for r in results} == {"answered"}, [r.detail for r in results if not r.ok]
    assert set(collections.Counter(name(r) for r in results)) == {"web-0", "web-1", "web-2"}
    # twin: a port the Service does not expose
    assert lab.connect("pod/default/web-1", "svc/default/web", 81, timeout=1).outcome != "answered"


def test_a_node_beyond_every_block_is_refused_and_the_run_goes_on(lab):
    plan = lab.plan
    mode = plan.cluster.mode
    if mode == "vpc-route":
        with pytest.raises(ScenarioError) as info:
            lab.add_node("node-4", vswitch="vsw-a")
        text = str(info.value)
        assert "cluster.podCIDR 10.244.0.0/23 and cluster.additionalPodCIDRs[0] 10.250.0.0/24 hold only 3 node CIDRs " \
               "of /24" in text and "node-4 gets no node CIDR" in text, text
    else:                                    # a name taken: refused as well, before anything is built
        with pytest.raises(ScenarioError, match="a node of the cluster has this name already"):
            lab.add_node("node-3", vswitch="vsw-a")
    assert lab.plan is plan and "node-4" not in lab.loaded.scenario.cluster.nodes
    assert not [n for n in leftovers(lab.run) if "node-4" in n or n.endswith("-n3")]
    got = agree(lab, [Probe("pod/default/web-2", "pod/default/web-1", 80),
                      Probe("pod/default/web-1", "pod/default/web-2", 8080)])
    assert [r.outcome for r in got] == ["answered", "timeout"]


BLOCK = "10.251.0.0/24"       # outside the VPC, serviceCIDR and both blocks of addnode-route.yaml
BLOCK_REFUSED = {"vxlan": "cluster.mode is vxlan: more pod CIDR blocks for vpc-route mode only (CCE adds container "
                          "CIDR blocks to VPC network clusters; a container tunnel network keeps the one it was "
                          "created with)",
                 "eni": "cluster.mode is eni: more pod CIDR blocks for vpc-route mode only: Terway takes pod addresses "
                        "from vSwitches"}


def test_a_pod_cidr_block_added_while_running_takes_the_fourth_node(lab):
    plan = lab.plan
    mode = plan.cluster.mode
    if mode != "vpc-route":
        with pytest.raises(ScenarioError) as info:
            lab.add_pod_cidr(BLOCK)
        assert BLOCK_REFUSED[mode] in str(info.value), str(info.value)
        assert lab.plan is plan and not lab.loaded.scenario.cluster.additionalPodCIDRs
        pytest.skip(f"a pod CIDR block is added in vpc-route mode only: {mode} refused it, as asserted")
    # twin first: a block that overlaps podCIDR is refused, and nothing changes
    with pytest.raises(ScenarioError, match=r"<add-pod-cidr>: cidr: '10.244.1.0/24': overlaps cluster.podCIDR "
                                            r"10.244.0.0/23; expected disjoint pod CIDR blocks"):
        lab.add_pod_cidr("10.244.1.0/24")
    assert lab.plan is plan
    took = lab.add_pod_cidr(BLOCK)
    assert took["pod_cidrs"] == ["10.244.0.0/23", "10.250.0.0/24", BLOCK] and took["datapath_s"] < 10, took
    now = lab.plan
    assert {h.key: (h.node, h.ip, h.veth) for h in now.hosts} == {h.key: (h.node, h.ip, h.veth) for h in plan.hosts}
    assert [(n.name, n.ip, n.bridge, n.pod_cidr) for n in now.nodes] == \
        [(n.name, n.ip, n.bridge, n.pod_cidr) for n in plan.nodes], "nothing that runs changed"
    assert [(b.name, b.dpid) for b in now.bridges] == [(b.name, b.dpid) for b in plan.bridges]
    assert now.vpcs[0].routes == plan.vpcs[0].routes, "a block adds no route: a node joining does"
    st = lab.status()
    assert st["errors"] == [] and not st.get("refused"), st
    # the fourth node, refused before, joins with a node CIDR of the block and its route
    lab.add_node("node-4", vswitch="vsw-a")
    node = lab.plan.node("node-4")
    assert node.pod_cidr == BLOCK
    assert (BLOCK, "node-4") in {(r.destination, r.next_hop) for r in lab.plan.vpcs[0].routes}
    assert lab.status()["bridges"][node.bridge]["programmed"]
    lab.scale("deploy/default/web", 4)
    web3 = lab.host("pod/default/web-3")
    assert web3.node == "node-4" and ipaddress.IPv4Address(web3.ip) in ipaddress.IPv4Network(BLOCK)
    got = agree(lab, [Probe("pod/default/web-3", "pod/default/web-0", 80),
                      Probe("pod/default/web-0", "pod/default/web-3", 80)], timeout=2)
    assert [r.outcome for r in got] == ["answered", "answered"], [r.detail for r in got]
    assert got[0].answer["client"].rsplit(":", 1)[0] == web3.ip, "the new block's pod is not SNATed in the VPC"
    assert got[1].answer["client"].rsplit(":", 1)[0] == lab.address("pod/default/web-0")
    # twin: NetworkPolicy web admits 80 and 9090 only
    got = agree(lab, [Probe("pod/default/web-0", "pod/default/web-3", 8080)])
    assert [r.outcome for r in got] == ["timeout"]


def test_the_scenarios_expectations_still_hold(lab):
    outcomes = run_checks(lab, declared_checks(lab.plan), timeout=1)
    assert all(o.passed for o in outcomes), [o.as_dict() for o in outcomes if not o.passed]


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == [] and not st.get("refused")
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
