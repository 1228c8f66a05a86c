"""Pod-level security groups in eni mode (Terway's PodNetworking), end to end, with NetworkPolicy
on top. tests/e2e/data/podsg.yaml: api pods carry sg-db-clients, web pods the node's sg-nodes;
the pod vault has sg-locked and an address on its own vSwitch. Clients sit on other nodes than
their targets, so their traffic crosses the vSwitches where security groups are enforced."""
from __future__ import annotations

import ipaddress
import os

import pytest

from .conftest import lab_in_mode

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "podsg.yaml")
PORTS = [(80, "tcp"), (81, "tcp"), (5432, "tcp")]


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_mode(SCENARIO, "eni")


def matrix(lab):
    m = lab.matrix(["pods", "ecs"], PORTS)
    assert not m.differences, "\n".join(f"{c.source} -> {c.dest} {c.port}: expected {c.expected}, observed "
                                        f"{c.observed} ({c.outcome}); {c.reason}" for c in m.differences)
    return lambda s, d, port: m.cell(s if "/" in s else f"pod/default/{s}", d if "/" in d else f"pod/default/{d}",
                                     port).observed


def test_pod_networking_gives_pods_their_own_groups_and_vswitch(lab):
    assert lab.host("pod/default/api-1").security_groups == ("sg-db-clients",)
    assert lab.host("pod/default/web-1").security_groups == ("sg-nodes",)
    vault = lab.host("pod/default/vault")
    assert vault.security_groups == ("sg-locked",) and vault.vswitch == "vsw-pods"
    assert ipaddress.IPv4Address(vault.ip) in ipaddress.IPv4Network("192.168.8.0/24")


def test_group_to_group_rules_follow_the_pods_groups(lab):
    ok = matrix(lab)
    assert ok("api-1", "ecs/ecs-db", 5432) and ok("api-3", "ecs/ecs-db", 5432), "members of sg-db-clients"
    assert not ok("web-1", "ecs/ecs-db", 5432) and not ok("web-3", "ecs/ecs-db", 5432), "the node's group is not"
    assert ok("api-1", "vault", 80) and ok("api-3", "vault", 80)
    assert not ok("web-1", "vault", 80) and not ok("ecs/ecs-db", "vault", 80)


def test_drop_wins_over_accept_at_equal_priority(lab):
    ok = matrix(lab)
    assert not ok("api-1", "vault", 81) and not ok("web-3", "vault", 81)
    assert ok("vault", "vault", 81), "the server listens: only the security group stands in the way"


def test_networkpolicy_applies_on_top_of_security_groups(lab):
    lab.set_network_policies({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "vault-from-web", "namespace": "default"},
                              "spec": {"podSelector": {"matchLabels": {"role": "vault"}},
                                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}]}})
    try:
        ok = matrix(lab)
        assert not ok("api-1", "vault", 80), "the security group accepts, NetworkPolicy does not"
        assert not ok("web-1", "vault", 80), "NetworkPolicy accepts, the security group does not"
        assert ok("api-1", "ecs/ecs-db", 5432), "unrelated paths unchanged"
    finally:
        lab.set_network_policies()
    ok = matrix(lab)
    assert ok("api-1", "vault", 80)
