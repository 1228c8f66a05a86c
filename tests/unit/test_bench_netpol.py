"""The NetworkPolicy benchmark's generated world and policies are valid scenarios, and its
figures come from the compiler (no timing is asserted: that is the benchmark's job)."""
from __future__ import annotations

import pytest

from kubevpc.bench.netpol import compile_case, policies, world


def test_generated_policies_cover_every_kind_and_compile():
    ps = policies(12)
    assert len(ps) == 12 and len({p["metadata"]["name"] for p in ps}) == 12
    assert policies(12) == ps, "a fixed seed: every run compiles the same set"
    kinds = {("Egress" if "egress" in p["spec"] else "Ingress") for p in ps}
    assert kinds == {"Ingress", "Egress"}
    r = compile_case(40, 12, repeat=1)
    assert r["pods"] == 40 and r["policies"] == 12
    assert 0 < r["policy_flows"] <= r["all_flows"]
    assert r["cross_product_flows"] > 0 and r["flows_per_policy_max"] >= r["flows_per_policy_median"] > 0


def test_world_spreads_pods_over_namespaces_and_apps():
    doc = world(23)
    replicas = sum(m["spec"]["replicas"] for m in doc["manifests"] if m["kind"] == "Deployment")
    assert replicas == 23
    assert {m["metadata"]["name"] for m in doc["manifests"] if m["kind"] == "Namespace"} == {f"ns{i}" for i in range(10)}


# ------------------------------------------------------------------------------- live, issue 21
def test_denied_pair_is_allowed_without_the_policies_and_denied_with_them():
    from kubevpc.bench.netpol import PROBE_PORT, denied_pair, plan_of
    from kubevpc.evaluator.matrix import expect
    doc = world(100)            # two nodes of 50 pods
    before = plan_of(doc)
    after = plan_of({**doc, "manifests": doc["manifests"] + policies(10)})
    src, dst = denied_pair(before, after)
    assert expect(before, src, dst, PROBE_PORT, "tcp")[0] is True
    assert expect(after, src, dst, PROBE_PORT, "tcp")[0] is False
    assert after.host(src).node != after.host(dst).node             # across nodes first
    assert denied_pair(before, before) is None                      # no policy: nothing to watch


def live_runs(flows: float, follows: float | None, back: float | None = 0.2) -> list[tuple[dict, dict]]:
    return [({"flows_updated_s": flows, "datapath_s": 1.2, "follows_s": follows},
             {"flows_updated_s": 0.1, "datapath_s": 1.1, "follows_s": back})] * 3


def test_live_rows_and_issue_21_targets():
    from kubevpc.bench.netpol import live_row, verdicts
    rows = [live_row(100, live_runs(0.15, 0.25), {"bridges": {"a": {"packet_in": 0}}}),
            live_row(1000, live_runs(4.7, 5.0), {})]
    assert rows[0]["change_to_follows_s"] == 0.25 and rows[0]["probed"] and rows[0]["unfollowed"] == 0
    v = {x.target: x for x in verdicts(rows, 100)}
    assert v["100 policies applied live -> flows programmed, median <= 200 ms"].met
    assert v["100 policies applied live -> datapath follows (probes), median <= 300 ms"].met
    thousand = v["1,000 policies applied live -> flows programmed, median <= 1 s"]
    assert not thousand.met and thousand.shown == "4700 ms (max 4700 ms, 100 pods)"


def test_live_targets_not_met_when_not_followed_not_probed_or_not_measured():
    from kubevpc.bench.netpol import live_row, verdicts
    unfollowed = live_row(100, live_runs(0.15, None, None), {})
    assert unfollowed["unfollowed"] == 6 and unfollowed["change_to_follows_s"] is None
    v = verdicts([unfollowed], 100)
    assert v[1].word == "not met: 6 change(s) not followed"
    unprobed = live_row(100, [({"flows_updated_s": 0.1, "datapath_s": 1.0}, {"flows_updated_s": 0.1})], {})
    assert verdicts([unprobed], 100)[1].word.startswith("not met: the 100 policies deny no pod-to-pod connection")
    assert verdicts([unprobed], 100)[2].word == "not met: not measured"          # 1,000 not run


def test_arguments():
    from kubevpc.bench.netpol import parse_args
    args = parse_args([])
    assert args.live_counts == [10, 100, 1000] and args.counts == [10, 100, 1000]
    for bad in (["--policies", "a,b"], ["--pods", "5"], ["--repeat", "0"], ["--live-policies", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
