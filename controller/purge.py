"""When the datapath follows a change (KUBEVPC_PURGE=1): Open vSwitch's flow cache emptied once per
plan version, after every bridge the version touched has answered its barrier.

Open vSwitch forwards with cached datapath flows (megaflows) that its revalidator threads check
against the OpenFlow tables; `ovs-appctl revalidator/purge` deletes every cached flow of every
datapath at once, and the next packet of each connection is looked up in the tables again (an
upcall) and cached anew. It changes nothing that lasts: no OpenFlow flow, no conntrack entry, no
setting of the shared Open vSwitch. It costs one ovs-appctl process and an upcall per active
megaflow of every bridge of the machine, and only when a change sent something: nothing runs
while nothing changes (docs/performance.md, "A change reaches the datapath").

The bookkeeping here is pure; controller/app.py runs the command (`purge_datapath`) in a thread
of its own and reports the outcome in status.json's "datapath".
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

PURGE = ["ovs-appctl", "--timeout=5", "revalidator/purge"]


@dataclass(frozen=True)
class Due:
    """A plan version the datapath can be said to follow now: after a purge when `purge`, else
    at once (no bridge was sent a flow or group mod for it, or purging is off)."""

    version: int
    purge: bool


class Purge:
    """Which connected bridges have not yet answered the barrier of the plan version in force."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.version = 0
        self.pending: set[str] = set()
        self.sent = False               # some bridge was sent a flow or group mod for this version
        self.told = 0                   # the latest version `due` returned

    def plan(self, version: int, bridges) -> None:
        """A new plan version, sent to these (connected) bridges."""
        self.version, self.pending, self.sent = version, set(bridges), False

    def changed(self) -> None:
        """A flow or group mod went to a bridge for the version in force."""
        self.sent = True

    def confirmed(self, bridge: str) -> None:
        """The bridge answered the barrier of the version in force, or disconnected."""
        self.pending.discard(bridge)

    def due(self) -> Due | None:
        """The version the datapath can follow now, once; None while a bridge has not answered."""
        if self.pending or self.told >= self.version:
            return None
        self.told = self.version
        return Due(self.version, self.enabled and self.sent)


def purge_datapath(run=subprocess.run) -> str:
    """Empty Open vSwitch's datapath flow cache; "" when done, else why not."""
    try:
        run(PURGE, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL, check=True)
    except subprocess.CalledProcessError as exc:
        return f"{' '.join(PURGE)}: exit {exc.returncode}: {(exc.stderr or '').strip()[:200]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{' '.join(PURGE)}: {exc}"
    return ""
