"""Terway's PodNetworking in eni mode: which pods it selects, their groups and vSwitch, and the
errors a wrong one gets (with file, line, value and what was expected)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubevpc.errors import ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

from .problems import check, line_of

DATA = Path(__file__).resolve().parents[1] / "e2e" / "data" / "podsg.yaml"


def plan_of(tmp_path: Path, data: dict, mode: str | None = None):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path), mode=mode), "t")


def refused(tmp_path: Path, data: dict, mode: str | None = None):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), "t")
    return info.value.problems, path, path.read_text()


def base() -> dict:
    return yaml.safe_load(DATA.read_text())


def test_selection_groups_and_vswitch(tmp_path):
    plan = plan_of(tmp_path, base())
    assert plan.host("pod/default/api-3").security_groups == ("sg-db-clients",)
    assert plan.host("pod/default/web-3").security_groups == ("sg-nodes",)
    assert plan.host("pod/default/vault").vswitch == "vsw-pods"
    # the node of vault gets an uplink to that vSwitch; the others do not
    assert [u.vswitch for u in plan.node("node-2").uplinks] == ["vsw-a", "vsw-pods"]
    assert [u.vswitch for u in plan.node("node-1").uplinks] == ["vsw-a"]
    # the attachment on the vSwitch carries the pod's groups, where the vSwitch enforces them
    [att] = [a for a in plan.attachments if a.owner == "pod/default/vault"]
    assert att.vswitch == "vsw-pods" and att.security_groups == ("sg-locked",)


def test_without_selectors_a_podnetworking_selects_nothing_and_the_first_match_wins(tmp_path):
    data = base()
    data["manifests"][1]["spec"]["selector"] = {}                      # "locked": by annotation only
    data["manifests"].insert(0, {"apiVersion": "network.alibabacloud.com/v1beta1", "kind": "PodNetworking",
                                 "metadata": {"name": "first"},
                                 "spec": {"selector": {"namespaceSelector": {"matchLabels": {
                                     "kubernetes.io/metadata.name": "default"}}, "podSelector": {
                                     "matchExpressions": [{"key": "role", "operator": "In", "values": ["api"]}]}},
                                          "securityGroupIDs": ["sg-nodes", "sg-db-clients"]}})
    plan = plan_of(tmp_path, data)
    assert plan.host("pod/default/api-1").security_groups == ("sg-nodes", "sg-db-clients")
    assert plan.host("pod/default/web-1").security_groups == ("sg-nodes",)
    assert plan.host("pod/default/vault").security_groups == ("sg-locked",)


def test_podnetworking_outside_eni_mode_is_refused(tmp_path):
    problems, path, text = refused(tmp_path, base(), mode="vxlan")
    assert [p.path for p in problems] == ["manifests[0].kind", "manifests[1].kind"]
    check(problems[0], path, "PodNetworking", line_of(text, "kind: PodNetworking"), "eni mode only")


def test_unknown_group_vswitch_and_annotation_are_refused(tmp_path):
    data = base()
    data["manifests"][0]["spec"]["securityGroupIDs"] = ["sg-nope"]
    data["manifests"][1]["spec"]["vSwitchOptions"] = ["vsw-elsewhere"]
    problems, path, text = refused(tmp_path, data)
    by = {p.path: p for p in problems}
    check(by["manifests[0].spec.securityGroupIDs[0]"], path, "sg-nope", line_of(text, "sg-nope"),
          "no such security group", "sg-locked")
    check(by["manifests[1].spec.vSwitchOptions[0]"], path, "vsw-elsewhere", line_of(text, "vsw-elsewhere"),
          "vSwitch of the cluster's VPC")
    data = base()
    data["manifests"][-1]["metadata"]["annotations"]["k8s.aliyun.com/pod-networking"] = "missing"
    problems, path, text = refused(tmp_path, data)
    [p] = problems
    check(p, path, "missing", line_of(text, "missing"), "no such PodNetworking", "db-clients")


def test_a_vswitch_in_another_zone_is_refused_for_the_pod(tmp_path):
    data = base()
    data["manifests"][-1]["spec"]["nodeName"] = "node-3"                # zone-b; vsw-pods is in zone-a
    problems, path, text = refused(tmp_path, data)
    [p] = problems
    assert p.value == "default/vault" and "no vSwitch in zone zone-b of node node-3" in p.expected


def test_a_podnetworking_needs_groups_or_vswitches(tmp_path):
    data = base()
    data["manifests"][0]["spec"] = {"selector": {"podSelector": {}}}
    problems, path, text = refused(tmp_path, data)
    assert [p.path for p in problems] == ["manifests[0].spec"]
    assert "securityGroupIDs or vSwitchOptions" in problems[0].expected
