"""Helpers for unit tests that run a kubevpc daemon as a child process.

Every wait has a deadline: a child that hangs fails the test instead of hanging it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 10.0  # default wait for a condition
EXIT_DEADLINE = 5.0  # how long a child gets to exit after SIGTERM, then after SIGKILL


def child_env() -> dict[str, str]:
    """Our environment, with the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_module(module: str, *args: str, **popen: Any) -> subprocess.Popen:
    """Start ``python -m module args...`` from the repository."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=child_env(), **popen)


def wait_for(what: str, cond: Callable[[], object], deadline: float = DEADLINE,
             proc: subprocess.Popen | None = None) -> object:
    """Poll ``cond`` until it returns something true, and return that.

    Fails the test after ``deadline`` seconds, or as soon as ``proc`` (if given) has exited.
    """
    end = time.monotonic() + deadline
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited {proc.returncode} waiting for {what}")
        if time.monotonic() >= end:
            pytest.fail(f"not within {deadline} s: {what}")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen, deadline: float = EXIT_DEADLINE) -> int:
    """SIGTERM, wait; SIGKILL if it is still there. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(deadline)
    return proc.returncode


class Daemon:
    """A daemon a test starts with :meth:`launch`; its stderr is piped, as text."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def launch(self, module: str, *args: str) -> subprocess.Popen:
        self.proc = run_module(module, *args, stderr=subprocess.PIPE, text=True)
        return self.proc

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)

    def close(self) -> None:
        """Fixture teardown: stop the daemon if it was started."""
        if self.proc is not None:
            self.stop()
            self.proc.stderr.close()


def write_json(path: Path, data: object) -> None:
    """Replace ``path`` atomically, as a daemon watching it expects."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
