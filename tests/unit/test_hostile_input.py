"""Hostile scenarios: nothing a scenario reads escapes its directory, no file takes the machine
down, and types are strict. Each refusal is a ScenarioError that names file, place, value and
what was expected, given at once (the CLI turns it into exit 2), and never quotes a file that
is not a scenario."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import pytest
import yaml

from kubevpc import k8s
from kubevpc.scenario import model
from kubevpc.render import nginx
from kubevpc.errors import ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan
from kubevpc.scenario.yamlfile import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, Limits

from .problems import the

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def small() -> dict:
    return copy.deepcopy(yaml.safe_load((DATA / "small.yaml").read_text()))


def refused(path: Path, **kw) -> list:
    t0 = time.monotonic()
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), **kw), "t")
    assert time.monotonic() - t0 < 1.0, "refused in under a second"
    return info.value.problems


def scenario_with_file(tmp_path: Path, name: str) -> Path:
    data = small()
    data["manifests"] = [{"file": name}]
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------------------- file: references
@pytest.mark.parametrize("name", ["/etc/passwd", "../../../../../../etc/passwd", "/etc/hostname"])
def test_a_file_outside_the_scenarios_directory_is_not_read(tmp_path, name):
    [p] = refused(scenario_with_file(tmp_path, name))
    assert p.path == "manifests[0].file" and p.value == name
    assert "outside" in p.expected and str(tmp_path) in p.expected and "--allow-dir" in p.expected
    assert "root:x" not in str(p) and ":0:0:" not in str(p)          # nothing of /etc/passwd


def test_a_symbolic_link_out_of_the_directory_is_not_followed(tmp_path):
    (tmp_path / "link.yaml").symlink_to("/etc/passwd")
    [p] = refused(scenario_with_file(tmp_path, "link.yaml"))
    assert "outside" in p.expected and "root:x" not in str(p)


def test_an_allowed_directory_is_read_and_the_content_of_a_non_manifest_is_not_shown(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "passwd.yaml").write_text("kvsecret:x:0:0:kvsecret:/kvhome:/bin/bash\n")   # a plain scalar document
    (other / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n")
    scen = tmp_path / "scen"
    scen.mkdir()
    path = scenario_with_file(scen, str(other / "passwd.yaml"))
    assert "outside" in refused(path)[0].expected
    [p] = refused(path, allow_dirs=[str(other)])
    assert p.file == str(other / "passwd.yaml") and "expected a Kubernetes object" in p.expected
    assert "kvsecret" not in str(p) and "bash" not in str(p)
    ok = scenario_with_file(scen, str(other / "svc.yaml"))
    assert [m.obj.metadata.name for m in load(str(ok), allow_dirs=[str(other)]).manifests] == ["s"]


def test_a_yaml_error_in_a_referenced_file_does_not_quote_its_tokens(tmp_path):
    (tmp_path / "bad.yaml").write_text("secret: *hunter2\n")
    [p] = refused(scenario_with_file(tmp_path, "bad.yaml"))
    assert "hunter2" not in str(p) and p.line == 1 and "valid YAML" in p.expected


def test_an_unknown_kind_in_a_referenced_file_is_named_only_when_it_looks_like_one(tmp_path):
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: StatefulThing\n")
    (tmp_path / "b.yaml").write_text("kind: 'password: hunter2'\n")
    assert "StatefulThing" in str(refused(scenario_with_file(tmp_path, "a.yaml"))[0])
    assert "hunter2" not in str(refused(scenario_with_file(tmp_path, "b.yaml"))[0])


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    [p] = refused(scenario_with_file(tmp_path, "fifo.yaml"))
    assert p.value == "a FIFO" and p.expected == "expected a regular file"


def test_a_device_is_refused(tmp_path):
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    [p] = refused(scenario_with_file(tmp_path, "zero.yaml"), allow_dirs=["/dev"])
    assert p.value == "a character device"
    [p] = refused(Path("/dev/zero"))
    assert p.value == "a character device"


# ----------------------------------------------------------------------------------- the limits
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(50_000_000)              # sparse: 50 MB that cost nothing to write
    [p] = refused(path)
    assert p.value == "50000000 bytes" and str(DEFAULT_MAX_BYTES) in p.expected and MAX_BYTES_ENV in p.expected


def test_the_size_limit_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small()))
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    assert "100 bytes" in refused(path)[0].expected
    monkeypatch.setenv(MAX_BYTES_ENV, str(10 << 20))
    assert make_plan(load(str(path)), "t")
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    assert refused(path)[0].value == "lots"


def test_an_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400
    [p] = refused(path)
    assert p.value.startswith("alias *") and "alias bomb" in p.expected and p.line and p.line > 1


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("a: &a [1, *a]\n")
    [p] = refused(path)
    assert p.value == "alias *a" and "recursive" in p.expected and p.line == 1


def test_a_few_small_aliases_are_fine(tmp_path):
    data = yaml.safe_dump(small())
    data = data.replace("cluster:\n", "x-labels: &labels {app: web}\ncluster:\n")
    path = tmp_path / "ok.yaml"
    path.write_text(data)
    with pytest.raises(ScenarioError) as info:     # an unknown top-level key, but read without trouble
        load(str(path))
    assert [p.path for p in info.value.problems] == ["x-labels"]


@pytest.mark.parametrize("text", ["a: " + "[" * 100_000 + "]" * 100_000, "a: " + "{b: " * 2000 + "1" + "}" * 2000,
                                  "a:\n" + "".join(" " * i + "- \n" for i in range(1, 200))])
def test_deep_nesting_is_refused(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text + "\n")
    [p] = refused(path)
    assert "nesting deeper than the 64 levels" in p.expected and p.line


def test_undecodable_bytes_are_named_by_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    [p] = refused(path)
    assert p.value == "byte 0xe9 at byte offset 9" and p.expected == "expected UTF-8 text" and p.line == 1


def test_a_control_character_is_named(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"name: x\ndescription: a\x00b\n")
    [p] = refused(path)
    assert p.value == "character #x0000 at character 22" and p.line == 2


def test_the_command_line_refuses_a_bomb_with_exit_2_in_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "kubevpc.cli", "validate", str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    assert "alias bomb" in res.stderr and "Traceback" not in res.stderr
    assert took < 3.0, f"{took:.1f} s, interpreter start included"


# ---------------------------------------------------------------------------------- strict types
def with_value(path: tuple, value) -> dict:
    data = small()
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value, words", [
    (("cloud", "vpcs", 0, "cidr"), 12345, "as a string"),
    (("cloud", "vpcs", 0, "cidr"), True, "as a string"),
    (("cloud", "instances", 0, "ip"), 167772417, "as a string"),
    (("cluster", "dns", "enabled"), "no", "true or false"),
    (("cluster", "dns", "enabled"), 0, "true or false"),
    (("cluster", "underlayMTU"), 1500.0, "whole number"),
    (("cloud", "vpcs", 0, "routeTable"), {"quota": "50"}, "whole number"),
])
def test_values_of_another_type_are_errors(tmp_path, path, value, words):
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(with_value(path, value)))
    problems = refused(file)
    dotted = ".".join(str(p) for p in path).replace(".0.", "[0].").replace(".0", "[0]")
    hit = [p for p in problems if p.path.startswith(dotted)]
    assert hit and words in hit[0].expected, "\n".join(map(str, problems))


@pytest.mark.parametrize("replicas", [True, 3.0, "3"])
def test_replicas_must_be_a_whole_number_and_the_error_names_replicas(tmp_path, replicas):
    data = small()
    data["manifests"].append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                              "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                                       "template": {"metadata": {"labels": {"app": "web"}},
                                                    "spec": {"containers": [{"name": "c"}]}}}})
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(data))
    p = the(refused(file), "manifests[1].spec.replicas")
    assert p.value == replicas and p.expected == "expected a whole number"


def model_class_names() -> set[str]:
    names = set()
    for module in (model, k8s.meta, k8s.workloads, k8s.service, k8s.networkpolicy, k8s.podnetworking, k8s.ingress,
                   nginx):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, pydantic.BaseModel) and value.__module__ == module.__name__:
                names.add(value.__name__)
    return names


@pytest.mark.parametrize("path, value", [
    (("cloud", "instances", 2, "ports"), [True]), (("cloud", "instances", 2, "ports"), [[1]]),
    (("cloud", "instances", 2, "ports"), [{"port": "x"}]), (("cloud", "vpcs", 0, "vswitches"), [5]),
    (("cloud", "securityGroups", 0, "rules"), ["x"]), (("cluster", "vxlan"), 1), (("manifests",), [3]),
    (("manifests",), [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": {"ports": [{"port": 80, "targetPort": [1]}], "sessionAffinityConfig": 3}}]),
    (("manifests",), [{"apiVersion": "v1", "kind": "Pod", "metadata": 7, "spec": {"containers": ["c"]}}]),
])
def test_errors_never_name_a_class_of_ours(tmp_path, path, value):
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(with_value(path, value)))
    text = "\n".join(map(str, refused(file)))
    leaked = {name for name in model_class_names() if name in text}
    assert not leaked, text
    assert "function-" not in text and ".int" not in text and ".str" not in text, text


def test_limits_from_the_environment():
    assert Limits.from_env({}) == Limits()
    assert Limits.from_env({MAX_BYTES_ENV: "123"}).max_bytes == 123
    for bad in ("0", "-5", "1e6", "x"):
        with pytest.raises(ScenarioError):
            Limits.from_env({MAX_BYTES_ENV: bad})


# ------------------------------------------------------------------------------- Ingress snippets
INGRESS = REPO / "tests" / "e2e" / "data" / "ingress.yaml"


def snippet_scenario(tmp_path: Path, allow: bool | None) -> Path:
    data = yaml.safe_load(INGRESS.read_text())
    data["cluster"].pop("ingress", None)
    if allow is not None:
        data["cluster"]["ingress"] = {"allowSnippetAnnotations": allow}
    data["manifests"].append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                              "metadata": {"name": "snip", "annotations": {
                                  "nginx.ingress.kubernetes.io/configuration-snippet": "access_log /tmp/x;"}},
                              "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}})
    path = tmp_path / "ingress.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("allow", [None, False])
def test_a_snippet_annotation_is_refused_with_ingress_nginx_reason(tmp_path, allow):
    [p] = refused(snippet_scenario(tmp_path, allow))
    assert p.path.endswith("metadata.annotations.nginx.ingress.kubernetes.io/configuration-snippet")
    assert p.value == "access_log /tmp/x;"
    assert p.expected.startswith("nginx.ingress.kubernetes.io/configuration-snippet annotation cannot be used. "
                                 "Snippet directives are disabled by the Ingress administrator")
    assert "cluster.ingress.allowSnippetAnnotations: true" in p.expected


def test_a_snippet_annotation_is_taken_when_the_scenario_allows_it(tmp_path):
    plan = make_plan(load(str(snippet_scenario(tmp_path, True))), "t")
    assert plan.cluster.allow_snippet_annotations
    assert any(i.metadata.name == "snip" for i in plan.ingresses)
