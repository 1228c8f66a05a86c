"""A small simulator of an OVS flow table, for the flow unit tests (as Faucet's clib/fakeoftable.py).

Compiled flows are plain data (controller/flows.py); this looks a packet up in them as Open
vSwitch would, so a test can say what a bridge does with a packet rather than which flows it
holds. A packet is a dict of match fields (eth_type, ipv4_src, tcp_dst, ct_state, reg0, in_port,
...) with plain values: ints, addresses as strings.

The lookup follows OVS's documented semantics (ovs-fields(7), "Conjunctive Match Fields";
lib/classifier.c):

- a lookup takes the highest-priority ordinary flow that matches (the "hard" match);
- flows whose actions are conjunction(id, k/n) are "soft": at each priority above the hard
  match, from the highest down, a conjunction completes when every clause 1..n has a matching
  flow at that priority; the table is then searched again, without soft flows, with conj_id set
  to the id, and what that finds wins; when nothing completes, the lookup goes on below;
- no match at all is a table miss: dropped.

It also rejects what OVS leaves undefined: two ordinary flows of equal priority that both match
with different actions, and completed conjunctions at one priority that disagree.

`FakeOFTable.walk` follows a packet from table to table by goto_table, loading registers and
fields as set_field and move do, and calling resubmit's table on the way; it stops where a flow
does not go on (output, group, ct with recirculation, drop) or at a table miss. Conntrack and
groups are not simulated: a walk that reaches them ends there, and the test reads the last flow.

`FakeOFTable.apply` takes the messages of the controller's reconcile (controller/reconcile.py) as
a switch takes flow and group mods, so the reconcile's tests can hold a table to what the plan
wants, and look packets up in it.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.flows import Conjunction, Flow, FlowSet, Goto, Group, Move, Resubmit, SetField
from controller.reconcile import AddFlow, DeleteFlow, GroupMod

IPV4_FIELDS = ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa")
IPV6_FIELDS = ("ipv6_src", "ipv6_dst", "ipv6_nd_target")


def _field_matches(name: str, want, packet: dict) -> bool:
    if name not in packet:
        return False                    # a field the packet lacks (e.g. tcp_dst of a UDP packet)
    have = packet[name]
    if name in IPV4_FIELDS:
        net = ipaddress.IPv4Network(want if isinstance(want, str) else f"{want[0]}/{want[1]}")  # strict: canonical
        return ipaddress.IPv4Address(have) in net
    if name in IPV6_FIELDS:
        # address/mask as OpenFlow has it; ipaddress takes an IPv6 mask as a prefix length only
        net6 = ipaddress.IPv6Network(want if isinstance(want, str) else
                                     (want[0], bin(int(ipaddress.IPv6Address(want[1]))).count("1")))  # strict
        return ipaddress.IPv6Address(have) in net6
    if isinstance(want, tuple):
        value, mask = want
        assert value & ~mask == 0, f"{name}={want}: value has bits outside its mask"
        return have & mask == value
    return have == want


def matches(f: Flow, packet: dict) -> bool:
    return all(_field_matches(k, v, packet) for k, v in f.match)


def _is_soft(f: Flow) -> bool:
    return any(isinstance(a, Conjunction) for a in f.actions)


def lookup(flows: list[Flow], packet: dict, conjunctive: bool = True) -> Flow | None:
    """The flow OVS would execute for `packet` among `flows` (one table)."""
    hits = [f for f in flows if matches(f, packet)]
    hard = [f for f in hits if not _is_soft(f)]
    best = max(hard, key=lambda f: f.priority, default=None)
    if best is not None:
        tied = {f.actions for f in hard if f.priority == best.priority}
        assert len(tied) == 1, f"equal-priority flows disagree on {packet}: {tied}"
    floor = best.priority if best is not None else -1
    if conjunctive:
        soft = [f for f in hits if _is_soft(f) and f.priority > floor]
        for priority in sorted({f.priority for f in soft}, reverse=True):
            clauses: dict[int, set[int]] = defaultdict(set)
            size: dict[int, int] = {}
            for f in soft:
                if f.priority == priority:
                    for a in f.actions:
                        clauses[a.conj_id].add(a.clause)
                        size[a.conj_id] = a.n_clauses
            done = [cid for cid in clauses if clauses[cid] == set(range(1, size[cid] + 1))]
            found = [r for r in (lookup(flows, {**packet, "conj_id": cid}, False) for cid in done) if r]
            if found:
                assert len({r.actions for r in found}) == 1, f"overlapping conjunctions disagree on {packet}"
                return found[0]
    return best


@dataclass
class Walk:
    """Where a packet went: the flows it hit in order (resubmitted ones included), the table it
    ended in (the one that dropped it or missed, or `until`), and its fields at the end."""

    path: list[Flow] = field(default_factory=list)
    end: int = 0
    missed: bool = False
    packet: dict = field(default_factory=dict)

    @property
    def last(self) -> Flow | None:
        return self.path[-1] if self.path else None


def _value(packet: dict, name: str):
    """A field as a register holds it: addresses as integers."""
    v = packet[name]
    if isinstance(v, str) and name in IPV4_FIELDS + IPV6_FIELDS:
        return int(ipaddress.ip_address(v))
    return v


class FakeOFTable:
    """One bridge's flows by table (and its select groups, by id), looked up as OVS does."""

    def __init__(self, flows: Iterable[Flow], groups: dict[int, Group] | None = None):
        self.tables: dict[int, list[Flow]] = defaultdict(list)
        for f in flows:
            self.tables[f.table].append(f)
        self.groups = dict(groups or {})

    @classmethod
    def of(cls, fs: FlowSet) -> FakeOFTable:
        return cls(fs.flows, fs.groups)

    def apply(self, msg) -> None:
        """A flow or group mod, as Open vSwitch applies it: an added flow replaces one of the same
        table, priority and match; a delete by cookie removes every flow with that cookie; a group
        is added only if absent, modified only if present."""
        if isinstance(msg, AddFlow):
            f = msg.flow
            self.tables[f.table] = [g for g in self.tables[f.table] if (g.priority, g.match) != (f.priority, f.match)]
            self.tables[f.table].append(f)
        elif isinstance(msg, DeleteFlow):
            for t in self.tables:
                self.tables[t] = [g for g in self.tables[t] if g.cookie != msg.cookie]
        elif isinstance(msg, GroupMod):
            gid = msg.group.group_id
            if msg.command == "delete":
                self.groups.pop(gid, None)
                return
            assert (gid in self.groups) == (msg.command == "modify"), f"group {gid}: {msg.command}"
            self.groups[gid] = msg.group
        else:
            raise TypeError(f"not a flow or group mod: {msg!r}")

    @property
    def cookies(self) -> set[int]:
        return {f.cookie for flows in self.tables.values() for f in flows}

    def lookup(self, table: int, packet: dict) -> Flow | None:
        return lookup(self.tables.get(table, []), packet)

    def walk(self, packet: dict, table: int = 0, until: int | None = None) -> Walk:
        """Follow `packet` from `table`: see the module docstring. `until`: stop on reaching it."""
        w = Walk(packet=dict(packet), end=table)
        self._walk(w, table, until, depth=0)
        return w

    def _walk(self, w: Walk, table: int, until: int | None, depth: int) -> None:
        assert depth < 64, "resubmit loop"
        while table != until:
            w.end = table
            hit = self.lookup(table, w.packet)
            if hit is None:
                w.missed = True
                return
            w.path.append(hit)
            goto = None
            for a in hit.actions:
                if isinstance(a, SetField):
                    w.packet[a.field] = a.value
                elif isinstance(a, Move):
                    w.packet[a.dst] = _value(w.packet, a.src)
                elif isinstance(a, Resubmit):
                    self._walk(w, a.table, None, depth + 1)
                    w.missed = False
                elif isinstance(a, Goto):
                    goto = a.table
            if goto is None:
                return
            assert goto > table, f"goto back from {table} to {goto}"
            table = goto
        w.end = table
