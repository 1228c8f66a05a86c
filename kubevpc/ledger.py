"""The ledger: a record of everything a run creates, written before each thing is created
(processes, whose pid is known only once they exist, right after they start).

One JSON line per resource in <state>/runs/<run>/ledger.jsonl. Teardown and `kubevpc clean`
remove exactly what a ledger lists and nothing else, so a run killed with -9 can be cleaned up,
and other bridges, namespaces and processes on the machine are never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterator

STATE_ROOT = os.environ.get("KUBEVPC_STATE_DIR", "/var/lib/kubevpc")

KINDS = ("process", "link", "bridge", "netns", "file", "emptydir")   # emptydir: removed only if empty


def runs_dir() -> str:
    return os.path.join(STATE_ROOT, "runs")


def run_dir(run: str) -> str:
    return os.path.join(runs_dir(), run)


@dataclass(frozen=True)
class Entry:
    kind: str           # process | link | bridge | netns | file
    name: str           # pid for processes
    token: str = ""     # processes: a string their command line must contain (the run's name)


class Ledger:
    def __init__(self, run: str):
        self.run = run
        self.dir = run_dir(run)
        self.path = os.path.join(self.dir, "ledger.jsonl")

    def create(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "owner"), "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {_start_time(os.getpid())}\n")

    def record(self, kind: str, *names: str | int, token: str = "") -> None:
        """Append entries and flush them to disk before the caller creates the resources."""
        assert kind in KINDS, kind
        with open(self.path, "a", encoding="utf-8") as fh:
            for name in names:
                fh.write(json.dumps({"kind": kind, "name": str(name), "token": token}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[Entry]:
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError:     # a line cut short by a crash
                        continue
                    out.append(Entry(d["kind"], d["name"], d.get("token", "")))
        return out


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(run: str) -> bool:
    """Is the process that made this run (same pid, same start time) still running?"""
    try:
        with open(os.path.join(run_dir(run), "owner"), encoding="utf-8") as fh:
            pid, started = fh.read().split()
        return _start_time(int(pid)) == started
    except (OSError, ValueError):
        return False


def list_runs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(runs_dir()) if os.path.isdir(os.path.join(runs_dir(), d)))
    except FileNotFoundError:
        return []


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def stop_processes(entries: list[Entry], deadline: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL after the deadline; only pids whose command line carries the token."""
    pids = []
    for e in entries:
        pid = int(e.name)
        if e.token and e.token.encode() in cmdline(pid):
            try:
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except ProcessLookupError:
                pass
    end = time.monotonic() + deadline
    while pids and time.monotonic() < end:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.02)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [str(p) for p in pids]


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"     # a zombie is gone
    except (OSError, IndexError):
        return False


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, text=True, capture_output=True, timeout=60)


def existing_links() -> set[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def existing_netns() -> set[str]:
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}


def existing_bridges() -> set[str]:
    res = _run(["ovs-vsctl", "--timeout=10", "list-br"])
    return set(res.stdout.split()) if res.returncode == 0 else set()


def remove(entries: list[Entry], say: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    """Remove the listed resources in a safe order. Tolerates ones already gone."""
    by = {k: [e for e in entries if e.kind == k] for k in KINDS}
    counts = {k: 0 for k in KINDS}
    if by["process"]:
        stop_processes(by["process"])
        counts["process"] = len(by["process"])
    bridges = sorted({e.name for e in by["bridge"]} & existing_bridges())
    if bridges:
        cmd = ["ovs-vsctl", "--timeout=30"]
        for b in bridges:
            cmd += ["--", "--if-exists", "del-br", b]
        res = _run(cmd)
        if res.returncode != 0:
            say(f"ovs-vsctl del-br failed: {res.stderr.strip()}")
        counts["bridge"] = len(bridges)
    links = sorted({e.name for e in by["link"]} & existing_links())
    if links:
        _run(["ip", "-force", "-batch", "-"], "".join(f"link del dev {name}\n" for name in links))
        counts["link"] = len(links)
    namespaces = sorted({e.name for e in by["netns"]} & existing_netns())
    if namespaces:
        _run(["ip", "-force", "-batch", "-"], "".join(f"netns del {ns}\n" for ns in namespaces))
        counts["netns"] = len(namespaces)
    for e in by["file"]:
        if os.path.isdir(e.name):
            shutil.rmtree(e.name, ignore_errors=True)
        elif os.path.exists(e.name):
            os.unlink(e.name)
    for e in by["emptydir"]:
        try:
            os.rmdir(e.name)           # shared with other runs and users: only when nothing is left in it
        except OSError:
            pass
    return counts


def clean_run(run: str, say: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    counts = remove(Ledger(run).entries(), say)
    shutil.rmtree(run_dir(run), ignore_errors=True)
    return counts


def leftovers(include_live: bool = False) -> Iterator[str]:
    for run in list_runs():
        if include_live or not owner_alive(run):
            yield run
