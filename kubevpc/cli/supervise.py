"""The supervisor of a run that `kubevpc up` started: a small background process that owns the run,
builds it with a Lab, serves its control channel, and tears it down when it is asked to.

    python -m kubevpc.cli.supervise --run RUN [--mode M] [--datapath D] [--allow-dir DIR ...]
                                    [--notify-fd FD] FILE

`kubevpc up` starts it in a session of its own (setsid) with standard input on /dev/null; it forks
once more, so that it is no session leader and can never take a terminal, and `up` reaps the
first process at once. The run's `owner` file names the supervisor (the builder's
`Ledger.create` writes it), so `kubevpc list`, `status`, `clean` and `owner_alive` take the run
as they take one of `kubevpc run --keep`. SIGTERM (from `kubevpc down`) or SIGINT tears the run
down; further signals are ignored until the teardown is over.

Its lines go to `<run dir>/supervisor.log` (ISO UTC time first), opened as soon as the builder has
made the run's directory (lines said before wait in memory), with its standard output and error.
Until the network is ready they also go to `up`, on the pipe FD, one JSON object a line:

    {"pid": 1234}                                     first: the supervisor's pid
    {"say": "creating 10 namespaces (5 ECS, 5 pods)"}  a line of progress
    {"ready": {"run": ..., "mode": ..., ...}}         the network is ready; then the pipe closes
    {"error": "...", "problems": [...], "code": 3}    bring-up failed: teardown lines follow, then
                                                      the pipe closes once nothing is left
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable

from ..control import serve, socket_path
from ..daemons.harness import iso_time
from ..errors import KubevpcError, ScenarioError
from ..lab import Lab
from ..ledger import clean_run, owner_of
from ..rundir import RunDir, run_dir
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, MODES

MODULE = "kubevpc.cli.supervise"       # `kubevpc down` signals only a process whose command line runs it


def command(file: str, run: str, mode: str | None = None, datapath: str | None = None,
            allow_dirs: tuple[str, ...] | list[str] = (), notify_fd: int | None = None,
            python: str = sys.executable) -> list[str]:
    """The supervisor's command line. Paths are made absolute: it runs from the package's directory."""
    argv = [python, "-m", MODULE, "--run", run]
    argv += ["--mode", mode] if mode else []
    argv += ["--datapath", datapath] if datapath else []
    for d in allow_dirs:
        argv += ["--allow-dir", os.path.abspath(d)]
    argv += ["--notify-fd", str(notify_fd)] if notify_fd is not None else []
    return argv + ["--", os.path.abspath(file)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="Own a run that `kubevpc up` started: "
                                "build it, serve its control channel, tear it down on SIGTERM or SIGINT.")
    p.add_argument("file", metavar="FILE", help="the scenario (an absolute path)")
    p.add_argument("--run", required=True, help="the run's name")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--datapath", choices=("netdev", "system"))
    p.add_argument("--allow-dir", action="append", default=[], dest="allow_dirs", metavar="DIR")
    p.add_argument("--notify-fd", type=int, metavar="FD", help="the pipe to `kubevpc up` (JSON lines)")
    return p


class Notifier:
    """The pipe to `kubevpc up`: JSON lines until it is closed. `up` going away (a broken pipe)
    only ends the messages; the run goes on."""

    def __init__(self, fd: int | None):
        self.fd = fd
        if fd is not None:
            os.set_inheritable(fd, False)      # no process the run starts may hold the pipe open
        self.lock = threading.Lock()

    def send(self, **message) -> None:
        with self.lock:
            if self.fd is None:
                return
            data = (json.dumps(message, default=str) + "\n").encode()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                self._close()

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class RunLog:
    """`<run dir>/supervisor.log`, opened once the run's directory exists and is this process's
    (its owner file names it: never another run's of the same name); the supervisor's standard
    output and error go there too, for tracebacks. Lines said before wait in memory."""

    def __init__(self, run: str):
        self.run, self.path = run, RunDir.of(run).supervisor_log
        self.fd: int | None = None
        self.early: list[bytes] = []
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        data = f"{iso_time(time.time())} {text}\n".encode()
        with self.lock:
            if self.fd is None and self._ours():
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                for fd in (1, 2):
                    os.dup2(self.fd, fd)
                for line in self.early:
                    os.write(self.fd, line)
                self.early.clear()
            if self.fd is None:
                self.early.append(data)
            else:
                os.write(self.fd, data)

    def _ours(self) -> bool:
        owner = owner_of(self.run)
        return owner is not None and owner[0] == os.getpid()


def detach() -> None:
    """Fork once more and end the parent: the child is no session leader, so it can never take a
    controlling terminal, and `kubevpc up` reaps the parent at once."""
    if os.fork() > 0:
        os._exit(0)


def stop_on_signals() -> None:
    """The first SIGTERM or SIGINT ends the wait (or the bring-up) as KeyboardInterrupt; the ones
    after it are ignored, so the teardown it starts is never cut short."""
    def stop(*_) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def wait_until_stopped() -> None:
    while True:
        signal.pause()


def ready_document(lab, control) -> dict:
    """What `kubevpc up` prints once the network is ready."""
    plan = lab.plan
    return {"run": lab.run, "file": lab.file, "mode": plan.cluster.mode if plan.cluster else None,
            "datapath": lab.net.datapath.kind, "pid": os.getpid(), "log": RunDir.of(lab.run).supervisor_log,
            "control": socket_path(lab.run) if control is not None else None,
            "bringup_s": round(sum(lab.net.timings.values()), 3)}


def supervise(args, say: Callable[[str], None], notify: Notifier, make_lab=None,
              wait: Callable[[], None] = wait_until_stopped) -> int:
    """Build the run (with `make_lab`, default Lab), tell `up` it is ready, serve it until asked to
    stop, tear it down. Whatever happens, nothing of the run is left when this returns."""
    lab = control = None
    ready = False
    try:
        lab = (make_lab or Lab)(args.file, mode=args.mode, run=args.run, datapath=args.datapath, say=say,
                                allow_dirs=args.allow_dirs)
        say(f"run {lab.run}: building {lab.file} in mode {lab.plan.cluster.mode if lab.plan.cluster else '-'}")
        lab.up()
        control = serve(lab, say)
        notify.send(ready=ready_document(lab, control))
        notify.close()
        ready = True
        say(f"run {lab.run} is up; supervisor pid {os.getpid()}: `kubevpc down {lab.run}` ends it")
        wait()
        return EXIT_OK
    except KeyboardInterrupt:
        say("asked to stop" + ("" if ready else " before the network was ready"))
        notify.send(error="interrupted before the network was ready", code=EXIT_INTERRUPTED)
        return EXIT_OK if ready else EXIT_INTERRUPTED
    except ScenarioError as exc:
        notify.send(error=f"invalid scenario ({len(exc.problems)} problem(s)); nothing was built",
                    problems=[str(p) for p in exc.problems], code=EXIT_USAGE)
        return EXIT_USAGE
    except Exception as exc:     # noqa: BLE001 - told to `up` and logged; the teardown below runs
        if not isinstance(exc, KubevpcError):
            traceback.print_exc()
        message = str(exc) if isinstance(exc, KubevpcError) else f"{type(exc).__name__}: {exc}"
        say(f"error: {message}")
        notify.send(error=message, code=EXIT_RUNTIME)
        return EXIT_RUNTIME
    finally:
        for s in (signal.SIGTERM, signal.SIGINT):     # the teardown runs to its end
            signal.signal(s, signal.SIG_IGN)
        if control is not None:
            control.stop()
        take_down(lab, args.run, say)
        notify.close()


def take_down(lab, run: str, say: Callable[[str], None]) -> None:
    """The Lab's teardown, then what its ledger still lists if that failed (only while the run's
    directory is this process's: another run of the same name is never touched)."""
    if lab is not None and lab.net is not None:
        say("tearing down")
        try:
            counts = lab.down()
            say("removed " + (", ".join(f"{v} {k}(s)" for k, v in counts.items() if v) or "nothing"))
        except Exception as exc:     # noqa: BLE001 - the ledger below removes what is left
            say(f"teardown failed: {type(exc).__name__}: {exc}; removing what the ledger lists")
    owner = owner_of(run)
    if owner is not None and owner[0] == os.getpid() and os.path.isdir(run_dir(run)):
        counts = clean_run(run, say)
        say("removed " + (", ".join(f"{v} {k}(s)" for k, v in counts.items() if v) or "nothing") + " (from the ledger)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    notify = Notifier(args.notify_fd)
    detach()
    notify.send(pid=os.getpid())
    log = RunLog(args.run)

    def say(text: str) -> None:
        log.write(text)
        notify.send(say=text)
    stop_on_signals()
    return supervise(args, say, notify)


if __name__ == "__main__":
    sys.exit(main())
