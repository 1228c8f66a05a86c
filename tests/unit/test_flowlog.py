"""Flow logs and rule counters (kubevpc/observe/flowlog.py, controller/flowlog.py flowlog_flows): the
flows that learn and count, the cookies the records are read back from, the records the
controller writes per window and at expiry, the ENI a record belongs to, and the parser of
`ovs-ofctl dump-flows` output captured from a live run (tests/unit/data/flowlog)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from controller.compile import compile_plan
from controller.flowlog import flowlog_cookie
from controller.flows import FLOWLOG_TABLES, Learn, Resubmit
from controller.pipeline import (FLOWLOG_ACCEPT_AT_DEST, FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_IN, FLOWLOG_OUT,
                                 REG_FLOWLOG_CODE, VSWITCH)
from kubevpc.errors import ScenarioError
from kubevpc.observe.flowlog import (FIELDS, LearnedFlow, Recorder, decode_cookie, eni_at, parse_learned, read_records,
                             record, rule_counters, top_drops)
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "flowlog"
DEFAULT = REPO / "scenarios" / "default.yaml"
MODES = ("vxlan", "vpc-route", "eni")
_plans: dict[str, Plan] = {}


def plan_for(mode: str, run: str = "kvfl") -> Plan:
    if (mode, run) not in _plans:
        _plans[mode, run] = make_plan(load(str(DEFAULT), mode=mode), run)
    return _plans[mode, run]


def with_flow_logs(tmp_path, flow_logs) -> str:
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["cloud"]["flowLogs"] = flow_logs
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


# ------------------------------------------------------------------------------------ flows
@pytest.mark.parametrize("direction", (FLOWLOG_OUT, FLOWLOG_IN))
@pytest.mark.parametrize("accept", (True, False))
@pytest.mark.parametrize("first", (True, False))
def test_cookie_round_trip(direction, accept, first):
    assert decode_cookie(flowlog_cookie(direction, accept, first)) == (direction, accept, first)


def test_other_cookies_are_not_flow_log_records():
    plan = plan_for("vpc-route")
    for fs in compile_plan(plan).values():
        assert all(decode_cookie(f.cookie) is None for f in fs.flows)


@pytest.mark.parametrize("mode", MODES)
def test_every_security_group_decision_learns_and_every_pass_counts(mode):
    plan = plan_for(mode)
    assert plan.flow_log_window == 10
    for b in plan.bridges:
        if b.role != "vswitch":
            continue
        flows = compile_plan(plan)[b.name].flows
        for f in flows:
            if f.feature != "secgroup" or "ct_state" not in dict(f.match):
                continue
            codes = [a.value for a in f.actions if getattr(a, "field", None) == REG_FLOWLOG_CODE]
            counted = any(isinstance(a, Resubmit) and a.table == VSWITCH.table("flowlog") for a in f.actions)
            if "invalid" in f.note or "vRouter" in f.note:
                assert not codes and not counted, f.to_ofctl()
            elif "established" in f.note or "related" in f.note:
                assert counted and not codes, f.to_ofctl()
            elif f.table in (30, 50) and "ipv4_src" in dict(f.match) or "ipv4_dst" in dict(f.match):
                # a rule, group membership or the default at an attachment: learn, then count
                assert len(codes) == 1 and counted, f.to_ofctl()
                learn_at = [i for i, a in enumerate(f.actions) if isinstance(a, Resubmit)]
                assert [f.actions[i].table for i in learn_at] == [71, 70]
        learners = [f for f in flows if f.table == 71 and f.priority > 0]
        # 4 codes x (tcp, udp, icmp, any other protocol)
        assert len(learners) == 16
        for f in learners:
            learns = [a for a in f.actions if isinstance(a, Learn)]
            code = dict(f.match)[REG_FLOWLOG_CODE]
            assert len(learns) == (2 if code in (FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_ACCEPT_AT_DEST) else 1)
            for learn in learns:
                assert learn.send_flow_rem and learn.idle_timeout == 10 and learn.table == 70
                assert "send_flow_rem" in learn.ofctl() and "idle_timeout=10" in learn.ofctl()
                assert decode_cookie(learn.cookie)[1] == (code in (FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_ACCEPT_AT_DEST))
            # exactly one learned flow per code is in the learning packet's direction
            assert sum(decode_cookie(x.cookie)[2] for x in learns) == 1


def test_a_drop_that_counts_still_drops():
    plan = plan_for("vpc-route")
    vs = next(b for b in plan.bridges if b.role == "vswitch")
    default_deny = [f for f in compile_plan(plan)[vs.name].flows if f.table == 50 and "(the default)" in f.note]
    assert default_deny and all(f.drops for f in default_deny)
    assert all(any(isinstance(a, Resubmit) and a.table in FLOWLOG_TABLES for a in f.actions) for f in default_deny)


def test_flow_logs_off_compiles_no_flow_log_flows(tmp_path):
    plan = make_plan(load(with_flow_logs(tmp_path, {"enabled": False})), "kvfl")
    assert plan.flow_log_window == 0
    for fs in compile_plan(plan).values():
        for f in fs.flows:
            assert f.table not in FLOWLOG_TABLES
            assert not any(isinstance(a, Resubmit) and a.table in FLOWLOG_TABLES for a in f.actions)
            assert not any(isinstance(a, Learn) and a.send_flow_rem for a in f.actions)


def test_the_window_is_the_idle_timeout(tmp_path):
    plan = make_plan(load(with_flow_logs(tmp_path, {"window": 60})), "kvfl")
    learns = [a for fs in compile_plan(plan).values() for f in fs.flows for a in f.actions if isinstance(a, Learn)
              and a.send_flow_rem]
    assert learns and {a.idle_timeout for a in learns} == {60}


@pytest.mark.parametrize("window", (0, 601, "10"))
def test_a_bad_window_is_refused_with_its_path(tmp_path, window):
    with pytest.raises(ScenarioError) as exc:
        load(with_flow_logs(tmp_path, {"window": window}))
    text = str(exc.value)
    assert "cloud.flowLogs.window" in text and "scenario.yaml" in text


def test_translation_asks_the_switch_to_report_expiry():
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    from controller.ofmsg import NX_LEARN_F_DELETE_LEARNED, NX_LEARN_F_SEND_FLOW_REM, _action
    dp = SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser)
    plan = plan_for("vpc-route")
    learn = next(a for fs in compile_plan(plan).values() for f in fs.flows for a in f.actions
                 if isinstance(a, Learn) and a.send_flow_rem)
    msg = _action(dp, learn)
    assert msg.flags == NX_LEARN_F_SEND_FLOW_REM | NX_LEARN_F_DELETE_LEARNED
    assert msg.idle_timeout == 10 and msg.table_id == 70
    affinity = next((a for fs in compile_plan(plan).values() for f in fs.flows for a in f.actions
                     if isinstance(a, Learn) and not a.send_flow_rem), None)
    if affinity is not None:
        assert _action(dp, affinity).flags == NX_LEARN_F_DELETE_LEARNED


# ---------------------------------------------------------------------------------- records
def live(name: str) -> list[LearnedFlow]:
    bridge = {"vs0": "kvfl-vs0", "vs1": "kvfl-vs1"}[name]
    return parse_learned(bridge, (DATA / f"{name}-table70.txt").read_text(), now=1000.0)


def test_the_dump_parser_reads_every_learned_flow_and_skips_the_rest():
    flows = live("vs0")
    assert len(flows) == 6                       # the table's default flow is not a record
    f = flows[0]
    assert dict(f.match) == {"eth_type": 0x800, "ip_proto": 6, "reg6": 1, "in_port": 10, "ipv4_src": "10.244.0.2",
                             "ipv4_dst": "192.168.2.50", "tcp_src": 49020, "tcp_dst": 5432}
    assert (f.packets, f.bytes) == (4, 270) and f.learned_at == pytest.approx(1000 - 6.638)
    icmp = [x for x in flows if dict(x.match)["ip_proto"] == 1]
    assert len(icmp) == 2 and all("tcp_src" not in dict(x.match) for x in icmp)


def test_a_udp_line_has_udp_ports():
    line = (" cookie=0x1700000700000000, duration=1.5s, table=70, n_packets=2, n_bytes=140, idle_timeout=10, "
            "send_flow_rem priority=100,udp,reg6=0x1,in_port=11,nw_src=10.244.1.2,nw_dst=172.21.0.10,"
            "tp_src=40000,tp_dst=53 actions=drop")
    (f,) = parse_learned("kvfl-vs0", line, now=10.0)
    assert dict(f.match)["udp_src"] == 40000 and dict(f.match)["udp_dst"] == 53 and "tcp_dst" not in dict(f.match)


def test_records_name_the_eni_and_carry_alibabas_fields():
    plan = plan_for("vpc-route")
    recs = [record(plan, f, f.packets, f.bytes, f.learned_at, 1000.0, True) for f in live("vs0") + live("vs1")]
    recs = [r for r in recs if r]
    for r in recs:
        assert set(FIELDS) <= set(r)
    by = {(r["eni-id"], r["direction"], r["dstport"], r["protocol"]): r for r in recs}
    # pod web-0 (vpc-route: behind node-1's ENI) to ecs-db:5432, accepted at both ENIs
    out = by["eni-node-1", "out", 5432, 6]
    assert (out["srcaddr"], out["dstaddr"], out["action"], out["vm-id"]) == ("10.244.0.2", "192.168.2.50", "ACCEPT",
                                                                             "node-1")
    assert out["packets"] == 5 and out["bytes"] == 270 and out["first-packet-bytes"] == "uncounted"
    reply = by["eni-node-1", "in", 49020, 6]
    assert reply["packets"] == 5 and "first-packet-bytes" not in reply
    assert by["eni-ecs-db", "in", 5432, 6]["vswitch-id"] == "vsw-i"
    # 6379: rejected by sg-db at ecs-db's ENI; the SYN and its retry
    rejected = by["eni-ecs-db", "in", 6379, 6]
    assert rejected["action"] == "REJECT" and rejected["packets"] == 2 and rejected["bytes"] == 74
    # no reply came: nothing travelled in that direction, no record
    assert ("eni-node-1", "in", 54140, 6) not in by
    # ICMP denied at ecs-db: the source ENI's record, ACCEPT (its own security group let it out)
    assert by["eni-node-1", "out", 0, 1]["action"] == "ACCEPT"


def test_an_eni_mode_pod_has_its_own_eni_on_its_node():
    plan = plan_for("eni")
    pod = next(h for h in plan.hosts if h.key == "pod/default/web-0")
    att = next(a for a in plan.attachments if a.owner == pod.key)
    bridge = next(v.bridge for v in plan.vswitches if v.name == att.vswitch)
    a = eni_at(plan, bridge, att.ofport, pod.ip)
    assert a.owner == pod.key
    f = LearnedFlow(bridge, flowlog_cookie(FLOWLOG_IN, True, True),
                    tuple(sorted({"reg1": att.ofport, "reg6": FLOWLOG_IN, "ipv4_src": "192.168.2.50",
                                  "ipv4_dst": pod.ip, "ip_proto": 6, "tcp_src": 1234, "tcp_dst": 8080}.items())),
                    3, 200, 0.0)
    r = record(plan, f, 3, 200, 0.0, 1.0, True)
    assert (r["eni-id"], r["vm-id"], r["direction"], r["packets"]) == ("eni-default-web-0", pod.node, "in", 4)
    # an address behind no ENI at that port: no record
    assert eni_at(plan, bridge, att.ofport, "203.0.113.9") is None


def test_a_long_connection_gets_a_record_per_window_and_the_rest_at_expiry(tmp_path):
    plan = plan_for("vpc-route")
    rec = Recorder(plan, str(tmp_path / "flowlog.jsonl"))
    f0 = live("vs0")[0]                                 # 4 packets, 270 bytes, learned at 993.362
    first = rec.window([f0], 1000.0)
    assert len(first) == 1 and first[0]["packets"] == 5 and first[0]["bytes"] == 270
    assert (first[0]["start"], first[0]["end"]) == (993, 1000)
    # nothing new in the next window: no record
    assert rec.window([f0], 1010.0) == []
    grown = LearnedFlow(f0.bridge, f0.cookie, f0.match, 10, 900, f0.learned_at)
    second = rec.window([grown], 1020.0)
    assert second[0]["packets"] == 6 and second[0]["bytes"] == 630 and "first-packet-bytes" not in second[0]
    assert second[0]["start"] == 1000
    # expiry: 2 more packets, idle for 10 s
    gone = LearnedFlow(f0.bridge, f0.cookie, f0.match, 12, 1000, f0.learned_at)
    last = rec.removed(gone, 10, 1035.0)
    assert (last["packets"], last["bytes"], last["start"], last["end"]) == (2, 100, 1020, 1025)
    # a flow that expires with nothing since its last window: no record
    rec.window([grown], 1050.0)
    assert rec.removed(grown, 10, 1060.0) is None
    # one never written: everything since it was learned, with its first packet
    assert rec.removed(grown, 10, 1070.0)["packets"] == 11
    rec.write(first + second + [last])
    assert [r["packets"] for r in read_records(str(tmp_path))] == [5, 6, 2]
    assert oct((tmp_path / "flowlog.jsonl").stat().st_mode & 0o777) == "0o600"


def test_the_log_is_rotated_and_both_generations_read(tmp_path, monkeypatch):
    import kubevpc.observe.flowlog as flowlog
    monkeypatch.setattr(flowlog, "MAX_FLOWLOG_BYTES", 100)
    rec = Recorder(plan_for("vpc-route"), str(tmp_path / "flowlog.jsonl"))
    for n in range(3):
        rec.write([{"n": n, "pad": "x" * 80}])
    assert (tmp_path / "flowlog.jsonl.1").exists()
    assert [r["n"] for r in read_records(str(tmp_path))] == [0, 1, 2]
    # a torn last line (a writer mid-way) is not a record
    with open(tmp_path / "flowlog.jsonl", "a") as fh:
        fh.write('{"n": 3')
    assert [r["n"] for r in read_records(str(tmp_path))] == [0, 1, 2]


# ----------------------------------------------------------------------------- rule counters
def test_rule_counters_name_the_rule_and_sum_its_packets():
    plan = plan_for("vpc-route")
    compiled = compile_plan(plan)
    vs = next(b.name for b in plan.bridges if b.role == "vswitch" and
              any("sg-db rule" in f.note for f in compiled[b.name].flows))
    drop = next(f for f in compiled[vs].flows if f.table == 50 and "ecs/ecs-db" in f.note and f.drops)
    accept = next(f for f in compiled[vs].flows if "sg-db rule" in f.note and not f.drops)
    dump = "\n".join([f" cookie={drop.cookie:#x}, duration=5s, table=50, n_packets=3, n_bytes=222, priority=1 ...",
                      f" cookie={accept.cookie:#x}, duration=5s, table=50, n_packets=1, n_bytes=74, priority=2 ..."])
    counters = rule_counters(plan, compiled, {vs: dump})
    (d,) = [c for c in counters if c.action == "drop"]
    assert (d.kind, d.packets, d.bytes, d.name) == ("security group", 3, 222, drop.note)
    (a,) = [c for c in counters if c.action == "accept"]
    assert "ecs/ecs-db: sg-db rule 1 (accept tcp/5432" in a.name and a.packets == 1
    assert top_drops(counters) == [d]
    json.dumps([c.__dict__ for c in counters])
