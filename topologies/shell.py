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


# ovs-vsctl keeps, for the length of one run, a cache of every bridge, port and interface in the
# database (the machine's, other runs' included), which add-br, add-port, set-controller, del-port
# and del-br need. add-port and del-port keep it up to date; add-br and every generic command
# (set, add, create, ...) throw it away, and the next command that needs it reads the whole
# database again. One transaction of `add-port P -- set interface P ofport_request=N` per port
# reads it once per port: quadratic in the ports, the `bridges` step's growth (0.59 s at 500 pods,
# 3.54 s at 1,000). vsctl_order puts the commands that need the cache first, so it is read once.
VSCTL_CACHED = {"add-br": 0, "del-br": 1, "add-port": 1, "del-port": 1, "add-bond": 1, "set-controller": 2}


def vsctl_commands(args: Sequence[str]) -> list[list[str]]:
    """ovs-vsctl's commands, each a list of words, from arguments that separate them with `--`."""
    out: list[list[str]] = [[]]
    for word in args:
        if word == "--":
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


def vsctl_name(command: Sequence[str]) -> str:
    """The command's name, after its options (--if-exists, --may-exist, --id=@x)."""
    return next((w for w in command if not w.startswith("--")), "")


def vsctl_order(args: Sequence[str]) -> list[str]:
    """The same commands, in one transaction still, in an order that reads ovs-vsctl's cache once:
    bridges made, then ports added and deleted, then controllers set, then every generic command
    (the ports' numbers and types, the bridges' settings), each group in its own order. A generic
    command sets columns of rows the commands before it made; none of them depends on it."""
    commands = sorted(vsctl_commands(args), key=lambda c: VSCTL_CACHED.get(vsctl_name(c), 3))
    return [w for c in commands for w in ("--", *c)]


def vsctl_cache_reads(args: Sequence[str], rows: int = 0) -> tuple[int, int]:
    """How often ovs-vsctl reads its cache for these commands, and how many rows (bridges, ports,
    interfaces) it reads in all, `rows` being in the database before: the cost vsctl_order saves."""
    valid, reads, read = False, 0, 0
    for command in vsctl_commands(args):
        name = vsctl_name(command)
        if name in VSCTL_CACHED and not valid:
            reads, read, valid = reads + 1, read + rows, True
        if name not in VSCTL_CACHED or name == "add-br":
            valid = False
        rows += {"add-br": 3, "add-port": 2}.get(name, 0)      # a bridge has its own port and interface
    return reads, read
