"""The os-ken shell (controller/app.py) with os-ken's own messages and a fake switch
(tests/unit/osken_fake.py): connects, plan changes, stale and switch-owned flows, a switch that
never takes a flow, refused connections, replies to replaced requests, SLB health, packet-ins.
The pure reconcile behind it has its own tests (tests/unit/test_reconcile.py)."""
from __future__ import annotations

import json
import os

import pytest
from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp

import controller.app as app_module
from controller.compile import compile_plan
from kubevpc.lab import changes
from kubevpc.lab.nodes import with_node
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan
from tests.unit.osken_fake import OFP, PARSER, FakeDatapath, FakeSwitch, connect, disconnect, event, pump
from tests.unit.plans import DEFAULT, SERVICES

LEARNED, FLOWLOG_RECORD, STALE = 14 << 56 | 7 << 32, 23 << 56 | 5 << 32, 8 << 56 | 5 << 32 | 0x1234
DNS_POD = "pod/kube-system/kube-dns-0"      # not ready: the DNS Service's flows and groups change on every node


def plan_of(path, ready=None, previous=None):
    return make_plan(load(str(path), mode="vxlan"), "kvt", ready=ready or {}, previous=previous)


class Run:
    """One controller on a plan file, its bridges' fake switches, and the connections made."""

    def __init__(self, tmp_path, plan):
        self.dir, self.plan_path = tmp_path, tmp_path / "plan.json"
        self.stamp = 0
        self.write(plan)
        self.app = app_module.KubevpcController()
        self.switches = {b.name: FakeSwitch() for b in plan.bridges}
        self.dps: dict[str, FakeDatapath] = {}

    def write(self, plan) -> None:
        self.plan_path.write_text(plan.model_dump_json())
        self.stamp += 1
        os.utime(self.plan_path, (self.stamp, self.stamp))      # a new mtime for each plan

    def connect(self, name: str, settle: bool = True) -> FakeDatapath:
        dp = FakeDatapath(self.app_plan.bridge(name).dpid, self.switches[name])
        connect(self.app, dp)
        if not dp.closed:
            self.dps[name] = dp
        if settle:
            pump(self.app, dp)
        return dp

    def connect_all(self) -> None:
        for b in self.app_plan.bridges:
            self.connect(b.name)

    def change(self, plan) -> None:
        """A new plan.json, seen by one pass of the plan watcher; the switches answer."""
        self.write(plan)
        self.app._reload()
        for dp in self.dps.values():
            pump(self.app, dp)

    @property
    def app_plan(self):
        return self.app.plan

    def bridge(self, name: str) -> dict:
        return self.app.status["bridges"][name]

    def status_file(self) -> dict:
        return json.loads((self.dir / "status.json").read_text())


def runs(tmp_path, monkeypatch):
    """Controllers on plan files in tmp_path (os-ken's threads not started), closed after the test."""
    monkeypatch.setattr(app_module.hub, "spawn", lambda *a, **k: None)
    monkeypatch.setattr(app_module, "vswitchd_pid", os.getpid)
    monkeypatch.setenv("KUBEVPC_PLAN", str(tmp_path / "plan.json"))
    monkeypatch.setenv("KUBEVPC_STATE", str(tmp_path))
    for name in ("KUBEVPC_BUNDLE", "KUBEVPC_PURGE"):
        monkeypatch.delenv(name, raising=False)
    made: list[Run] = []

    def make(plan) -> Run:
        made.append(Run(tmp_path, plan))
        return made[-1]
    yield make
    for r in made:
        r.app.stopped.set()
        r.app.watch.close()


@pytest.fixture
def run(tmp_path, monkeypatch):
    yield from runs(tmp_path, monkeypatch)


def kinds(dp: FakeDatapath, since: int = 0) -> list[str]:
    names = {PARSER.OFPSetAsync: "async", PARSER.OFPGroupDescStatsRequest: "groups?", PARSER.OFPFlowStatsRequest: "flows?",
             PARSER.OFPBarrierRequest: "barrier", PARSER.OFPPacketOut: "packet-out"}
    out = []
    for m in dp.sent[since:]:
        if isinstance(m, PARSER.ONFBundleCtrlMsg):
            out.append({OFP.ONF_BCT_OPEN_REQUEST: "{", OFP.ONF_BCT_COMMIT_REQUEST: "}"}[m.type])
        elif isinstance(m, PARSER.OFPFlowMod):
            out.append("add" if m.command == OFP.OFPFC_ADD else "delete")
        elif isinstance(m, PARSER.OFPGroupMod):
            out.append({OFP.OFPGC_ADD: "group-add", OFP.OFPGC_MODIFY: "group-modify",
                        OFP.OFPGC_DELETE: "group-delete"}[m.command])
        else:
            out.append(names[type(m)])
    return out


def squeeze(seq: list[str]) -> list[str]:
    """Runs of one kind as one: the shape of a conversation."""
    return [k for i, k in enumerate(seq) if i == 0 or seq[i - 1] != k]


# ------------------------------------------------------------------------------------------ connect
def test_a_connected_bridge_is_programmed_after_a_barrier_and_a_read_back(run):
    r = run(plan_of(DEFAULT))
    assert r.app.status["plan_version"] == 1
    r.connect_all()
    compiled = compile_plan(r.app_plan)
    for name, dp in r.dps.items():
        fs = compiled[name]
        assert set(r.switches[name].flows) == {f.cookie for f in fs.flows}, name
        assert set(r.switches[name].groups) == set(fs.groups)
        # every run of mods in one bundle: the groups (before the flows that use them), then the flows
        assert squeeze(kinds(dp)) == ["async", "groups?", "flows?"] + (["{", "group-add", "}"] if fs.groups else []) + [
            "{", "add", "}", "barrier", "groups?", "flows?"]
        assert r.switches[name].bundles == ([len(fs.groups)] if fs.groups else []) + [len(fs.flows)]
        # the flows go in the compiled order
        assert [m.cookie for m in dp.sent if isinstance(m, PARSER.OFPFlowMod)] == [f.cookie for f in fs.flows]
        st = r.bridge(name)
        assert (st["connected"], st["programmed"], st["plan_version"], st["added"], st["deleted"]) == (
            True, True, 1, len(fs.flows), 0)
        assert (st["flows"], st["groups"], st["groups_changed"]) == (len(fs.flows), len(fs.groups), len(fs.groups))
    on_disk = r.status_file()
    assert all(b["programmed"] for b in on_disk["bridges"].values()) and on_disk["errors"] == []
    assert on_disk["pid"] == os.getpid() and on_disk["plan_version"] == 1


def test_the_async_configuration_asks_for_no_match_action_ttl_and_flow_removed(run):
    r = run(plan_of(DEFAULT))
    dp = r.connect(r.app_plan.bridges[0].name)
    msg = dp.sent[0]
    assert isinstance(msg, PARSER.OFPSetAsync)
    assert msg.packet_in_mask == [1 << OFP.OFPR_NO_MATCH | 1 << OFP.OFPR_ACTION | 1 << OFP.OFPR_INVALID_TTL, 0]
    assert msg.flow_removed_mask == [1 << OFP.OFPRR_IDLE_TIMEOUT | 1 << OFP.OFPRR_HARD_TIMEOUT | 1 << OFP.OFPRR_DELETE, 0]


# ------------------------------------------------------------------------------------------ changes
def test_a_plan_change_sends_only_the_difference(run):
    first = plan_of(DEFAULT)
    r = run(first)
    r.connect_all()
    before = {name: set(sw.flows) for name, sw in r.switches.items()}
    compiled_before = compile_plan(first)
    sent = {name: len(dp.sent) for name, dp in r.dps.items()}
    second = plan_of(DEFAULT, ready={DNS_POD: False}, previous=first)
    r.change(second)
    assert r.app.status["plan_version"] == 2
    compiled = compile_plan(r.app_plan)
    changed = 0
    for name, dp in r.dps.items():
        want = {f.cookie for f in compiled[name].flows}
        assert set(r.switches[name].flows) == want
        mods = [m for m in dp.sent[sent[name]:] if isinstance(m, PARSER.OFPFlowMod)]
        assert {m.cookie for m in mods if m.command == OFP.OFPFC_ADD} == want - before[name]
        assert {m.cookie for m in mods if m.command == OFP.OFPFC_DELETE} == before[name] - want
        assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 2
        changed += bool(mods)
        assert [m.group_id for m in dp.sent[sent[name]:] if isinstance(m, PARSER.OFPGroupMod)] == sorted(
            set(compiled_before[name].groups) - set(compiled[name].groups)), name
    assert changed == len(first.nodes)
    # the same file again (no new mtime, no health to read): nothing is loaded or sent
    sent = {name: len(dp.sent) for name, dp in r.dps.items()}
    r.app._reload()
    assert {name: len(dp.sent) for name, dp in r.dps.items()} == sent and r.app.status["plan_version"] == 2


def test_a_plan_that_does_not_load_keeps_the_last_good_one(run):
    r = run(plan_of(DEFAULT))
    r.connect_all()
    r.plan_path.write_text("{")
    os.utime(r.plan_path, (99, 99))
    r.app._reload()
    assert r.app.status["plan_version"] == 1 and r.app.plan is not None
    assert r.status_file()["errors"][0].startswith("plan not loaded: ")


def test_a_plan_that_fails_to_compile_half_way_is_rolled_back_on_every_bridge(run, monkeypatch):
    """Bridges are sent their flows as each is compiled; when a later one fails, the ones already
    sent get the plan before back, and no bridge claims the new plan."""
    import controller.planwatch as planwatch
    first = plan_of(DEFAULT)
    r = run(first)
    r.connect_all()
    want = {name: {f.cookie for f in fs.flows} for name, fs in compile_plan(first).items()}
    real = planwatch.compile_bridges

    def fails_on_the_last(plan, health=None, loads=None):
        items = list(real(plan, health, loads))
        yield from items[:-1]
        raise ValueError("too many rules, say")
    monkeypatch.setattr(planwatch, "compile_bridges", fails_on_the_last)
    second = plan_of(DEFAULT, ready={DNS_POD: False}, previous=first)
    assert any(set(fs.flows) != set(compile_plan(first)[n].flows) for n, fs in compile_plan(second).items()
               if n != second.bridges[-1].name), "the change must touch a bridge sent before the failure"
    old_file = r.app.status["plan_file"]
    r.change(second)
    st = r.app.status
    assert st["errors"] and st["errors"][-1] == "plan not loaded: ValueError: too many rules, say"
    assert r.app.plan is not second and st["plan_file"] == old_file and st["plan_version"] == 3
    for name, sw in r.switches.items():
        assert set(sw.flows) == want[name], name
        assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 3


# ------------------------------------------------------------------------------------- stale flows
def test_stale_flows_and_groups_go_and_the_switchs_own_flows_stay(run):
    r = run(plan_of(DEFAULT))
    node = r.app_plan.nodes[0].bridge
    sw = r.switches[node]
    sw.flows.update({STALE: (30, 1), LEARNED: (22, 100), FLOWLOG_RECORD: (70, 100)})
    sw.groups[999] = 1
    dp = r.connect(node)
    assert STALE not in sw.flows and 999 not in sw.groups
    assert {LEARNED, FLOWLOG_RECORD} <= set(sw.flows)
    deletes = [m for m in dp.sent if isinstance(m, PARSER.OFPFlowMod) and m.command == OFP.OFPFC_DELETE]
    assert [(m.cookie, m.cookie_mask, m.table_id) for m in deletes] == [(STALE, 0xFFFFFFFFFFFFFFFF, OFP.OFPTT_ALL)]
    # stale flows go before the missing ones come; stale groups after the flows, before the barrier
    assert squeeze(kinds(dp)) == ["async", "groups?", "flows?", "{", "group-add", "}", "{", "delete", "add",
                                  "group-delete", "}", "barrier", "groups?", "flows?"]
    assert r.bridge(node)["programmed"] and r.bridge(node)["deleted"] == 1


def test_a_reconnect_sends_groups_again_and_no_flow_it_holds(run):
    r = run(plan_of(DEFAULT))
    node = r.app_plan.nodes[0].bridge
    first = r.connect(node)
    disconnect(r.app, first)
    assert r.bridge(node)["connected"] is False and r.bridge(node)["programmed"] is False
    again = r.connect(node)
    assert squeeze(kinds(again)) == ["async", "groups?", "flows?", "{", "group-modify", "}", "barrier", "groups?",
                                     "flows?"]
    assert r.bridge(node)["programmed"] and r.bridge(node)["added"] == len(r.switches[node].flows)


def test_a_flow_the_switch_never_takes_is_an_error_after_three_rounds(run):
    r = run(plan_of(DEFAULT))
    name = r.app_plan.vswitches[0].bridge
    victim = compile_plan(r.app_plan)[name].flows[5].cookie
    r.switches[name].refuse.add(victim)
    dp = r.connect(name)
    adds = [m for m in dp.sent if isinstance(m, PARSER.OFPFlowMod) and m.cookie == victim]
    assert len(adds) == 3 and kinds(dp).count("barrier") == 3
    assert r.bridge(name)["programmed"] is False
    assert r.status_file()["errors"] == [f"{name}: the flow table still differs from plan v1 after 3 rounds; "
                                         "see controller.log"]
    # the next plan version gets its own three rounds
    r.switches[name].refuse.clear()
    r.change(plan_of(DEFAULT))
    assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 2


# ------------------------------------------------------------------------------------------ refusals
def test_connections_that_may_not_program_a_bridge_are_refused(run, monkeypatch):
    r = run(plan_of(DEFAULT))
    name = r.app_plan.bridges[0].name
    live = r.connect(name)
    twin = r.connect(name)
    stranger = FakeDatapath(0xDEAD, FakeSwitch())
    connect(r.app, stranger)
    monkeypatch.setattr(app_module, "vswitchd_pid", lambda: 1)
    impostor = r.connect(r.app_plan.bridges[1].name)
    for dp in (twin, stranger, impostor):
        assert dp.closed and dp.sent == []
    refused = r.status_file()["refused"]
    assert [x["why"] for x in refused] == [
        f"bridge {name} ({live.id:#x}) is connected already, and that connection is alive",
        "datapath 0xdead is none of this run's bridges",
        f"the peer is pid {os.getpid()} (uid {os.getuid()}), not ovs-vswitchd (pid 1)"]
    assert [x["bridge"] for x in refused] == [name, None, r.app_plan.bridges[1].name]
    # once the first connection has hung up, a new one is taken; the old one's late death changes nothing
    monkeypatch.setattr(app_module, "vswitchd_pid", os.getpid)
    live.hang_up()
    new = r.connect(name)
    assert not new.closed and r.bridge(name)["programmed"]
    disconnect(r.app, live)
    assert r.bridge(name)["connected"] is True


def test_a_node_bridge_added_while_running_is_programmed_once_the_plan_names_it(run):
    """A node added while running (kubevpc/lab/nodes.py): its bridge, connecting before the
    controller has the plan that names it, is refused as none of the run's (so topologies/nodes.py
    connects it only once status.json shows that plan); connecting after, it gets its flows."""
    loaded = load(str(DEFAULT), mode="vxlan")
    first = make_plan(loaded, "kvt")
    r = run(first)
    r.connect_all()
    change = changes.replan(with_node(loaded, first, "node-4", "vsw-i"), first, "kvt", list(loaded.manifests), {}, {})
    name = change.nodes[0].bridge
    r.switches[name] = FakeSwitch()
    early = FakeDatapath(change.plan.bridge(name).dpid, r.switches[name])
    connect(r.app, early)
    assert early.closed and early.sent == []
    assert r.status_file()["refused"][-1]["why"] == f"datapath {early.id:#x} is none of this run's bridges"
    r.change(change.plan)
    assert r.status_file()["plan_file"] == os.stat(r.plan_path).st_mtime_ns
    assert not r.bridge(name)["programmed"] and all(r.bridge(b.name)["programmed"] for b in first.bridges)
    r.connect(name)
    assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 2
    assert set(r.switches[name].flows) == {f.cookie for f in compile_plan(change.plan)[name].flows}


# ----------------------------------------------------------------------------- replaced requests
def test_replies_to_a_replaced_read_back_are_ignored(run):
    first = plan_of(DEFAULT)
    r = run(first)
    name = first.nodes[0].bridge
    dp = r.connect(name, settle=False)          # the first read-back asked, not answered yet
    r.write(plan_of(DEFAULT, ready={DNS_POD: False}, previous=first))
    r.app._reload()                 # a newer read-back asked
    pump(r.app, dp)
    assert kinds(dp).count("barrier") == 1      # only the newer dump was reconciled
    assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 2
    assert set(r.switches[name].flows) == {f.cookie for f in compile_plan(r.app_plan)[name].flows}


def test_a_barrier_for_an_older_plan_does_not_program_the_newer_one(run):
    first = plan_of(DEFAULT)
    r = run(first)
    name = first.nodes[0].bridge
    sw = r.switches[name]
    sw.hold_barriers = True
    dp = r.connect(name)
    (old,) = sw.held
    r.write(plan_of(DEFAULT, ready={DNS_POD: False}, previous=first))
    r.app._reload()
    sw.hold_barriers = False
    r.app._barrier(event(dp, xid=old))          # the reply to v1's barrier, after v2 came
    assert r.bridge(name)["programmed"] is False
    pump(r.app, dp)
    assert r.bridge(name)["programmed"] and r.bridge(name)["plan_version"] == 2


# ------------------------------------------------------------------------------------------ SLB health
def _health(r: Run, healthy) -> None:
    for slb in r.app_plan.slbs:
        path = r.dir / ("slb-" + slb.service.replace("/", "_") + ".state.json")
        doc = {"listeners": {li.name: {f"{b.ip}:{b.check_port}": {"healthy": healthy(li, b)} for b in li.backends}
                             for li in slb.listeners}}
        path.write_text(json.dumps(doc))
        r.stamp += 1
        os.utime(path, (r.stamp, r.stamp))


def test_slb_health_puts_backends_in_and_out_of_their_groups(run):
    plan = plan_of(SERVICES)
    r = run(plan)
    _health(r, lambda li, b: True)
    r.app._reload()
    assert r.app.status["plan_version"] == 2
    r.connect_all()
    listener = plan.slbs[0].listeners[0]
    sent = {name: len(dp.sent) for name, dp in r.dps.items()}
    _health(r, lambda li, b: True)              # rewritten, same health: nothing
    r.app._reload()
    assert r.app.status["plan_version"] == 2 and {n: len(dp.sent) for n, dp in r.dps.items()} == sent
    down = listener.backends[0]
    _health(r, lambda li, b: not (li.name == listener.name and b.ip == down.ip))
    r.app._reload()
    for dp in r.dps.values():
        pump(r.app, dp)
    assert r.app.status["plan_version"] == 3
    assert r.app.status["slb_health"][listener.name][f"{down.ip}:{down.check_port}"] is False
    modified = [m for name, dp in r.dps.items() for m in dp.sent[sent[name]:]
                if isinstance(m, PARSER.OFPGroupMod) and m.command == OFP.OFPGC_MODIFY]
    assert modified and all(len(m.buckets) == len(listener.backends) - 1 for m in modified)
    assert all(r.bridge(n)["programmed"] for n in r.dps)


# ------------------------------------------------------------------------------------------ packet-ins
def _frame(src_mac: str, src: str, dst: str, ttl: int = 1) -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst="0a:58:0a:f4:00:01", src=src_mac, ethertype=0x0800))
    p.add_protocol(ipv4.ipv4(src=src, dst=dst, proto=6, ttl=ttl))
    p.add_protocol(tcp.tcp(src_port=40000, dst_port=80, seq=7))
    p.serialize()
    return bytes(p.data)


def test_packet_ins_are_counted_and_answered(run):
    plan = plan_of(DEFAULT)
    r = run(plan)
    node = plan.nodes[0]
    dp = r.connect(node.bridge)
    pod = next(p for p in plan.pods if p.node == node.name)
    frame = _frame(pod.mac, pod.ip, "172.21.0.11")
    since = len(dp.sent)
    for reason, cookie in ((OFP.OFPR_INVALID_TTL, 0), (OFP.OFPR_ACTION, 15 << 56), (OFP.OFPR_NO_MATCH, 0)):
        r.app._packet_in(event(dp, reason=reason, cookie=cookie, data=frame, match={"in_port": pod.ofport}))
    st = r.bridge(node.bridge)
    assert (st["ttl_expired"], st["refused"], st["packet_in"]) == (1, 1, 1)
    assert kinds(dp, since) == ["packet-out", "packet-out"]
    exceeded, reset = (packet.Packet(m.data) for m in dp.sent[since:])
    assert exceeded.get_protocol(ipv4.ipv4).src == node.gateway and exceeded.get_protocol(icmp.icmp).type == 11
    assert reset.get_protocol(ipv4.ipv4).src == "172.21.0.11" and reset.get_protocol(tcp.tcp).bits & tcp.TCP_RST
    assert r.status_file()["bridges"][node.bridge]["refused"] == 1


def test_an_openflow_error_is_reported(run):
    r = run(plan_of(DEFAULT))
    dp = r.connect(r.app_plan.bridges[0].name)
    r.app._error(event(dp, type=1, code=2, data=b"\x01\x02"))
    assert r.status_file()["errors"] == [f"{r.app_plan.bridges[0].name}: OpenFlow error type=1 code=2 on 0102"]
