"""The pod lifecycle as the planner sees it: pods deleted with a grace period stay, terminating,
with the endpoint conditions the EndpointSlice controller gives them; a Deployment replaces a
deleted pod under a new name; pods in a terminal phase are never endpoints; and the grace period
bookkeeping of the Lab (kubevpc/lab/grace.py). Expected values are written out by hand."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab.changes import deleted, pods_changed
from kubevpc.lab.grace import Terminations, check_grace_period
from kubevpc.planning import EndpointPlan, Plan, ServicePlan, ServicePortPlan, make_plan
from kubevpc.scenario.load import load

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"
RUN = "kvlc"


def scenario(tmp_path: Path, replicas: int = 2, extra: list | None = None, drop: tuple[str, ...] = (),
             publish: bool = False, name: str = "s.yaml", mode: str = "vpc-route"):
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = mode
    web = next(m for m in data["manifests"] if m["kind"] == "Deployment" and m["metadata"]["name"] == "web")
    web["spec"]["replicas"] = replicas
    data["manifests"] = [m for m in data["manifests"] if m["metadata"]["name"] not in drop]
    if publish:
        svc = next(m for m in data["manifests"] if m["kind"] == "Service" and m["metadata"]["name"] == "web")
        svc["spec"]["publishNotReadyAddresses"] = True
    data["manifests"] += copy.deepcopy(extra or [])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load(str(path))


def web_pods(plan: Plan) -> list[str]:
    return [h.name for h in plan.pods if h.name.startswith("web-")]


def endpoint(plan: Plan, svc: str, pod: str) -> EndpointPlan | None:
    return next((e for e in plan.service(svc).endpoints if e.name == pod), None)


def pod(name: str, node: str = "node-2", phase: str | None = None, grace: int | None = None) -> dict:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
               {"name": "http", "containerPort": 8080}, {"name": "echo", "containerPort": 5353, "protocol": "UDP"}]}]}}
    if phase:
        obj["status"] = {"phase": phase, "reason": "Evicted"}
    if grace is not None:
        obj["spec"]["terminationGracePeriodSeconds"] = grace
    return obj


# ------------------------------------------------------------------------------- terminating pods
def test_a_pod_scaled_away_with_a_grace_period_stays_serving_and_terminating_but_not_ready(tmp_path):
    running = make_plan(scenario(tmp_path, 3), RUN)
    web2 = running.host("pod/default/web-2")
    plan = make_plan(scenario(tmp_path, 2, name="b.yaml"), RUN, previous=running, terminating={web2.key})
    kept = plan.host("pod/default/web-2")
    assert kept.terminating and not running.host("pod/default/web-2").terminating
    assert kept.model_dump(exclude={"terminating"}) == web2.model_dump(exclude={"terminating"}), \
        "a terminating pod keeps its node, address, port and labels"
    e = endpoint(plan, "web", "web-2")
    assert (e.ready, e.serving, e.terminating) == (False, True, True)
    assert [(x.ready, x.serving, x.terminating) for x in plan.service("web").endpoints if x.name != "web-2"] == \
        [(True, True, False)] * 2
    # twin: without the grace period, the pod is gone from the plan and from every Service
    gone = make_plan(scenario(tmp_path, 2, name="c.yaml"), RUN, previous=running)
    assert web_pods(gone) == ["web-0", "web-1"] and endpoint(gone, "web", "web-2") is None
    assert pods_changed(running, gone)[1] == [web2] and pods_changed(running, plan) == ([], [])


def test_publish_not_ready_addresses_keeps_a_terminating_pod_ready(tmp_path):
    running = make_plan(scenario(tmp_path, 3, publish=True), RUN)
    plan = make_plan(scenario(tmp_path, 2, publish=True, name="b.yaml"), RUN, previous=running,
                     terminating={"pod/default/web-2"})
    e = endpoint(plan, "web", "web-2")
    assert (e.ready, e.serving, e.terminating) == (True, True, True)
    # twin: web-headless does not publish not-ready addresses: the terminating pod is not ready there
    assert endpoint(plan, "web-headless", "web-2").ready is False


def test_a_terminating_pod_that_is_not_ready_is_not_serving(tmp_path):
    running = make_plan(scenario(tmp_path, 3), RUN, ready={"pod/default/web-2": False})
    plan = make_plan(scenario(tmp_path, 2, name="b.yaml"), RUN, ready={"pod/default/web-2": False},
                     previous=running, terminating={"pod/default/web-2"})
    e = endpoint(plan, "web", "web-2")
    assert (e.ready, e.serving, e.terminating) == (False, False, True)


def test_a_deleted_pod_manifest_with_a_grace_period_is_kept_and_its_name_cannot_be_taken(tmp_path):
    running = make_plan(scenario(tmp_path, extra=[pod("extra")]), RUN)
    plan = make_plan(scenario(tmp_path, name="b.yaml"), RUN, previous=running, terminating={"pod/default/extra"})
    assert plan.host("pod/default/extra").terminating and endpoint(plan, "web", "extra").terminating
    with pytest.raises(ScenarioError, match=r"pod default/extra is still terminating .*expected another name"):
        make_plan(scenario(tmp_path, extra=[pod("extra")], name="c.yaml"), RUN, previous=plan,
                  terminating={"pod/default/extra"})
    # twin: once it is gone, the name is free again
    after = make_plan(scenario(tmp_path, name="d.yaml"), RUN, previous=plan)
    again = make_plan(scenario(tmp_path, extra=[pod("extra")], name="e.yaml"), RUN, previous=after)
    assert not again.host("pod/default/extra").terminating


def test_terminating_eni_pods_keep_their_vswitch_and_security_groups(tmp_path):
    running = make_plan(scenario(tmp_path, 3, mode="eni"), RUN)
    plan = make_plan(scenario(tmp_path, 2, mode="eni", name="b.yaml"), RUN, previous=running,
                     terminating={"pod/default/web-2"})
    a, b = running.host("pod/default/web-2"), plan.host("pod/default/web-2")
    assert (b.vswitch, b.security_groups, b.ip) == (a.vswitch, a.security_groups, a.ip) and b.terminating
    assert [x.owner for x in plan.attachments].count("pod/default/web-2") == 1


# ------------------------------------------------------------------------------ Deployment names
def test_a_deleted_deployment_pod_is_replaced_under_a_new_name_and_address(tmp_path):
    running = make_plan(scenario(tmp_path, 3), RUN)
    manifests, gone = deleted(list(running_loaded(tmp_path).manifests), running, "pod/default/web-1")
    assert gone == {"pod/default/web-1"} and len(manifests) == len(running_loaded(tmp_path).manifests)
    plan = make_plan(scenario(tmp_path, 3, name="b.yaml"), RUN, previous=running, deleted=gone)
    assert web_pods(plan) == ["web-0", "web-2", "web-3"]
    new = plan.host("pod/default/web-3")
    assert new.ip not in {h.ip for h in running.hosts}
    for name in ("web-0", "web-2"):
        assert plan.host(f"pod/default/{name}") == running.host(f"pod/default/{name}")
    # with a grace period the old one stays beside its replacement, terminating
    graceful = make_plan(scenario(tmp_path, 3, name="c.yaml"), RUN, previous=running, deleted=gone,
                         terminating=gone)
    assert web_pods(graceful) == ["web-0", "web-2", "web-3", "web-1"]
    assert graceful.host("pod/default/web-1").terminating and not graceful.host("pod/default/web-3").terminating


def running_loaded(tmp_path):
    return scenario(tmp_path, 3, name="r.yaml")


def test_names_stay_once_chosen_and_scaling_skips_terminating_ones(tmp_path):
    running = make_plan(scenario(tmp_path, 3), RUN)
    down = make_plan(scenario(tmp_path, 2, name="b.yaml"), RUN, previous=running, terminating={"pod/default/web-2"})
    up = make_plan(scenario(tmp_path, 3, name="c.yaml"), RUN, previous=down, terminating={"pod/default/web-2"})
    assert web_pods(up) == ["web-0", "web-1", "web-3", "web-2"], "the newcomer does not take a terminating name"
    # the grace period over: web-2 goes, web-3 stays web-3 (a running pod is never renamed)
    later = make_plan(scenario(tmp_path, 3, name="d.yaml"), RUN, previous=up)
    assert web_pods(later) == ["web-0", "web-1", "web-3"]
    assert pods_changed(up, later) == ([], [up.host("pod/default/web-2")])
    # scaling down removes the highest index
    assert web_pods(make_plan(scenario(tmp_path, 2, name="e.yaml"), RUN, previous=later)) == ["web-0", "web-1"]


def test_a_pod_named_like_a_replica_is_not_taken_for_one(tmp_path):
    running = make_plan(scenario(tmp_path, 2, extra=[pod("web-7")]), RUN)
    plan = make_plan(scenario(tmp_path, 3, extra=[pod("web-7")], name="b.yaml"), RUN, previous=running)
    assert web_pods(plan) == ["web-0", "web-1", "web-2", "web-7"]


def test_the_dns_pod_cannot_be_deleted(tmp_path):
    running = make_plan(scenario(tmp_path), RUN)
    with pytest.raises(KubevpcError, match="the cluster's own"):
        deleted(list(scenario(tmp_path).manifests), running, "pod/kube-system/kube-dns-0")
    with pytest.raises(KubevpcError, match="no Pod default/nosuch"):
        deleted(list(scenario(tmp_path).manifests), running, "pod/default/nosuch")


# ----------------------------------------------------------------------------------- pod phase
@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_a_pod_in_a_terminal_phase_is_never_an_endpoint_even_published(tmp_path, phase):
    plan = make_plan(scenario(tmp_path, extra=[pod("evicted", phase=phase)], publish=True), RUN)
    assert plan.host("pod/default/evicted").phase == phase
    assert endpoint(plan, "web", "evicted") is None and endpoint(plan, "web-headless", "evicted") is None
    # twin: the same pod Running is one
    running = make_plan(scenario(tmp_path, extra=[pod("evicted", phase="Running")], publish=True, name="b.yaml"), RUN)
    assert endpoint(running, "web", "evicted").ready


def test_a_terminal_phase_is_final(tmp_path):
    failed = make_plan(scenario(tmp_path, extra=[pod("p", phase="Failed")]), RUN)
    back = make_plan(scenario(tmp_path, extra=[pod("p")], name="b.yaml"), RUN, previous=failed)
    with pytest.raises(KubevpcError, match=r"pod/default/p is in phase Failed, which is final"):
        pods_changed(failed, back)
    # twin: Running -> Failed is what eviction does, and is taken
    assert pods_changed(back, failed) == ([], [])


def test_grace_period_is_read_and_checked(tmp_path):
    plan = make_plan(scenario(tmp_path, extra=[pod("p", grace=5)]), RUN)
    assert plan.host("pod/default/p").grace_period == 5 and plan.host("pod/default/web-0").grace_period == 30
    with pytest.raises(ScenarioError, match="terminationGracePeriodSeconds"):
        make_plan(scenario(tmp_path, extra=[pod("q", grace=-1)], name="b.yaml"), RUN)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="expected a whole number of seconds"):
            check_grace_period(bad)
    check_grace_period(None)
    check_grace_period(0)


# ------------------------------------------------------------------- kube-proxy's endpoint choice
def ep(name: str, node: str, ready: bool, serving: bool, terminating: bool, port: int = 8080) -> EndpointPlan:
    return EndpointPlan(pod=f"pod/default/{name}", name=name, ip="10.0.0.1", node=node, ready=ready,
                        serving=serving, terminating=terminating, ports=(port,))


def svc(*endpoints: EndpointPlan) -> ServicePlan:
    return ServicePlan(name="s", namespace="default", type="ClusterIP", cluster_ip="10.96.0.20",
                       ports=(ServicePortPlan(name="", protocol="TCP", port=80, target_port=8080),),
                       endpoints=endpoints)


def names(eps) -> list[str]:
    return [e.name for e in eps]


def test_ready_endpoints_win_over_terminating_ones_and_the_fallback_takes_only_serving_ones():
    s = svc(ep("a", "n1", True, True, False), ep("b", "n2", False, True, True), ep("c", "n2", False, False, True))
    assert names(s.cluster_endpoints(0)) == ["a"]
    s = svc(ep("b", "n2", False, True, True), ep("c", "n2", False, False, True), ep("d", "n1", False, False, False))
    assert names(s.cluster_endpoints(0)) == ["b"], "fallback: serving and terminating, never not-serving or unready"
    assert names(svc(ep("c", "n2", False, False, True)).cluster_endpoints(0)) == []
    assert names(svc(ep("x", "n1", False, True, True, port=0)).cluster_endpoints(0)) == [], "no such port"


def test_local_endpoints_fall_back_per_node():
    s = svc(ep("a", "n1", True, True, False), ep("b", "n2", False, True, True), ep("c", "n2", False, False, True))
    assert names(s.local_endpoints(0, "n1")) == ["a"]
    assert names(s.local_endpoints(0, "n2")) == ["b"], "n2 has no ready endpoint: its serving terminating one"
    assert names(s.local_endpoints(0, "n3")) == []
    s = svc(ep("a", "n1", True, True, False), ep("b", "n1", False, True, True))
    assert names(s.local_endpoints(0, "n1")) == ["a"], "a local ready endpoint wins"


# ------------------------------------------------------------------------- the grace period timer
def test_terminations_wake_when_the_first_grace_period_ends_and_hand_out_only_what_is_due():
    woke = threading.Event()
    t = Terminations(woke.set)
    now = time.monotonic()
    t.start({"pod/default/a": now + 0.05, "pod/default/b": now + 60})
    assert "pod/default/a" in t and t.keys() == {"pod/default/a", "pod/default/b"}
    assert woke.wait(5), "the timer did not fire"
    assert t.due() == {"pod/default/a"} and t.keys() == {"pod/default/b"}
    assert t.due() == set(), "twin: nothing else is due"
    assert 59 < t.left()["pod/default/b"] <= 60
    assert t.shorten("pod/default/b", 120) > 59, "a longer grace period changes nothing"
    assert t.shorten("pod/default/b", 0) == 0 and t.due() == {"pod/default/b"}
    t.cancel()


def test_terminations_forget_and_cancel():
    woke = threading.Event()
    t = Terminations(woke.set)
    t.start({"pod/default/a": time.monotonic() + 0.05})
    t.forget(["pod/default/a"])
    assert not woke.wait(0.3) and t.keys() == set()
    t.start({"pod/default/b": time.monotonic() + 0.05})
    t.cancel()
    assert not woke.wait(0.3), "a cancelled timer does not fire"
