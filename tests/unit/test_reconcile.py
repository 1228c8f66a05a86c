"""The reconcile (controller/reconcile.py) without os-ken or a switch: its messages are played
against the flow-table simulator (tests/unit/fakeoftable.py), which answers read-backs and
barriers at once, in the order a switch reads them."""
from __future__ import annotations

from dataclasses import dataclass, field

from controller import reconcile as rc
from controller.compile import compile_plan
from controller.flows import ETH_IP, Bucket, Flow, Goto, Group, GroupAction, Output, SetField, flow
from controller.reconcile import AddFlow, Barrier, BridgeState, DeleteFlow, Desired, GroupMod, Outcome, ReadBack
from tests.unit.fakeoftable import FakeOFTable
from tests.unit.plans import DEFAULT, plan_of

NOW = 1000.0


def flows(n: int, base: int = 0) -> list[Flow]:
    return [flow(10, 100 + i, {"eth_type": ETH_IP, "ipv4_dst": f"10.0.0.{base + i}"}, [Output(i + 1)], "route", i)
            for i in range(n)]


def group(gid: int, *ports: int) -> Group:
    return Group(gid, tuple(Bucket((SetField("reg2", p),)) for p in ports))


def desired(version: int, fl: list[Flow], groups: list[Group] = ()) -> Desired:
    return Desired(version, {f.cookie: f for f in fl}, {g.group_id: g for g in groups})


LEARNED = flow(22, 100, {"ipv4_src": "10.1.1.1"}, [], "learned", 9)              # feature 14: the switch's
FLOWLOG_RECORD = flow(70, 100, {"ipv4_src": "10.1.1.2"}, [], "flowlog_record", 3)  # feature 23: the switch's


@dataclass
class Switch:
    """A switch behind the reconcile: its table, the cookies it never takes, and what was said."""

    table: FakeOFTable = field(default_factory=lambda: FakeOFTable([]))
    refuse: set[int] = field(default_factory=set)
    sent: list = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def play(self, state: BridgeState, first: Outcome, want: Desired, hold_barriers: bool = False) -> BridgeState:
        """Send `first`'s messages and every reply's consequences, in order, until all is quiet."""
        queue, state = list(first.send), first.state
        self.outcomes.append(first)
        while queue:
            msg = queue.pop(0)
            self.sent.append(msg)
            if isinstance(msg, ReadBack):
                replies = [lambda s: rc.groups_reported(s, want, set(self.table.groups)),
                           lambda s: rc.flows_reported(s, want, self.table.cookies, NOW)]
            elif isinstance(msg, Barrier):
                replies = [] if hold_barriers else [lambda s: rc.barrier_replied(s, want)]
            else:
                if not (isinstance(msg, AddFlow) and msg.flow.cookie in self.refuse):
                    self.table.apply(msg)
                replies = []
            for reply in replies:
                out = reply(state)
                self.outcomes.append(out)
                state = out.state
                queue += out.send
        return state

    def kinds(self) -> list[str]:
        out = []
        for m in self.sent:
            k = {AddFlow: "add", DeleteFlow: "delete", Barrier: "barrier", ReadBack: "read-back"}.get(type(m))
            out.append(k or f"group-{m.command}")
        return [k for i, k in enumerate(out) if i == 0 or out[i - 1] != k]

    @property
    def programmed_at(self) -> float | None:
        return self.outcomes[-1].programmed_at

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for o in self.outcomes:
            for k, n in o.counts.items():
                total[k] = total.get(k, 0) + n
        return total


def programmed(sw: Switch, want: Desired) -> None:
    assert sw.programmed_at == NOW and not [o.error for o in sw.outcomes if o.error]
    assert sw.table.cookies - {LEARNED.cookie, FLOWLOG_RECORD.cookie} == set(want.flows)
    assert sw.table.groups == dict(want.groups)


# ------------------------------------------------------------------------------------- connect
def test_a_first_connect_adds_everything_and_is_programmed_after_a_barrier_and_a_read_back():
    want = desired(1, flows(5), [group(1, 80), group(2, 81, 82)])
    sw = Switch()
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    assert sw.kinds() == ["read-back", "group-add", "add", "barrier", "read-back"]
    assert [m.flow for m in sw.sent if isinstance(m, AddFlow)] == list(want.flows.values())    # in compiled order
    programmed(sw, want)
    assert sw.counts() == {"groups_changed": 2, "added": 5, "deleted": 0}
    assert (state.barrier, state.verifying, state.rounds, state.rounds_version) == (None, None, 1, 1)


def test_a_read_back_holding_everything_is_not_enough_without_a_barrier_first():
    """A bridge is programmed by what the switch holds after it has taken every change."""
    want = desired(1, flows(3))
    state = rc.groups_reported(BridgeState("br"), want, set()).state
    out = rc.flows_reported(state, want, set(want.flows), NOW)
    assert out.programmed_at is None and out.send == (Barrier(),) and out.counts == {"added": 0, "deleted": 0}
    out = rc.barrier_replied(out.state, want)
    assert out.send == (ReadBack(),) and out.state.verifying == 1
    assert rc.flows_reported(out.state, want, set(want.flows), NOW).programmed_at == NOW


# ------------------------------------------------------------------------------------- changes
def test_a_change_sends_only_the_difference():
    old = flows(6)
    v1 = desired(1, old, [group(1, 80), group(2, 81), group(3, 83)])
    sw = Switch()
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), v1)
    sw.sent, sw.outcomes = [], []
    new = old[:2] + old[3:] + flows(1, base=50)           # one flow goes, one comes
    v2 = desired(2, new, [group(1, 80), group(2, 81, 82)])  # group 2 changes, group 3 goes
    state = sw.play(state, rc.plan_changed(state), v2)
    assert sw.kinds() == ["read-back", "group-modify", "delete", "add", "group-delete", "barrier", "read-back"]
    assert [m.cookie for m in sw.sent if isinstance(m, DeleteFlow)] == [old[2].cookie]
    assert [m.flow for m in sw.sent if isinstance(m, AddFlow)] == flows(1, base=50)
    assert [(m.command, m.group.group_id) for m in sw.sent if isinstance(m, GroupMod)] == [("modify", 2), ("delete", 3)]
    programmed(sw, v2)
    assert sw.counts() == {"groups_changed": 1, "added": 1, "deleted": 1}
    assert state.sent_groups == {1: group(1, 80).ofctl(), 2: group(2, 81, 82).ofctl()}


def test_stale_flows_go_and_the_switchs_own_flows_stay():
    want = desired(1, flows(3))
    stale = flow(30, 7, {"ipv4_dst": "10.9.9.9"}, [], "pod", 4)
    sw = Switch(FakeOFTable([*flows(3), stale, LEARNED, FLOWLOG_RECORD], {99: group(99, 1)}))
    sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    assert sw.kinds() == ["read-back", "delete", "group-delete", "barrier", "read-back"]
    assert [m.cookie for m in sw.sent if isinstance(m, DeleteFlow)] == [stale.cookie]
    assert {LEARNED.cookie, FLOWLOG_RECORD.cookie} <= sw.table.cookies
    programmed(sw, want)


def test_a_switch_that_never_takes_a_flow_is_an_error_after_three_rounds():
    want = desired(1, flows(4))
    victim = flows(4)[2].cookie
    sw = Switch(refuse={victim})
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    assert [m.flow.cookie for m in sw.sent if isinstance(m, AddFlow)].count(victim) == rc.MAX_ROUNDS == 3
    assert sw.sent.count(Barrier()) == 3
    assert [o.error for o in sw.outcomes if o.error] == [
        "br: the flow table still differs from plan v1 after 3 rounds; see controller.log"]
    assert sw.programmed_at is None and state.rounds_for(1) == 3
    # the next plan version has rounds of its own
    sw.refuse.clear()
    v2 = desired(2, flows(4))
    sw.outcomes = []
    sw.play(state, rc.plan_changed(state), v2)
    programmed(sw, v2)


def test_a_reconnect_sends_the_groups_again_and_starts_the_rounds_over():
    want = desired(1, flows(3), [group(5, 80)])
    sw = Switch(refuse={flows(3)[0].cookie})
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), want)
    assert state.rounds_for(1) == 3
    state = rc.disconnected(state)
    sw.refuse.clear()
    sw.sent, sw.outcomes = [], []
    state = sw.play(state, rc.connected(state), want)
    # groups were sent on the old connection: sent again once; of the flows only the missing one
    assert sw.kinds() == ["read-back", "group-modify", "add", "barrier", "read-back"]
    assert [m.flow.cookie for m in sw.sent if isinstance(m, AddFlow)] == [flows(3)[0].cookie]
    programmed(sw, want)
    assert state.rounds_for(1) == 1


# ------------------------------------------------------------------------------- replies out of turn
def test_a_barrier_counts_only_for_the_version_it_was_sent_for():
    v1 = desired(1, flows(2))
    sw = Switch()
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), v1, hold_barriers=True)
    assert state.barrier == 1 and sw.programmed_at is None
    v2 = desired(2, flows(2))
    assert rc.barrier_replied(state, v2) == Outcome(state)           # v1's barrier, after v2 came: nothing
    out = rc.barrier_replied(state, v1)
    assert out.send == (ReadBack(),) and (out.state.barrier, out.state.verifying) == (None, 1)
    # a read-back verifying v1 whose flows report after v2 came is no verdict: its groups were
    # v1's, so the switch is read back again for v2, which then reconciles
    back = rc.groups_reported(out.state, v1, set())
    late = rc.flows_reported(back.state, v2, set(v1.flows), NOW)
    assert late.programmed_at is None and late.send == (ReadBack(),) and late.state.verifying is None
    again = rc.flows_reported(rc.groups_reported(late.state, v2, set()).state, v2, set(v1.flows), NOW)
    assert again.programmed_at is None and again.send[-1] == Barrier() and again.state.barrier == 2


def test_a_disconnect_forgets_the_barrier_and_the_verification():
    state = BridgeState("br", barrier=3, verifying=2, sent_groups={1: "x"}, present_groups=frozenset({1}))
    after = rc.disconnected(state)
    assert (after.barrier, after.verifying) == (None, None)
    assert (after.sent_groups, after.present_groups) == ({1: "x"}, frozenset({1}))   # until the next connection
    assert rc.connected(after).state.sent_groups == {}


def test_the_time_is_the_callers():
    want = desired(1, [])
    state = BridgeState("br", verifying=1, groups_version=1)
    assert rc.flows_reported(state, want, set(), 12.5).programmed_at == 12.5
    assert rc.flows_reported(state, want, {LEARNED.cookie}, 99.0).programmed_at == 99.0


# ------------------------------------------------------------------------------- a real bridge
def test_a_node_bridge_of_the_default_scenario():
    plan = plan_of(DEFAULT, "vxlan")
    node = plan.nodes[0]
    fs = compile_plan(plan)[node.bridge]
    want = Desired.of(1, fs)
    sw = Switch()
    sw.play(BridgeState(node.bridge), rc.connected(BridgeState(node.bridge)), want)
    programmed(sw, want)
    # what the reconcile left on the switch forwards as compiled: the pods' classify flows
    pod = next(p for p in plan.pods if p.node == node.name)
    hit = sw.table.lookup(0, {"in_port": pod.ofport, "eth_src": pod.mac, "eth_type": ETH_IP, "ipv4_src": pod.ip})
    assert hit is not None and Goto(15) in hit.actions
    assert {a.group_id for f in fs.flows for a in f.actions if isinstance(a, GroupAction)} == set(sw.table.groups)


def test_a_plan_that_changes_between_the_groups_and_the_flows_of_a_read_back_reads_again():
    """The switch's groups are reported for v1; before its flows are, the plan becomes v2, whose new
    flow outputs to a new group. Reconciling then would add that flow before its group exists (the
    switch refuses it: OFPBAC_BAD_OUT_GROUP). The read-back starts over instead, for v2."""
    base = flows(3)
    v1 = desired(1, base, [group(1, 80)])
    sw = Switch()
    state = sw.play(BridgeState("br"), rc.connected(BridgeState("br")), v1)
    programmed(sw, v1)
    v2 = desired(2, base + flows(1, base=50), [group(1, 80), group(9, 90)])
    out = rc.groups_reported(state, v1, set(sw.table.groups))          # the first half, for v1
    assert out.send == ()
    out = rc.flows_reported(out.state, v2, sw.table.cookies, NOW)      # the second half, after the change
    assert out.send == (ReadBack(),) and out.counts == {"read_again": 1}
    sw.sent, sw.outcomes = [], []
    state = sw.play(out.state, out, v2)
    kinds = sw.kinds()
    assert kinds.index("group-add") < kinds.index("add"), kinds      # the group before the flow that uses it
    programmed(sw, v2)
