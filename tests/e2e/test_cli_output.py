"""Output for scripts and CI against real runs (issue 20): `check --junit` with `-v`, `matrix -o json
--junit` and `status -o yaml`, with tests/e2e/data/wrong-expectation.yaml (the default scenario in
vxlan mode, whose one declared expectation is false there: ecs/ecs-db cannot reach an overlay pod).

The output does not depend on the pod network mode, so one mode is enough: vxlan, the one where
the scenario's expectation fails. The module's lab serves its control channel to the `matrix` and
`status` commands, run as other processes; `check` builds a run of its own, as users run it in CI.
Every JUnit report is validated against the JUnit structure Jenkins reads
(tests/unit/data/junit-jenkins.xsd), has one case per check or cell, and the message of a case
that fails is the evaluator's reason; the evaluator is asked here too, and must agree.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
import yaml
from lxml import etree

from kubevpc.control import serve
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.matrix import expect
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from .conftest import lab_in_mode

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIO = os.path.join(TOP, "tests", "e2e", "data", "wrong-expectation.yaml")
XSD = os.path.join(TOP, "tests", "unit", "data", "junit-jenkins.xsd")
MODE = "vxlan"


def kubevpc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubevpc.cli", *args], capture_output=True, text=True, cwd=TOP,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def junit(path) -> etree._Element:
    """The report, parsed and valid against the JUnit schema."""
    root = etree.parse(str(path)).getroot()
    schema = etree.XMLSchema(etree.parse(XSD))
    assert schema.validate(root), schema.error_log
    return root


@pytest.fixture(scope="module")
def lab():
    runs = lab_in_mode(SCENARIO, MODE)
    lab = next(runs)
    server = serve(lab)
    assert server is not None, "the control channel must serve"
    try:
        yield lab
    finally:
        server.stop()
        next(runs, None)


def test_check_junit_has_a_case_per_check_and_the_failing_one_says_why(tmp_path):
    name = "ko" + secrets.token_hex(2)
    report = tmp_path / "check.xml"
    res = kubevpc("-v", "check", SCENARIO, "--mode", MODE, "--name", name, "--junit", str(report), "-o", "json")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    plan = make_plan(load(SCENARIO, mode=MODE), name)
    checks = default_checks(plan) + declared_checks(plan)
    root = junit(report)
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(checks) == len(doc["checks"]) and suite.get("tests") == str(len(checks))
    assert suite.get("failures") == "1" and suite.get("errors") == "0"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run"] == name and props["mode"] == MODE
    for check, case, reported in zip(checks, cases, doc["checks"]):
        assert case.get("name") == f"{check.title}: {check.source} -> {check.dest} {check.port}/{check.proto}"
        assert float(case.get("time")) == pytest.approx(reported["elapsed_ms"] / 1000, abs=0.002)
        failure = case.find("failure")
        if check.declared:              # the false expectation: refused, and the message is the reason
            assert failure is not None and not reported["connected"] and not reported["passed"]
            assert failure.get("message") == check.reason
            assert check.reason.startswith("declared allow; the evaluator says: ")
            assert failure.get("type") == "unexpected-refusal"
        else:                           # every other check passes, its reason as its output
            assert failure is None and reported["passed"], reported
            assert case.find("system-out").text == check.reason
    # the evaluator agrees that the declared path does not connect in vxlan mode ...
    allowed, _ = expect(plan, "ecs/ecs-db", "pod/default/web-1", 8080, "tcp")
    assert allowed is False
    # ... and -v showed the build's commands and the controller's own log
    assert "debug kubevpc.shell: $ ovs-vsctl" in res.stderr
    controller = [x for x in res.stderr.splitlines() if x.startswith("controller: ")]
    assert any("connected" in x for x in controller), res.stderr[-3000:]


def test_matrix_json_and_junit_agree_with_the_probes_and_the_evaluator(lab, tmp_path):
    report = tmp_path / "matrix.xml"
    res = kubevpc("matrix", lab.run, "--between", "pod/default/web-0,ecs/ecs-db",
                  "--to", "pod/default/web-1,ecs/ecs-db,ecs/ecs-other", "--ports", "8080/tcp,5432/tcp",
                  "--probe-timeout", "0.5", "-o", "json", "--junit", str(report), timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["run"] == lab.run and doc["differences"] == 0 and len(doc["cells"]) == 2 * 3 * 2
    root = junit(report)
    cases = list(root.iter("testcase"))
    assert len(cases) == len(doc["cells"]) and root.get("failures") == "0"
    for cell, case in zip(doc["cells"], cases):
        assert case.get("name") == f"{cell['source']} -> {cell['dest']} {cell['port']}/{cell['protocol']}"
        allowed, reason = expect(lab.plan, cell["source"], cell["dest"], cell["port"], cell["protocol"])
        assert (cell["expected"], cell["observed"], cell["reason"]) == (allowed, allowed, reason), cell
        assert case.find("system-out").text == reason and case.find("failure") is None
    cells = {(c["source"], c["dest"], c["port"]): c for c in doc["cells"]}
    # an allowed path and its denied twins, as probed, and as explain has them
    assert cells[("pod/default/web-0", "ecs/ecs-db", 5432)]["observed"] is True
    assert cells[("pod/default/web-0", "ecs/ecs-db", 8080)]["observed"] is False
    assert cells[("ecs/ecs-db", "pod/default/web-1", 8080)]["observed"] is False      # overlay: no route
    assert cells[("ecs/ecs-db", "ecs/ecs-db", 5432)]["observed"] is True               # to itself ...
    assert cells[("ecs/ecs-db", "ecs/ecs-db", 8080)]["observed"] is False              # ... where it listens
    assert explain(lab.plan, "ecs/ecs-db", "pod/default/web-1", 8080).allowed is False


def test_status_in_yaml_and_json_and_the_runs_list(lab):
    res = kubevpc("status", lab.run, "-o", "yaml", timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = yaml.safe_load(res.stdout)
    assert doc["run"] == lab.run and doc["mode"] == MODE and doc["file"] == lab.file
    bridges = doc["controller"]["bridges"]
    assert len(bridges) == len(lab.plan.bridges) and all(b["programmed"] for b in bridges.values())
    assert {s["key"] for s in doc["services"]} == {s.key for s in lab.plan.services}
    old = kubevpc("status", lab.run, "--json", timeout=60)          # the deprecated flag: same document
    assert old.returncode == 0 and "--json is deprecated" in old.stderr
    assert set(json.loads(old.stdout)) == set(doc)
    table = kubevpc("status", lab.run, timeout=60)
    assert table.stdout.startswith(f"run {lab.run}: ") and "Services" in table.stdout
    runs = json.loads(kubevpc("list", "-o", "json", timeout=60).stdout)["runs"]
    assert {"name": lab.run, "state": "running", "owner_pid": os.getpid()}.items() <= next(
        r for r in runs if r["name"] == lab.run).items()
