"""The lab lifecycle, as containerlab's deploy and destroy: `kubevpc up` starts a run's supervisor
(kubevpc/cli/supervise.py) in the background, relays its progress and returns once the network is
ready, leaving it running; `kubevpc down` asks the supervisor to tear it down, and removes what
the run's ledger lists itself when the supervisor is gone or stuck. Every wait has a deadline."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.markup import escape

from .. import rundir
from ..lab import new_run_name
from ..lab.servers import ROOT
from ..ledger import NotARun, check_run_name, clean_run, cmdline, list_runs, owner_of, run_dir, same_process
from ..rundir import RunDir
from . import supervise
from .output import emit
from .common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, build_args, console, out, say,
                     scenario_args, scenario_plan)

UP_DEADLINE = 600.0        # default seconds for `up` to see the network ready
DOWN_DEADLINE = 120.0      # default seconds for a supervisor to tear its run down
KILL_DEADLINE = 5.0        # after SIGKILL, for the process to be gone
START_DEADLINE = 10.0      # for the first process of the supervisor to fork it and end


def add_up(sub) -> None:
    p = sub.add_parser("up", help="build a scenario and leave it running in the background (containerlab's deploy)",
                       description="Build the scenario and return once the network is ready (every bridge "
                       "programmed, every server listening: what `run` waits for before its checks), leaving it "
                       "running under a supervisor process of its own. The run serves its control channel "
                       "(`kubevpc status`, `apply`, `ready`, ...). Progress goes to standard error, the run's name "
                       "to standard output. When the bring-up fails, nothing is left. Exit codes: 0 ready; 2 an "
                       "invalid scenario or a name already taken (nothing built); 3 the bring-up failed or was not "
                       "ready in time (torn down); 130 interrupted (torn down).")
    scenario_args(p)
    build_args(p)
    p.add_argument("--timeout", type=float, default=UP_DEADLINE, metavar="S",
                   help=f"seconds to wait for the network to be ready, then tear it down (default {UP_DEADLINE:g})")


def add_down(sub) -> None:
    p = sub.add_parser("down", help="tear down a run that `kubevpc up` started (containerlab's destroy)",
                       description="Ask the run's supervisor to tear it down (SIGTERM, sent only to the process "
                       "the run's owner file names, with the same start time, and only if its command line is that "
                       "run's supervisor) and relay what it says. When the supervisor is gone (killed) or has not "
                       "ended within the deadline (it is then killed), remove what the run's ledger lists, as "
                       "`kubevpc clean` does. Exit codes: 0 done, nothing of the run left; 2 not a run's name, no "
                       "such run, or a run that `kubevpc up` did not start and whose owner still runs (nothing "
                       "done).")
    p.add_argument("run", metavar="RUN", help="the run (`kubevpc list` shows the runs)")
    p.add_argument("--timeout", type=float, default=DOWN_DEADLINE, metavar="S",
                   help=f"seconds the supervisor gets to tear down before it is killed (default {DOWN_DEADLINE:g})")


# --------------------------------------------------------------------------------------------- up
@dataclass
class Outcome:
    """What a supervisor told `up` on its pipe."""

    pid: int | None = None
    ready: dict | None = None
    error: str = ""
    problems: list[str] = field(default_factory=list)
    code: int = EXIT_RUNTIME
    ended: bool = False        # the pipe closed: the supervisor has said all it will say


def follow(fd: int, deadline: float, said: Callable[[str], None], outcome: Outcome | None = None,
           until: Callable[[Outcome], bool] = lambda o: False) -> Outcome:
    """Read the supervisor's messages (kubevpc/cli/supervise.py) until it closes the pipe, `until`
    holds, or `deadline` seconds pass, relaying its lines of progress to `said`."""
    outcome = outcome or Outcome()
    end = time.monotonic() + deadline
    buf = b""
    while not outcome.ended and not until(outcome):
        left = end - time.monotonic()
        if left <= 0:
            break
        if not select.select([fd], [], [], min(left, 1.0))[0]:
            continue
        chunk = os.read(fd, 65536)
        outcome.ended = not chunk
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines + ([buf] if outcome.ended and buf else []):
            _take(line.decode(errors="replace"), outcome, said)
    return outcome


def _take(line: str, outcome: Outcome, said: Callable[[str], None]) -> None:
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        message = {"say": line}
    if not isinstance(message, dict):
        message = {"say": line}
    if "pid" in message:
        outcome.pid = int(message["pid"])
    if "say" in message:
        said(str(message["say"]))
    if "ready" in message:
        outcome.ready = message["ready"]
    if "error" in message:
        outcome.error = str(message["error"])
        outcome.problems = [str(p) for p in message.get("problems", [])]
        outcome.code = int(message.get("code", EXIT_RUNTIME))


def spawn(argv: list[str], fd: int) -> subprocess.Popen:
    """The supervisor's first process: a session of its own, nothing to read, nothing on our
    terminal (it logs to its run directory); the pipe `fd` passed on; the same state directory."""
    env = {**os.environ, "KUBEVPC_STATE_DIR": rundir.STATE_ROOT,
           "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(fd,), start_new_session=True, cwd=ROOT, env=env)


def cmd_up(args) -> int:
    run = args.name or new_run_name()
    try:
        check_run_name(run)
        if os.path.lexists(run_dir(run)):
            raise NotARun(f"a run named {run} exists already (`kubevpc down {run}`, or `kubevpc clean {run}` "
                          "for a leftover)")
    except NotARun as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    scenario_plan(args.file, args.mode, args.allow_dirs)       # invalid: exit 2 (cli.main), nothing started
    say(f"run {run}: starting its supervisor for {args.file}")
    read, write = os.pipe()
    try:
        first = spawn(supervise.command(args.file, run, args.mode, args.datapath, args.allow_dirs, write), write)
    finally:
        os.close(write)
    try:
        return _await(first, read, run, args)
    finally:
        os.close(read)


def _await(first: subprocess.Popen, read: int, run: str, args) -> int:
    """Relay the supervisor's progress until the network is ready; on a failure, the deadline or
    Ctrl-C, until it has torn the run down."""
    outcome = Outcome()
    try:
        try:
            first.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            first.kill()
        follow(read, args.timeout, say, outcome)
        if outcome.ready is None and not outcome.ended:
            console.print(f"[red]error:[/red] run {run} was not ready within {args.timeout:g} s; tearing it down")
            _stop(run, read, outcome)
            return EXIT_RUNTIME
    except KeyboardInterrupt:
        console.print(f"interrupted: tearing run {run} down")
        _stop(run, read, outcome)
        return EXIT_INTERRUPTED
    if outcome.ready is not None:
        _tell_ready(outcome.ready, args.output)
        return EXIT_OK
    console.print(f"[red]error:[/red] {escape(outcome.error or 'the supervisor ended before the network was ready')}")
    for p in outcome.problems:          # one line each, never wrapped, as the scenario loader's
        sys.stderr.write(f"  {p}\n")
    _remove_leftover(run, outcome.pid)
    return outcome.code


def _stop(run: str, read: int, outcome: Outcome) -> None:
    """Ask the supervisor to tear down, relay it until it has (or the deadline), then make sure
    nothing is left."""
    if outcome.pid is None:         # interrupted before the supervisor said who it is
        follow(read, START_DEADLINE, say, outcome, until=lambda o: o.pid is not None)
    if outcome.pid is not None and _is_supervisor(outcome.pid, run):
        try:
            os.kill(outcome.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        follow(read, DOWN_DEADLINE, say, outcome)
    _remove_leftover(run, outcome.pid)


def _remove_leftover(run: str, pid: int | None) -> None:
    """What a supervisor that ended (or is stuck) left of its run: its process killed, then what
    its ledger lists removed. Only a run whose owner file names that supervisor."""
    owner = owner_of(run)
    if pid is None or owner is None or owner[0] != pid or not os.path.isdir(run_dir(run)):
        return
    _end(owner, KILL_DEADLINE, run)
    if same_process(*owner):
        _kill(owner, run)
    if os.path.isdir(run_dir(run)):
        counts = clean_run(run, say)
        say(f"{run}: removed {_counted(counts)} (from its ledger)")


def _tell_ready(doc: dict, fmt: str) -> None:
    run = doc["run"]
    if fmt != "table":
        emit(doc, fmt)
    else:
        out.print(run, markup=False, highlight=False)
    console.print(f"run {run} is up: {doc.get('file')}, mode {doc.get('mode') or '-'}, {doc.get('datapath')} "
                  f"datapath, ready in {doc.get('bringup_s', 0):.1f} s; supervisor pid {doc.get('pid')}, log "
                  f"{doc.get('log')}", markup=False)
    for line in (f"kubevpc inspect {run}                      its endpoints, Services and controller",
                 f"kubevpc exec {run} pod/<ns>/<name> -- CMD  a command in a pod's (ecs/, node/) namespace",
                 f"kubevpc apply {run} -f FILE                change it (ready, delete, scale, label, ...)",
                 f"kubevpc down {run}                         tear it down"):
        console.print("  " + line, markup=False)


# ------------------------------------------------------------------------------------------- down
def _is_supervisor(pid: int, run: str) -> bool:
    """Is pid a supervisor of `run` (its command line runs kubevpc/cli/supervise.py with --run RUN)?"""
    argv = cmdline(pid).split(b"\0")
    return supervise.MODULE.encode() in argv and any(
        a == b"--run" and b == run.encode() for a, b in zip(argv, argv[1:]))


def _kill(owner: tuple[int, str], run: str) -> None:
    """SIGKILL the owner, if it still is that process and that run's supervisor; wait for it."""
    pid, started = owner
    if same_process(pid, started) and _is_supervisor(pid, run):
        say(f"killing the supervisor of {run}, pid {pid} (SIGKILL)")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _end(owner, KILL_DEADLINE, run)


def _end(owner: tuple[int, str], deadline: float, run: str, log: LogTail | None = None) -> bool:
    """Wait until the owner process has ended (relaying the new lines of its log); False at the deadline."""
    end = time.monotonic() + deadline
    while same_process(*owner):
        if log is not None:
            log.relay(run)
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    if log is not None:
        log.relay(run)
    return True


class LogTail:
    """A supervisor's log, read from its end on. The open file can still be read once the
    teardown has removed the run's directory, so its last lines are relayed too."""

    def __init__(self, path: str):
        self.fh = open(path, "rb")
        self.fh.seek(0, os.SEEK_END)
        self.rest = b""

    @classmethod
    def of(cls, run: str) -> LogTail | None:
        try:
            return cls(RunDir.of(run).supervisor_log)
        except OSError:
            return None

    def lines(self) -> list[str]:
        """The whole lines written since the last call, without their time."""
        *lines, self.rest = (self.rest + self.fh.read()).split(b"\n")
        return [line.decode(errors="replace").partition(" ")[2] for line in lines]

    def relay(self, run: str) -> None:
        """Said here (say adds our time); the removal's count also on standard output."""
        for text in self.lines():
            say(text)
            if text.startswith("removed "):
                out.print(f"{run}: {text}", markup=False, highlight=False)

    def close(self) -> None:
        self.fh.close()


def take_down(run: str, deadline: float) -> dict[str, int] | None:
    """Tear a run down: through its supervisor while it lives, then from the ledger whatever is
    left. Returns what the ledger removal removed (None: the supervisor removed everything).
    Raises NotARun (nothing done) for a name that is not a run's, no such run, or a run whose
    live owner is not a supervisor."""
    check_run_name(run)
    if run not in list_runs():
        raise NotARun(f"no run named {run} on this machine (`kubevpc list` shows the runs)")
    owner = owner_of(run)
    if owner is not None and same_process(*owner):
        if not _is_supervisor(owner[0], run):
            raise NotARun(f"run {run} was not started by `kubevpc up`: its owner, pid {owner[0]} (`kubevpc run "
                          f"--keep`, or a Lab), still runs; end it (Ctrl-C, or SIGTERM) and it tears down itself, or "
                          f"`kubevpc clean --force {run}`")
        _ask_to_stop(run, owner, deadline)
    elif owner is not None:
        say(f"the supervisor of {run}, pid {owner[0]}, is gone: removing what its ledger lists")
    if not os.path.isdir(run_dir(run)):
        return None
    return clean_run(run, say)


def _ask_to_stop(run: str, owner: tuple[int, str], deadline: float) -> None:
    """SIGTERM to the supervisor; its log relayed until it has ended, or SIGKILL at the deadline."""
    log = LogTail.of(run)
    try:
        say(f"asking the supervisor of {run}, pid {owner[0]}, to tear it down (SIGTERM)")
        try:
            os.kill(owner[0], signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _end(owner, deadline, run, log):
            say(f"the supervisor of {run} has not ended within {deadline:g} s")
            _kill(owner, run)
    finally:
        if log is not None:
            log.close()


def cmd_down(args) -> int:
    try:
        counts = take_down(args.run, args.timeout)
    except NotARun as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if counts is not None:
        out.print(f"{args.run}: removed {_counted(counts)} (from its ledger)", markup=False, highlight=False)
    say(f"run {args.run} is down")
    return EXIT_OK


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}(s)" for k, v in counts.items() if v) or "nothing left"


COMMANDS = {"up": (add_up, cmd_up), "down": (add_down, cmd_down)}
