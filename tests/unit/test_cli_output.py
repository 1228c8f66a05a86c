"""Output everywhere (issue 20): `-o table|json|yaml` on every command that prints a result, the
deprecated `--json`, `--junit FILE` on check and matrix (validated against the JUnit structure
Jenkins reads, tests/unit/data/junit-jenkins.xsd), `--version`, `-v` with the controller's log, and
progress lines that stay one line when stderr is a pipe. Nothing is built: the commands about a
scenario file run for real; check, matrix and status get results made here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from lxml import etree

from kubevpc import cli, ledger
from kubevpc.cli import junit, observe, output, run as run_cli, verbose
from kubevpc.control import ControlServer, Reply, socket_path
from kubevpc.evaluator.checks import Check, declared_checks, default_checks
from kubevpc.evaluator.matrix import Cell, Matrix, expected_matrix, select
from kubevpc.lab import Lab
from kubevpc.lab.checks import Outcome

from .plans import DEFAULT, NETPOL, REPO, SERVICES, plan_of

XSD = Path(__file__).parent / "data" / "junit-jenkins.xsd"
HOSTILE = "web\x00-0 <b>&amp;\"quoted\" ]]> \x1b[31m\ud800 →"


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


def documents(capsys, *argv: str) -> tuple[dict, dict]:
    """The json and the yaml document of one command: they must be the same."""
    code, out_json, _ = run_main(capsys, *argv, "-o", "json")
    code2, out_yaml, _ = run_main(capsys, *argv, "-o", "yaml")
    assert code == code2
    doc = json.loads(out_json)
    assert yaml.safe_load(out_yaml) == doc
    return doc, yaml.safe_load(out_yaml)


def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def valid_junit(data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    s = schema()
    assert s.validate(root), s.error_log
    return root


# ------------------------------------------------------------------------------------ parsing
PRINTING = [["list"], ["validate", "f.yaml"], ["plan", "f.yaml"], ["flows", "f.yaml"], ["explain", "f.yaml"],
            ["check", "f.yaml"], ["run", "f.yaml"], ["status"], ["matrix"], ["trace", "pod/a", "pod/b", "80"],
            ["ready", "pod/a", "true"], ["apply", "-f", "x.yaml"], ["delete", "svc/a"],
            ["scale", "deploy/a", "--replicas", "1"], ["label", "pod/a", "x=y"], ["stop-server", "pod/a"],
            ["start-server", "pod/a"]]


@pytest.mark.parametrize("argv", PRINTING, ids=lambda a: a[0])
@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_every_command_that_prints_a_result_takes_o(argv, fmt):
    args = cli.parser().parse_args([*argv, "-o", fmt])
    assert args.output == fmt
    assert cli.parser().parse_args([*argv, "--output", fmt]).output == fmt


@pytest.mark.parametrize("argv", [["list"], ["validate", "f.yaml"], ["plan", "f.yaml"], ["flows", "f.yaml"],
                                  ["check", "f.yaml"], ["status"], ["matrix"]], ids=lambda a: a[0])
def test_table_is_the_default_and_other_formats_are_refused(argv, capsys):
    assert cli.parser().parse_args(argv).output == "table"
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args([*argv, "-o", "xml"])
    assert exc.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["plan", "f.yaml"], ["check", "f.yaml"], ["run", "f.yaml"], ["status"],
                                  ["matrix"], ["ready", "pod/a", "true"]], ids=lambda a: a[0])
def test_json_is_a_deprecated_alias_of_o_json(argv, capsys):
    args = cli.parser().parse_args([*argv, "--json"])
    assert output.resolve_json_alias(args) is None and args.output == "json"
    assert capsys.readouterr().err == output.DEPRECATED_JSON
    clash = cli.parser().parse_args([*argv, "--json", "-o", "yaml"])
    assert "--json and -o yaml ask for two formats" in output.resolve_json_alias(clash)


def test_perf_keeps_its_own_json(capsys):
    args = cli.parser().parse_args(["perf", "--json"])
    assert output.resolve_json_alias(args) is None and args.json and not hasattr(args, "output")
    assert capsys.readouterr().err == ""


def test_json_alias_prints_the_same_plan_with_one_note(capsys):
    code, old, err = run_main(capsys, "plan", str(DEFAULT), "--json")
    assert code == 0 and err == output.DEPRECATED_JSON and err.count("\n") == 1
    assert run_main(capsys, "plan", str(DEFAULT), "-o", "json") == (0, old, "")
    code, out, err = run_main(capsys, "plan", str(DEFAULT), "--json", "-o", "yaml")
    assert code == cli.EXIT_USAGE and out == "" and "two formats" in err


def test_junit_and_verbose_options_parse():
    assert cli.parser().parse_args(["check", "f.yaml", "--junit", "r.xml"]).junit == "r.xml"
    assert cli.parser().parse_args(["check", "f.yaml", "--matrix", "--junit", "r.xml"]).junit == "r.xml"
    assert cli.parser().parse_args(["matrix", "kvab", "--junit", "r.xml", "-o", "json"]).junit == "r.xml"
    assert cli.parser().parse_args(["check", "f.yaml"]).junit is None
    assert cli.parser().parse_args(["-v", "list"]).verbose is True
    assert cli.parser().parse_args(["list", "-v"]).verbose is True
    assert cli.parser().parse_args(["check", "--verbose", "f.yaml"]).verbose is True
    assert cli.parser().parse_args(["list"]).verbose is False
    assert cli.parser().parse_args(["import", "terraform", "-v", "p.json"]).verbose is True, "nested commands too"
    assert cli.parser().parse_args(["-v", "import", "terraform", "p.json"]).verbose is True
    assert cli.parser().parse_args(["import", "terraform", "p.json"]).verbose is False


def test_version_prints_kubevpc_os_ken_open_vswitch_and_python(capsys, monkeypatch):
    monkeypatch.setattr(output, "ovs_version", lambda: "3.1.0")
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[0] for x in lines] == ["kubevpc", "os-ken", "Open", "Python"]
    assert lines[0] == f"kubevpc {output.package_version('kubevpc')}" and lines[2] == "Open vSwitch 3.1.0"
    monkeypatch.setattr(output, "ovs_version", lambda: None)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--version"])
    assert "Open vSwitch not found" in capsys.readouterr().out


def test_the_open_vswitch_version_is_read_from_its_programs(monkeypatch, tmp_path):
    fake = tmp_path / "ovs-vswitchd"
    fake.write_text("#!/bin/sh\necho 'ovs-vswitchd (Open vSwitch) 9.8.7'\necho 'DPDK 22.11'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert output.ovs_version() == "9.8.7"
    fake.write_text("#!/bin/sh\necho 'something else'\n")
    monkeypatch.setattr(output.shutil, "which", lambda prog, path=None: str(fake) if prog == "ovs-vswitchd" else None)
    assert output.ovs_version() is None


# ---------------------------------------------------------------------------- scenario commands
def test_validate_documents_an_ok_scenario(capsys):
    doc, _ = documents(capsys, "validate", str(DEFAULT))
    assert doc == {"file": str(DEFAULT), "ok": True, "mode": "vxlan",
                   "counts": {"vpcs": 2, "vswitches": 3, "instances": 5, "nodes": 3, "pods": 5, "services": 1},
                   "problems": []}
    code, out, _ = run_main(capsys, "validate", str(DEFAULT))
    assert code == 0 and out.startswith(f"{DEFAULT}: valid (2 VPC")         # table: the one line it always was


def test_validate_lists_each_problem_as_an_object(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cloud:\n  vpcs:\n    - name: v\n      cidr: 10.0.0.0/16\n      vswitches:\n"
                   "        - {name: a, cidr: 10.0.1.0/24}\n        - {name: b, cidr: 10.0.1.128/25}\n")
    for fmt in ("json", "yaml"):
        code, out, err = run_main(capsys, "validate", str(bad), "-o", fmt)
        doc = json.loads(out) if fmt == "json" else yaml.safe_load(out)
        assert code == cli.EXIT_USAGE
        assert doc["ok"] is False and doc["counts"] is None
        assert doc["problems"] == [{"file": str(bad), "line": 7, "path": "cloud.vpcs[0].vswitches[1].cidr",
                                    "value": "10.0.1.128/25",
                                    "expected": "overlaps vSwitch 'a' (10.0.1.0/24); expected disjoint vSwitch CIDRs"}]
        assert "invalid scenario (1 problem(s))" in err          # stderr says it as always


def test_plan_yaml_is_the_json_plan(capsys):
    code, out, _ = run_main(capsys, "plan", str(SERVICES), "-o", "json")
    assert out == plan_of(SERVICES, "vxlan", "kvxxxx").model_dump_json(indent=1) + "\n"
    doc, _ = documents(capsys, "plan", str(SERVICES))
    assert doc["run"] == "kvxxxx" and doc["services"]


def test_flows_json_records_are_the_ofctl_lines(capsys):
    doc, _ = documents(capsys, "flows", str(NETPOL), "--mode", "eni")
    code, text, _ = run_main(capsys, "flows", str(NETPOL), "--mode", "eni")
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    rebuilt = []
    for b in doc["bridges"]:
        assert set(b) == {"name", "role", "owner", "flows", "groups"}
        for g in b["groups"]:
            buckets = ",".join(f"bucket=weight:{k['weight']},actions={k['actions']}" for k in g["buckets"])
            rebuilt.append(f"group_id={g['group_id']},type=select" + (f",{buckets}" if buckets else ""))
        for f in b["flows"]:
            assert {"table", "priority", "cookie", "match", "actions", "feature", "note"} <= set(f)
            rebuilt.append(f"cookie={f['cookie']},table={f['table']},priority={f['priority']}"
                           + (f",{f['match']}" if f["match"] else "") + f" actions={f['actions']}")
    assert rebuilt == lines
    assert doc["networkpolicy_flows"] and doc["mode"] == "eni"
    one, _ = documents(capsys, "flows", str(DEFAULT), "--bridge", "vr0")
    assert [b["name"] for b in one["bridges"]] == ["kvxxxx-vr0"]


def test_explain_one_connection_and_the_matrix_in_yaml(capsys):
    argv = ["explain", str(DEFAULT), "pod/default/web-0", "ecs/ecs-db", "5432"]
    doc, _ = documents(capsys, *argv)
    assert doc["allowed"] is True and doc["file"] == str(DEFAULT) and doc["steps"]
    code, table, _ = run_main(capsys, *argv, "-o", "table")
    assert code == 0 and run_main(capsys, *argv)[1] == table and "ALLOWED" in table.upper()
    m, _ = documents(capsys, "explain", str(NETPOL), "--matrix")
    assert m["cells"] and m["mode"] == "vxlan"
    code, _, err = run_main(capsys, "explain", str(NETPOL), "--matrix", "-o", "text")
    assert code == cli.EXIT_USAGE and "--matrix prints table, json, yaml" in err


def test_list_documents_every_run(capsys, state):
    os.makedirs(ledger.run_dir("kvlive"))
    with open(os.path.join(ledger.run_dir("kvlive"), "owner"), "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {ledger._start_time(os.getpid())}\n")
    doc, _ = documents(capsys, "list")
    assert doc == {"runs": [{"name": "kvlive", "state": "running", "owner_pid": os.getpid(), "resources": 0}]}
    assert run_main(capsys, "list")[1] == "kvlive: running, 0 resources\n"


# ------------------------------------------------------------------------------- check and matrix
def outcomes_of(plan) -> list[Outcome]:
    """Each check observed as the evaluator expects, but the first connecting one refused and the
    first refused one connected: two failures, the rest passes."""
    checks = default_checks(plan) + declared_checks(plan)
    out, flipped = [], set()
    for c in checks:
        connected = c.expect
        if c.expect not in flipped:
            flipped.add(c.expect)
            connected = not c.expect
        out.append(Outcome(c, "answered" if connected else "timeout", connected,
                           c.seen_source if connected else "", 12.5))
    return out


class FakeLab:
    """What check's report reads from a Lab."""

    def __init__(self, path: Path, mode: str):
        self.file, self.run, self.plan = str(path), "kvfake", plan_of(path, mode)
        self.net = types.SimpleNamespace(datapath=types.SimpleNamespace(kind="netdev"), timings={"build": 1.23456})

    def status(self) -> dict:
        return {"bridges": {"b": {"packet_in": 2}}}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_check_prints_one_document_and_writes_junit(fmt, capsys, monkeypatch, tmp_path):
    lab = FakeLab(NETPOL, "eni")
    outcomes = outcomes_of(lab.plan)
    monkeypatch.setattr(run_cli, "run_checks", lambda lab, checks: outcomes)
    report = tmp_path / "junit.xml"
    assert run_cli._checks(lab, fmt, str(report)) is False
    got = capsys.readouterr()
    doc = json.loads(got.out) if fmt == "json" else yaml.safe_load(got.out)
    assert doc["run"] == "kvfake" and doc["mode"] == "eni" and doc["passed"] is False and doc["packet_in"] == 2
    assert [c["passed"] for c in doc["checks"]] == [o.passed for o in outcomes]
    root = valid_junit(report.read_bytes())
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(outcomes) and suite.get("tests") == str(len(outcomes))
    assert suite.get("failures") == "2" and root.get("failures") == "2" and suite.get("errors") == "0"
    assert suite.get("name") == f"kubevpc check {NETPOL} (eni)"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"scenario": str(NETPOL), "mode": "eni", "run": "kvfake", "datapath": "netdev"}
    for o, case in zip(outcomes, cases):
        assert case.get("time") == "0.013" and case.get("classname") == "kubevpc.check.netpol.eni"
        assert case.get("name").endswith(f"{o.check.source} -> {o.check.dest} {o.check.port}/{o.check.proto}")
        failure = case.find("failure")
        if o.passed:
            assert failure is None and case.find("system-out").text == o.check.reason
        else:
            assert failure.get("message") == o.check.reason
            assert failure.get("type") == ("unexpected-connection" if o.connected else "unexpected-refusal")
            assert f"evaluator: {o.check.reason}" in failure.text


def test_check_table_output_is_unchanged(capsys, monkeypatch):
    lab = FakeLab(DEFAULT, "vxlan")
    monkeypatch.setattr(run_cli, "run_checks", lambda lab, checks: outcomes_of(lab.plan))
    assert run_cli._checks(lab, "table") is False
    out = capsys.readouterr().out
    assert "checks of" in out and "passed, 2 failed; packet-ins to the controller: 2" in out


def test_a_check_that_failed_to_build_is_a_junit_error(monkeypatch, tmp_path, capsys):
    from kubevpc.errors import BuildError
    monkeypatch.setattr(run_cli, "_check", lambda args: (_ for _ in ()).throw(BuildError("ovs-vsctl add-br failed")))
    report = tmp_path / "r.xml"
    assert cli.main(["check", str(DEFAULT), "--junit", str(report)]) == cli.EXIT_RUNTIME
    root = valid_junit(report.read_bytes())
    [case] = root.iter("testcase")
    assert case.get("name") == "build" and case.find("error").get("message") == "ovs-vsctl add-br failed"
    assert root.get("errors") == "1"


def test_a_report_that_cannot_be_written_is_refused_before_anything_is_built(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(run_cli, "_check", lambda args: pytest.fail("built"))
    monkeypatch.setattr(observe, "control_client", lambda args: pytest.fail("asked the run"))
    for where in (tmp_path / "no" / "r.xml", tmp_path):
        code, _, err = run_main(capsys, "check", str(DEFAULT), "--junit", str(where))
        assert code == cli.EXIT_USAGE and f"--junit {where}: " in err
        code, _, err = run_main(capsys, "matrix", "kvab", "--junit", str(where))
        assert code == cli.EXIT_USAGE and f"--junit {where}: " in err


def probed(plan, wrong: int = 1) -> Matrix:
    """The expected matrix of the plan's pods on port 80, observed as expected but `wrong` cells."""
    pods = select(plan, ["pods"])
    m = expected_matrix(plan, pods, pods, [(80, "tcp"), (80, "udp")])
    cells = []
    for i, c in enumerate(m.cells):
        seen = bool(c.expected) if c.expected is not None else True
        if i < wrong and c.expected is not None:
            seen = not seen
        cells.append(Cell(c.source, c.dest, c.port, c.protocol, c.expected, c.reason, seen,
                          "answered" if seen else "timeout", 3.0))
    return Matrix(m.sources, m.dests, m.ports, cells, m.mode, 0.75)


class FakeClient:
    run = "kvmtx"

    def __init__(self, result):
        self.result = result
        self.calls = []

    def request(self, method, *args, **kwargs):
        self.calls.append(method)
        return Reply(self.result, (), 0.1)

    def call(self, method, *args, **kwargs):
        self.calls.append(method)
        return self.result


@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_matrix_prints_and_writes_a_case_per_cell(fmt, capsys, monkeypatch, tmp_path):
    m = probed(plan_of(NETPOL, "vxlan"))
    doc = m.as_dict()
    monkeypatch.setattr(observe, "control_client", lambda args: FakeClient(doc))
    report = tmp_path / "matrix.xml"
    code, out, _ = run_main(capsys, "matrix", "kvmtx", "-o", fmt, "--junit", str(report))
    assert code == cli.EXIT_CHECKS
    if fmt != "table":
        assert (json.loads(out) if fmt == "json" else yaml.safe_load(out)) == json.loads(json.dumps(
            {"run": "kvmtx", **doc}))
    else:
        assert "differ" in out
    root = valid_junit(report.read_bytes())
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(m.cells) and suite.get("failures") == "1" and suite.get("time") == "0.750"
    for cell, case in zip(m.cells, cases):
        assert case.get("name") == f"{cell.source} -> {cell.dest} {cell.port}/{cell.protocol}"
        failure = case.find("failure")
        if cell.differs:
            assert failure.get("message") == cell.reason
        else:
            assert failure is None and cell.reason in case.find("system-out").text


def test_check_matrix_json_and_junit_through_the_lab(capsys, monkeypatch, tmp_path):
    m = probed(plan_of(NETPOL, "vxlan"), wrong=0)
    lab = FakeLab(NETPOL, "vxlan")
    lab.matrix = lambda *a, **k: m
    lab.down = lambda: {}
    monkeypatch.setattr(run_cli, "_build", lambda args: lab)
    report = tmp_path / "m.xml"
    code, out, _ = run_main(capsys, "check", str(NETPOL), "--matrix", "-o", "yaml", "--junit", str(report))
    assert code == cli.EXIT_OK and yaml.safe_load(out)["differences"] == 0
    root = valid_junit(report.read_bytes())
    assert root.get("tests") == str(len(m.cells)) and root.get("failures") == "0"
    assert {c.get("classname") for c in root.iter("testcase")} == {"kubevpc.matrix.netpol.vxlan"}


def test_status_in_yaml_is_the_run_s_description(capsys, state):
    lab = Lab(str(SERVICES), run="kvut")
    os.makedirs(ledger.run_dir("kvsrv"))
    with open(os.path.join(ledger.run_dir("kvsrv"), "owner"), "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {ledger._start_time(os.getpid())}\n")
    server = ControlServer(lab, socket_path("kvsrv"), read_deadline=0.5).start()
    try:
        doc, _ = documents(capsys, "status", "kvsrv")
    finally:
        server.stop()
    assert doc["run"] == "kvut" and {s["key"] for s in doc["services"]} >= {"default/web"}


def test_runtime_commands_print_their_answer_in_yaml(capsys):
    from kubevpc.cli.runtime import _changed
    client = types.SimpleNamespace(run="kvab")
    assert _changed(client, "x", Reply({"flows_updated_s": 0.1}, ("default/web: 1 endpoint",), 0.2), "yaml") == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"run": "kvab", "result": {"flows_updated_s": 0.1},
                                                       "changes": ["default/web: 1 endpoint"], "took_s": 0.2}


# ------------------------------------------------------------------------------------ the writer
def test_junit_escapes_hostile_text_and_stays_valid(tmp_path):
    check = Check(HOSTILE, f"pod/{HOSTILE}", "ecs/db", 80, "tcp", True, f"because {HOSTILE}")
    bad = Outcome(check, "timeout", False, "", 1.0, note="the server </failure><x/> was stopped")
    good = Outcome(Check("t", "pod/a", "pod/b", 80, "tcp", False, "no rule <allows> it"), "timeout", False, "", 2.0)
    suite = junit.check_suite([bad, good], f"{HOSTILE}.yaml", "eni", 1.5, 0.0, {"run": HOSTILE})
    path = tmp_path / "r.xml"
    junit.write(str(path), [suite])
    root = valid_junit(path.read_bytes())
    [failing, passing] = root.iter("testcase")
    assert failing.find("failure").get("message") == (
        "because web\\x00-0 <b>&amp;\"quoted\" ]]> \\x1b[31m\\ud800 →; but the server </failure><x/> was stopped")
    assert [c.tag for c in failing] == ["failure"] and passing.find("system-out").text == "no rule <allows> it"
    assert "\x00" not in path.read_text(encoding="utf-8")
    assert oct(path.stat().st_mode & 0o777) != "0o600"           # a report, readable as the user's files are


def test_junit_of_nothing_and_of_an_unprobed_cell_is_valid():
    assert valid_junit(junit.to_xml([])).get("tests") == "0"
    cell = {"source": "pod/a", "dest": "pod/b", "port": 80, "protocol": "udp", "expected": None, "reason": "r",
            "observed": None}
    root = valid_junit(junit.to_xml([junit.matrix_suite({"cells": [cell], "mode": "vxlan"}, "s.yaml", 0.0)]))
    [case] = root.iter("testcase")
    assert case.find("skipped").get("message") == "not probed" and root.find("testsuite").get("skipped") == "1"


def test_the_schema_refuses_what_ci_systems_refuse():
    """The fixture is not a rubber stamp: a suite without its counts, or a case without a name, fails."""
    s = schema()
    assert not s.validate(etree.fromstring(b"<testsuites><testsuite name='x'/></testsuites>"))
    assert not s.validate(etree.fromstring(
        b"<testsuites><testsuite name='x' tests='1' failures='0' errors='0'><testcase/></testsuite></testsuites>"))
    assert not s.validate(etree.fromstring(
        b"<testsuites><testsuite name='x' tests='1' failures='0' errors='0' time='1s'/></testsuites>"))
    assert s.validate(etree.fromstring(
        b"<testsuites><testsuite name='x' tests='1' failures='0' errors='0' time='1,234.5'>"
        b"<testcase name='a'><failure message='m'>t</failure><system-out>o</system-out></testcase>"
        b"</testsuite></testsuites>"))


# ------------------------------------------------------------------------------------------- logs
def test_verbose_shows_debug_records_and_quiet_does_not(capsys):
    code, _, err = run_main(capsys, "-v", "validate", str(DEFAULT))
    assert code == 0 and f"debug kubevpc.cli: {DEFAULT}: read and checked in" in err
    code, _, err = run_main(capsys, "validate", str(DEFAULT), "--verbose")
    assert "debug kubevpc.cli" in err
    code, _, err = run_main(capsys, "validate", str(DEFAULT))
    assert err == ""


def test_verbose_logs_each_command_the_build_runs(capsys):
    from topologies.shell import sh
    verbose.setup(True)
    try:
        sh(["true", "--flag"])
    finally:
        verbose.setup(False)
    assert "debug kubevpc.shell: $ true --flag: exit 0 in" in capsys.readouterr().err
    sh(["true"])
    assert capsys.readouterr().err == ""


def test_the_controller_log_is_streamed_with_a_prefix(tmp_path, capsys):
    log = tmp_path / "controller.log"
    tail = verbose.LogTail(str(log), poll=0.01)
    tail.start()                                        # the file does not exist yet: the controller starts later
    log.write_bytes(b"2026 kubevpc.controller INFO plan v1 loaded\nbridge kv-vr0 conn")
    deadline = time.monotonic() + 5
    seen = ""
    while "plan v1" not in seen and time.monotonic() < deadline:
        seen += capsys.readouterr().err
        time.sleep(0.01)
    assert seen == "controller: 2026 kubevpc.controller INFO plan v1 loaded\n"     # a partial line waits
    with open(log, "ab") as fh:
        fh.write(b"ected\nlast words without a newline \xff")
    os.unlink(log)                                      # teardown removes the run directory: what was written counts
    tail.stop()
    err = capsys.readouterr().err
    assert err == "controller: bridge kv-vr0 connected\ncontroller: last words without a newline \ufffd\n"


def test_verbose_follows_the_controller_of_a_run_only_with_v(state, capsys):
    verbose.setup(False)
    assert verbose.follow_controller("kvlog") is None
    verbose.setup(True)
    try:
        tail = verbose.follow_controller("kvlog")
        os.makedirs(ledger.run_dir("kvlog"))
        with open(tail.path, "w", encoding="utf-8") as fh:
            fh.write("INFO bridge connected\n")
        verbose.stop_all()
    finally:
        verbose.setup(False)
    assert "controller: INFO bridge connected\n" in capsys.readouterr().err


def test_a_long_progress_line_stays_one_line_when_stderr_is_a_pipe():
    text = "building a scenario whose progress line is far longer than the terminal is wide " * 4
    code = ("from kubevpc.cli.common import say, console\n"
            f"say({text!r})\n"
            "console.print('[red]error:[/red] ' + 'x' * 300)\n")
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=REPO, env={**os.environ, "COLUMNS": "40", "TERM": "xterm-256color"}, timeout=60)
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert text.strip() in lines[0] and lines[1] == "error: " + "x" * 300      # no colour codes either
