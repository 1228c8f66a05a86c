"""The scenario file's JSON Schema (kubevpc/scenario/schema.py): the published file is what the
models generate, every scenario the repository ships validates against it, and it refuses and
takes what the loader refuses and takes (unknown keys at any depth, the short forms validators
accept), so an editor's marks are the loader's."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from kubevpc.cli import main
from kubevpc.errors import ScenarioError
from kubevpc.scenario import schema
from kubevpc.scenario.load import load
from kubevpc.scenario.model import Scenario

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / schema.PUBLISHED
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml")) + sorted((REPO / "tests" / "e2e" / "data").glob("*.yaml"))
SMALL = REPO / "tests" / "unit" / "data" / "small.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    """The published schema, as an editor or CI would take it."""
    published = json.loads(PUBLISHED.read_text())
    jsonschema.Draft7Validator.check_schema(published)
    return jsonschema.Draft7Validator(published, format_checker=jsonschema.FormatChecker())


def schema_errors(validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def loader_takes(data: dict) -> bool:
    """Whether the loader's schema step (pydantic, before planning) takes the document."""
    try:
        Scenario.model_validate(data)
        return True
    except ValidationError:
        return False


def small() -> dict:
    return copy.deepcopy(yaml.safe_load(SMALL.read_text()))


# ------------------------------------------------------------------------- the published file
def test_the_published_schema_is_what_the_models_generate():
    assert PUBLISHED.read_text() == schema.schema_text(), (
        f"{schema.PUBLISHED} is not what the models generate: run `{schema.UPDATE}` and commit it")


def test_kubevpc_schema_prints_the_published_schema(capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == PUBLISHED.read_text()


def test_the_schema_names_its_dialect_and_itself():
    s = schema.scenario_schema()
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert s["$id"] == schema.SCHEMA_ID and s["title"] == "kubevpc scenario"
    assert s["required"] == ["cloud"] and s["additionalProperties"] is False


def test_descriptions_come_from_docstrings_and_field_comments():
    defs = schema.scenario_schema()["definitions"]
    assert defs["Instance"]["description"].startswith("An ECS instance.")
    assert defs["Internet"]["properties"]["domain"]["description"].startswith("the zone's DNS domain")  # above it
    assert defs["VSwitch"]["properties"]["ipv6Cidr"]["description"].startswith("a /64 of its VPC's ipv6Cidr")
    assert defs["Expectation"]["properties"]["modes"]["description"] == "only in these modes (default: all)"
    assert "title" not in defs["VSwitch"]["properties"]["cidr"], "no title made up from a field's name"


def test_field_comments_are_found_by_the_tokenizer():
    class Sample(BaseModel):
        """Not a field: a docstring line that reads
        key: like a field # with a comment"""

        pattern: str = "#[a-z]"          # the real comment
        # above, first line
        # and second
        below: int = 0
        bare: int = 1

        def method(self) -> int:      # not a field
            return 0

    assert schema.field_comments(Sample) == {"pattern": "the real comment", "below": "above, first line and second"}


# --------------------------------------------------------------- shipped scenarios: both agree
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_scenario_validates(validator, path):
    load(str(path))
    assert schema_errors(validator, yaml.safe_load(path.read_text())) == []


def test_the_example_scenarios_name_the_schema_for_editors():
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        assert "# yaml-language-server: $schema=../schema/kubevpc-scenario.schema.json" in path.read_text(), path


# ------------------------------------------------------------------ unknown keys: both refuse
UNKNOWN = [("top", ()), ("cloud", ("cloud",)), ("vpc", ("cloud", "vpcs", 0)),
           ("vswitch", ("cloud", "vpcs", 0, "vswitches", 0)), ("rule", ("cloud", "securityGroups", 0, "rules", 0)),
           ("instance", ("cloud", "instances", 0)), ("cluster", ("cluster",)), ("dns", ("cluster", "dns"))]


@pytest.mark.parametrize("where", [w for _, w in UNKNOWN], ids=[n for n, _ in UNKNOWN])
def test_an_unknown_key_fails_the_schema_as_it_fails_the_loader(validator, tmp_path, where):
    data = small()
    at = data
    for part in where:
        at = at.setdefault(part, {}) if isinstance(part, str) else at[part]
    at["colour"] = "red"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    assert any("unknown key" in p.expected and p.path.endswith("colour") for p in info.value.problems)
    errors = schema_errors(validator, data)
    assert errors and all("colour" in e for e in errors), errors


def test_a_file_reference_with_another_key_fails_both(validator, tmp_path):
    """{file:, colour:} is no file reference; as an object it has no kind."""
    data = small()
    data["manifests"] = [{"file": "x.yaml", "colour": "red"}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    assert [p.path for p in info.value.problems] == ["manifests[0].kind"]
    assert schema_errors(validator, data)


# ----------------------------------------------------- what validators take: both take, or refuse
CHANGES = {
    "port as 53/udp": (("cloud", "instances", 0, "ports"), [80, "53/udp", {"port": 81, "protocol": "UDP"}], True),
    "port as a word": (("cloud", "instances", 0, "ports"), ["http"], False),
    "port 0": (("cloud", "instances", 0, "ports"), [0], False),
    "rule ports range": (("cloud", "securityGroups", 0, "rules", 0, "ports"), "8000/8080", True),
    "rule ports all": (("cloud", "securityGroups", 0, "rules", 0, "ports"), "all", True),
    "rule ports word": (("cloud", "securityGroups", 0, "rules", 0, "ports"), "http", False),
    "name with capitals": (("cloud", "vpcs", 0, "name"), "VPC_A", False),
    "name too long": (("cloud", "vpcs", 0, "name"), "a" * 41, False),
    "quota as text": (("cloud", "vpcs", 0, "routeTable"), {"quota": "50"}, False),
    "mode unknown": (("cluster", "mode"), "calico", False),
    "expect from": (("expect",), [{"from": "ecs/ecs-1", "to": "pod/p1", "port": 80, "result": "allow"}], True),
    "expect with a typo": (("expect",), [{"form": "ecs/ecs-1", "to": "pod/p1", "port": 80, "result": "allow"}], False),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_the_schema_takes_what_the_loader_takes(validator, name):
    where, value, takes = CHANGES[name]
    data = small()
    at = data
    for part in where[:-1]:
        at = at[part]
    at[where[-1]] = value
    assert loader_takes(data) is takes
    assert (schema_errors(validator, data) == []) is takes, schema_errors(validator, data)


def test_dnat_entries_in_alibabas_spelling(validator):
    """ipProtocol TCP, UDP, Any as Alibaba's API writes them, and ports `any` for IP mapping."""
    data = small()
    data["cloud"]["natGateways"] = [{"name": "ngw", "vpc": data["cloud"]["vpcs"][0]["name"], "dnat": [
        {"eip": "e", "ipProtocol": "TCP", "externalPort": 80, "internalPort": 8080, "instance": "ecs-1"},
        {"eip": "e", "ipProtocol": "Any", "externalPort": "Any", "internalPort": "any", "instance": "ecs-1"}]}]
    assert loader_takes(data) and schema_errors(validator, data) == []
    data["cloud"]["natGateways"][0]["dnat"][0]["ipProtocol"] = "sctp"
    assert not loader_takes(data) and schema_errors(validator, data)


# ---------------------------------------------------------------------------------- manifests
def service(**port) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, **port}]}}


def test_a_kind_kubevpc_models_is_checked_against_its_model(validator):
    data = small()
    data["manifests"] = [service(targetPort="http")]
    assert schema_errors(validator, data) == []
    data["manifests"] = [service(port="80")]
    assert schema_errors(validator, data), "port: '80' is a string, as the API server says"


def test_fields_kubevpc_does_not_emulate_are_allowed_in_objects(validator):
    data = small()
    data["manifests"] = [{**service(), "status": {"loadBalancer": {}}, "spec": {**service()["spec"], "foo": 1}}]
    assert loader_takes(data) and schema_errors(validator, data) == []


def test_an_object_needs_an_api_version_and_a_kind(validator):
    data = small()
    data["manifests"] = [{"metadata": {"name": "x"}}]
    assert schema_errors(validator, data)
