"""A VM session is a run with a ledger: its processes and files go when it ends, and a crashed
one is a leftover that `python -m kubevpc.vm clean` and `kubevpc clean` remove. The cache's
unfinished parts of gone runs are removed too; nothing else is. Stand-in processes, a temporary
state directory: no VM."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kubevpc import cli, ledger
from kubevpc.runname import RUN_NAME
from kubevpc.vm import image, runner, session, suite
from kubevpc.vm.qemu import Accel, BootResult
from kubevpc.vm.session import Session, StepFailed


def sleeper(s: Session) -> subprocess.Popen:
    """A process whose command line carries the run's name, as qemu's -name does."""
    return s.spawn([sys.executable, "-c", "import time; time.sleep(60)", f"kubevpc-vm-{s.run}"])


def test_a_session_is_a_run_whose_processes_and_files_go_when_it_ends(state):
    with Session("test", lambda s: None) as s:
        assert RUN_NAME.match(s.run) and s.run.startswith("vm")
        assert s.run in ledger.list_runs() and session.is_vm_session(s.run)
        proc = sleeper(s)
        assert [e.name for e in ledger.Ledger(s.run).entries()] == [str(proc.pid)]
        open(s.path("disk.qcow2"), "w").close()
    assert proc.wait(timeout=10) is not None
    assert not os.path.exists(s.dir) and s.run not in ledger.list_runs()


def test_a_process_without_the_runs_name_is_refused(state):
    with Session("test", lambda s: None) as s:
        with pytest.raises(ValueError, match="carries the run's name"):
            s.spawn(["sleep", "1"])
        assert ledger.Ledger(s.run).entries() == []


def crashed(state) -> tuple[str, subprocess.Popen]:
    """A session whose owner died (kill -9) while its qemu ran on."""
    s = Session("test", lambda s: None)
    s.__enter__()
    proc = sleeper(s)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(ledger.RunDir.of(s.run).owner, "w", encoding="utf-8") as fh:
        fh.write(f"{dead.pid} 0\n")
    return s.run, proc


def test_vm_clean_removes_a_crashed_session_and_the_caches_unfinished_parts(state, tmp_path):
    run, proc = crashed(state)
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("debian12-aaa.qcow2", f"debian12-bbb.qcow2.part-{run}", "debian12-ccc.qcow2.part-vmlive"):
        (cache / name).write_text("")
    with Session("live", lambda s: None, name="vmlive"):
        said = []
        assert session.clean(str(cache), said.append) == 2
        assert proc.wait(timeout=10) is not None
        assert not os.path.exists(ledger.run_dir(run)) and os.path.isdir(ledger.run_dir("vmlive"))
        assert sorted(os.listdir(cache)) == ["debian12-aaa.qcow2", "debian12-ccc.qcow2.part-vmlive"]
        assert session.vm_leftovers() == []


def test_kubevpc_clean_removes_a_crashed_session_like_any_run(state, capsys):
    run, proc = crashed(state)
    assert cli.main(["list"]) == cli.EXIT_OK
    assert f"{run}: leftover" in capsys.readouterr().out
    assert cli.main(["clean"]) == cli.EXIT_OK
    assert proc.wait(timeout=10) is not None and not os.path.exists(ledger.run_dir(run))


def test_a_step_that_fails_or_hangs_says_so_with_its_output(state):
    with Session("test", lambda s: None) as s:
        s.run_step("ok", [sys.executable, "-c", "print('fine')", s.run], 30)
        with pytest.raises(StepFailed) as exc:
            s.run_step("bad", [sys.executable, "-c", "print('E: no such package'); raise SystemExit(100)", s.run], 30,
                       s.path("bad.log"))
        assert "exit 100" in str(exc.value) and "E: no such package" in exc.value.output
        t0 = time.monotonic()
        with pytest.raises(StepFailed, match="no end after"):
            s.run_step("slow", [sys.executable, "-c", "import time; time.sleep(30)", s.run], 0.5)
        assert time.monotonic() - t0 < 10


def test_publish_moves_the_disk_in_last_and_drops_other_keys(state, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "debian12-old.qcow2").write_text("")
    (cache / "debian12-new.qcow2.part-vmlive").write_text("")
    img = image.Image(str(cache), "key1")
    with Session("build", lambda s: None) as s:
        files = {}
        for ext in ("vmlinuz", "initrd", "qcow2"):
            files[ext] = s.path(ext)
            open(files[ext], "w").close()
        assert not img.complete()
        image.publish(s, img, files)
    assert img.complete()
    assert sorted(os.listdir(cache)) == ["debian12-key1.initrd", "debian12-key1.qcow2", "debian12-key1.vmlinuz",
                                         "debian12-new.qcow2.part-vmlive"]


def test_a_job_boot_collects_its_results_before_the_session_goes(state, tmp_path, monkeypatch):
    """run_job's wiring, with the overlay, the probe and qemu faked: the job script lands in the
    job directory, the guest's steps are read, results are copied out, and the session is gone."""
    monkeypatch.setattr(Session, "run_step", lambda self, *a, **k: None)
    monkeypatch.setattr(runner, "choose_accel", lambda s, requested, kernel: Accel("tcg", "asked for"))
    chosen = suite.select(suite.steps("tcg"), ["perf"])

    def fake_boot(spawn, argv, serial, deadline, say):
        jobdir = argv[argv.index("-virtfs") + 3].split("path=")[1].split(",")[0]
        assert open(os.path.join(jobdir, "job.sh")).read().startswith("#!/bin/bash")
        with open(os.path.join(jobdir, "steps.tsv"), "w") as fh:
            fh.write("".join(f"{s.name}\t0\t3\n" for s in chosen))
        with open(os.path.join(jobdir, "rc"), "w") as fh:
            fh.write("0\n")
        open(serial, "w").close()
        return BootResult(0, 5.0, "")
    monkeypatch.setattr(runner, "boot", fake_boot)
    got = {}

    def collect(jobdir, accel):
        got["results"] = suite.read_steps(jobdir, chosen)
        runner.copy_results(jobdir, str(tmp_path / "out"))
    out = runner.run_job(image.Image(str(tmp_path), "k"), image.BuildOptions(accel="tcg"),
                         lambda accel: (suite.job_script(chosen), 60), lambda s: None, collect)
    assert out.rc == 0 and out.accel.kind == "tcg"
    assert [r.status for r in got["results"]] == ["ok"] * len(chosen)
    assert (tmp_path / "out" / "steps.tsv").exists() and (tmp_path / "out" / "serial.log").exists()
    assert not (tmp_path / "out" / "job.sh").exists()
    assert [r for r in ledger.list_runs() if session.is_vm_session(r)] == []


def test_a_failed_session_keeps_its_logs(state, tmp_path, monkeypatch):
    monkeypatch.setattr(session, "LOG_DIR", str(tmp_path / "logs"))
    said = []
    with pytest.raises(StepFailed) as exc:
        with Session("build", said.append) as s:
            os.makedirs(s.path("job"))
            open(s.path("job", "job.log"), "w").write("guest output\n")
            s.run_step("chroot", [sys.executable, "-c", "print('E: broken'); raise SystemExit(1)", s.run], 30,
                       s.path("chroot.log"))
    kept = tmp_path / "logs" / s.run
    assert str(kept / "chroot.log") in str(exc.value)
    assert "E: broken" in (kept / "chroot.log").read_text() and (kept / "job.log").read_text() == "guest output\n"
    assert any(str(kept) in line for line in said) and not os.path.exists(s.dir)
