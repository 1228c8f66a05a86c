"""`make vm-test`'s steps: the e2e subset names tests that exist and covers every pipeline feature
once, `make scenario` runs in all three modes on the kernel datapath, perf is labelled, the
guest's job script runs its steps as the summary reads them, and the make targets and the
Vagrantfile hold. No VM is booted."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kubevpc.vm import suite
from kubevpc.vm.suite import Step
from tests.unit.golden import REPO


def all_ids() -> list[str]:
    return [i for g in suite.E2E for i in g.node_ids()]


def test_every_node_id_of_the_subset_is_collected_from_tests_e2e():
    for g in suite.E2E:
        assert (REPO / g.file).is_file() and g.file.startswith("tests/e2e/test_"), g.file
    ids = all_ids()
    assert len(ids) == len(set(ids))
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    collected = [line for line in res.stdout.splitlines() if "::" in line]
    assert sorted(collected) == sorted(ids)


def test_the_subset_covers_every_pipeline_feature_once():
    ids = " ".join(all_ids())
    wanted = {
        "VXLAN": "test_vxlan_crosses_vswitch_and_vrouter", "ClusterIP": "test_clusterip_tcp_and_udp",
        "NodePort Cluster": "test_nodeport_policy_cluster", "NodePort Local": "test_nodeport_policy_local",
        "SLB failover": "test_slb_failover_and_recovery", "hairpin": "test_hairpin",
        "affinity": "test_session_affinity", "NetworkPolicy matrix": "test_netpol.py::",
        "NAT gateway": "test_snat_entries", "EIP": "test_eip_maps_the_instance_both_ways",
        "DNAT": "test_a_dnat_entry_forwards", "Ingress": "test_ingress.py::test_host_and_prefix",
        "pod add": "test_scaling_up", "pod remove": "test_a_pod_applied_joins_its_service_and_leaves_it_when_deleted",
        "cleanup": "test_kill_9_then_clean"}
    missing = [f for f, needle in wanted.items() if needle not in ids]
    assert not missing, missing
    # connectivity and security groups: make scenario's checks and the default scenario's expect list
    names = [s.name for s in suite.steps("tcg")]
    assert [n for n in names if n.startswith("scenario-")] == ["scenario-vxlan", "scenario-vpc-route", "scenario-eni"]
    default = (REPO / "scenarios" / "default.yaml").read_text()
    assert "port: 5432, result: allow" in default and "port: 6379, result: deny" in default
    assert {g.param for g in suite.E2E if g.param} == set(suite.MODES), "each mode beyond make scenario"


def test_scenarios_run_on_the_kernel_datapath_and_every_step_has_a_reason_and_a_limit():
    steps = suite.steps("tcg")
    for s in steps:
        assert s.why and s.limit_s >= 60 * s.tcg_min and s.tcg_min > 0, s
    scen = [s for s in steps if s.name.startswith("scenario-")]
    assert all(s.argv[:2] == ("make", "scenario") and "DATAPATH=system" in s.argv for s in scen)
    assert [s.name for s in steps if s.required] == ["sync", "install", "kernel-datapath"]
    e2e = [s for s in steps if s.name.startswith("e2e-")]
    assert all("--junitxml=/mnt/job/out/" + s.name + ".xml" in s.argv for s in e2e)


def test_perf_is_labelled_with_where_it_ran():
    tcg, kvm = suite.steps("tcg")[-1], suite.steps("kvm")[-1]
    assert tcg.name == kvm.name == "perf"
    assert "--quick" in tcg.argv and ("--datapath", "system") == tcg.argv[2:4]
    assert "TCG" in tcg.why and "says nothing about speed" in tcg.why
    assert kvm.why == "kernel datapath, in a KVM guest" and "vpc-route,vxlan" in kvm.argv


def test_a_tcg_run_is_estimated_within_45_minutes():
    assert suite.estimate_min(suite.steps("tcg"), "tcg") <= 45
    assert suite.estimate_min(suite.steps("kvm"), "kvm") < suite.estimate_min(suite.steps("tcg"), "tcg")


def test_steps_are_chosen_by_name_or_group_with_the_required_ones():
    steps = suite.steps("tcg")
    assert [s.name for s in suite.select(steps, ["perf"])] == ["sync", "install", "kernel-datapath", "perf"]
    assert len(suite.select(steps, ["e2e"])) == 3 + len(suite.E2E)
    assert [s.name for s in suite.select(steps, ["scenario"])][3:] == ["scenario-vxlan", "scenario-vpc-route",
                                                                       "scenario-eni"]
    with pytest.raises(ValueError, match="unknown step"):
        suite.select(steps, ["e2e-nothing"])


def run_job(tmp_path, steps: list[Step]) -> int:
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    script = suite.job_script(steps, str(jobdir), str(tmp_path / "checkout"))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).returncode


def test_the_job_runs_its_steps_and_the_summary_reads_them(tmp_path):
    steps = [Step("sync", ("true",), "copy", 1, 60, True),
             Step("scenario-eni", ("bash", "-c", "echo 'a b' > x; exit 3"), "with 'quotes' and $dollars", 1, 60),
             Step("e2e-services", ("true",), "pytest", 1, 60),
             Step("slow", ("sleep", "30"), "ends by its limit", 1, 1),
             Step("perf", ("false",), "perf", 1, 60)]
    assert run_job(tmp_path, steps) == 1
    (tmp_path / "job" / "out" / "e2e-services.xml").write_text(
        '<testsuites><testsuite><testcase name="test_a[vxlan]"/><testcase name="test_b[vxlan]"><failure/></testcase>'
        '<testcase name="test_c"><skipped/></testcase></testsuite></testsuites>')
    results = suite.read_steps(str(tmp_path / "job"), steps + [Step("never", ("true",), "", 1, 60)])
    assert [(r.name, r.status) for r in results] == [("sync", "ok"), ("scenario-eni", "failed"), ("e2e-services", "ok"),
                                                     ("slow", "failed"), ("perf", "failed"), ("never", "not run")]
    assert results[1].detail == "exit 3" and results[3].detail == "timed out"
    assert results[2].detail == "1 passed, 1 failed, 1 skipped: test_b[vxlan]"
    assert (tmp_path / "checkout" / "x").read_text() == "a b\n", "steps run in the checkout"
    lines, ok = suite.summary(results, "in a TCG guest", 1)
    assert not ok and lines[-1] == "2 of 6 steps passed: FAIL"


def test_a_failed_required_step_skips_the_rest(tmp_path):
    steps = [Step("sync", ("false",), "copy", 1, 60, True), Step("perf", ("true",), "perf", 1, 60)]
    assert run_job(tmp_path, steps) == 1
    results = suite.read_steps(str(tmp_path / "job"), steps)
    assert [r.status for r in results] == ["failed", "skipped"]
    lines, ok = suite.summary(results, "in a KVM guest", None)
    assert not ok and "wrote no exit status" in lines[-1]
    ok_lines, ok = suite.summary([suite.StepResult("sync", "ok", 1)], "in a KVM guest", 0)
    assert ok and ok_lines[-1].endswith("PASS")


def test_the_make_targets():
    if not shutil.which("make"):
        pytest.skip("no make")
    run = lambda *a: subprocess.run(["make", "-n", *a], cwd=REPO, capture_output=True, text=True).stdout  # noqa: E731
    assert ".venv/bin/kubevpc run scenarios/default.yaml --mode eni --datapath system" in run(
        "scenario", "MODE=eni", "DATAPATH=system")
    assert "--datapath" not in run("scenario")
    out = run("vm-test", "ACCEL=tcg", "VM_STEPS=e2e-services,perf")
    assert ".venv/bin/python -m kubevpc.vm build --accel tcg" in out
    assert ".venv/bin/python -m kubevpc.vm test --accel tcg --steps e2e-services,perf" in out
    assert ".venv/bin/python -m kubevpc.vm clean" in run("vm-clean")


def test_the_vagrantfile(tmp_path):
    text = (REPO / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert 'provider "virtualbox"' in text and 'provider "libvirt"' in text
    assert "bash /home/vagrant/kubevpc/scripts/install.sh" in text
    if not shutil.which("vagrant"):
        pytest.skip("vagrant is not installed (apt-get install vagrant vagrant-libvirt)")
    env = {**os.environ, "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_HOME": str(tmp_path / "home")}
    res = subprocess.run(["vagrant", "validate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    if "No usable default provider" in res.stdout + res.stderr:
        res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_steps_can_be_listed_without_root():
    res = subprocess.run([sys.executable, "-m", "kubevpc.vm", "test", "--list"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("TCG: 14 steps, about ")
    assert "e2e-services" in res.stdout and "says nothing about speed" in res.stdout


@pytest.mark.parametrize("accel, factor", [("tcg", "5"), ("kvm", "1")])
def test_a_tcg_guest_stretches_the_e2e_probe_deadlines(tmp_path, accel, factor):
    script = suite.job_script([Step("e2e-netpol", ("bash", "-c", 'echo "$KUBEVPC_E2E_SLOW" > slow'), "x", 1, 60)],
                              str(tmp_path / "job"), str(tmp_path / "checkout"), accel=accel)
    (tmp_path / "job").mkdir()
    assert subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).returncode == 0
    assert (tmp_path / "checkout" / "slow").read_text().strip() == factor
