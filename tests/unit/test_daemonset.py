"""apps/v1 DaemonSet: one pod on each node its template's nodeSelector matches, named
`<name>-<node>`, with the labels the DaemonSet controller gives them; hostNetwork ones in their
node's namespace; applied and deleted while running, a deleted pod coming back under its name once
the old one is gone (kubevpc.lab.changes.recreated). Expected values by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import ScenarioError
from kubevpc.lab import changes
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from .problems import check, line_of, the

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"
RUN = "kvds"
NODES = ("node-1", "node-2", "node-3")

AGENT = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"containers": [{"name": "a", "ports": [{"name": "metrics",
                                                                                "containerPort": 9100}]}]}}}}
AGENT_SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "agent"},
             "spec": {"selector": {"app": "agent"}, "ports": [{"port": 9100, "targetPort": "metrics"}]}}


def edge_agent(**spec) -> dict:
    ds = copy.deepcopy(AGENT)
    ds["metadata"]["name"] = "edge"
    ds["spec"]["template"]["spec"].update(spec)
    return ds


def write(tmp_path: Path, extra: list, node_labels: dict | None = None, mode: str = "vxlan") -> Path:
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = mode
    if node_labels:
        data["cluster"]["nodeLabels"] = node_labels
    data["manifests"] += copy.deepcopy(extra)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pods_of(plan, prefix: str) -> dict:
    return {h.name: h for h in plan.pods if h.name.startswith(prefix)}


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route", "eni"])
def test_one_pod_on_each_node_named_after_it_and_labelled_as_the_controller_does(tmp_path, mode):
    plan = make_plan(load(str(write(tmp_path, [AGENT, AGENT_SVC], mode=mode))), RUN)
    pods = pods_of(plan, "agent-")
    assert sorted(pods) == ["agent-node-1", "agent-node-2", "agent-node-3"]
    assert {n: h.node for n, h in pods.items()} == {f"agent-{n}": n for n in NODES}
    assert pods["agent-node-2"].labels == {"app": "agent", "controller-revision-hash": "agent-kubevpc",
                                           "pod-template-generation": "1"}
    assert len({h.ip for h in pods.values()}) == 3
    # the Service selects them all: one endpoint per node
    assert sorted(e.name for e in plan.service("default/agent").endpoints) == sorted(pods)


def test_the_node_selector_picks_the_nodes_by_their_labels(tmp_path):
    ds = edge_agent(nodeSelector={"role": "edge", "kubernetes.io/os": "linux"})
    plan = make_plan(load(str(write(tmp_path, [ds], {"node-3": {"role": "edge"}}))), RUN)
    assert list(pods_of(plan, "edge-")) == ["edge-node-3"]
    # twin: a selector no node matches makes no pod; the well-known hostname label picks one node
    plan = make_plan(load(str(write(tmp_path, [edge_agent(nodeSelector={"role": "core"})]))), RUN)
    assert pods_of(plan, "edge-") == {}
    plan = make_plan(load(str(write(tmp_path, [edge_agent(nodeSelector={"kubernetes.io/hostname": "node-2"})]))), RUN)
    assert list(pods_of(plan, "edge-")) == ["edge-node-2"]


def test_a_host_network_daemonset_runs_in_each_node_namespace_with_its_address(tmp_path):
    plan = make_plan(load(str(write(tmp_path, [edge_agent(hostNetwork=True)]))), RUN)
    pods = pods_of(plan, "edge-")
    assert sorted(pods) == [f"edge-{n}" for n in NODES]
    for name, h in pods.items():
        assert h.host_network and h.ip == plan.host(f"ecs/{h.node}").ip, name
    # twin: the ordinary DaemonSet beside it has addresses of its own
    plan = make_plan(load(str(write(tmp_path, [AGENT]))), RUN)
    assert not any(h.host_network or h.ip == plan.host(f"ecs/{h.node}").ip for h in pods_of(plan, "agent-").values())


def test_what_the_api_server_refuses_is_refused(tmp_path):
    n = len(yaml.safe_load(SERVICES.read_text())["manifests"])
    bad = copy.deepcopy(AGENT)
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    path = write(tmp_path, [bad])
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    text = path.read_text()
    check(the(info.value.problems, f"manifests[{n}].spec"), path, bad["spec"],
          line_of(text, "spec:", after="kind: DaemonSet"), "spec.selector does not match", "DaemonSet")
    pinned = edge_agent(nodeName="node-1")
    path = write(tmp_path, [pinned])
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    check(the(info.value.problems, f"manifests[{n}].spec"), path, pinned["spec"],
          line_of(path.read_text(), "spec:", after="kind: DaemonSet"), "nodeName", "nodeSelector")
    selector = edge_agent(nodeSelector={"role": 1})
    path = write(tmp_path, [selector])
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    check(the(info.value.problems, f"manifests[{n}].spec.template.spec.nodeSelector.role"), path, 1,
          line_of(path.read_text(), "role: 1"), "string")


def test_applied_at_runtime_it_starts_a_pod_per_node_and_deleted_it_removes_them(tmp_path):
    ld = load(str(write(tmp_path, [AGENT_SVC])))
    running = make_plan(ld, RUN)
    [m] = changes.parse_objects([AGENT])
    added = changes.replan(ld, running, RUN, changes.applied(ld.manifests, [m]), {}, {})
    assert sorted((h.key, h.node) for h in added.added) == [(f"pod/default/agent-{n}", n) for n in NODES]
    manifests, pods = changes.deleted(added.loaded.manifests, added.plan, "ds/agent")
    gone = changes.replan(added.loaded, added.plan, RUN, manifests, {}, {}, deleted=pods)
    assert len(gone.removed) == 3 and changes.recreated(gone.loaded.manifests, gone.removed) == []
    # twin: `daemonset/default/agent` names it too; an unknown one is refused
    assert changes.deleted(added.loaded.manifests, added.plan, "daemonset/default/agent")[0] == manifests
    with pytest.raises(Exception, match="no DaemonSet default/nosuch"):
        changes.deleted(added.loaded.manifests, added.plan, "ds/nosuch")


def test_a_deleted_pod_comes_back_on_its_node_under_its_name_once_the_old_one_is_gone(tmp_path):
    ld = load(str(write(tmp_path, [AGENT])))
    running = make_plan(ld, RUN)
    key = "pod/default/agent-node-2"
    manifests, deleted = changes.deleted(ld.manifests, running, key)
    gone = changes.replan(ld, running, RUN, manifests, {}, {}, deleted=deleted)
    assert [h.key for h in gone.removed] == [key] and gone.added == []
    assert changes.recreated(gone.loaded.manifests, gone.removed) == [key]
    back = changes.replan(gone.loaded, gone.plan, RUN, gone.loaded.manifests, {}, {})
    [new] = back.added
    assert (new.key, new.node) == (key, "node-2")
    # twin: while it is terminating, the node gets no second pod
    terminating = changes.replan(ld, running, RUN, ld.manifests, {}, {}, terminating=frozenset({key}),
                                 deleted=frozenset({key}))
    assert terminating.plan.host(key).terminating and terminating.added == terminating.removed == []
    # a plain Pod named like a DaemonSet's is not re-created
    assert changes.recreated([], gone.removed) == []
