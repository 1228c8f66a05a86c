"""bench-change's report (kubevpc/bench/change.py): its rows, issue 21's targets judged from the
samples, and the changes that move traffic chosen from the scenario (no network: a plan only)."""
from __future__ import annotations

import os

import pytest

from kubevpc.bench import change
from kubevpc.planning import make_plan, resolve_endpoint
from kubevpc.scenario.load import load


def results(flows: list[float], follows: list[float | None], failed: int = 0) -> dict:
    changes = {"set_ready false": [{"flows_updated_s": f, "datapath_s": f + 1} for f in flows],
               "follow: policy denies": [{"flows_updated_s": 0.05, "datapath_s": 1.0, "follows_s": x,
                                          **({"follow_error": "still saw"} if x is None else {})} for x in follows]}
    return {"changes": changes, "failed": {"scale web 2 -> 3": ["boom"] * failed} if failed else {},
            "failover": {}, "failover_info": {}}


def test_targets_met_when_p99_is_within_the_limits():
    v = change.verdicts({"vxlan": results([0.03] * 20, [0.08] * 10)})
    assert [x.target for x in v] == ["vxlan: change -> flows programmed, p99 <= 100 ms",
                                     "vxlan: change -> datapath follows (probes), p99 <= 150 ms"]
    assert all(x.met for x in v)
    assert v[0].shown == "50 ms (median 30 ms, n=30)" and v[1].figure == pytest.approx(0.08)


def test_one_slow_change_fails_p99_and_a_failure_fails_the_target_whatever_the_figures():
    slow = change.verdicts({"eni": results([0.03] * 19 + [0.4], [0.08] * 9 + [0.5])})
    assert not slow[0].met and slow[0].figure > 0.1 and not slow[1].met
    failed = change.verdicts({"eni": results([0.03] * 20, [0.08] * 4 + [None], failed=2)})
    assert failed[0].word == "not met: 2 change(s) failed"
    assert failed[1].word == "not met: 1 not followed within the deadline"
    assert failed[1].figure == pytest.approx(0.08)
    none = change.verdicts({"vpc-route": results([0.03], [])})
    assert none[1].word == "not met: not measured"


def test_rows_count_a_change_not_followed_as_failed():
    rows = {r["measurement"]: r for r in change.summarize({"vxlan": results([0.2, 0.3], [0.1, None])})["vxlan"]}
    follows = rows["follow: policy denies: datapath follows (probes)"]
    assert follows["n"] == 1 and follows["failed"] == 1 and follows["target_s"] == change.FOLLOWS_TARGET_S
    assert rows["set_ready false: flows programmed"]["median"] == pytest.approx(0.25)
    assert "set_ready false: datapath follows (probes)" not in rows


class PlanLab:
    """What follow_steps reads of a Lab: its plan, hosts and Services."""

    def __init__(self, plan):
        self.plan = plan

    def host(self, ref):
        return resolve_endpoint(self.plan, ref)

    def service(self, name):
        return self.plan.service(name)


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route", "eni"])
def test_follow_steps_probe_the_web_pod_on_another_node_and_the_service(mode):
    plan = make_plan(load(change.SCENARIO, mode), "kvbc")
    steps = change.follow_steps(PlanLab(plan))
    names = [n for n, _ in steps]
    assert len(names) == 4 and names[-1] == "web-1 ready again"
    far = names[0].rsplit(" ", 1)[1]
    assert resolve_endpoint(plan, f"pod/{far}").node != resolve_endpoint(plan, "pod/client-1").node
    assert all(n.startswith("follow:") for n in names[:3])
    assert os.path.exists(change.SCENARIO)
