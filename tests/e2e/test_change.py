"""A change reaches the datapath (issue 21), with tests/e2e/data/change.yaml in every mode: once
`set_network_policies` or `set_ready` returns, new connections take the new path at once, with no
wait of the test's own, although the path before was warm in Open vSwitch's datapath flow cache.
One mode runs with the controller purging that cache after each change (KUBEVPC_PURGE=1), the
others without. Every allowed connection has a denied twin, and the evaluator (kubevpc explain)
agrees with every probe."""
from __future__ import annotations

import collections
import os

import pytest

from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Lab, Probe
from kubevpc.lab.checks import run_checks

from .conftest import lab_in_mode
from .test_services import name

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "change.yaml")
CASES = [("vxlan", "0"), ("vpc-route", "0"), ("eni", "1")]      # (mode, KUBEVPC_PURGE)
DENY_WEB = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web-deny", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}
TO_WEB = [Probe("pod/default/client", "pod/default/web-0", 8080),        # the same node
          Probe("pod/default/far-client", "pod/default/web-0", 8080)]    # across nodes
TWIN = Probe("pod/default/client", "pod/default/far-client", 7000)       # no policy selects it

_took: dict[str, list[dict]] = collections.defaultdict(list)


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-purge{p}" for m, p in CASES])
def lab(request):
    mode, purge = request.param
    saved = os.environ.get("KUBEVPC_PURGE")
    os.environ["KUBEVPC_PURGE"] = purge            # the controller inherits it when it starts
    try:
        runs = lab_in_mode(SCENARIO, mode)
        yield next(runs)
        next(runs, None)
    finally:
        if saved is None:
            os.environ.pop("KUBEVPC_PURGE", None)
        else:
            os.environ["KUBEVPC_PURGE"] = saved


def agree(lab: Lab, probes: list[Probe], timeout: float = 1.0) -> list[bool]:
    """Probe at once, and hold every outcome to the evaluator's verdict on the plan in force."""
    results = lab.probe(probes, timeout=timeout)
    for p, r in zip(probes, results):
        v = explain(lab.plan, p.source, p.dest, p.port)
        assert r.ok == v.allowed, f"{p}: {r.outcome} ({r.detail}), the evaluator says {v.allowed}: {v}"
    return [r.ok for r in results]


def changed(lab: Lab, took: dict) -> dict:
    _took[lab.run].append(took)
    return took


def test_a_policy_applied_and_removed_takes_effect_at_once(lab):
    for _ in range(3):
        assert agree(lab, [*TO_WEB, TWIN]) == [True, True, True]         # warm: the allowed path is cached
        changed(lab, lab.set_network_policies(DENY_WEB))
        assert agree(lab, [*TO_WEB, TWIN]) == [False, False, True]       # denied at once; the twin still passes
        changed(lab, lab.set_network_policies())
    assert agree(lab, [*TO_WEB, TWIN]) == [True, True, True]


def test_an_endpoint_not_ready_leaves_the_service_at_once(lab):
    svc = Probe("pod/default/client", "svc/default/web", 80)
    assert {name(r) for r in lab.probe([svc] * 12)} <= {"web-0", "web-1"}   # warm: both in the cache
    try:
        changed(lab, lab.set_ready("pod/default/web-0", False))
        got = lab.probe([svc] * 12)
        assert {r.outcome for r in got} == {"answered"}, [r.detail for r in got if not r.ok]
        assert {name(r) for r in got} == {"web-1"}
        assert explain(lab.plan, "pod/default/client", "svc/default/web", 80).allowed
    finally:
        changed(lab, lab.set_ready("pod/default/web-0", True))
    got = lab.probe([svc] * 20)
    assert {name(r) for r in got} == {"web-0", "web-1"}, "twin: back in the Service at once"


def test_every_change_says_how_long_it_took_and_how_the_datapath_followed(lab):
    took = _took[lab.run]
    assert took, "the tests above made changes"
    for t in took:
        assert 0 < t["flows_updated_s"] <= t["datapath_s"] < 10, t
    st = lab.status()
    purge = os.environ.get("KUBEVPC_PURGE") == "1"
    assert st["settings"] == {"bundle": True, "purge": purge}
    assert st["notified"] is True, "the controller is told of a change by inotify"
    assert sum(b.get("incremental", 0) for b in st["bridges"].values()) > 0, "changes went without a read-back first"
    if purge:
        dp = st["datapath"]
        assert (dp["version"], dp["error"]) == (st["plan_version"], "") and dp["purges"] > 0, dp
    else:
        assert "datapath" not in st


def test_the_scenarios_expectations_still_hold(lab):
    outcomes = run_checks(lab, declared_checks(lab.plan), timeout=1)
    assert all(o.passed for o in outcomes), [o.as_dict() for o in outcomes if not o.passed]


def test_no_errors_and_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == [] and not st.get("refused")
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
