"""Commands the builder runs, and waits with a deadline: what fails says what and why."""
from __future__ import annotations

import subprocess
import time
from typing import Callable

from kubevpc.errors import BuildError, DeadlineError


def sh(cmd: list[str], stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
    try:
        res = subprocess.run(cmd, input=stdin, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeadlineError(f"{' '.join(cmd[:4])} ... did not finish within {timeout:.0f} s") from None
    if check and res.returncode != 0:
        detail = res.stderr.strip() or res.stdout.strip()
        raise BuildError(f"{' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''} failed: {detail[:2000]}")
    return res.stdout


def wait_for(what: str, test: Callable[[], bool], deadline: float, interval: float = 0.05) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if test():
            return
        time.sleep(interval)
    if not test():
        raise DeadlineError(f"{what}: not done within {deadline:.0f} s")
