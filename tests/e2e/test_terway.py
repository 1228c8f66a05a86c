"""Terway's fixed pod IPs, per-node network configuration and pod vSwitch expansion, end to end in
eni mode (the only mode with Terway; the others refuse tests/e2e/data/terway.yaml), on one lab:

- node-3's own ConfigMap (label terway-config) puts its pods on vsw-pool with sg-pool, which admits
  port 80 from sg-trusted only; the other nodes' pods carry eni-config's sg-pods;
- the StatefulSet db (a Fixed PodNetworking) keeps its addresses when its pods are deleted and
  created again, nobody answers at them while they are gone, and its Elastic twin cache does not;
- a fifth pool pod is refused while vsw-pool is full, and once vsw-pool-2 is added to node-3's
  ConfigMap it lands there, behind an uplink (ENI) attached while running.

Every allowed path has its refused twin, and the evaluator (lab.matrix) agrees with the probes.
"""
from __future__ import annotations

import json
import os

import pytest

from kubevpc.errors import ScenarioError
from kubevpc.evaluator.checks import declared_checks
from kubevpc.lab.checks import run_checks

from .conftest import lab_in_mode
from .test_services import resolve

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "terway.yaml")
POOL2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "eni-config-pool", "namespace": "kube-system"},
         "data": {"eni_conf": json.dumps({"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]},
                                          "security_group": "sg-pool"})}}
INTRUDER = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_mode(SCENARIO, "eni")


def matrix(lab, sources: list[str], dests: list[str]):
    """Probe every pair on port 80; the evaluator must agree with every probe. A lookup of what was observed."""
    m = lab.matrix(sources, [(80, "tcp")], dests, timeout=0.5)
    assert not m.differences, "\n".join(f"{c.source} -> {c.dest} {c.port}: expected {c.expected}, observed "
                                        f"{c.observed} ({c.outcome}); {c.reason}" for c in m.differences)
    return lambda s, d: m.cell(s, d, 80).observed


def answered_by(lab, source: str, dest: str, name: str) -> None:
    r = lab.connect(source, dest, 80)
    assert r.outcome == "answered" and r.answer["name"] == name, r.detail
    assert r.answer["client"].rsplit(":", 1)[0] == lab.address(source), "no NAT in eni mode"


def test_the_declared_checks_pass(lab):
    checks = declared_checks(lab.plan)
    assert any(c.expect for c in checks) and any(not c.expect for c in checks)
    failed = [f"{o.check.title}: expected {o.check.expect}, got {o.outcome}; {o.check.reason}"
              for o in run_checks(lab, checks, timeout=0.5) if not o.passed]
    assert not failed, "\n".join(failed)


def test_a_nodes_own_configuration_places_its_pods_and_their_security_group(lab):
    pool, web = lab.host("pod/default/pool-0"), lab.host("pod/default/web")
    assert (pool.node, pool.vswitch, pool.security_groups) == ("node-3", "vsw-pool", ("sg-pool",))
    assert (web.node, web.vswitch, web.security_groups) == ("node-1", "vsw-pods-a", ("sg-pods",))
    ok = matrix(lab, ["ecs/ecs-trusted", "ecs/ecs-other", "pod/default/web"],
                ["pod/default/pool-0", "pod/default/pool-3", "pod/default/web"])
    assert ok("ecs/ecs-trusted", "pod/default/pool-0") and ok("ecs/ecs-trusted", "pod/default/pool-3")
    assert not ok("ecs/ecs-other", "pod/default/pool-0"), "twin: sg-pool admits sg-trusted only"
    assert not ok("pod/default/web", "pod/default/pool-3"), "twin: nor a pod of another node"
    assert ok("ecs/ecs-other", "pod/default/web"), "eni-config's sg-pods admits the VPC"
    answered_by(lab, "ecs/ecs-trusted", "pod/default/pool-0", "pool-0")


def test_a_fixed_pod_keeps_its_address_when_deleted_and_created_again(lab):
    before = lab.address("pod/default/db-0")
    took = lab.delete("pod/default/db-0", grace_period=0)
    assert "recreated" in took, took
    assert lab.address("pod/default/db-0") == before
    answered_by(lab, "ecs/ecs-other", "pod/default/db-0", "db-0")
    got = resolve(lab, "pod/default/web", [("db-0.db", "A"), ("db-7.db.default.svc.cluster.local.", "A")])
    assert got["db-0.db/A"] == [before], "the governing Service's per-pod name"
    assert got["db-7.db.default.svc.cluster.local./A"] == "NXDOMAIN", "twin: no such pod"


def test_nobody_takes_a_fixed_address_while_its_pod_is_gone_and_the_elastic_twin_loses_its_own(lab):
    db = {p: lab.address(f"pod/default/{p}") for p in ("db-0", "db-1")}
    cache = lab.address("pod/default/cache-0")
    lab.scale("sts/db", 0, grace_period=0)
    lab.scale("sts/cache", 0, grace_period=0)
    try:
        assert {f.pod for f in lab.plan.fixed_ips if f.gone_since} == {"pod/default/db-0", "pod/default/db-1"}
        lab.apply(INTRUDER)
        assert lab.address("pod/default/intruder") == cache, "the lowest free address: cache's, not db's"
        assert lab.connect("ecs/ecs-other", db["db-0"], 80, timeout=0.5).outcome == "timeout", \
            "nobody answers at a held address"
        answered_by(lab, "ecs/ecs-other", cache, "intruder")
        lab.scale("sts/db", 2)
        lab.scale("sts/cache", 1)
        assert {p: lab.address(f"pod/default/{p}") for p in ("db-0", "db-1")} == db
        assert lab.address("pod/default/cache-0") not in (cache, *db.values()), "Elastic: whatever is free"
        ok = matrix(lab, ["ecs/ecs-other"], ["pod/default/db-0", "pod/default/db-1", "pod/default/cache-0",
                                              "pod/default/intruder"])
        assert all(ok("ecs/ecs-other", d) for d in ("pod/default/db-0", "pod/default/db-1", "pod/default/cache-0"))
        answered_by(lab, "ecs/ecs-other", db["db-1"], "db-1")
    finally:
        if "pod/default/intruder" in {h.key for h in lab.plan.pods}:
            lab.delete("pod/default/intruder", grace_period=0)


def test_a_pod_vswitch_added_while_running_takes_new_pods_once_the_old_is_full(lab):
    pods = {h.key for h in lab.plan.pods}
    with pytest.raises(ScenarioError, match=r"vSwitch vsw-pool \(192.168.30.0/29\) has no free address left for "
                                            r"pod default/pool-4"):
        lab.scale("deploy/pool", 5)
    assert {h.key for h in lab.plan.pods} == pods, "a refused change changes nothing"
    lab.apply(POOL2)
    assert {h.key for h in lab.plan.pods} == pods and lab.host("pod/default/pool-0").vswitch == "vsw-pool"
    lab.scale("deploy/pool", 5)
    try:
        new = lab.host("pod/default/pool-4")
        assert (new.vswitch, new.security_groups) == ("vsw-pool-2", ("sg-pool",))
        assert [u.vswitch for u in lab.plan.node("node-3").uplinks] == ["vsw-b", "vsw-pool", "vsw-pool-2"]
        ok = matrix(lab, ["ecs/ecs-trusted", "ecs/ecs-other", "pod/default/web", "pod/default/pool-4"],
                    ["pod/default/pool-4", "pod/default/web"])
        assert ok("ecs/ecs-trusted", "pod/default/pool-4"), "through the uplink attached while running"
        assert not ok("ecs/ecs-other", "pod/default/pool-4"), "twin: sg-pool there too"
        assert ok("pod/default/pool-4", "pod/default/web") and not ok("pod/default/web", "pod/default/pool-4")
        answered_by(lab, "ecs/ecs-trusted", "pod/default/pool-4", "pool-4")
    finally:
        lab.scale("deploy/pool", 4, grace_period=0)
    assert [u.vswitch for u in lab.plan.node("node-3").uplinks][-1] == "vsw-pool-2", "an ENI stays attached"
    assert lab.connect("ecs/ecs-trusted", "pod/default/pool-0", 80).outcome == "answered"


def test_no_controller_errors(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
