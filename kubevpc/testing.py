"""pytest support for users' own tests: a `lab` fixture that brings a scenario up once per session.

    pytest --kubevpc-scenario my.yaml --kubevpc-mode eni tests/

    def test_db_reachable(lab):
        r = lab.connect("pod/default/web-0", "ecs/ecs-db", 5432)
        assert r.ok, r.outcome

Needs root and a running Open vSwitch, like `kubevpc run`.
"""
from __future__ import annotations

import os

import pytest

from .lab import Lab


def pytest_addoption(parser):
    group = parser.getgroup("kubevpc")
    group.addoption("--kubevpc-scenario", default=os.environ.get("KUBEVPC_SCENARIO", "scenarios/default.yaml"),
                    help="scenario file the `lab` fixture brings up (default scenarios/default.yaml)")
    group.addoption("--kubevpc-mode", default=os.environ.get("KUBEVPC_MODE") or None,
                    choices=(None, "vxlan", "vpc-route", "eni"), help="override the scenario's cluster.mode")


@pytest.fixture(scope="session")
def lab(request):
    """The user's scenario, up for the whole test session, torn down at its end."""
    if os.geteuid() != 0:
        pytest.skip("the lab fixture needs root (network namespaces and Open vSwitch)")
    the_lab = Lab(request.config.getoption("--kubevpc-scenario"), mode=request.config.getoption("--kubevpc-mode"))
    the_lab.up()
    yield the_lab
    the_lab.down()
