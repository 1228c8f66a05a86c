"""Scenario validation: every bad input is refused with the file, line, dotted path, value and a
helpful expectation, and nothing is planned.

Each test copies tests/unit/data/small.yaml (a valid scenario), breaks one thing, writes it to
tmp_path in block style and checks the single problem it must cause. Expected lines are found
by searching the written text for the offending key or value, not by re-deriving them the way
the loader does.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import Problem, ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

from .problems import check, line_of, the

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.yaml"
RUN = "t"
MODES = ("vxlan", "vpc-route", "eni")


# ------------------------------------------------------------------------------------- helpers
def base() -> dict:
    """A fresh copy of the small valid scenario."""
    return copy.deepcopy(yaml.safe_load((DATA / "small.yaml").read_text()))


def write(tmp_path: Path, data: dict, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return path


def refuse(tmp_path: Path, data: dict, mode: str | None = None, run: str = RUN) -> tuple[list[Problem], Path, str]:
    """Write, load and plan; the scenario must be refused. Returns (problems, file, text)."""
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), run)
    problems = info.value.problems
    assert problems, "ScenarioError without problems"
    assert str(info.value), "ScenarioError must render its problems"
    return problems, path, path.read_text()








def deployment(name: str, replicas: int, labels: dict | None = None, selector: dict | None = None,
               node: str | None = None, namespace: str = "default") -> dict:
    labels = {"app": name} if labels is None else labels
    spec: dict = {"containers": [{"name": "c", "image": "x"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector or labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


# ----------------------------------------------------------------------------- the good inputs
@pytest.mark.parametrize("mode", MODES)
def test_default_scenario_validates_in_every_mode(mode):
    loaded = load(str(DEFAULT), mode=mode)
    assert loaded.scenario.cluster.mode == mode
    plan = make_plan(loaded, "kv")
    assert plan.cluster.mode == mode
    assert {h.key for h in plan.hosts} >= {"ecs/ecs-db", "pod/default/web-0", "pod/shop/client"}


def test_small_fixture_is_valid(tmp_path):
    plan = make_plan(load(str(write(tmp_path, base()))), RUN)
    assert [h.key for h in plan.hosts] == ["ecs/node-1", "ecs/node-2", "ecs/ecs-1", "pod/default/p1"]


# --------------------------------------------------------------------------------- unknown keys
def test_unknown_key_at_top_level(tmp_path):
    data = base()
    data["bogus"] = 1
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "bogus"), f, "bogus", line_of(text, "bogus:"), "unknown key")


def test_unknown_key_in_a_vswitch(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"][1]["colour"] = "red"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.vpcs[0].vswitches[1].colour"), f, "colour", line_of(text, "colour:"), "unknown key")


def test_unknown_key_in_a_security_group_rule(tmp_path):
    data = base()
    data["cloud"]["securityGroups"][0]["rules"][0]["prot"] = "tcp"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.securityGroups[0].rules[0].prot"), f, "prot", line_of(text, "prot:"), "unknown key")


# ------------------------------------------------------------------------------------ vSwitches
def test_overlapping_vswitch_cidrs(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"][1]["cidr"] = "10.0.1.128/25"
    problems, f, text = refuse(tmp_path, data)
    p = the(problems, "cloud.vpcs[0].vswitches[1].cidr")
    check(p, f, "10.0.1.128/25", line_of(text, "10.0.1.128/25"), "overlaps", "vsw-a", "10.0.1.0/24")


def test_vswitch_outside_its_vpc(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"][1]["cidr"] = "10.1.2.0/24"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.vpcs[0].vswitches[1].cidr"), f, "10.1.2.0/24", line_of(text, "10.1.2.0/24"),
          "subnet of the VPC CIDR 10.0.0.0/16")


# ------------------------------------------------------------------------------ dangling names
def test_instance_on_unknown_vswitch(tmp_path):
    data = base()
    data["cloud"]["instances"][2]["vswitch"] = "vsw-zz"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].vswitch"), f, "vsw-zz", line_of(text, "vsw-zz"),
          "no such vSwitch", "vsw-a", "vsw-b")


def test_instance_in_unknown_security_group(tmp_path):
    data = base()
    data["cloud"]["instances"][2]["securityGroups"] = ["sg-a", "sg-zz"]
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].securityGroups[1]"), f, "sg-zz", line_of(text, "sg-zz"),
          "no such security group", "sg-a")


def test_cluster_node_that_is_no_instance(tmp_path):
    data = base()
    data["cluster"]["nodes"].append("node-9")
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cluster.nodes[2]"), f, "node-9", line_of(text, "node-9"), "no such ECS instance", "node-1")


def test_rule_naming_unknown_group(tmp_path):
    data = base()
    data["cloud"]["securityGroups"][0]["rules"].append({"direction": "ingress", "group": "sg-zz"})
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.securityGroups[0].rules[1].group"), f, "sg-zz", line_of(text, "sg-zz"),
          "no such security group", "sg-a")


def test_route_to_unknown_next_hop(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["routeTable"] = {"routes": [{"destination": "10.9.0.0/24", "nextHop": "ecs-zz"}]}
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.vpcs[0].routeTable.routes[0].nextHop"), f, "ecs-zz", line_of(text, "ecs-zz"),
          "ECS instance or a NAT gateway of VPC vpc-a")


def test_pod_on_unknown_node(tmp_path):
    data = base()
    data["manifests"][0]["spec"]["nodeName"] = "node-9"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[0].spec.nodeName"), f, "node-9", line_of(text, "nodeName: node-9"),
          "no such node", "node-1", "node-2")


def test_deployment_on_unknown_node_names_the_template_path(tmp_path):
    data = base()
    data["manifests"] = [deployment("web", 2, node="node-9")]
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[0].spec.template.spec.nodeName"), f, "node-9", line_of(text, "nodeName: node-9"),
          "no such node")


def test_manifest_in_undeclared_namespace(tmp_path):
    data = base()
    data["manifests"][0]["metadata"]["namespace"] = "shop"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[0].metadata.namespace"), f, "shop", line_of(text, "namespace: shop"),
          "namespace not declared", "Namespace")


def test_declared_namespace_is_accepted(tmp_path):
    data = base()
    data["manifests"][0]["metadata"]["namespace"] = "shop"
    data["manifests"].insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    plan = make_plan(load(str(write(tmp_path, data))), RUN)
    assert plan.host("pod/shop/p1").namespace == "shop"


def test_problem_in_a_manifest_file_names_that_file(tmp_path):
    data = base()
    data["manifests"] = [{"file": "app.yaml"}]
    app = tmp_path / "app.yaml"
    app.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n"
                   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: shop\n"
                   "spec:\n  containers: [{name: c}]\n")
    problems, _, _ = refuse(tmp_path, data)
    assert len(problems) == 1
    p = problems[0]
    assert p.file == str(app), p
    assert p.value == "shop"
    assert p.line == 9, p
    assert "namespace not declared" in p.expected


def test_load_problem_in_a_manifest_file_names_that_file(tmp_path):
    data = base()
    data["manifests"] = [{"file": "app.yaml"}]
    app = tmp_path / "app.yaml"
    app.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"
                   "spec:\n  containers: [{name: c, ports: [{containerPort: 70000}]}]\n")
    problems, _, _ = refuse(tmp_path, data)
    p = the(problems, "spec.containers[0].ports[0].containerPort")
    assert (p.file, p.value, p.line) == (str(app), 70000, 6)
    assert "65535" in p.expected


def test_manifest_file_not_found(tmp_path):
    data = base()
    data["manifests"] = [{"file": "missing.yaml"}]
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[0].file"), f, "missing.yaml", line_of(text, "missing.yaml"), "file not found")


def test_expectation_with_unknown_endpoint(tmp_path):
    data = base()
    data["expect"] = [{"from": "pod/p1", "to": "ecs/nope", "port": 80, "result": "allow"}]
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "expect[0].to"), f, "ecs/nope", line_of(text, "ecs/nope"), "no such endpoint", "ecs/<name>")


# ------------------------------------------------------------------------------ fixed addresses
def test_fixed_ip_outside_its_vswitch(tmp_path):
    data = base()
    data["cloud"]["instances"][2]["ip"] = "10.0.2.10"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].ip"), f, "10.0.2.10", line_of(text, "10.0.2.10"),
          "outside its vSwitch vsw-a", "10.0.1.0/24")


@pytest.mark.parametrize("ip", ["10.0.1.0", "10.0.1.253", "10.0.1.254", "10.0.1.255"])
def test_fixed_ip_reserved(tmp_path, ip):
    data = base()
    data["cloud"]["instances"][2]["ip"] = ip
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].ip"), f, ip, line_of(text, f"ip: {ip}"), "reserved", "first",
          "last three")


@pytest.mark.parametrize("ip", ["10.0.1.1", "10.0.1.252"])
def test_fixed_ip_at_the_edges_of_the_usable_range_is_accepted(tmp_path, ip):
    data = base()
    data["cloud"]["instances"][2]["ip"] = ip
    plan = make_plan(load(str(write(tmp_path, data))), RUN)
    assert plan.host("ecs/ecs-1").ip == ip


def test_fixed_ip_taken_twice(tmp_path):
    data = base()
    data["cloud"]["instances"][0]["ip"] = "10.0.1.7"
    data["cloud"]["instances"][2]["ip"] = "10.0.1.7"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].ip"), f, "10.0.1.7", line_of(text, "10.0.1.7", after="name: ecs-1"),
          "already taken")


# ---------------------------------------------------------------------------------------- ports
def test_container_port_out_of_range(tmp_path):
    data = base()
    data["manifests"][0]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[0].spec.containers[0].ports[0].containerPort"), f, 70000,
          line_of(text, "70000"), "65535")


def test_instance_port_zero(tmp_path):
    data = base()
    data["cloud"]["instances"][2]["ports"] = [0]
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.instances[2].ports[0]"), f, 0, line_of(text, "- 0"), "greater than or equal to 1")


def test_security_group_port_range_backwards(tmp_path):
    data = base()
    data["cloud"]["securityGroups"][0]["rules"][0]["ports"] = "90-80"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cloud.securityGroups[0].rules[0].ports"), f, "90-80", line_of(text, "90-80"),
          "between 1 and 65535", "first <= last")


# ---------------------------------------------------------------------------------------- pools
def test_vswitch_pool_exhausted_by_instances(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"].append({"name": "vsw-s", "zone": "z1", "cidr": "10.0.3.0/29"})
    # a /29 has 8 addresses: the first and the last three are reserved, 4 are usable
    data["cloud"]["instances"] += [{"name": f"vm-{k}", "vswitch": "vsw-s"} for k in range(5)]
    problems, f, text = refuse(tmp_path, data)
    assert len(problems) == 1
    check(the(problems, "cloud.instances[7].vswitch"), f, "vsw-s", line_of(text, "vswitch: vsw-s", after="name: vm-4"),
          "no free address", "vm-4", "10.0.3.0/29", "larger vSwitch CIDR")


def test_vswitch_pool_exhausted_by_eni_pods(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"].append({"name": "vsw-s", "zone": "z9", "cidr": "10.0.3.0/29"})
    data["cloud"]["instances"].append({"name": "node-3", "vswitch": "vsw-s"})
    data["cluster"]["nodes"] = ["node-3"]
    data["manifests"] = [deployment("web", 5)]    # node-3 holds 1 of the 4 addresses: 3 pods fit
    problems, f, text = refuse(tmp_path, data, mode="eni")
    assert [p.path for p in problems] == ["manifests[0]", "manifests[0]"]
    for p, pod in zip(problems, ("web-3", "web-4")):
        check(p, f, "vsw-s", line_of(text, "apiVersion: apps/v1"), "no free address", f"pod default/{pod}",
              "10.0.3.0/29")


def test_node_pod_cidr_exhausted(tmp_path):
    data = base()
    data["cluster"]["nodeCIDRMaskSize"] = 28
    data["manifests"] = [deployment("web", 20, node="node-1")]
    problems, f, text = refuse(tmp_path, data)
    # a /28 holds 16 addresses: network, gateway .1 and broadcast leave 13 pods
    assert [p.value for p in problems] == [f"default/web-{k}" for k in range(13, 20)]
    for p in problems:
        assert p.path == "manifests[0]"
        check(p, f, p.value, line_of(text, "apiVersion: apps/v1"), "node-1", "172.20.0.0/28", "exhausted",
              "13 pods", "nodeCIDRMaskSize")


def test_pod_cidr_too_small_for_the_nodes(tmp_path):
    data = base()
    data["cluster"].update(podCIDR="172.20.0.0/24", nodeCIDRMaskSize=25, nodes=["node-1", "node-2", "ecs-1"])
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cluster.podCIDR"), f, "172.20.0.0/24", line_of(text, "172.20.0.0/24"),
          "only 2 node CIDRs", "/25", "3 nodes")


def test_pod_cidr_overlapping_the_vpc(tmp_path):
    data = base()
    data["cluster"]["podCIDR"] = "10.0.0.0/8"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cluster.podCIDR"), f, "10.0.0.0/8", line_of(text, "podCIDR"), "overlaps the VPC CIDR 10.0.0.0/16")


def test_service_cidr_overlapping_the_vpc(tmp_path):
    data = base()
    data["cluster"]["serviceCIDR"] = "10.0.128.0/20"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cluster.serviceCIDR"), f, "10.0.128.0/20", line_of(text, "serviceCIDR"),
          "overlaps the VPC CIDR 10.0.0.0/16")


def test_service_cidr_overlapping_the_pod_cidr(tmp_path):
    data = base()
    data["cluster"]["serviceCIDR"] = "172.20.16.0/20"
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "cluster.podCIDR"), f, "172.20.0.0/16", line_of(text, "podCIDR"),
          "overlaps serviceCIDR 172.20.16.0/20")


# ---------------------------------------------------------------------------------------- quota
def _three_nodes_quota_two() -> dict:
    data = base()
    data["cloud"]["vpcs"][0]["routeTable"] = {"quota": 2}
    data["cluster"]["nodes"] = ["node-1", "node-2", "ecs-1"]
    return data


def test_route_quota_exceeded_in_vpc_route_mode(tmp_path):
    problems, f, text = refuse(tmp_path, _three_nodes_quota_two(), mode="vpc-route")
    check(the(problems, "cloud.vpcs[0].routeTable.quota"), f, 2, line_of(text, "quota: 2"),
          "quota exceeded", "3 custom entries", "3 pod CIDR routes")


@pytest.mark.parametrize("mode", ["vxlan", "eni"])
def test_route_quota_does_not_apply_without_pod_routes(tmp_path, mode):
    plan = make_plan(load(str(write(tmp_path, _three_nodes_quota_two())), mode=mode), RUN)
    assert [r.kind for r in plan.vpcs[0].routes] == ["system", "system"]


def test_custom_route_clashing_with_a_pod_route(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["routeTable"] = {"routes": [{"destination": "172.20.0.0/24", "nextHop": "node-2"}]}
    problems, f, text = refuse(tmp_path, data, mode="vpc-route")
    p = the(problems, "cloud.vpcs[0].routeTable.routes[0].destination")
    check(p, f, "172.20.0.0/24", line_of(text, "172.20.0.0/24"), "pod CIDR", "node-1")


# ------------------------------------------------------------------------------------ run names
@pytest.mark.parametrize("run", ["toolongname", "abcdefg", "Kv", "1kv", "k-v", ""])
def test_run_name_too_long_or_malformed(tmp_path, run):
    path = write(tmp_path, base())
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path)), run)
    (p,) = info.value.problems
    assert (p.file, p.path, p.value) == (str(path), "<run name>", run)
    assert p.line is None                   # the run name comes from the command line, not the file
    assert "15 characters" in p.expected and "interface name" in p.expected
    assert "1 to 6" in p.expected


def test_six_letter_run_name_is_accepted(tmp_path):
    plan = make_plan(load(str(write(tmp_path, base()))), "abcdef")
    assert plan.run == "abcdef"


# ------------------------------------------------------------------------------------ manifests
def test_unsupported_kubernetes_kind(tmp_path):
    data = base()
    data["manifests"].append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "s"}})
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[1].kind"), f, "Widget (example.com/v1)", line_of(text, "kind: Widget"),
          "unsupported", "Deployment (apps/v1)", "Namespace (v1)", "Pod (v1)", "Service (v1)")
    # a kind that would change the network, and is not emulated, is refused with the reason
    data["manifests"][1] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "s"}}
    problems, f, text = refuse(tmp_path, data)
    check(the(problems, "manifests[1].kind"), f, "Endpoints (v1)", line_of(text, "kind: Endpoints"),
          "not emulated", "only from its selector")


def test_deployment_selector_not_matching_its_template(tmp_path):
    data = base()
    data["manifests"] = [deployment("web", 2, labels={"app": "web"}, selector={"app": "api"})]
    problems, f, text = refuse(tmp_path, data)
    p = the(problems, "manifests[0].spec")
    check(p, f, data["manifests"][0]["spec"], line_of(text, "spec:"), "selector does not match",
          "template.metadata.labels")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ncloud:\n  vpcs:\n    - name: a\n      cidr: [10.0.0.0/16\n"
                    "      vswitches: []\n")
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    (p,) = info.value.problems
    assert p.file == str(path)
    assert p.line == 6                      # where the parser found the unclosed [ of line 5
    assert "valid YAML" in p.expected
    assert isinstance(p.value, str) and p.value        # the parser's own words
    assert f"{path}:6" in str(info.value)


def test_several_problems_at_once_from_the_schema(tmp_path):
    data = base()
    data["bogus"] = 1
    data["cloud"]["vpcs"][0]["vswitches"][1]["colour"] = "red"
    data["cloud"]["securityGroups"][0]["rules"][0]["ports"] = "90-80"
    problems, _, _ = refuse(tmp_path, data)
    assert sorted(p.path for p in problems) == sorted(
        ["bogus", "cloud.vpcs[0].vswitches[1].colour", "cloud.securityGroups[0].rules[0].ports"])


def test_several_problems_at_once_from_the_planner(tmp_path):
    data = base()
    data["cloud"]["instances"][0]["vswitch"] = "vsw-zz"
    data["cloud"]["instances"][2]["securityGroups"] = ["sg-zz"]
    data["cloud"]["securityGroups"][0]["rules"].append({"direction": "ingress", "group": "sg-yy"})
    problems, f, text = refuse(tmp_path, data)
    assert sorted(p.path for p in problems) == sorted(
        ["cloud.instances[0].vswitch", "cloud.instances[2].securityGroups[0]",
         "cloud.securityGroups[0].rules[1].group"])
    assert {p.value for p in problems} == {"vsw-zz", "sg-zz", "sg-yy"}
    assert all(p.file == str(f) and p.line for p in problems)


def test_mode_override_needs_a_cluster(tmp_path):
    data = base()
    del data["cluster"]
    data["manifests"] = []
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        load(str(path), mode="eni")
    (p,) = info.value.problems
    assert p.path == "cluster" and "cluster section" in p.expected
