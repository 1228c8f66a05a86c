"""apps/v1 StatefulSet: pods `<name>-0..N-1` placed like a Deployment's replicas, with the labels
the StatefulSet controller gives them and DNS names under their governing headless Service; a
pod deleted from a running scenario comes back under the same name once the old one is gone
(kubevpc.lab.changes.recreated), scaling keeps the lowest ordinals. Expected values by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab import changes
from kubevpc.render.dns import zone
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

from .problems import check, line_of, the

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"
RUN = "kvst"

DB = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
      "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
               "template": {"metadata": {"labels": {"app": "db"}},
                            "spec": {"containers": [{"name": "db", "ports": [{"name": "pg", "containerPort": 5432}]}]}}}}
DB_SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
          "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}}


def write(tmp_path: Path, extra: list, mode: str = "vxlan", name: str = "s.yaml") -> Path:
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = mode
    data["manifests"] += copy.deepcopy(extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def loaded(tmp_path: Path, extra: list, mode: str = "vxlan"):
    return load(str(write(tmp_path, extra, mode)))


def refused(tmp_path: Path, extra: list):
    path = write(tmp_path, extra)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), RUN)
    return info.value.problems, path, path.read_text()


def test_pods_are_numbered_from_zero_placed_by_ordinal_and_labelled_as_the_controller_does(tmp_path):
    plan = make_plan(loaded(tmp_path, [DB, DB_SVC]), RUN)
    pods = {h.name: h for h in plan.pods if h.name.startswith("db-")}
    assert sorted(pods) == ["db-0", "db-1", "db-2"]
    assert [pods[n].node for n in ("db-0", "db-1", "db-2")] == ["node-1", "node-2", "node-3"]
    assert pods["db-1"].labels == {"app": "db", "controller-revision-hash": "db-kubevpc",
                                   "statefulset.kubernetes.io/pod-name": "db-1", "apps.kubernetes.io/pod-index": "1"}
    assert (pods["db-2"].hostname, pods["db-2"].subdomain) == ("db-2", "db")


def test_the_governing_headless_service_gives_each_pod_a_dns_name(tmp_path):
    plan = make_plan(loaded(tmp_path, [DB, DB_SVC]), RUN)
    svc = plan.service("default/db")
    assert {e.name: e.hostname for e in svc.endpoints} == {"db-0": "db-0", "db-1": "db-1", "db-2": "db-2"}
    records = {(r["name"], r["value"]) for r in zone(plan.services, plan.pods)["records"] if r["type"] == "A"}
    assert ("db-1.db.default.svc.cluster.local.", plan.host("pod/default/db-1").ip) in records
    # another Service selecting the same pods is not their subdomain: no per-pod names there
    other = dict(DB_SVC, metadata={"name": "db-all"})
    plan = make_plan(loaded(tmp_path, [DB, DB_SVC, other]), RUN)
    assert {e.hostname for e in plan.service("default/db-all").endpoints} == {""}


def test_a_deleted_pod_comes_back_under_its_name_once_the_old_one_is_gone(tmp_path):
    ld = loaded(tmp_path, [DB, DB_SVC])
    running = make_plan(ld, RUN)
    old = running.host("pod/default/db-1")
    # the change that deletes it: the pod goes, nothing takes its name yet
    manifests, deleted = changes.deleted(ld.manifests, running, "pod/default/db-1")
    gone = changes.replan(ld, running, RUN, manifests, {}, {}, deleted=deleted)
    assert "pod/default/db-1" not in {h.key for h in gone.plan.pods}
    assert [h.key for h in gone.removed] == ["pod/default/db-1"] and gone.added == []
    assert changes.recreated(gone.loaded.manifests, gone.removed) == ["pod/default/db-1"]
    # the next change: the StatefulSet controller creates it again, on the same node
    back = changes.replan(gone.loaded, gone.plan, RUN, gone.loaded.manifests, {}, {})
    [new] = back.added
    assert new.key == old.key and new.node == old.node and back.removed == []
    assert changes.recreated(back.loaded.manifests, back.removed) == []


def test_a_terminating_pod_is_not_replaced_until_its_grace_period_ends(tmp_path):
    ld = loaded(tmp_path, [DB, DB_SVC])
    running = make_plan(ld, RUN)
    key = "pod/default/db-0"
    terminating = changes.replan(ld, running, RUN, ld.manifests, {}, {}, terminating=frozenset({key}),
                                 deleted=frozenset({key}))
    assert terminating.plan.host(key).terminating and terminating.added == terminating.removed == []
    # its grace period over (no longer terminating): it goes, and comes back in the change after
    over = changes.replan(ld, terminating.plan, RUN, ld.manifests, {}, {})
    assert [h.key for h in over.removed] == [key] and over.added == []
    back = changes.replan(ld, over.plan, RUN, ld.manifests, {}, {})
    assert [h.key for h in back.added] == [key] and not back.plan.host(key).terminating


def test_scaling_keeps_the_lowest_ordinals(tmp_path):
    ld = loaded(tmp_path, [DB, DB_SVC])
    running = make_plan(ld, RUN)
    down = changes.replan(ld, running, RUN, changes.scaled(ld.manifests, "sts/db", 1), {}, {})
    assert sorted(h.key for h in down.removed) == ["pod/default/db-1", "pod/default/db-2"]
    assert changes.recreated(down.loaded.manifests, down.removed) == []
    up = changes.replan(down.loaded, down.plan, RUN, changes.scaled(down.loaded.manifests, "statefulset/default/db", 2),
                        {}, {})
    assert [h.key for h in up.added] == ["pod/default/db-1"]
    with pytest.raises(KubevpcError, match="no StatefulSet default/web"):
        changes.scaled(ld.manifests, "sts/web", 1)
    with pytest.raises(KubevpcError, match="sts/<namespace>/<name>"):
        changes.scaled(ld.manifests, "rs/web", 1)


def test_deleting_the_statefulset_removes_its_pods_and_it_can_be_applied_at_runtime(tmp_path):
    ld = loaded(tmp_path, [DB_SVC])
    running = make_plan(ld, RUN)
    [m] = changes.parse_objects([DB])
    added = changes.replan(ld, running, RUN, changes.applied(ld.manifests, [m]), {}, {})
    assert sorted(h.key for h in added.added) == ["pod/default/db-0", "pod/default/db-1", "pod/default/db-2"]
    manifests, pods = changes.deleted(added.loaded.manifests, added.plan, "sts/db")
    gone = changes.replan(added.loaded, added.plan, RUN, manifests, {}, {}, deleted=pods)
    assert len(gone.removed) == 3 and changes.recreated(gone.loaded.manifests, gone.removed) == []


def test_what_the_api_server_refuses_is_refused(tmp_path):
    n = len(yaml.safe_load(SERVICES.read_text())["manifests"])
    bad = copy.deepcopy(DB)
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    problems, path, text = refused(tmp_path, [bad])
    check(the(problems, f"manifests[{n}].spec"), path, bad["spec"], line_of(text, "spec:", after="kind: StatefulSet"),
          "spec.selector does not match", "StatefulSet")
    named = copy.deepcopy(DB)
    named["spec"]["serviceName"] = "Not_A_Label"
    problems, path, text = refused(tmp_path, [named])
    check(the(problems, f"manifests[{n}].spec"), path, named["spec"], line_of(text, "spec:", after="kind: StatefulSet"),
          "Not_A_Label", "DNS-1123 label")
    # a pod of the StatefulSet may not take the name of another pod
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-1"}, "spec": {"containers": [{"name": "c"}]}}
    problems, path, text = refused(tmp_path, [pod, DB])
    check(the(problems, f"manifests[{n + 1}].metadata.name"), path, "db-1", line_of(text, "name: db", after="StatefulSet"),
          "a pod of this StatefulSet has the name of another pod")
