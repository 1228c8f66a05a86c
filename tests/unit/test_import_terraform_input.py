"""`kubevpc import terraform`: the document read as hostile input (every refusal names the file and
what was expected), references through modules, counts and states, the shipped example
(scenarios/terraform/) imported again and compared, and the command line."""
from __future__ import annotations

import contextlib
import io
import json
import os

import pytest

from kubevpc.cli import main
from kubevpc.evaluator.explain import explain
from kubevpc.errors import ScenarioError
from kubevpc.importers.terraform import import_terraform
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from tests.e2e import test_terraform as e2e

from .golden import REPO
from .netsim import Network
from .tfdocs import NET, VPC, group, imported, instance, module_config, module_values, plan, r, ref, skipped, state

EXAMPLE = REPO / "scenarios" / "terraform"


def refusal(tmp_path, content, environ=None) -> str:
    """The one problem the import gives for the file's content (bytes, text or a document)."""
    path = tmp_path / "plan.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ScenarioError) as exc:
        import_terraform(str(path), environ=environ)
    assert all(p.file == str(path) for p in exc.value.problems[:1])
    return str(exc.value.problems[0]).removeprefix(str(path))


# ------------------------------------------------------------------------------------ refusals
def test_not_json(tmp_path):
    assert refusal(tmp_path, "name: yaml\n") == (":1: <top>: 'Expecting value at line 1 column 1': expected the JSON of "
                                                 "`terraform show -json` (a plan file's or a state's): not valid JSON")
    assert ":2: <top>: 'Expecting" in refusal(tmp_path, '{"format_version": "1.2",\n oops}')
    assert "NaN is not a JSON number" in refusal(tmp_path, '{"format_version": NaN}')
    assert "'nesting too deep'" in refusal(tmp_path, "[" * 100_000 + "]" * 100_000)
    assert "expected UTF-8 text" in refusal(tmp_path, b'{"format_version": "\xff"}')


def test_not_a_terraform_document(tmp_path):
    assert refusal(tmp_path, [1, 2]) == (": <top>: 'a JSON list': expected the JSON of `terraform show -json` (a plan "
                                         "file's or a state's): a JSON object with format_version")
    assert refusal(tmp_path, {"format_version": "1.2"}) == (
        ": <top>: 'no planned_values and no values': expected the JSON of `terraform show -json` (a plan file's or a "
        "state's): a plan has planned_values, a state values (an empty state has neither: nothing to import)")
    assert refusal(tmp_path, {"format_version": "1.2", "planned_values": []}).startswith(
        ": planned_values: 'a JSON list': expected the JSON")
    doc = plan(*NET)
    doc["planned_values"]["root_module"]["resources"][1] = {"address": "x", "type": 3, "name": "a"}
    assert refusal(tmp_path, doc) == (": planned_values.root_module.resources[1]: 'a JSON dict': expected a "
                                      "resource: address, type and name strings, values an object (type: not so)")
    doc = plan(*NET)
    doc["planned_values"]["root_module"]["child_modules"] = [{"address": "module.a\nb", "resources": []}]
    assert "expected a child module with an address such as module.net" in refusal(tmp_path, doc)


def test_modules_out_of_shape(tmp_path):
    doc = plan(*NET)
    root = doc["planned_values"]["root_module"]
    root["child_modules"] = [{"address": "module.a.module.b", "resources": []}]
    assert refusal(tmp_path, doc) == (": planned_values.root_module.child_modules[0].address: 'module.a.module.b': "
                                      "expected a module directly inside the root module")
    root["child_modules"] = [{"address": "module.a", "resources": {}}]
    assert refusal(tmp_path, doc) == (": planned_values.root_module.child_modules[0].resources: 'a JSON dict': "
                                      "expected a list")
    chain: dict = {"resources": []}
    for level in range(40, 0, -1):
        chain = {"address": ".".join(f"module.m{i}" for i in range(level)), "resources": [],
                 "child_modules": [chain] if level < 40 else []}
    root["child_modules"] = [chain]
    assert "'level 33': modules nested at most 32 deep" in refusal(tmp_path, doc)


@pytest.mark.parametrize("version", ["2.0", "0.0", "1", 1.2, None, "1.2.3"])
def test_wrong_format_version(tmp_path, version):
    doc = {**plan(*NET), "format_version": version}
    assert refusal(tmp_path, doc).startswith(f": format_version: {version!r}: expected a format_version from 0.1 to "
                                             "1.x, as Terraform 0.12 and later print; a new major version is not "
                                             "backward compatible")


def test_older_formats_are_read(tmp_path):
    for version in ("0.1", "0.2", "1.0", "1.9"):
        assert imported(tmp_path, {**plan(*NET), "format_version": version}).data["cloud"]["vpcs"]


def test_too_large_and_not_a_regular_file(tmp_path):
    text = json.dumps(plan(*NET))
    assert refusal(tmp_path, text, {"KUBEVPC_MAX_PLAN_BYTES": "100"}) == (
        f": <top>: '{len(text)} bytes': more than the 100 bytes a Terraform JSON document may have; set "
        "KUBEVPC_MAX_PLAN_BYTES to a larger number of bytes to allow it")
    with pytest.raises(ScenarioError, match="KUBEVPC_MAX_PLAN_BYTES: <top>: 'lots': expected a number of bytes"):
        import_terraform(str(tmp_path), environ={"KUBEVPC_MAX_PLAN_BYTES": "lots"})
    with pytest.raises(ScenarioError, match="'a directory': expected a regular file"):
        import_terraform(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError, match="'a FIFO': expected a regular file"):
        import_terraform(str(fifo))
    with pytest.raises(ScenarioError, match="cannot read the file: No such file or directory"):
        import_terraform(str(tmp_path / "missing.json"))


def test_too_many_resources(tmp_path):
    many = [r("alicloud_ecs_key_pair", "k", {}, index=i) for i in range(5001)]
    assert refusal(tmp_path, plan(*NET, *many)).startswith(": <top>: '5004 managed resources': at most 5000: kubevpc "
                                                           "emulates a lab on one machine, not a region")


def test_hostile_references_name_nothing(tmp_path):
    refs = ["alicloud_vswitch.a[" + "9" * 5000 + "].id", 'alicloud_vswitch.a["x\ny"].id', "module." * 2000,
            "var." + "x" * 10_000, "alicloud_vswitch"]
    vm = r("alicloud_instance", "vm", {"instance_name": "vm"}, vswitch_id={"references": refs},
           security_groups={"references": "not a list"})
    doc = plan(*NET, vm)
    doc["configuration"]["root_module"]["module_calls"] = {"m": "not a call", "n": {"module": []}}
    imp = imported(tmp_path, doc)
    assert skipped(imp)["alicloud_instance.vm"].startswith("vswitch_id names alicloud_vswitch.a[999")


def test_no_vpc_to_import(tmp_path):
    assert refusal(tmp_path, plan(VPC, r("alicloud_ecs_key_pair", "k"))) == (
        ": <top>: '2 managed resources': expected an alicloud_vpc with an alicloud_vswitch: a scenario needs a VPC")


def test_a_scenario_that_cannot_be_made_valid_is_refused(tmp_path):
    ack = r("alicloud_cs_managed_kubernetes", "ack", {"pod_cidr": "192.168.0.0/16"})
    pool = r("alicloud_cs_kubernetes_node_pool", "p", {"desired_size": 1}, cluster_id=ref("alicloud_cs_managed_kubernetes.ack"),
             vswitch_ids=ref("alicloud_vswitch.a"))
    with pytest.raises(ScenarioError) as exc:
        imported(tmp_path, plan(*NET, ack, pool))
    first, *rest = exc.value.problems
    assert "it does not validate, and these problems are not about one object that could be left out" in str(first)
    assert any("cluster.podCIDR: '192.168.0.0/16': overlaps the VPC CIDR" in str(p) for p in rest)


# ---------------------------------------------------------------------------------- references
def test_a_state_names_resources_by_id(tmp_path):
    vpc = r("alicloud_vpc", "main", {"id": "vpc-bp1", "vpc_name": "vpc", "cidr_block": "192.168.0.0/16",
                                     "route_table_id": "vtb-1"})
    vsw = r("alicloud_vswitch", "a", {"id": "vsw-bp1", "vpc_id": "vpc-bp1", "cidr_block": "192.168.1.0/24", "zone_id": "z"})
    stray = r("alicloud_vswitch", "b", {"id": "vsw-bp2", "vpc_id": "vpc-elsewhere", "cidr_block": "192.168.2.0/24"})
    sg = r("alicloud_security_group", "web", {"id": "sg-1", "name": "web", "vpc_id": "vpc-bp1"})
    web = r("alicloud_instance", "web", {"id": "i-1", "instance_name": "web", "vswitch_id": "vsw-bp1",
                                         "security_groups": ["sg-1"], "private_ip": "192.168.1.7"})
    route = r("alicloud_route_entry", "x", {"route_table_id": "vtb-1", "destination_cidrblock": "10.0.0.0/8",
                                            "nexthop_type": "Instance", "nexthop_id": "i-1"})
    imp = imported(tmp_path, state(vpc, vsw, stray, sg, web, route))
    assert imp.kind == "state"
    assert imp.data["cloud"]["instances"] == [{"name": "web", "vswitch": "a", "ip": "192.168.1.7", "securityGroups": ["web"]}]
    assert imp.data["cloud"]["vpcs"][0]["routeTable"] == {"routes": [{"destination": "10.0.0.0/8", "nextHop": "web"}]}
    assert skipped(imp)["alicloud_vswitch.b"] == "vpc_id names vpc-elsewhere, which is not a VPC of this document"


def test_references_through_module_variables_and_outputs(tmp_path):
    """module "net" makes the VPC and a vSwitch and outputs the vSwitch's ID; module "app" takes the
    VPC's ID and the vSwitch's as variables from the root."""
    net_vpc, net_vsw = VPC, NET[1]
    app_sg = r("alicloud_security_group", "web", {"name": "web"}, vpc_id={"references": ["var.vpc_id"]})
    app_vm = r("alicloud_instance", "web", {"instance_name": "web"}, vswitch_id={"references": ["var.vswitch"]},
               security_groups={"references": ["alicloud_security_group.web.id", "alicloud_security_group.web"]})
    root_vm = r("alicloud_instance", "ops", {"instance_name": "ops"},
                vswitch_id={"references": ["module.net.vswitch_id", "module.net"]})
    net_out = {"vswitch_id": {"expression": ref("alicloud_vswitch.a")}, "vpc_id": {"expression": ref("alicloud_vpc.main")}}
    calls = {"net": {"source": "./net", "module": module_config([net_vpc, net_vsw], outputs=net_out)},
             "app": {"source": "./app", "module": module_config([app_sg, app_vm]),
                     "expressions": {"vpc_id": {"references": ["module.net.vpc_id", "module.net"]},
                                     "vswitch": {"references": ["module.net.vswitch_id", "module.net"]}}}}
    doc = plan(root_vm, children=[module_values([net_vpc, net_vsw], "module.net"),
                                  module_values([app_sg, app_vm], "module.app")], module_calls=calls)
    imp = imported(tmp_path, doc)
    assert {i["name"]: (i["vswitch"], i.get("securityGroups")) for i in imp.data["cloud"]["instances"]} == {
        "ops": ("vsw-a", None), "web": ("vsw-a", ["web"])}
    assert "- name: vpc  # module.net.alicloud_vpc.main\n" in imp.text


def test_references_with_count(tmp_path):
    """count: `alicloud_vswitch.a[count.index].id` names the vSwitch of the same index, and
    `alicloud_vswitch.a[1].id` the second."""
    vsws = [r("alicloud_vswitch", "a", {"cidr_block": f"192.168.{i}.0/24", "zone_id": "z"}, index=i,
              vpc_id=ref("alicloud_vpc.main")) for i in (0, 1)]
    vms = [r("alicloud_instance", "vm", {"instance_name": f"vm-{i}"}, index=i,
             vswitch_id={"references": ["alicloud_vswitch.a", "count.index"]}) for i in (0, 1)]
    pinned = r("alicloud_instance", "pinned", {}, vswitch_id={"references": ["alicloud_vswitch.a[1].id",
                                                                             "alicloud_vswitch.a[1]", "alicloud_vswitch.a"]})
    lost = r("alicloud_instance", "lost", {}, vswitch_id={"references": ["alicloud_vswitch.a"]})
    local = r("alicloud_instance", "local", {}, vswitch_id={"references": ["local.vsw"]})
    imp = imported(tmp_path, plan(VPC, *vsws, *vms, pinned, lost, local))
    assert {i["name"]: i["vswitch"] for i in imp.data["cloud"]["instances"]} == {"vm-0": "a-0", "vm-1": "a-1",
                                                                                   "pinned": "a-1"}
    why = skipped(imp)
    assert why["alicloud_instance.lost"] == "vswitch_id names alicloud_vswitch.a, which is not a vSwitch (an instance " \
                                            "of the classic network is not emulated) of this document"
    assert why["alicloud_instance.local"].startswith("vswitch_id names local.vsw, which is not a vSwitch")


# --------------------------------------------------------------------------- the shipped example
def test_the_example_imports_as_committed_and_validates():
    imp = import_terraform(str(EXAMPLE / "plan.json"))
    assert imp.text == (EXAMPLE / "imported.yaml").read_text()
    assert skipped(imp).keys() == {"alicloud_slb_load_balancer.ingress", "alicloud_ecs_key_pair.ops"}
    plan_ = make_plan(load(str(EXAMPLE / "imported.yaml")), "kvxxxx")
    assert plan_.cluster.mode == "eni" and [n.name for n in plan_.nodes] == ["default-pool-1", "default-pool-2",
                                                                              "default-pool-3"]
    assert {i.name for i in plan_.instances} >= {"web", "vpn-gateway"}


def test_the_example_plan_is_what_terraform_show_json_prints():
    """Faithful to the format: every planned resource has its resource change and its configuration
    block, every reference names a resource of the configuration, and planned values leave out what
    is known only after apply."""
    doc = json.loads((EXAMPLE / "plan.json").read_text())
    assert (doc["format_version"], doc["terraform_version"]) == ("1.2", "1.5.7")
    planned = {r["address"]: r for r in doc["planned_values"]["root_module"]["resources"]}
    changes = {c["address"]: c for c in doc["resource_changes"]}
    config = {c["address"]: c for c in doc["configuration"]["root_module"]["resources"]}
    assert planned.keys() == changes.keys() == config.keys() and len(planned) == 27
    for address, change in changes.items():
        assert change["change"]["after"] == planned[address]["values"]
        assert change["change"]["actions"] == ["create"] and "id" not in planned[address]["values"]
        assert change["change"]["after_unknown"]["id"] is True
    refs = [ref for c in config.values() for e in c["expressions"].values() if isinstance(e, dict)
            for ref in e.get("references", [])]
    assert refs and all(".".join(ref.split(".")[:2]) in config for ref in refs)
    tf = (EXAMPLE / "main.tf").read_text()
    assert all(f'resource "{c["type"]}" "{c["name"]}"' in tf for c in config.values())


def test_the_e2e_scenario_flows_and_evaluator_allow_the_probes_and_drop_their_twins(tmp_path):
    """tests/e2e/test_terraform.py's scenario (the example imported, a workload added): the evaluator
    and the compiled flows (tests/unit/netsim.py) agree on each allowed probe and on each twin."""
    plan_ = make_plan(load(str(e2e.scenario(tmp_path))), "kvt")
    assert plan_.cluster.mode == "eni"
    net = Network(plan_)
    client = next(h for h in plan_.hosts if h.key == e2e.CLIENT)
    for probe, want in [(p, True) for p in e2e.ALLOWED] + [(p, False) for p in e2e.DENIED]:
        verdict = explain(plan_, probe.source, probe.dest, probe.port, probe.proto)
        assert bool(verdict.allowed) is want, f"{probe}: {verdict.reason}"
        ip = plan_.service(probe.dest.removeprefix("svc/")).cluster_ip if probe.dest.startswith("svc/") else \
            next(h.ip for h in plan_.hosts if h.key == probe.dest)
        delivered = {e.host for e in net.send(client, ip, probe.port) if e.kind == "delivered"}
        assert bool(delivered) is want, f"{probe}: the flows delivered to {delivered}"
        if probe.dest == "ecs/web" and want:
            assert delivered == {"ecs/web"} and verdict.seen_source == client.ip


# ---------------------------------------------------------------------------------- command line
def cli(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


def test_cli_writes_the_scenario_and_lists_what_it_did_not_import(tmp_path):
    out = tmp_path / "s.yaml"
    code, stdout, stderr = cli("import", "terraform", str(EXAMPLE / "plan.json"), "-o", str(out))
    assert code == 0 and stdout == ""
    assert out.read_text() == (EXAMPLE / "imported.yaml").read_text()
    lines = stderr.splitlines()
    assert lines[0].startswith("not imported: alicloud_slb_load_balancer.ingress: an SLB instance is not emulated")
    assert "not imported: alicloud_ecs_key_pair.ops: alicloud_ecs_key_pair is not emulated (docs/scenario.md, " \
           "Importing Terraform, lists what is)" in lines
    assert "invented: alicloud_instance.web: ports [22, 80]: servers on the ports its security groups open" in lines
    assert lines[-1] == (f"{out}: 1 VPC, 5 ECS instances (3 nodes), mode eni; 2 not imported, 7 invented; valid "
                         "(`kubevpc validate` agrees)")
    assert cli("validate", str(out))[0] == 0
    code, stdout, _ = cli("import", "terraform", str(EXAMPLE / "plan.json"), "--name", "Prod Lab")
    assert code == 0 and stdout.startswith("# Imported by") and "\nname: prod-lab\n" in stdout


def test_cli_refuses_bad_input_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": "3.0"}')
    code, stdout, stderr = cli("import", "terraform", str(bad))
    assert (code, stdout) == (2, "")
    assert stderr.splitlines() == [f"cannot import {bad} (1 problem(s)); nothing was written:",
                                   f"  {bad}: format_version: '3.0': expected a format_version from 0.1 to 1.x, as "
                                   "Terraform 0.12 and later print; a new major version is not backward compatible "
                                   "(Terraform's JSON Output Format), so it is refused. expected the JSON of `terraform "
                                   "show -json` (a plan file's or a state's)"]
    code, _, stderr = cli("import", "terraform", str(EXAMPLE / "plan.json"), "-o", str(tmp_path))
    assert code == 3 and "cannot write" in stderr


def test_group_helper_is_a_plan_resource():
    assert group("web")["type"] == "alicloud_security_group" and instance("web")["type"] == "alicloud_instance"
