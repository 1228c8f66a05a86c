"""End-to-end fixtures: the default scenario, up once per pod network mode, in real namespaces."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import pytest
import yaml

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.lab import Lab, Probe
from kubevpc.lab.checks import run_checks

MODES = ("vxlan", "vpc-route", "eni")
# KUBEVPC_E2E_SLOW=F stretches probe deadlines and timing bounds F times where a test uses slow():
# make vm-test sets it in a software-emulated (TCG) guest (kubevpc/vm/suite.py)
SLOW = float(os.environ.get("KUBEVPC_E2E_SLOW") or 1)


def slow(seconds: float) -> float:
    return seconds * SLOW
SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "default.yaml")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _needs_root_and_ovs():
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (run `make test` as root)", pytrace=False)
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode != 0:
        pytest.fail("Open vSwitch is not running: run scripts/install.sh", pytrace=False)


# what counts down by itself on a machine with DHCP or router advertisements (a VM's NIC):
# a route's "expires 1727sec", an address's "valid_lft 86325sec preferred_lft 86325sec"
LIFETIMES = re.compile(r" expires \d+sec| (valid|preferred)_lft \S+")


def root_state() -> tuple[str, str, str]:
    """The root namespace's routes (all tables), addresses and rules, without the lifetimes that
    change on their own (make vm-test found them in the guest: every lab "changed" the root)."""
    run = lambda *a: LIFETIMES.sub("", subprocess.run(["ip", *a], capture_output=True, text=True).stdout)  # noqa: E731
    return run("route", "show", "table", "all"), run("-o", "addr"), run("rule")


def lab_in_mode(scenario: str, mode: str):
    """A scenario up in one mode, down afterwards; root-namespace routes and addresses must not change."""
    before = root_state()
    lab = Lab(scenario, mode=mode)
    lab.up()
    yield lab
    lab.down()
    assert_root_unchanged(before)


def lab_of_doc(doc: dict, mode: str, prefix: str = "kubevpc-e2e-"):
    """A generated scenario (a document) up in one mode, as lab_in_mode; its file removed after."""
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix=prefix)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    try:
        yield from lab_in_mode(path, mode)
    finally:
        os.unlink(path)


@pytest.fixture(scope="module", params=MODES)
def mode_lab(request):
    """The default scenario in one mode."""
    yield from lab_in_mode(SCENARIO, request.param)


def assert_root_unchanged(before: tuple[str, str, str]) -> None:
    after = root_state()
    diff = [f"{'+' if line in set(a.splitlines()) else '-'} {line}" for b, a in zip(before, after)
            for line in sorted(set(b.splitlines()) ^ set(a.splitlines()))]
    assert not diff, "the root namespace's routes, addresses or rules changed:\n" + "\n".join(diff)


@pytest.fixture
def unprivileged_user():
    """A user made for one test (no home, no shell, no password) and removed after it: what a
    second, unprivileged user of the machine can do to a run."""
    import secrets
    name = "kvu" + secrets.token_hex(3)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], capture_output=True, timeout=30)      # if userdel left it


def as_user(user: str, cmd: list[str], stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A command run as that user, from / (it may not enter the checkout), without our environment."""
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin", *cmd], input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def scenario_checks(lab: Lab) -> tuple[list, list]:
    """The scenario's default and declared checks, and the declared ones alone, once the evaluator
    is found to agree with every verdict its `expect:` list declares."""
    declared = declared_checks(lab.plan)
    disagree = [c.reason for c in declared if c.reason.startswith("declared ")]
    assert not disagree, disagree            # the evaluator's own verdict is what the scenario declares
    return default_checks(lab.plan) + declared, declared


def assert_checks_pass(lab: Lab, checks: list, timeout: float = 1.0) -> None:
    failed = [(o.check.source, o.check.dest, o.check.port, o.outcome, o.client, o.why)
              for o in run_checks(lab, checks, timeout=timeout) if not o.passed]
    assert not failed, failed


def outcomes(lab: Lab, *probes: tuple, timeout: float = 1.0) -> list[tuple[str, str]]:
    """(outcome, the client address the server saw) of each probe (source, dest, port[, proto]),
    run together; a refused twin that times out needs no more than `timeout`."""
    got = lab.probe([Probe(*p) for p in probes], timeout=timeout)
    return [(r.outcome, (r.answer or {}).get("client", "").rsplit(":", 1)[0]) for r in got]
