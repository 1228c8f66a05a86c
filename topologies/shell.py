"""Commands the builder runs, and waits with a deadline: what fails says what and why."""
from __future__ import annotations

import json
import logging
import subprocess
import time
from typing import Callable, Sequence

from kubevpc.errors import BuildError, DeadlineError

LOG = logging.getLogger("kubevpc.shell")      # `kubevpc -v` prints its debug records: every command run


def sh(cmd: list[str], stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, input=stdin, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeadlineError(f"{' '.join(cmd[:4])} ... did not finish within {timeout:.0f} s") from None
    if LOG.isEnabledFor(logging.DEBUG):
        text = " ".join(cmd)
        LOG.debug("$ %s%s: exit %d in %.0f ms", text if len(text) <= 400 else text[:400] + " ...",
                  f" (stdin: {len(stdin.splitlines())} lines)" if stdin else "", res.returncode,
                  (time.monotonic() - t0) * 1000)
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


def bridge_connections(names: Sequence[str]) -> dict[str, bool]:
    """Each bridge's connection to its controller as Open vSwitch reports it (is_connected), for
    these bridges; a bridge without a controller, or gone, is False. Empty when Open vSwitch does
    not answer. ovs-vswitchd writes is_connected every few seconds (5 s at most), so this view
    lags behind the controller's own (status.json), which changes on each connect and disconnect."""
    try:
        out = sh(["ovs-vsctl", "--timeout=5", "-f", "json", "--", "--columns=name,controller", "list", "Bridge",
                  "--", "--columns=_uuid,is_connected", "list", "Controller"], timeout=10)
        bridges, controllers = (json.loads(line)["data"] for line in out.splitlines() if line.strip())
    except (BuildError, DeadlineError, ValueError, KeyError):
        return {}
    connected = {uuid[1]: bool(is_connected) for uuid, is_connected in controllers}
    by_bridge = {name: ctl[1] if ctl and ctl[0] == "uuid" else None for name, ctl in bridges}
    return {name: connected.get(by_bridge.get(name), False) for name in names}
