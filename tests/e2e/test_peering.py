"""scenarios/peering.yaml, the default scenario with its two VPCs peered (routes on both sides): the
twin of the default scenario's "different VPCs, which are not peered" refusal, which
tests/e2e/test_connectivity.py probes. In eni mode, where the pods hold vpc-prod addresses and the
peer VPC reaches them too; the other modes' routing through a peering is tests/e2e/test_routing.py's.
"""
from __future__ import annotations

import os

import pytest

from kubevpc.lab import Probe

from .conftest import assert_checks_pass, lab_in_mode, scenario_checks
from .test_services import client_ip

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "peering.yaml")


@pytest.fixture(scope="module", params=("eni",))
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)


def test_the_scenarios_checks_pass_and_the_evaluator_agrees(lab):
    checks, _ = scenario_checks(lab)
    other = [c for c in checks if "another VPC" in c.title or "ecs-other" in c.source]
    assert any(c.expect for c in other) and any(not c.expect for c in other)
    assert_checks_pass(lab, checks)


def test_peered_the_other_vpc_reaches_pods_and_the_database_as_security_groups_allow(lab):
    other = lab.address("ecs/ecs-other")
    got = lab.probe([Probe("ecs/ecs-other", "pod/default/web-1", 8080), Probe("ecs/ecs-other", "ecs/ecs-db", 5432),
                     Probe("ecs/ecs-other", "ecs/ecs-db", 6379), Probe("pod/default/web-0", "ecs/ecs-other", 80)],
                    timeout=1.0)
    assert [(r.outcome, client_ip(r)) for r in got] == [
        ("answered", other), ("answered", other), ("timeout", ""), ("answered", lab.address("pod/default/web-0"))]
