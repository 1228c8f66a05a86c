"""kubectl's input habits end to end, in one mode (vxlan), with tests/e2e/data/cli-input.yaml: the
Lab runs here and serves its control channel, and `kubevpc apply|delete` run in processes of their
own, as a user would run them, reading manifests from standard input and from files. What they
change is probed in the pods' namespaces and held to the evaluator (`kubevpc explain`); every
allowed path has a refused twin. The tests run in order: the Service that the first applies, the
second dry-runs a change of and the third deletes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from kubevpc.control import serve
from kubevpc.errors import KubevpcError
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks

from .conftest import lab_in_mode

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIO = os.path.join(os.path.dirname(__file__), "data", "cli-input.yaml")
NODES = ("node-1", "node-2")

WEB_IN = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-in"},
          "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
SA = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-in"}}
AGENT = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 9100}]}]}}}}


@pytest.fixture(scope="module")
def lab():
    runs = lab_in_mode(SCENARIO, "vxlan")
    lab = next(runs)
    server = serve(lab)                # the control channel the commands below talk to
    assert server is not None, "the control channel did not start"
    yield lab
    server.stop()
    next(runs, None)


def kubevpc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubevpc.cli", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, cwd=TOP, timeout=120)


def docs(*objects: dict) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def answered_by(lab, source: str, dest: str, port: int, count: int = 10) -> set[str]:
    results = lab.probe([Probe(source, dest, port)] * count)
    assert {r.outcome for r in results} == {"answered"}, [r.detail for r in results]
    return {r.answer["name"] for r in results}


def agrees(lab, source: str, dest: str, port: int, outcome: str) -> None:
    """The evaluator agrees with what was probed: it connects exactly when explain says so."""
    assert bool(explain(lab.plan, source, dest, port).allowed) == (outcome == "answered"), (dest, port, outcome)


def test_the_scenario_skips_what_does_not_touch_the_network_and_passes_its_checks(lab):
    assert [w.value for w in lab.loaded.warnings] == ["ServiceAccount/web", "ConfigMap/web-config"]
    outcomes = run_checks(lab, default_checks(lab.plan) + declared_checks(lab.plan))
    assert all(o.passed for o in outcomes), [(o.check.title, o.outcome, o.why) for o in outcomes if not o.passed]


def test_apply_from_standard_input_creates_a_service_that_answers(lab):
    res = kubevpc("apply", lab.run, "-f", "-", stdin=docs(SA, WEB_IN))
    assert res.returncode == 0, res.stderr
    assert "'ServiceAccount/web-in': skipped: does not affect the network" in res.stderr
    assert f"applied 1 object(s) from <stdin> (run {lab.run})" in res.stdout
    assert answered_by(lab, "pod/client", "svc/web-in", 80) <= {"web-0", "web-1"}
    agrees(lab, "pod/client", "svc/default/web-in", 80, "answered")
    # twin: a port the Service does not have is not served
    r = lab.connect("pod/client", "svc/web-in", 81, timeout=1)
    assert r.outcome != "answered", r.detail
    agrees(lab, "pod/client", "svc/default/web-in", 81, r.outcome)


def test_an_invalid_object_from_standard_input_changes_nothing(lab):
    bigger = {**WEB_IN, "spec": {**WEB_IN["spec"], "ports": WEB_IN["spec"]["ports"] + [
        {"name": "alt", "port": 81, "targetPort": "http"}]}}
    bad = {**WEB_IN, "metadata": {"name": "web-bad"}, "spec": {"ports": [{"port": 70000}]}}
    version = lab.status().get("plan_version")
    res = kubevpc("apply", lab.run, "-f", "-", stdin=docs(bigger, bad))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "invalid manifest (1 problem(s)); nothing was applied:" in res.stderr
    assert "<stdin>:" in res.stderr and "spec.ports[0].port: 70000" in res.stderr
    assert lab.status().get("plan_version") == version
    with pytest.raises(KubevpcError):
        lab.service("web-bad")
    assert lab.connect("pod/client", "svc/web-in", 81, timeout=1).outcome != "answered", "the valid one was not applied"
    assert lab.connect("pod/client", "svc/web-in", 80).outcome == "answered"


def test_a_dry_run_prints_the_change_and_makes_none(lab):
    moved = {**WEB_IN, "spec": {**WEB_IN["spec"], "ports": [{"name": "http", "port": 81, "targetPort": "http"}]}}
    version = lab.status().get("plan_version")
    res = kubevpc("apply", lab.run, "-f", "-", "--dry-run=client", stdin=docs(moved))
    assert res.returncode == 0, res.stderr
    assert "service/web-in configured (dry run)" in res.stdout
    assert "default/web-in: ports 80/TCP->http -> 81/TCP->http" in res.stdout
    assert "nothing was changed" in res.stdout
    assert lab.status().get("plan_version") == version
    assert lab.connect("pod/client", "svc/web-in", 80).outcome == "answered"
    # twin: the port the dry run would have moved it to is still not served
    assert lab.connect("pod/client", "svc/web-in", 81, timeout=1).outcome != "answered"


def test_delete_of_the_same_file_removes_it(lab, tmp_path):
    path = tmp_path / "web-in.yaml"
    path.write_text(docs(SA, WEB_IN))
    ip = lab.service("web-in").cluster_ip
    res = kubevpc("delete", lab.run, "-f", str(path), "--dry-run")
    assert res.returncode == 0 and "service/web-in deleted (dry run)" in res.stdout, res.stdout + res.stderr
    assert lab.connect("pod/client", ip, 80).outcome == "answered", "a dry run deletes nothing"
    res = kubevpc("delete", lab.run, "-f", str(path))
    assert res.returncode == 0, res.stderr
    assert "svc/default/web-in deleted" in res.stdout
    with pytest.raises(KubevpcError):
        lab.service("web-in")
    assert lab.connect("pod/client", ip, 80, timeout=1).outcome != "answered"
    # twin: the pods behind it still answer on their own addresses
    assert lab.connect("pod/client", "pod/web-0", 8080).outcome == "answered"


def test_a_daemonset_applied_at_runtime_gets_one_pod_per_node_that_answers(lab):
    res = kubevpc("apply", lab.run, "-f", "-", stdin=docs(AGENT))
    assert res.returncode == 0, res.stderr
    pods = {h.name: h.node for h in lab.plan.pods if h.name.startswith("agent-")}
    assert pods == {f"agent-{n}": n for n in NODES}
    results = lab.probe([Probe("pod/client", f"pod/agent-{n}", port) for n in NODES for port in (9100, 9101)],
                        timeout=1)
    for (node, port), r in zip([(n, p) for n in NODES for p in (9100, 9101)], results):
        agrees(lab, "pod/client", f"pod/default/agent-{node}", port, r.outcome)
        if port == 9100:
            assert r.outcome == "answered" and r.answer["name"] == f"agent-{node}", r.detail
        else:                          # twin: a port the pod does not serve is refused
            assert r.outcome != "answered", r.detail
    res = kubevpc("delete", lab.run, "ds/agent", "--grace-period", "0")
    assert res.returncode == 0, res.stderr
    assert not any(h.name.startswith("agent-") for h in lab.plan.pods)
