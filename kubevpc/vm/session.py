"""A VM session (a build, a boot, a test) is a run like any other: a directory under the runs
directory with its ledger (kubevpc/ledger.py), so `kubevpc list` shows it and `kubevpc clean`
removes what a crashed one left.

Everything a session makes lies in its run directory (the debootstrapped root, the raw and qcow2
images, the overlay, the job directory, qemu's serial log) or is a process of its ledger (debootstrap
and the chroot in their own namespaces, mkfs, qemu-img, qemu), whose command line carries the run's
name (the ledger's token: a pid the kernel gives to another process is never stopped). Nothing is
mounted in the machine's namespace, no loop device is taken, and qemu's user network touches no
interface or route of the machine: there is nothing else to record. The only things outside the run
directory are the cache's finished images, written under a name carrying the run's
(`.part-<run>`) and renamed once complete; `clean` removes such parts of runs that are gone.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from typing import Callable

from ..ledger import Ledger, clean_run, list_runs, owner_alive
from ..rundir import atomic_write, run_dir

MARKER = "vm.json"                  # in the run directory: this run is a VM session
LOG_DIR = "/var/log/kubevpc/vm"     # where a failed session's logs are kept
Say = Callable[[str], None]


class Session:
    """A run directory and ledger for one VM session; removed (processes stopped, directory
    deleted) when the `with` block ends, however it ends."""

    def __init__(self, purpose: str, say: Say = print, name: str | None = None):
        self.say = say
        self.run = name or new_name()
        self.ledger = Ledger(self.run)
        self.dir = run_dir(self.run)
        self.purpose = purpose

    def __enter__(self) -> "Session":
        self.ledger.create()
        atomic_write(self.path(MARKER), json.dumps({"purpose": self.purpose, "started": time.time()}) + "\n")
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None and kind is not KeyboardInterrupt:
            self.keep_logs()
        counts = clean_run(self.run)
        if counts.get("process"):
            self.say(f"vm: stopped {counts['process']} process(es) of session {self.run}")

    def keep_logs(self) -> None:
        """After a failure, the session's logs (commands' output, the guest's console) are copied
        to LOG_DIR/<run>/ before its directory goes."""
        logs = [f for f in sorted(os.listdir(self.dir)) if f.endswith((".log", ".serial"))]
        job = self.path("job", "job.log")
        if not logs and not os.path.isfile(job):
            return
        dest = os.path.join(LOG_DIR, self.run)
        os.makedirs(dest, exist_ok=True)
        for f in logs:
            shutil.copyfile(self.path(f), os.path.join(dest, f))
        if os.path.isfile(job):
            shutil.copyfile(job, os.path.join(dest, "job.log"))
        self.say(f"vm: session {self.run} failed; its logs are kept in {dest}/")

    def kept(self, log: str) -> str:
        """Where a log of this session will be once a failure has kept it."""
        return os.path.join(LOG_DIR, self.run, os.path.basename(log))

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process and record it in the ledger at once. Its command line must carry the
        run's name (a path in the run directory, or qemu's -name): that is how the ledger knows it."""
        if not any(self.run in a for a in argv):
            raise ValueError(f"{argv[0]}: no argument carries the run's name {self.run}, so the ledger could "
                             "not tell this process from another")
        proc = subprocess.Popen(argv, stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
        self.ledger.record("process", proc.pid, token=self.run)
        return proc

    def run_step(self, what: str, argv: list[str], timeout: float, log: str | None = None,
                 env: dict | None = None) -> None:
        """Run a command to its end within `timeout` seconds, its output into `log` (in the run
        directory) or relayed line by line; StepFailed with the output's tail when it fails."""
        self.say(f"vm: {what}")
        t0 = time.monotonic()
        log = log or self.path(f"{argv[0].rsplit('/', 1)[-1]}.log")
        with open(log, "ab") as fh:
            proc = self.spawn(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise StepFailed(f"{what}: no end after {timeout:.0f} s (stopped); see {self.kept(log)}", tail(log)) from None
        if rc != 0:
            raise StepFailed(f"{what}: exit {rc}; see {self.kept(log)}", tail(log))
        self.say(f"vm: {what}: done in {time.monotonic() - t0:.0f} s")


class StepFailed(Exception):
    """A step of a session failed: what, and the last lines of its output."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def new_name() -> str:
    """vm + 4 hex digits (a run name: 6 characters at most), none taken yet."""
    taken = set(list_runs())
    while True:
        name = "vm" + secrets.token_hex(2)
        if name not in taken and not os.path.exists(run_dir(name)):
            return name


def is_vm_session(run: str) -> bool:
    return os.path.isfile(os.path.join(run_dir(run), MARKER))


def vm_leftovers() -> list[str]:
    """VM sessions whose owner is gone."""
    return [r for r in list_runs() if is_vm_session(r) and not owner_alive(r)]


def clean(cache_dir: str, say: Say = print) -> int:
    """Remove every VM session left by a crash and the cache's unfinished parts whose run is gone.
    Returns how many things were removed."""
    n = 0
    for run in vm_leftovers():
        counts = clean_run(run, say)
        say(f"vm: {run}: removed " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "its directory"))
        n += 1
    live = {r for r in list_runs() if owner_alive(r)}
    try:
        names = os.listdir(cache_dir)
    except FileNotFoundError:
        names = []
    for f in names:
        run = f.rpartition(".part-")[2] if ".part-" in f else ""
        if run and run not in live:
            os.unlink(os.path.join(cache_dir, f))
            say(f"vm: removed the unfinished {os.path.join(cache_dir, f)}")
            n += 1
    return n
