"""Manifests read as kubectl reads them (kubevpc/scenario/manifests.py, kubevpc/scenario/load.py):
a file, a directory (sorted, -R for subdirectories), `-` for standard input within the same limits
as a file; multi-document YAML and `kind: List` everywhere (apply, delete -f, a scenario's
manifests); kinds that do not touch the network skipped with one warning line each; kinds that
would and are not emulated refused with the reason (kubevpc/k8s/skipped.py)."""
from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.k8s import refusal, skip_reason
from kubevpc.lab import changes
from kubevpc.scenario import yamlfile
from kubevpc.scenario.load import load
from kubevpc.scenario.manifests import MAX_FILES, manifest_files, read_manifests

from .problems import line_of

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"


def svc(name: str, port: int = 80, ns: str | None = None) -> str:
    meta = f"{{name: {name}{', namespace: ' + ns if ns else ''}}}"
    return f"apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {{ports: [{{port: {port}}}]}}\n"


SA = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n"
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\ndata: {a: b}\n"
HPA = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {maxReplicas: 3}\n"


def names(got) -> list[str]:
    return [o["metadata"]["name"] for o in got.objects]


# ------------------------------------------------------------------------------- files, directories, stdin
def test_a_directory_gives_its_manifest_files_sorted_and_recursive_only_with_r(tmp_path):
    (tmp_path / "b.yaml").write_text(svc("b"))
    (tmp_path / "a.yml").write_text(svc("a"))
    (tmp_path / "c.json").write_text('{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"},\n'
                                     '\t"spec": {"ports": [{"port": 82}]}}\n')
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(svc("d"))
    assert names(read_manifests([str(tmp_path)])) == ["a", "b", "c"]
    assert names(read_manifests([str(tmp_path)], recursive=True)) == ["a", "b", "c", "d"]
    # files and directories mix, in the order given
    assert names(read_manifests([str(tmp_path / "sub" / "d.yaml"), str(tmp_path)])) == ["d", "a", "b", "c"]


def test_a_directory_without_manifests_and_a_missing_path_are_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError) as info:
        read_manifests([str(tmp_path / "empty"), str(tmp_path / "missing.yaml")])
    text = [str(p) for p in info.value.problems]
    assert text[0].startswith(f"{tmp_path}/empty: <top>: ") and "a directory without manifests" in text[0]
    assert "(-R reads its subdirectories)" in text[0]
    assert text[1].endswith("missing.yaml': cannot read the file: No such file or directory")


def test_standard_input_is_read_once_within_the_limits_of_a_file():
    got = read_manifests(["-"], stdin=io.BytesIO((svc("a") + "---\n" + svc("b", 81)).encode()))
    assert names(got) == ["a", "b"] and got.manifests[1].file == "<stdin>"
    with pytest.raises(ScenarioError, match="standard input may be named once"):
        manifest_files(["-", "-"])
    # hostile input: too large (checked as it is read), not UTF-8, an alias bomb, bad YAML
    limits = yamlfile.Limits(max_bytes=64)
    with pytest.raises(ScenarioError) as info:
        read_manifests(["-"], stdin=io.BytesIO(b"#" * 10_000_000), limits=limits)
    assert str(info.value.problems[0]) == ("<stdin>: <top>: 'over 64 bytes': more than the 64 bytes a YAML file may "
                                           "have; set KUBEVPC_MAX_YAML_BYTES to a larger number of bytes to allow it")
    with pytest.raises(ScenarioError, match=r"<stdin>:2: <top>: 'byte 0xff at byte offset 5': expected UTF-8 text"):
        read_manifests(["-"], stdin=io.BytesIO(b"a: 1\n\xff"))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    with pytest.raises(ScenarioError, match="an alias bomb"):
        read_manifests(["-"], stdin=io.BytesIO(bomb.encode()))
    with pytest.raises(ScenarioError, match=r"<stdin>:1: .*expected valid YAML"):
        read_manifests(["-"], stdin=io.BytesIO(b"{unclosed"))


def test_no_object_at_all_is_a_problem_but_an_empty_file_beside_others_is_not(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    (tmp_path / "one.yaml").write_text(svc("one"))
    assert names(read_manifests([str(tmp_path / "empty.yaml"), str(tmp_path / "one.yaml")])) == ["one"]
    with pytest.raises(ScenarioError, match="no objects; expected one or more Kubernetes objects"):
        read_manifests([str(tmp_path / "empty.yaml")])


def test_a_directory_gives_at_most_max_files(tmp_path):
    for i in range(MAX_FILES + 1):
        (tmp_path / f"{i:05}.yaml").write_text("")
    with pytest.raises(ScenarioError, match=f"at most {MAX_FILES} manifest files in one command"):
        manifest_files([str(tmp_path)])


# ---------------------------------------------------------------------------------------- kind: List
def test_a_list_stands_for_its_items_with_lines_and_paths(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("apiVersion: v1\nkind: List\nitems:\n"
                    "  - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}\n"
                    "  - {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 0}]}}\n"
                    "  - {apiVersion: v1, kind: List, items: []}\n"
                    "---\n" + svc("c"))
    with pytest.raises(ScenarioError) as info:
        read_manifests([str(path)])
    assert [str(p) for p in info.value.problems] == [
        f"{path}:5: items[1].spec.ports[0].port: 0: Input should be greater than or equal to 1",
        f"{path}:6: items[2].kind: 'List': a List inside a List; expected Kubernetes objects as a List's items"]
    path.write_text("apiVersion: v1\nkind: List\nitems:\n"
                    "  - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}\n"
                    "---\n" + svc("c"))
    got = read_manifests([str(path)])
    assert names(got) == ["a", "c"] and [m.path for m in got.manifests] == ["[0].items[0]", "[1]"]
    path.write_text("apiVersion: v1\nkind: List\nitems: {a: 1}\n")
    with pytest.raises(ScenarioError, match=r"items: \{'a': 1\}: expected a list of Kubernetes objects"):
        read_manifests([str(path)])


def test_a_scenario_reads_lists_inline_and_in_its_files(tmp_path):
    data = yaml.safe_load(SERVICES.read_text())
    data["manifests"] = [m for m in data["manifests"] if m["kind"] != "Service"]
    data["manifests"].append({"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(svc("a")), yaml.safe_load(SA)]})
    data["manifests"].append({"file": "more.yaml"})
    (tmp_path / "more.yaml").write_text("apiVersion: v1\nkind: List\nitems:\n" + "".join(
        "  - " + yaml.safe_dump(yaml.safe_load(t), default_flow_style=True) for t in (svc("b", 81), HPA)))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    ld = load(str(tmp_path / "s.yaml"))
    assert [m.obj.metadata.name for m in ld.manifests if m.obj.kind == "Service"] == ["a", "b"]
    assert [(w.path, w.value) for w in ld.warnings] == [(f"manifests[{len(data['manifests']) - 2}].items[1]",
                                                         "ServiceAccount/web"),
                                                        ("[0].items[1]", "HorizontalPodAutoscaler/web")]


# ------------------------------------------------------------------------------ skipped and refused kinds
def test_kinds_that_do_not_touch_the_network_are_skipped_with_one_warning_each(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text("---\n".join([SA, CM, svc("web"), HPA]))
    got = read_manifests([str(path)])
    assert names(got) == ["web"]
    assert [str(w) for w in got.warnings] == [
        f"{path}:1: [0]: 'ServiceAccount/web': skipped: does not affect the network",
        f"{path}:{line_of(path.read_text(), 'kind: ConfigMap') - 1}: [1]: 'ConfigMap/web-config': skipped: does not "
        "affect the network",
        f"{path}:{line_of(path.read_text(), 'kind: Horizontal') - 1}: [3]: 'HorizontalPodAutoscaler/web': skipped: "
        "does not affect the network"]
    # only skipped objects: nothing to apply, and no problem either
    path.write_text(SA)
    got = read_manifests([str(path)])
    assert got.objects == [] and len(got.warnings) == 1


@pytest.mark.parametrize("obj, skipped", [
    ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding"}, True),
    ({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget"}, True),
    ({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler"}, True),
    ({"apiVersion": "batch/v1", "kind": "CronJob"}, True),
    ({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}, True),
    ({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass"}, True),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}}, True),
    # Terway reads kube-system's ConfigMaps; an Ingress may use a TLS Secret: both are read and checked
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "eni-config", "namespace": "kube-system"}}, False),
    ({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls"}, False),
    ({"apiVersion": "v1", "kind": "Secret", "data": {"tls.crt": ""}}, False),
    ({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"password": "eA=="}}, True),
    ({"apiVersion": "v1", "kind": "Service"}, False),
    ({"apiVersion": "apps/v1", "kind": "DaemonSet"}, False),
])
def test_which_kinds_are_skipped(obj, skipped):
    assert (skip_reason(obj) is not None) == skipped
    assert refusal(obj) is None


def test_jobs_are_skipped_with_their_own_reason():
    reason = skip_reason({"apiVersion": "batch/v1", "kind": "Job"})
    assert reason.startswith("skipped: its pods run to completion") and "probe from a Pod" in reason


@pytest.mark.parametrize("api, kind, words", [
    ("discovery.k8s.io/v1", "EndpointSlice", "only from its selector"),
    ("v1", "Endpoints", "only from its selector"),
    ("gateway.networking.k8s.io/v1", "Gateway", "Gateway API"),
    ("networking.istio.io/v1beta1", "ServiceEntry", "Istio"),
    ("cilium.io/v2", "CiliumNetworkPolicy", "expected a NetworkPolicy"),
    ("apps/v1", "ReplicaSet", "expected a Deployment"),
])
def test_kinds_that_would_change_the_network_are_refused_with_the_reason(tmp_path, api, kind, words):
    path = tmp_path / "x.yaml"
    path.write_text(f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n")
    with pytest.raises(ScenarioError) as info:
        read_manifests([str(path)])
    [p] = info.value.problems
    assert (p.file, p.line, p.path, p.value) == (str(path), 2, "kind", f"{kind} ({api})")
    assert p.expected.startswith("not emulated: ") and words in p.expected


def test_an_unknown_kind_lists_what_is_read_and_says_what_is_skipped(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: x}\n")
    with pytest.raises(ScenarioError) as info:
        read_manifests([str(path)])
    [p] = info.value.problems
    assert "unsupported object; expected one of " in p.expected and "DaemonSet (apps/v1)" in p.expected
    assert "a kind that does not touch the network (skipped with a warning" in p.expected


def test_a_scenario_skips_them_too_and_refuses_the_others(tmp_path):
    data = yaml.safe_load(SERVICES.read_text())
    n = len(data["manifests"])
    data["manifests"] += [yaml.safe_load(SA), yaml.safe_load(CM)]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ld = load(str(path))
    assert [str(w) for w in ld.warnings] == [
        f"{path}:{line_of(path.read_text(), 'kind: ServiceAccount') - 1}: manifests[{n}]: 'ServiceAccount/web': "
        "skipped: does not affect the network",
        f"{path}:{line_of(path.read_text(), 'kind: ConfigMap') - 1}: manifests[{n + 1}]: 'ConfigMap/web-config': "
        "skipped: does not affect the network"]
    assert len(ld.manifests) == n
    data["manifests"].append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    assert [p.path for p in info.value.problems] == [f"manifests[{n + 2}].kind"]


def test_a_file_a_scenario_names_shows_no_name_it_cannot_vouch_for(tmp_path):
    data = yaml.safe_load(SERVICES.read_text())
    data["manifests"].append({"file": "x.yaml"})
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: 'Not A Name'}\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    [w] = load(str(tmp_path / "s.yaml")).warnings
    assert w.value == "ServiceAccount/<no valid name>"


# ------------------------------------------------------------------------------------- at runtime
def test_applying_at_runtime_skips_them_with_a_warning_and_refuses_the_others():
    told = []
    out = changes.parse_objects([yaml.safe_load(SA), {"apiVersion": "v1", "kind": "List",
                                                      "items": [yaml.safe_load(svc("a"))]}], "<stdin>", told.append)
    assert [m.obj.metadata.name for m in out] == ["a"]
    assert told == ["<stdin>: ServiceAccount/web: skipped: does not affect the network"]
    with pytest.raises(KubevpcError, match=r"discovery.k8s.io/v1/EndpointSlice is not emulated: an EndpointSlice"):
        changes.parse_objects([{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice"}])
    with pytest.raises(KubevpcError, match="a List's items must be a list of Kubernetes objects"):
        changes.parse_objects([{"apiVersion": "v1", "kind": "List", "items": [1]}])
    with pytest.raises(KubevpcError, match="expected Kubernetes objects"):
        changes.parse_objects([copy.deepcopy([])])
