"""bench-change's probed changes on a real network, in each pod network mode, with its scenario
(tests/e2e/data/services.yaml): each of the three is seen followed by the datapath
(kubevpc/bench/follow.py), each allowed connection has its refused twin, and the evaluator says
the same as the probes."""
from __future__ import annotations

import pytest

from kubevpc.bench.change import SCENARIO, follow_steps
from kubevpc.bench.follow import DEADLINE_S
from kubevpc.evaluator.matrix import expect
from kubevpc.lab import Probe

from .conftest import MODES, lab_in_mode

TO_WEB = Probe("pod/client-1", "svc/web", 80)


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)


def test_the_probed_changes_are_followed_and_the_evaluator_agrees(lab):
    client = lab.host("pod/client-1")
    far = next(h for h in lab.plan.pods if h.labels.get("app") == "web" and h.node != client.node)
    near = next(h for h in lab.plan.pods if h.labels.get("app") == "web" and h.key != far.key)
    deny, delete, not_ready, ready = (fn for _, fn in follow_steps(lab))
    assert lab.connect(client.key, far.ip, 8080).outcome == "answered"
    assert expect(lab.plan, client.key, far.key, 8080, "tcp")[0] is True

    got = deny()
    assert got["follows_s"] is not None and 0 <= got["follows_s"] < DEADLINE_S, got
    assert lab.connect(client.key, far.ip, 8080, timeout=0.5).outcome == "timeout"
    assert expect(lab.plan, client.key, far.key, 8080, "tcp")[0] is False
    # the twin: the policy names client pods only; another web pod still reaches far
    assert lab.connect(near.key, far.ip, 8080).outcome == "answered"
    assert expect(lab.plan, near.key, far.key, 8080, "tcp")[0] is True

    got = delete()
    assert got["follows_s"] is not None, got
    assert lab.connect(client.key, far.ip, 8080).outcome == "answered"

    got = not_ready()
    assert got["follows_s"] is not None, got
    assert {r.answer["name"] for r in lab.probe([TO_WEB] * 20) if r.ok} == {"web-0"}     # web-1 is out
    ready()
    assert {r.answer["name"] for r in lab.probe([TO_WEB] * 30) if r.ok} == {"web-0", "web-1"}
