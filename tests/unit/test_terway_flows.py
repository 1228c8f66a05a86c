"""Terway's placement in the compiled flows (tests/e2e/data/terway.yaml, eni mode): a packet walked
through every bridge (tests/unit/netsim.py) reaches a pod behind its node's uplink to the pod's own
vSwitch, where that vSwitch applies the pod's security groups; the evaluator agrees, allow and deny
alike. So do the pod added behind an uplink attached while running, and a StatefulSet pod created
again with its fixed address."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubevpc.evaluator.reach import reach
from kubevpc.lab import changes
from kubevpc.planning import Plan, make_plan
from kubevpc.scenario.load import load

from .netsim import Network

DATA = Path(__file__).resolve().parents[1] / "e2e" / "data" / "terway.yaml"
RUN = "kvtf"
POOL2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "eni-config-pool", "namespace": "kube-system"},
         "data": {"eni_conf": json.dumps({"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]},
                                          "security_group": "sg-pool"})}}


def delivered(plan: Plan, net: Network, src: str, dst: str, port: int = 80) -> bool:
    """Whether the first packet of src -> dst:port reaches dst's namespace, and the evaluator says the same."""
    ends = net.send(plan.host(src), plan.host(dst).ip, port)
    got = any(e.kind == "delivered" and e.host == dst for e in ends)
    verdict = reach(plan, plan.host(src), plan.host(dst), port)
    assert got == verdict.allowed, f"{src} -> {dst}:{port}: flows {got}, evaluator {verdict.allowed} " \
        f"({verdict.reason}); " + "; ".join(map(str, ends))
    return got


@pytest.fixture(scope="module")
def grown() -> tuple[Plan, Plan]:
    """The scenario, and the same after eni-config-pool gained vsw-pool-2, pool scaled to 5, and
    db-0 deleted and created again."""
    ld = load(str(DATA))
    plan = make_plan(ld, RUN)
    [cm] = changes.parse_objects([POOL2])
    a = changes.replan(ld, plan, RUN, changes.applied(ld.manifests, [cm]), {}, {})
    b = changes.replan(a.loaded, a.plan, RUN, changes.scaled(a.loaded.manifests, "deploy/pool", 5), {}, {})
    manifests, deleted = changes.deleted(b.loaded.manifests, b.plan, "pod/default/db-0")
    c = changes.replan(b.loaded, b.plan, RUN, manifests, {}, {}, deleted=deleted, now=100.0)
    d = changes.replan(c.loaded, c.plan, RUN, c.loaded.manifests, {}, {}, now=101.0)
    assert d.plan.host("pod/default/db-0").ip == plan.host("pod/default/db-0").ip
    return plan, d.plan


def test_the_nodes_own_groups_apply_where_its_pods_vswitch_sees_them(grown):
    plan, _ = grown
    net = Network(plan)
    assert delivered(plan, net, "ecs/ecs-trusted", "pod/default/pool-0"), "sg-pool admits sg-trusted"
    assert not delivered(plan, net, "ecs/ecs-other", "pod/default/pool-0"), "twin: sg-pool drops the rest"
    assert not delivered(plan, net, "ecs/ecs-trusted", "pod/default/pool-0", 81), "twin: only port 80"
    assert delivered(plan, net, "ecs/ecs-other", "pod/default/web"), "eni-config's sg-pods admits the VPC"
    assert delivered(plan, net, "pod/default/web", "pod/default/pool-3") is False, "web is no member of sg-trusted"
    # the pool pod's packets leave node-3 for vsw-pool through the uplink to it, not the node's own
    node3 = plan.node("node-3")
    ends = net.send(plan.host("ecs/ecs-trusted"), plan.host("pod/default/pool-0").ip, 80)
    bridges = [b for e in ends for b, _ in e.path]
    assert plan.vswitch("vsw-pool").bridge in bridges and plan.vswitch("vsw-b").bridge not in bridges
    assert node3.bridge in bridges


def test_a_pod_behind_an_uplink_attached_while_running_and_a_recreated_fixed_pod(grown):
    _, plan = grown
    net = Network(plan)
    pod = plan.host("pod/default/pool-4")
    assert pod.vswitch == "vsw-pool-2"
    assert delivered(plan, net, "ecs/ecs-trusted", "pod/default/pool-4")
    assert not delivered(plan, net, "ecs/ecs-other", "pod/default/pool-4")
    assert delivered(plan, net, "pod/default/pool-4", "pod/default/web")
    assert delivered(plan, net, "ecs/ecs-other", "pod/default/db-0"), "the re-created db-0, at its fixed address"
    assert delivered(plan, net, "pod/default/pool-4", "pod/default/db-0")
