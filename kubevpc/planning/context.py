"""What every planning stage shares: the scenario and run being planned, the problems found so
far, and the two allocators several stages draw from (vSwitch addresses, vSwitch ports)."""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import Problem, ScenarioError
from ..scenario.load import Loaded, Source
from .model import OFPORT_FIRST_ATTACHMENT, FixedIP, HostPlan, NodePlan, OvsPort, Plan, VSwitchPlan, usable
from .names import Names


class Problems:
    """Every problem found, so the user sees them all at once; `checkpoint` stops planning where a
    later stage could not make sense of what is wrong so far."""

    def __init__(self, src: Source):
        self.src = src
        self.items: list[Problem] = []

    def bad(self, path: tuple, value: object, expected: str, src: Source | None = None) -> None:
        self.items.append((src or self.src).problem(path, value, expected))

    def add(self, problem: Problem) -> None:
        self.items.append(problem)

    def unique(self, paths: list[tuple], names: list[str], what: str) -> None:
        seen = set()
        for path, name in zip(paths, names):
            if name in seen:
                self.bad(path, name, f"duplicate {what} name; expected unique names")
            seen.add(name)

    def checkpoint(self) -> None:
        if self.items:
            raise ScenarioError(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass
class Context:
    """The inputs of a planning run. Changes made while the scenario runs, by pod key, override the
    manifests: `ready`, the pod's readiness; `labels`, labels set (a value) or removed (None);
    `terminating` and `deleted`, pods deleted with and without a grace period.
    `previous`: the running scenario's hosts by key; those that stay keep their node, address,
    interface and port, and what they hold is not handed to newcomers."""

    loaded: Loaded
    run: str
    problems: Problems
    previous: dict[str, HostPlan] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    labels: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # pods deleted while running: `terminating` ones stay (from `previous`) through their grace
    # period; `deleted` ones go now, and a Deployment replaces them under new names
    terminating: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()
    previous_public: dict[str, str] = field(default_factory=dict)   # internet SLBs' EIPs, by Service
    previous_pod_eips: dict[str, str] = field(default_factory=dict)  # EIPs bound to pods: EIP name -> pod key
    fixed: dict[str, FixedIP] = field(default_factory=dict)    # eni: fixed addresses still held, by pod key
    previous_nodes: dict[str, NodePlan] = field(default_factory=dict)   # the running scenario's node bridges
    previous_bridges: dict[str, int] = field(default_factory=dict)      # the running scenario's bridges' dpids
    now: float = 0.0                # wall-clock time of the change (a fixed address's release TTL counts by it)

    @property
    def running(self) -> bool:
        """Planning a change to a running scenario (there is a previous plan), not its first plan."""
        return bool(self.previous)

    @property
    def sc(self):
        return self.loaded.scenario

    @property
    def names(self) -> Names:
        return Names(self.run)

    def bad(self, path: tuple, value: object, expected: str, src: Source | None = None) -> None:
        self.problems.bad(path, value, expected, src)


class AddressPool:
    """vSwitch addresses, handed out lowest first, never one already taken (declared, held by the
    running scenario, or handed out before)."""

    def __init__(self, ctx: Context, vswitches: list[VSwitchPlan]):
        self.ctx = ctx
        self.cidrs = {v.name: v.cidr for v in vswitches}
        self.pools = {v.name: list(usable(ipaddress.IPv4Network(v.cidr))) for v in vswitches}
        self.cursor = {v: 0 for v in self.pools}
        self.taken: dict[str, set[str]] = defaultdict(set)

    def hold_previous(self) -> None:
        """What the running scenario's pods and SLBs hold stays theirs, and so do the fixed addresses
        of StatefulSet pods that are gone for now."""
        for h in self.ctx.previous.values():
            if h.kind in ("pod", "slb") and h.vswitch in self.pools:
                self.taken[h.vswitch].add(h.ip)
        for f in self.ctx.fixed.values():
            if f.vswitch in self.pools:
                self.taken[f.vswitch].add(f.ip)

    def allocate(self, vswitch: str, path: tuple, what: str, src: Source | None = None, key: str = "") -> str | None:
        """The next free address of `vswitch` for `what` (the host `key` keeps its old one), or None
        with a problem when the vSwitch is full."""
        old = self.ctx.previous.get(key)
        if old is not None and old.vswitch == vswitch:
            return old.ip
        pool, cursor, taken = self.pools[vswitch], self.cursor, self.taken[vswitch]
        while cursor[vswitch] < len(pool) and str(pool[cursor[vswitch]]) in taken:
            cursor[vswitch] += 1
        if cursor[vswitch] >= len(pool):
            self.ctx.bad(path, vswitch, f"vSwitch {vswitch} ({self.cidrs[vswitch]}) has no "
                         f"free address left for {what}; expected a larger vSwitch CIDR", src)
            return None
        ip = str(pool[cursor[vswitch]])
        taken.add(ip)
        return ip

    def free(self, vswitch: str) -> int:
        """How many addresses of `vswitch` are still free."""
        return len(self.pools[vswitch]) - len(self.taken[vswitch])

    def allocate_from(self, vswitches: tuple[str, ...], policy: str, path: tuple, what: str, src: Source | None,
                      hint: str) -> tuple[str, str] | None:
        """A free address for `what` from `vswitches`: the first in order with one ("first"), or the
        one with the most free ("most", ties in order), as (vSwitch, address); None with a problem
        naming every vSwitch and its CIDR when all are full (`hint`: what else would help)."""
        order = sorted(vswitches, key=lambda v: -self.free(v)) if policy == "most" else list(vswitches)
        for v in order:
            if self.free(v) > 0:
                return v, self.allocate(v, path, what, src)
        full = ", ".join(f"{v} ({self.cidrs[v]})" for v in vswitches)
        self.ctx.bad(path, vswitches[0] if len(vswitches) == 1 else list(vswitches),
                     f"vSwitch{'es' if len(vswitches) > 1 else ''} {full} ha{'ve' if len(vswitches) > 1 else 's'} "
                     f"no free address left for {what}; expected a larger vSwitch CIDR, or {hint}", src)
        return None


class VSwitchPorts:
    """The ports of each vSwitch bridge beyond its vRouter patch, numbered in the order they come.
    Planned against a running scenario (`previous`), a port of the same name keeps its number, and a
    new one takes the lowest number above the first that no port of the running scenario holds."""

    def __init__(self, previous: Plan | None = None):
        self.ports: dict[str, list[OvsPort]] = defaultdict(list)
        self.next: dict[str, int] = defaultdict(lambda: OFPORT_FIRST_ATTACHMENT)
        self.kept: dict[tuple[str, str], int] = {}
        self.held: dict[str, set[int]] = defaultdict(set)
        for b in previous.bridges if previous is not None else ():
            if b.role == "vswitch":
                for p in b.ports:
                    self.kept[(b.owner, p.name)] = p.ofport
                    self.held[b.owner].add(p.ofport)

    def take(self, vswitch: str, name: str = "") -> int:
        """The number of port `name` on `vswitch`: its own if it runs already, else the next free."""
        if (vswitch, name) in self.kept:
            return self.kept[(vswitch, name)]
        ofport = self.next[vswitch]
        while ofport in self.held[vswitch]:
            ofport += 1
        self.next[vswitch] = ofport + 1
        return ofport

    def add(self, vswitch: str, *ports: OvsPort) -> None:
        self.ports[vswitch] += ports
