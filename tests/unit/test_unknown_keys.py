"""Unknown keys name the keys valid where they are, and the closest when one is close
(kubevpc/scenario/keys.py): `vswitchs` in a VPC says "did you mean `vswitches`?" and lists name,
cidr, ipv6Cidr, vswitches, routeTable, routeTables. Kubernetes objects keep their fields the
emulator does not use, so only their walk is tested, on their models."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kubevpc import k8s
from kubevpc.errors import ScenarioError
from kubevpc.scenario import keys
from kubevpc.scenario.load import Source, load, pydantic_problems
from kubevpc.scenario.model import VPC, Cloud, Expectation, Scenario, ServerPort

from .problems import check, line_of, the

SMALL = Path(__file__).parent / "data" / "small.yaml"
VPC_KEYS = "expected one of name, cidr, ipv6Cidr, vswitches, routeTable, routeTables"


def refused(tmp_path: Path, change) -> tuple[list, Path, str]:
    data = copy.deepcopy(yaml.safe_load(SMALL.read_text()))
    change(data)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    return info.value.problems, path, path.read_text()


# ------------------------------------------------------------------------- in a scenario file
def test_a_misspelt_key_gets_the_closest_and_the_valid_keys(tmp_path):
    problems, f, text = refused(tmp_path, lambda d: d["cloud"]["vpcs"][0].update(vswitchs=[]))
    p = the(problems, "cloud.vpcs[0].vswitchs")
    check(p, f, "vswitchs", line_of(text, "vswitchs:"), "unknown key", "did you mean `vswitches`?", VPC_KEYS)
    assert str(p).endswith(f"'vswitchs': unknown key; did you mean `vswitches`? {VPC_KEYS}")


def test_letter_case_aside(tmp_path):
    problems, f, text = refused(tmp_path, lambda d: d["cloud"].update(SecurityGroup=[]))
    check(the(problems, "cloud.SecurityGroup"), f, "SecurityGroup", line_of(text, "SecurityGroup:"),
          "did you mean `securityGroups`?", "expected one of vpcs, peerings, flowLogs, securityGroups, instances")


def test_no_suggestion_when_nothing_is_close(tmp_path):
    problems, f, text = refused(tmp_path, lambda d: d["cloud"]["vpcs"][0]["vswitches"][0].update(colour="red"))
    p = the(problems, "cloud.vpcs[0].vswitches[0].colour")
    check(p, f, "colour", line_of(text, "colour:"), "unknown key; expected one of name, zone, cidr, ipv6Cidr")
    assert "did you mean" not in p.expected


def test_inside_a_list_of_short_forms(tmp_path):
    """instances[].ports takes 80, "53/UDP" or a mapping: the mapping's keys are listed."""
    problems, f, text = refused(tmp_path, lambda d: d["cloud"]["instances"][2].update(
        ports=[{"port": 80, "protcol": "UDP"}]))
    check(the(problems, "cloud.instances[2].ports[0].protcol"), f, "protcol", line_of(text, "protcol:"),
          "did you mean `protocol`?", "expected one of port, protocol")


def test_at_the_top_and_in_optional_sections(tmp_path):
    def change(d):
        d["expects"] = []
        d["cluster"]["dns"]["enable"] = False
    problems, f, text = refused(tmp_path, change)
    check(the(problems, "expects"), f, "expects", line_of(text, "expects:"), "did you mean `expect`?",
          "expected one of name, description, cloud, cluster, manifests, expect")
    check(the(problems, "cluster.dns.enable"), f, "enable", line_of(text, "enable:"), "did you mean `enabled`?",
          "expected one of enabled, clusterDomain, ip")


def test_an_alias_is_listed_as_written(tmp_path):
    """An expectation's source is written `from`."""
    problems, f, text = refused(tmp_path, lambda d: d.update(
        expect=[{"form": "ecs/ecs-1", "to": "pod/p1", "port": 80, "result": "allow"}]))
    check(the(problems, "expect[0].form"), f, "form", line_of(text, "form:"), "did you mean `from`?",
          "expected one of from, to, port, protocol, result, modes, family")


# ----------------------------------------------------------------------------- the walk itself
def test_the_walk_follows_models_lists_dicts_and_optionals():
    assert keys.model_at(Scenario, ("cloud", "vpcs", 0)) is VPC
    assert keys.model_at(Scenario, ("cloud",)) is Cloud
    assert keys.model_at(Scenario, ("expect", 3)) is Expectation
    assert keys.model_at(Scenario, ("cloud", "instances", 0, "ports", 1)) is ServerPort
    assert keys.model_at(Scenario, ("cloud", "internet", "hosts", 0)).__name__ == "InternetHost"


def test_the_walk_takes_kubernetes_models_and_their_aliases():
    rule = keys.model_at(k8s.NetworkPolicy, ("spec", "ingress", 0))
    assert rule is k8s.NetworkPolicyIngressRule and keys.valid_keys(rule) == ["ports", "from"]
    assert keys.valid_keys(keys.model_at(k8s.NetworkPolicy, ("spec", "ingress", 0, "from", 0, "ipBlock"))) == [
        "cidr", "except"]
    assert keys.model_at(k8s.Deployment, ("spec", "template", "spec", "containers", 0)) is k8s.Container


def test_pydantic_union_branch_names_are_followed():
    class Narrow(BaseModel):
        model_config = ConfigDict(extra="forbid")
        port: int

    class Holder(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[int | Narrow]

    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"items": [{"prot": 1}]})
    extra = [e for e in info.value.errors() if e["type"] == "extra_forbidden"][0]
    assert extra["loc"] == ("items", 0, "Narrow", "prot")            # pydantic names the branch
    assert keys.unknown_key(Holder, extra["loc"]) == "unknown key; did you mean `port`? expected one of port"


def test_without_the_model_the_documented_keys_are_pointed_to():
    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")
        a: int = 0

    with pytest.raises(ValidationError) as info:
        Strict.model_validate({"b": 1})
    [p] = pydantic_problems(Source("x.yaml", {"b": 1}), info.value)
    assert p.expected == keys.GENERIC
    [p] = pydantic_problems(Source("x.yaml", {"b": 1}), info.value, model=Strict)
    assert p.expected == "unknown key; expected one of a"


def test_kubernetes_objects_keep_fields_the_emulator_does_not_use(tmp_path):
    """Manifests are what users run in production: an image, resources or a field kubevpc has no
    model for are not errors (kubevpc.k8s), so they never reach the unknown-key message."""
    data = copy.deepcopy(yaml.safe_load(SMALL.read_text()))
    data["manifests"][0]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    data["manifests"][0]["spec"]["colour"] = "red"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    [pod] = load(str(path)).manifests
    assert pod.obj.metadata.name == "p1"
