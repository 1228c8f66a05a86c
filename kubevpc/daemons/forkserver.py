"""Start the pods' and instances' servers by forking them from one preloaded process.

A new interpreter for each `kubevpc.daemons.server` costs about 44 ms of CPU and 12-13 MiB: with 100
pods, 2.9 s of a 4.8 s bring-up (docs/performance.md). This process imports `kubevpc.daemons.server` once,
freezes its heap for the garbage collector (`gc.freeze`, so that children do not copy it page by
page), and forks one child per server. Each child enters its pod's network namespace (`setns`),
becomes a session leader, names itself after the server (`ps -o comm`: `kv:web-0`) and runs
`kubevpc.daemons.server.main`. It stays a process of its own, as a pod's server should: it can be
stopped, killed and started again alone.

    python -m kubevpc.daemons.forkserver --run RUN --ledger PATH

reads requests on standard input, one JSON object a line:

    {"servers": [{"netns": "/proc/PID/ns/net", "name": "web-0", "argv": [...], "log": "PATH"}, ...]}

and answers each, on standard output, once every child of the request is written to the run's
ledger: `{"pids": [[PID, START], ...]}` (START is the process's start time, which with the pid
names one process) or `{"error": "..."}`. It reaps the children and logs how each ended on its
standard error. It exits when its standard input closes; the children stay, and teardown stops
them through the ledger. Stdlib only.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback

from kubevpc.daemons import server
from kubevpc.daemons.harness import Daemon
from kubevpc.ledger import Ledger, _alive, _start_time

CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15
REAP_INTERVAL = 0.5


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _child(req: dict) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        log = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, 1 << 16)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        libc = _libc()
        ns = os.open(req["netns"], os.O_RDONLY)
        if libc.setns(ns, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({req['netns']}): {os.strerror(err)}")
        os.close(ns)
        libc.prctl(PR_SET_NAME, ("kv:" + req["name"]).encode()[:15], 0, 0, 0)
        code = server.main(req["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(names: dict[int, str]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        name = names.pop(pid, "?")
        how = (f"code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
               else f"signal {os.WTERMSIG(status)}")
        print(f"kubevpc.forkserver: server {name} (pid {pid}) ended with {how}", file=sys.stderr, flush=True)


def _spawn(reqs: list[dict], ledger: Ledger, run: str, names: dict[int, str]) -> list[list]:
    pids = []
    try:
        for req in reqs:
            pid = os.fork()
            if pid == 0:
                _child(req)
            names[pid] = req["name"]
            pids.append(pid)
    finally:        # before the answer, and also when a fork fails halfway: teardown finds them all
        if pids:
            ledger.record("process", *pids, token=run)
    return [[pid, _start_time(pid)] for pid in pids]


def serve(run: str, ledger_path: str) -> int:
    ledger = Ledger(run)
    ledger.path = ledger_path
    names: dict[int, str] = {}
    gc.collect()
    gc.freeze()
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], REAP_INTERVAL)
        _reap(names)
        if not ready:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                reqs = json.loads(line)["servers"]
                answer = {"pids": _spawn(reqs, ledger, run, names)}
            except (ValueError, KeyError, TypeError, OSError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(1, (json.dumps(answer) + "\n").encode())


class ForkServerDaemon(Daemon):
    """``python -m kubevpc.daemons.forkserver``: serves requests until its standard input closes."""

    NAME = "forkserver"
    DESCRIPTION = ("Fork kubevpc servers into network namespaces on request "
                   "(JSON lines on standard input; see the module's documentation).")

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", required=True, help="the run's name: the token its processes carry")
        p.add_argument("--ledger", required=True, help="the run's ledger, where each child is written")

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # the builder ends it by closing standard input
        return serve(self.args.run, self.args.ledger)


main = ForkServerDaemon.main


# ------------------------------------------------------------------------------ the caller's side
class ForkServer:
    """The builder's handle on a running fork server."""

    def __init__(self, run: str, ledger: Ledger, root: str, log: str) -> None:
        self.run, self.ledger = run, ledger
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubevpc.daemons.forkserver", "--run", run, "--ledger", ledger.path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=root, start_new_session=True)
        ledger.record("process", self.proc.pid, token=run)
        self._buf = b""

    def spawn(self, servers: list[dict], timeout: float = 30) -> list["ForkedProcess"]:
        """Fork these servers (dicts as in a request); their handles, in order."""
        if self.proc.poll() is not None:
            raise OSError(f"the fork server exited with {self.proc.returncode}")
        self.proc.stdin.write((json.dumps({"servers": servers}) + "\n").encode())
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        poller = select.poll()            # not select(): a builder of 500 pods holds descriptors past 1024
        poller.register(fd, select.POLLIN)
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"the fork server did not answer within {timeout:g} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise OSError(f"the fork server exited with {self.proc.wait(timeout=5)}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise OSError(f"the fork server could not start the servers: {answer['error']}")
        return [ForkedProcess(pid, start, s["name"]) for (pid, start), s in zip(answer["pids"], servers)]

    def close(self, timeout: float = 5) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        self.proc.stdout.close()


class ForkedProcess:
    """A forked server, with the parts of subprocess.Popen the builder and Lab use. It is the fork
    server's child, not ours: it is known by its pid and start time, and its exit status is in
    the log, not here (`returncode` is -1 once it has ended)."""

    def __init__(self, pid: int, start: str, name: str) -> None:
        self.pid, self.start, self.name = pid, start, name
        self.returncode: int | None = None if start else -1

    def poll(self) -> int | None:
        if self.returncode is None and (_start_time(self.pid) != self.start or not _alive(self.pid)):
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"server {self.name} (pid {self.pid})", timeout)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                self.returncode = -1

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
