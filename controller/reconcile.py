"""The reconcile, pure: what to send one switch so that it holds the flows and groups the plan
wants, and when it can be said to hold them. No os-ken, no socket, no clock (the time is passed
in): controller/app.py calls one function per event and only translates the messages they
return into os-ken's, and os-ken's replies into their arguments (Faucet's shape: the handler
calls a function that returns messages).

The conversation with one switch, by cookie (controller/flows.py) and group id:

    connected           read the switch back: its groups, then its flows (ReadBack)
    plan_changed        once a round has been sent on this connection, the switch holds what that
                        round left (or the dump after its barrier says otherwise, and another
                        round follows): send the difference at once, groups and flows, and a
                        barrier, without reading it back first. Before that: read it back
    groups_reported     add the wanted groups it lacks, modify those whose text changed since they
                        were last sent on this connection; remember those no longer wanted
    flows_reported      if the plan changed since its groups were reported: read it back again.
                        After a barrier for the current plan, if it holds every wanted flow and
                        group and nothing stale: programmed. Otherwise (at most MAX_ROUNDS times
                        for one plan version, then an error): delete stale flows, add missing ones,
                        delete stale groups, send a barrier
    barrier_replied     the switch took every change before it: read it back
    disconnected        forget the barrier and the read-back to verify

Flows the switch learns (session affinity, flow-log records) are its own: never stale.

A bridge is programmed only once the dump after the last barrier shows every wanted flow and
nothing stale, whichever way the difference was sent: the shortcut of plan_changed saves the
read-back before a change (a round trip and a dump of every flow), never the one after it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace
from typing import Union

from .flows import FEATURES, Flow, FlowSet, Group

SWITCH_OWNED = (FEATURES["learned"], FEATURES["flowlog_record"])    # learned flows: the switch's, not the plan's
MAX_ROUNDS = 3           # reconcile rounds for one plan version before the difference is an error

LOG = logging.getLogger("kubevpc.controller")


# ------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class AddFlow:
    flow: Flow


@dataclass(frozen=True)
class DeleteFlow:
    """Every flow with this cookie, in every table."""

    cookie: int


@dataclass(frozen=True)
class GroupMod:
    command: str                     # "add", "modify" or "delete"
    group: Group                     # for "delete", only its id counts


@dataclass(frozen=True)
class Barrier:
    """Answered once the switch has taken every message before it."""


@dataclass(frozen=True)
class ReadBack:
    """Dump the switch's groups, then its flows (replies come in this order)."""


Message = Union[AddFlow, DeleteFlow, GroupMod, Barrier, ReadBack]


# ---------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Desired:
    """What one bridge should hold at one plan version: flows by cookie (in compiled order, which
    is the order missing ones are sent in) and select groups by id."""

    version: int
    flows: Mapping[int, Flow] = field(default_factory=dict)
    groups: Mapping[int, Group] = field(default_factory=dict)

    @classmethod
    def of(cls, version: int, fs: FlowSet) -> Desired:
        return cls(version, {f.cookie: f for f in fs.flows}, dict(fs.groups))


@dataclass(frozen=True)
class BridgeState:
    """What the controller knows of one bridge's switch, across its connections."""

    name: str
    sent_groups: Mapping[int, str] = field(default_factory=dict)   # group id -> text as last sent on this connection
    present_groups: frozenset[int] = frozenset()    # in the switch's last group dump
    stale_groups: frozenset[int] = frozenset()      # on the switch, no longer wanted: deleted after the flows
    barrier: int | None = None        # the plan version the barrier under way confirms
    verifying: int | None = None      # the plan version the read-back under way (after its barrier) confirms
    rounds: int = 0                   # reconcile rounds for plan version `rounds_version` ...
    rounds_version: int = 0           # ... (a new version starts at none)
    groups_version: int | None = None  # the plan version the groups of the read-back under way were sent for
    held: frozenset[int] | None = None    # flow cookies the switch holds once it has taken the last round
                                          # sent on this connection (None: no round sent, or one that failed)
    held_groups: frozenset[int] = frozenset()   # group ids the switch holds once it has taken what was sent

    def rounds_for(self, version: int) -> int:
        return self.rounds if self.rounds_version == version else 0


@dataclass(frozen=True)
class Outcome:
    """What an event leads to: the new state, the messages to send in order, the counters of the
    bridge's status to add to, and whether the switch is now programmed (at that time) or in error."""

    state: BridgeState
    send: tuple[Message, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    programmed_at: float | None = None
    error: str = ""


# --------------------------------------------------------------------------------------- events
def connected(state: BridgeState) -> Outcome:
    """A new connection: every group is sent again once, rounds start over; read the switch back."""
    return Outcome(replace(state, sent_groups={}, rounds=0, held=None, held_groups=frozenset()), (ReadBack(),))


def plan_changed(state: BridgeState, desired: Desired | None = None) -> Outcome:
    """A new plan version. When the switch's table is known (`held`: a round was sent on this
    connection), the difference goes at once: groups added or modified, stale flows deleted,
    missing ones added, stale groups deleted, a barrier; a read-back under way is dropped (the
    caller ignores its replies). Otherwise, and without `desired`: read the switch back first."""
    if state.held is None or desired is None:
        return Outcome(state, (ReadBack(),))
    groups = groups_reported(replace(state, verifying=None), desired, state.held_groups)
    out = reconcile(groups.state, desired, state.held)
    return Outcome(out.state, groups.send + out.send, {**groups.counts, **out.counts, "incremental": 1})


def disconnected(state: BridgeState) -> BridgeState:
    return replace(state, barrier=None, verifying=None, held=None, held_groups=frozenset())


def barrier_replied(state: BridgeState, desired: Desired) -> Outcome:
    """Taken only for the barrier of the current plan version: read back what the switch holds."""
    if state.barrier is None or state.barrier != desired.version:
        return Outcome(state)
    return Outcome(replace(state, barrier=None, verifying=desired.version), (ReadBack(),))


def groups_reported(state: BridgeState, desired: Desired, present: Set[int]) -> Outcome:
    """The switch's groups (a read-back's first half): groups are added before the flows that
    use them, and removed after them (by the reconcile that follows)."""
    sent = dict(state.sent_groups)
    send = []
    for gid, group in desired.groups.items():
        text = group.ofctl()
        if gid in present and sent.get(gid) == text:
            continue
        send.append(GroupMod("modify" if gid in present else "add", group))
        sent[gid] = text
    new = replace(state, sent_groups=sent, present_groups=frozenset(present),
                  stale_groups=frozenset(present - set(desired.groups)), groups_version=desired.version,
                  held_groups=frozenset(present) | frozenset(desired.groups))
    return Outcome(new, tuple(send), {"groups_changed": len(send)})


def flows_reported(state: BridgeState, desired: Desired, present: Set[int], now: float) -> Outcome:
    """The switch's flows by cookie (a read-back's second half). When the plan changed since the
    first half, its groups were sent for the plan before: the flows of this one may use a group
    not sent yet (the switch refuses them, OFPBAC_BAD_OUT_GROUP) and a group it still uses may be
    taken for stale. So the switch is read back again, for this plan, groups first."""
    version = state.verifying
    state = replace(state, verifying=None)
    if state.groups_version != desired.version:
        return Outcome(state, (ReadBack(),), {"read_again": 1})
    if version is not None and version == desired.version:
        if holds(state, desired, present):
            return Outcome(state, programmed_at=now)
        if state.rounds_for(version) >= MAX_ROUNDS:
            return Outcome(replace(state, held=None), error=f"{state.name}: the flow table still differs from plan v{version} after "
                                        f"{MAX_ROUNDS} rounds; see controller.log")
        LOG.warning("bridge %s: the dump after the barrier differs from plan v%d; reconciling again", state.name,
                    version)
    return reconcile(state, desired, present)


def holds(state: BridgeState, desired: Desired, present: Set[int]) -> bool:
    """Does the switch hold every wanted flow and group, and nothing stale (learned flows aside)?"""
    flows = {c for c in present if c >> 56 not in SWITCH_OWNED} == set(desired.flows)
    return flows and not state.stale_groups and state.present_groups >= set(desired.groups)


def reconcile(state: BridgeState, desired: Desired, present: Set[int]) -> Outcome:
    """One round: delete what is stale, add what is missing, delete stale groups, then a barrier.
    Unchanged flows are not touched."""
    # learned flows (session affinity, flow logs) belong to the switch; they go with the flow that learned them
    stale = {c for c in present - set(desired.flows) if c >> 56 not in SWITCH_OWNED}
    missing = [f for c, f in desired.flows.items() if c not in present]
    send: list[Message] = [DeleteFlow(cookie) for cookie in stale]
    send += [AddFlow(f) for f in missing]
    send += [GroupMod("delete", Group(gid, ())) for gid in sorted(state.stale_groups)]
    send.append(Barrier())
    new = replace(state, sent_groups={g: t for g, t in state.sent_groups.items() if g not in state.stale_groups},
                  stale_groups=frozenset(), barrier=desired.version, rounds=state.rounds_for(desired.version) + 1,
                  rounds_version=desired.version, held=frozenset(desired.flows),
                  held_groups=state.held_groups - state.stale_groups)
    LOG.info("bridge %s: %d flows wanted, %d added, %d stale deleted", state.name, len(desired.flows), len(missing),
             len(stale))
    return Outcome(new, tuple(send), {"added": len(missing), "deleted": len(stale)})
