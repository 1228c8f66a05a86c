"""Keep a run's controller alive: notice its death within a second, say so, start it again.

The controller is a process of its own (controller/__main__.py). When it dies, the bridges keep
their flows (fail_mode=secure), so established connections go on, but nothing new is programmed
and packet-ins are not answered. The supervisor, a thread of the run's owner, looks at the process
every POLL seconds. On a death it records how the process ended, says so, and starts a new one;
the new controller takes the plan and the plan version from the run's directory, and the bridges
reconnect to it (every second at most, max_backoff) and are reconciled by cookie, without a flush.

A controller that dies MAX_DEATHS times within WINDOW seconds is not started again: the run says
so, and status shows it dead, with every death.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from controller.settings import settings
from kubevpc.errors import BuildError

POLL = 0.2                # seconds between two looks at the controller process
MAX_DEATHS = 5            # deaths within WINDOW before the supervisor gives up
WINDOW = 60.0


def check_controller_settings(environ: dict | None = None) -> dict[str, bool]:
    """KUBEVPC_BUNDLE and KUBEVPC_PURGE, which the controller inherits (controller/settings.py):
    a bad value is refused before anything is built, not by a controller that cannot say so."""
    try:
        return settings(environ)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


@dataclass(frozen=True)
class Death:
    pid: int
    at: float             # time.time() when the supervisor saw it
    how: str              # "killed by SIGKILL", "exited with 1"


def ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


class ControllerSupervisor:
    """Starts the controller with `spawn` (which records it in the run's ledger) and starts it
    again when it dies, until stop()."""

    def __init__(self, spawn: Callable[[], subprocess.Popen], say: Callable[[str], None] = lambda s: None,
                 poll: float = POLL, clock: Callable[[], float] = time.time):
        self._spawn, self._say, self._poll, self._clock = spawn, say, poll, clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        self.deaths: list[Death] = []
        self.gave_up = ""

    def start(self) -> subprocess.Popen:
        with self._lock:
            self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name="kubevpc-supervisor", daemon=True)
        self._thread.start()
        return self.proc

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll):
            self.check()

    def check(self) -> None:
        """One look: a dead controller is recorded and started again (or given up on)."""
        with self._lock:
            proc = self.proc
            if self._stopping.is_set() or proc is None or self.gave_up or proc.poll() is None:
                return
            now = self._clock()
            death = Death(proc.pid, now, ending(proc.returncode))
            self.deaths.append(death)
            recent = [d for d in self.deaths if now - d.at <= WINDOW]
            if len(recent) >= MAX_DEATHS:
                self.gave_up = (f"the controller died {len(recent)} times within {WINDOW:.0f} s (last: pid {death.pid} "
                                f"{death.how}); not started again, see controller.log")
                self._say(self.gave_up)
                return
            self._say(f"the controller (pid {death.pid}) {death.how}; starting it again")
            try:
                self.proc = self._spawn()
            except Exception as exc:      # noqa: BLE001 - said, and seen as dead again at the next look
                self._say(f"the controller could not be started again: {exc}")
                return
            self._say(f"controller restarted as pid {self.proc.pid}; the bridges reconnect to it")

    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is None

    def state(self) -> dict:
        """For status: the current process, whether it runs, and every death seen."""
        proc = self.proc
        alive = self.alive()
        state = {"pid": proc.pid if proc else None, "alive": alive, "restarts": len(self.deaths) - bool(self.gave_up),
                 "deaths": [asdict(d) for d in self.deaths[-MAX_DEATHS:]], "gave_up": self.gave_up}
        if not alive and proc is not None:
            last = self.deaths[-1] if self.deaths and self.deaths[-1].pid == proc.pid else None
            state["dead"] = f"pid {proc.pid} {last.how if last else ending(proc.poll() or 0)}"
        return state

    def stop(self, deadline: float = 5.0) -> None:
        """No more restarts; the controller is terminated (killed after the deadline)."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=deadline)
        with self._lock:
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=deadline)


def unix_listening(path: str) -> bool:
    """Is a socket listening at this path? (/proc/net/unix, without connecting to it: a connection
    would be one more datapath for os-ken to greet.)"""
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
            next(fh)
            for line in fh:        # Num RefCount Protocol Flags Type St Inode Path
                f = line.split(None, 7)
                if len(f) == 8 and f[7].rstrip("\n") == path and int(f[3], 16) & 0x10000:   # __SO_ACCEPTCON
                    return True
    except (OSError, ValueError, StopIteration):
        pass
    return False
