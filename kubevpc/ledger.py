"""The ledger: a record of everything a run creates, written before each thing is created
(processes, whose pid is known only once they exist, right after they start).

One JSON line per resource in <state>/runs/<run>/ledger.jsonl. Teardown and `kubevpc clean`
remove exactly what a ledger lists and nothing else, so a run killed with -9 can be cleaned up,
and other bridges, namespaces and processes on the machine are never touched.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from . import rundir
from .errors import KubevpcError
from .runname import MAX_TAG, RUN_NAME  # noqa: F401 - a run name is checked here too
from .rundir import RunDir, controller_socket, private_dir, run_dir, runs_dir

KINDS = ("process", "link", "bridge", "netns", "file", "emptydir")   # emptydir: removed only if empty
NETNS_ETC = "/etc/netns"            # where `ip netns exec` looks for a namespace's resolv.conf
NETNS_LINK = "netns"                # a link's token: the root-side end of a veth whose other end is in one
                                    # of the run's namespaces, which takes it away when it is deleted
LINKS_GONE_WAIT, LINK_GONE_WAIT = 2.0, 0.002   # s, and s a link: how long those are waited for



class NotARun(KubevpcError):
    """A name that is not a run's, or a run that cannot be taken: nothing was touched."""


def check_run_name(run: str) -> str:
    """The name, if it is one a run can have; NotARun otherwise (a path, `..`, `/`, ...)."""
    if not isinstance(run, str) or not RUN_NAME.match(run):
        raise NotARun(f"{run!r} is not a run name: expected 1 to {MAX_TAG} lowercase letters and digits, starting "
                      "with a letter (`kubevpc list` shows the runs)")
    return run


@dataclass(frozen=True)
class Entry:
    kind: str           # process | link | bridge | netns | file
    name: str           # pid for processes
    token: str = ""     # processes: a string their command line must contain (the run's name)


class Ledger:
    def __init__(self, run: str):
        self.run = run
        self.dir = run_dir(run)
        self.path = RunDir(self.dir).ledger

    def create(self) -> None:
        """The run's directory, root's alone (0700, as is the runs directory above it): it holds
        TLS keys, the controller's and the control channel's sockets, and what the run believes."""
        os.makedirs(rundir.STATE_ROOT, exist_ok=True)
        private_dir(runs_dir())
        private_dir(self.dir)
        with open(RunDir(self.dir).owner, "w", encoding="utf-8") as fh:
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
        """What the ledger lists, except entries that are not this run's to remove (see owns):
        those are counted in self.foreign, never returned."""
        self.foreign = 0
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        d = json.loads(line)
                        e = Entry(str(d["kind"]), str(d["name"]), str(d.get("token", "")))
                    except (json.JSONDecodeError, KeyError, TypeError):     # a line cut short by a crash
                        continue
                    if self.owns(e):
                        out.append(e)
                    else:
                        self.foreign += 1
        return out

    def owns(self, e: Entry) -> bool:
        """Could this run have made it? Interfaces, bridges and namespaces carry the run's name
        first; files lie in the run's directory, or are a namespace's /etc/netns entry or the
        run's controller socket; processes are stopped only while their command line carries the
        entry's token."""
        if e.kind == "process":
            return e.name.isdigit() and bool(e.token)
        if e.kind in ("link", "bridge", "netns"):
            return e.name.startswith(self.run) and "/" not in e.name
        if e.kind == "file":
            if os.path.normpath(e.name) != e.name:          # no "..", no "//"
                return False
            return e.name.startswith(self.dir + os.sep) or e.name == controller_socket(self.run) or (
                os.path.dirname(e.name) == NETNS_ETC and os.path.basename(e.name).startswith(self.run + "-"))
        return e.kind == "emptydir" and e.name == NETNS_ETC


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_pid(run: str) -> int | None:
    try:
        with open(RunDir.of(run).owner, encoding="utf-8") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def owner_of(run: str) -> tuple[int, str] | None:
    """The pid and start time the run's owner file holds (None when it cannot be read)."""
    try:
        with open(RunDir.of(run).owner, encoding="utf-8") as fh:
            pid, started = fh.read().split()
        return int(pid), started
    except (OSError, ValueError):
        return None


def same_process(pid: int, started: str) -> bool:
    """Is `pid` still the process that started at `started` (clock ticks since boot), and not a
    zombie? A pid the kernel gave to another process since is not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and fields[19] == started
    except (OSError, IndexError):
        return False


def owner_alive(run: str) -> bool:
    """Is the process that made this run (same pid, same start time) still running? A zombie is
    not: a supervisor killed -9 whose parent does not reap it (the machine's pid 1 need not) has
    left its run behind all the same."""
    try:
        with open(RunDir.of(run).owner, encoding="utf-8") as fh:
            pid, started = fh.read().split()
        return same_process(int(pid), started)
    except (OSError, ValueError):
        return False


def list_runs() -> list[str]:
    """The runs: directories (not links) under the runs directory that carry a run's name."""
    try:
        names = os.listdir(runs_dir())
    except FileNotFoundError:
        return []
    return sorted(d for d in names if RUN_NAME.match(d) and not os.path.islink(os.path.join(runs_dir(), d))
                  and os.path.isdir(os.path.join(runs_dir(), d)))


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def stop_processes(entries: list[Entry], deadline: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL after the deadline; only pids whose command line carries the token.
    Every process is signalled first, then all are waited for at once, under one deadline; the pids
    still running at the deadline, killed, are returned. A process is held by a pidfd, opened
    before its command line is read, so the process signalled is the one whose command line was
    read, and its end wakes the wait (no look at each process every few milliseconds)."""
    held: list[tuple[int, int | None]] = []
    for e in entries:
        pid = int(e.name)
        fd = _pidfd(pid)
        if e.token and e.token.encode() in cmdline(pid) and _signal(pid, fd, signal.SIGTERM):
            held.append((pid, fd))
        elif fd is not None:
            os.close(fd)
    try:
        left = _wait_ended(held, deadline)
        for pid, fd in left:
            _signal(pid, fd, signal.SIGKILL)
        return [str(pid) for pid, _ in left]
    finally:
        for _, fd in held:
            if fd is not None:
                os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A pidfd for the process (None where the kernel or the descriptor limit says no: then it is
    looked at by its pid)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _signal(pid: int, fd: int | None, sig: int) -> bool:
    try:
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_ended(held: list[tuple[int, int | None]], deadline: float) -> list[tuple[int, int | None]]:
    """Wait until these processes have ended or the deadline has passed; those still running.
    A pidfd is readable once its process has ended (one poll waits for all of them); a process
    without one is looked at every 20 ms."""
    end = time.monotonic() + deadline
    poller, polled, others = select.poll(), {}, []
    for pid, fd in held:
        if fd is None:
            others.append((pid, fd))
        else:
            poller.register(fd, select.POLLIN)
            polled[fd] = (pid, fd)
    others = [(pid, fd) for pid, fd in others if _alive(pid)]
    while (polled or others) and (left := end - time.monotonic()) > 0:
        for fd, _ in poller.poll((min(left, 0.02) if others else left) * 1000):
            poller.unregister(fd)
            _reap(polled.pop(fd)[0])
        others = [(pid, fd) for pid, fd in others if _alive(pid)]
    return list(polled.values()) + others


def _reap(pid: int) -> None:
    """Collect the exit status of our own child (a namespace's shell), so that it is no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


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
    """The names of the interfaces of our network namespace (netlink, no process)."""
    return {name for _, name in socket.if_nameindex()}


def existing_netns() -> set[str]:
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}


def existing_bridges() -> set[str]:
    res = _run(["ovs-vsctl", "--timeout=10", "list-br"])
    return set(res.stdout.split()) if res.returncode == 0 else set()


def remove_namespaces_and_links(netns: list[Entry], links: list[Entry]) -> tuple[int, int]:
    """Delete the namespaces, then the links; the numbers of each there were.

    Deleting a veth is a kernel transaction of its own, with a wait for every CPU (an RCU barrier),
    so a thousand `link del` take seconds, however they are batched into one `ip`. A namespace
    without a process, deleted, takes its devices with it, the other end of each veth pair
    included, all at once. So the namespaces go first, in one `ip -batch`; the links recorded with
    the token NETNS_LINK (the root-side ends of the hosts' veths) are then waited for, up to a
    deadline; and every link of the ledger still there (node uplinks, whose two ends are in the root
    namespace; VXLAN devices; one whose namespace something outside the run still holds) is
    deleted, in one `ip -batch`."""
    namespaces = sorted({e.name for e in netns} & existing_netns())
    wanted = {e.name for e in links}
    there = wanted & existing_links() if wanted else set()
    if namespaces:
        _run(["ip", "-force", "-batch", "-"], "".join(f"netns del {ns}\n" for ns in namespaces))
    dying = {e.name for e in links if e.token == NETNS_LINK} & there if namespaces else set()
    _delete_links(sorted(there - dying))
    if dying:
        end = time.monotonic() + LINKS_GONE_WAIT + LINK_GONE_WAIT * len(dying)
        while (dying := dying & existing_links()) and time.monotonic() < end:
            time.sleep(0.05)
        _delete_links(sorted(dying))
    return len(there), len(namespaces)


def _delete_links(names: list[str]) -> None:
    if names:
        _run(["ip", "-force", "-batch", "-"], "".join(f"link del dev {name}\n" for name in names))


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
    counts["link"], counts["netns"] = remove_namespaces_and_links(by["netns"], by["link"])
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
    """Remove what a run's ledger lists, then the run's directory. Only a run name is taken, and
    only a directory right under the runs directory is removed: never a path, never a link."""
    check_run_name(run)
    path = run_dir(run)
    if os.path.islink(path) or not os.path.isdir(path) or \
            os.path.dirname(os.path.realpath(path)) != os.path.realpath(runs_dir()):
        raise NotARun(f"no run named {run} in {runs_dir()} (`kubevpc list` shows the runs)")
    ledger = Ledger(run)
    counts = remove(ledger.entries(), say)
    if ledger.foreign:
        say(f"{run}: {ledger.foreign} ledger entries name things this run cannot have made; left alone")
    shutil.rmtree(path, ignore_errors=True)
    return counts


def leftovers(include_live: bool = False) -> Iterator[str]:
    for run in list_runs():
        if include_live or not owner_alive(run):
            yield run
