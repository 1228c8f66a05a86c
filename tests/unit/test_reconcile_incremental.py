"""The reconcile's shortcut (controller/reconcile.py, plan_changed with the plan in force): once a
round has gone to a switch, a change is sent as its difference at once, with no read-back first;
the read-back after its barrier still decides. Examples, then a property: whatever the order in
which plan changes, the switch's reading and the controller's handling of its replies interleave,
the switch ends holding exactly a fresh compile of the last plan, never refuses a message (a
group added twice, modified or used before it exists), and the bridge is programmed."""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import reconcile as rc
from controller.compile import compile_plan
from controller.flows import ETH_IP, Bucket, Group, GroupAction, Output, SetField, flow
from controller.reconcile import AddFlow, Barrier, BridgeState, Desired, GroupMod, ReadBack
from kubevpc.lab import changes
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load
from tests.unit.fakeoftable import FakeOFTable
from tests.unit.plans import E2E_DATA, MODES
from tests.unit.test_reconcile import NOW, Switch, desired, flows, group, programmed


def settled(want: Desired) -> tuple[Switch, BridgeState]:
    sw = Switch()
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    programmed(sw, want)
    sw.sent, sw.outcomes = [], []
    return sw, state


# ------------------------------------------------------------------------------------- examples
def test_a_change_after_a_round_is_sent_at_once_and_read_back_after_its_barrier():
    old = flows(6)
    sw, state = settled(desired(1, old, [group(1, 80), group(2, 81), group(3, 83)]))
    v2 = desired(2, old[:2] + old[3:] + flows(1, base=50), [group(1, 80), group(2, 81, 82)])
    out = rc.plan_changed(state, v2)
    assert ReadBack() not in out.send and out.send[-1] == Barrier()
    sw.play(state, out, v2)
    assert sw.kinds() == ["group-modify", "delete", "add", "group-delete", "barrier", "read-back"]
    programmed(sw, v2)
    assert sw.counts() == {"groups_changed": 1, "added": 1, "deleted": 1, "incremental": 1}


def test_a_change_that_changes_nothing_is_a_barrier_and_a_read_back():
    want = desired(1, flows(3), [group(1, 80)])
    sw, state = settled(want)
    v2 = desired(2, flows(3), [group(1, 80)])
    sw.play(state, rc.plan_changed(state, v2), v2)
    assert sw.kinds() == ["barrier", "read-back"]
    programmed(sw, v2)


def test_before_the_first_round_a_change_reads_the_switch_back_first():
    state = rc.connected(BridgeState("br")).state
    assert state.held is None
    assert rc.plan_changed(state, desired(2, flows(2))).send == (ReadBack(),)
    assert rc.plan_changed(BridgeState("br", held=frozenset())).send == (ReadBack(),)     # no plan given


def test_a_failed_round_and_a_disconnect_forget_what_the_switch_holds():
    want = desired(1, flows(4))
    sw = Switch(refuse={flows(4)[1].cookie})
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    assert [o.error for o in sw.outcomes if o.error] and state.held is None
    assert rc.plan_changed(state, desired(2, flows(4))).send == (ReadBack(),)
    _, ok = settled(want)
    assert ok.held == frozenset(want.flows) and ok.held_groups == frozenset()
    gone = rc.disconnected(ok)
    assert (gone.held, gone.held_groups) == (None, frozenset())


def test_a_group_a_read_back_added_is_not_added_again_by_the_change_after_it():
    """The read-back after a barrier finds a group gone and adds it; the plan changes before the
    flows of that read-back are reported. The change is sent at once: the group is there now."""
    v1 = desired(1, flows(2), [group(1, 80), group(2, 81)])
    sw, state = settled(v1)
    del sw.table.groups[2]
    out = rc.groups_reported(state, v1, set(sw.table.groups))
    assert [(m.command, m.group.group_id) for m in out.send] == [("add", 2)]
    sw.table.apply(out.send[0])
    v2 = desired(2, flows(3), [group(1, 80), group(2, 81)])
    change = rc.plan_changed(out.state, v2)
    assert not [m for m in change.send if isinstance(m, GroupMod)]
    sw.play(out.state, change, v2)
    programmed(sw, v2)


# ------------------------------------------------------------------------------------- property
POOL_GROUPS = [Group(g, tuple(Bucket((SetField("reg2", p),)) for p in range(80, 80 + g))) for g in range(1, 5)]
POOL_FLOWS = flows(8) + [flow(20, 10 + g, {"eth_type": ETH_IP, "ipv4_dst": f"10.9.0.{g}"}, [GroupAction(g)], "service", g)
                         for g in range(1, 5)] + [flow(21, 5, {"eth_type": ETH_IP}, [Output(9)], "pod", 40)]


def _version(version: int, flow_bits: int, group_bits: int, weights: int) -> Desired:
    """A plan version: some flows of the pool, and the groups they use (and some more); a group's
    buckets may change between versions (its text then differs: a modify)."""
    groups = {g.group_id: g for g in POOL_GROUPS if group_bits >> g.group_id & 1}
    chosen = [f for i, f in enumerate(POOL_FLOWS) if flow_bits >> i & 1]
    for f in chosen:
        for a in f.actions:
            if isinstance(a, GroupAction):
                groups.setdefault(a.group_id, POOL_GROUPS[a.group_id - 1])
    groups = {gid: Group(gid, g.buckets[:1 + (weights >> gid & 1)]) for gid, g in sorted(groups.items())}
    return Desired(version, {f.cookie: f for f in chosen}, groups)


@dataclass
class Wire:
    """A switch on a connection: messages it has not read yet, replies the controller has not read
    yet, and which of its requests' replies the controller still takes (the shell's xids)."""

    table: FakeOFTable = field(default_factory=lambda: FakeOFTable([]))
    to_switch: list = field(default_factory=list)
    to_controller: list = field(default_factory=list)
    tag: int = 0
    read_back: int | None = None        # the tag of the read-back whose replies are taken
    barrier: int | None = None          # the tag of the barrier whose reply is taken

    def send(self, msgs) -> None:
        for m in msgs:
            self.tag += 1
            if isinstance(m, ReadBack):
                self.read_back = self.tag
            elif isinstance(m, Barrier):
                self.barrier = self.tag
            self.to_switch.append((self.tag, m))

    def switch_reads(self) -> None:
        tag, m = self.to_switch.pop(0)
        if isinstance(m, ReadBack):
            self.to_controller += [("groups", tag, set(self.table.groups)), ("flows", tag, set(self.table.cookies))]
        elif isinstance(m, Barrier):
            self.to_controller.append(("barrier", tag, None))
        else:
            self._take(m)

    def _take(self, m) -> None:
        if isinstance(m, AddFlow):
            used = {a.group_id for a in m.flow.actions if isinstance(a, GroupAction)}
            assert used <= set(self.table.groups), f"OFPBAC_BAD_OUT_GROUP: {used - set(self.table.groups)}"
        if isinstance(m, GroupMod) and m.command == "delete":
            users = [f for fl in self.table.tables.values() for f in fl
                     if GroupAction(m.group.group_id) in f.actions]
            assert not users, f"group {m.group.group_id} deleted while flows use it"
        self.table.apply(m)         # asserts a group is added only if absent, modified only if present


def _controller_reads(wire: Wire, state: BridgeState, want: Desired) -> tuple[BridgeState, float | None]:
    kind, tag, body = wire.to_controller.pop(0)
    if kind == "barrier":
        out = rc.barrier_replied(state, want) if tag == wire.barrier else None
    elif tag != wire.read_back:
        out = None                              # a reply to a read-back the shell no longer waits for
    elif kind == "groups":
        out = rc.groups_reported(state, want, body)
    else:
        out = rc.flows_reported(state, want, body, NOW)
    if out is None:
        return state, None
    assert not out.error, out.error
    wire.send(out.send)
    return out.state, out.programmed_at


PLAN = st.tuples(st.integers(0, 8191), st.integers(0, 31), st.integers(0, 31))


@settings(max_examples=200, deadline=None)
@given(first=PLAN, plans=st.lists(PLAN, min_size=1, max_size=6),
       steps=st.lists(st.integers(0, 9), min_size=10, max_size=80))
def test_any_interleaving_of_changes_and_replies_ends_with_a_fresh_compile(first, plans, steps):
    """Steps: 0-4 the switch reads a message, 5-8 the controller reads a reply, 9 the plan changes."""
    want = _version(1, *first)
    wire, state = Wire(), BridgeState("br")
    out = rc.connected(state)
    state = out.state
    wire.send(out.send)
    programmed_at = None
    for step in steps:
        if step <= 4 and wire.to_switch:
            wire.switch_reads()
        elif 5 <= step <= 8 and wire.to_controller:
            state, programmed_at = _controller_reads(wire, state, want)
        elif step == 9 and plans:
            want = _version(want.version + 1, *plans.pop(0))
            wire.read_back = None               # the shell drops a read-back under way
            out = rc.plan_changed(state, want)
            state, programmed_at = out.state, None
            wire.send(out.send)
    while wire.to_switch or wire.to_controller:
        if wire.to_switch:
            wire.switch_reads()
        else:
            state, at = _controller_reads(wire, state, want)
            programmed_at = at or programmed_at
    assert programmed_at == NOW, "the last plan version is programmed"
    assert wire.table.cookies == set(want.flows)
    assert wire.table.groups == dict(want.groups)
    assert state.held == frozenset(want.flows) and state.held_groups == frozenset(want.groups)


# ------------------------------------------------------------------------------ a real change
DENY_WEB = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",          # as tests/e2e/test_change.py
            "metadata": {"name": "web-deny", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}


def test_a_policy_applied_and_removed_on_every_bridge_of_the_e2e_scenario():
    """tests/e2e/data/change.yaml, as tests/e2e/test_change.py changes it: each change sent at once
    leaves every bridge holding a fresh compile of the plan it makes, in every mode."""
    for mode in MODES:
        loaded = load(str(E2E_DATA / "change.yaml"), mode=mode)
        plans = [make_plan(loaded, "kvc")]
        for policies in ([DENY_WEB], []):
            manifests = changes.with_network_policies(loaded.manifests, policies, "<api>")
            plans.append(changes.replan(loaded, plans[-1], "kvc", manifests, {}, {}).plan)
        compiled = [compile_plan(p) for p in plans]
        assert compiled[0] != compiled[1]
        for name in compiled[0]:
            sw, state = settled(Desired.of(1, compiled[0][name]))
            for version, c in enumerate(compiled[1:], start=2):
                want = Desired.of(version, c[name])
                state = sw.play(state, rc.plan_changed(state, want), want)
                programmed(sw, want)
                assert ReadBack() not in sw.sent[:1], "no read-back before the change"
                sw.sent, sw.outcomes = [], []
