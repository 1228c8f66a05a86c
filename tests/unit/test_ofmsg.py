"""controller/ofmsg.py: the flow mods it writes itself are byte for byte the ones os-ken writes,
for every flow of scenarios that use every action; bundles are ONF extension 230 as os-ken
encodes it; flow stats replies parsed lean carry what os-ken's full parse carries."""
from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_common, ofproto_parser

from controller import ofmsg
from kubevpc.errors import ScenarioError
from controller.compile import compile_plan
from controller.flows import (Conjunction, Ct, DecTtl, Goto, GroupAction, Learn, Move, Output, OutputReg, Resubmit,
                              SetField, flow)
from tests.unit.osken_fake import OFP, PARSER, FakeDatapath, FakeSwitch
from tests.unit.plans import DEFAULT, E2E_DATA, INTERNET, MODES, NETPOL, PODSG, REPO, SERVICES, plan_of

SCENARIOS = (DEFAULT, NETPOL, SERVICES, INTERNET, PODSG, E2E_DATA / "wlc.yaml", E2E_DATA / "dnat.yaml",
             REPO / "scenarios" / "dualstack-services.yaml")
EVERY_ACTION = {Output, OutputReg, SetField, Move, DecTtl, Goto, Ct, Resubmit, GroupAction, Conjunction, Learn}


def osken_bytes(msg, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize("mode", MODES)
def test_flow_mods_are_the_bytes_os_ken_writes(mode):
    dp = FakeDatapath(1, FakeSwitch())
    seen: set = set()
    for path in SCENARIOS:
        try:
            plan = plan_of(path, mode)
        except ScenarioError:           # a scenario for other modes (pod security groups: eni)
            continue
        for fs in compile_plan(plan).values():
            for xid, f in enumerate(fs.flows):
                seen.update(type(a) for a in f.actions)
                assert ofmsg.flow_mod_bytes(f, xid) == osken_bytes(ofmsg.flow_mod(dp, f), xid), f.to_ofctl()
    assert seen == EVERY_ACTION, f"the scenarios should use every kind of action: {EVERY_ACTION - seen}"


def test_a_flow_delete_is_the_bytes_os_ken_writes():
    dp = FakeDatapath(1, FakeSwitch())
    for cookie in (0, 1, 13 << 56 | 7 << 32 | 0xDEADBEEF, ofmsg.ALL_COOKIE_BITS):
        assert ofmsg.delete_cookie_bytes(cookie, 77) == osken_bytes(ofmsg.delete_cookie(dp, cookie), 77)


def test_a_field_given_twice_keeps_its_place_and_takes_the_last_value():
    dp = FakeDatapath(1, FakeSwitch())
    f = flow(3, 10, None, [Goto(4)])
    f = type(f)(3, 10, (("ipv4_dst", "10.0.0.1"), ("eth_type", 0x800), ("ipv4_dst", "10.0.0.2")), (Goto(4),))
    assert ofmsg.flow_mod_bytes(f, 5) == osken_bytes(ofmsg.flow_mod(dp, f), 5)


def test_a_bundle_is_open_adds_commit_as_os_ken_encodes_them():
    dp = FakeDatapath(1, FakeSwitch())
    f = flow(3, 10, {"eth_type": 0x800, "ipv4_dst": "10.0.0.1"}, [Output(2)], "pod", 4)
    group = ofmsg.group_mod(dp, ofmsg.Group(5, ()), "delete")
    batch = ofmsg.Batch(dp, [ofmsg.flow_mod_bytes(f), ofmsg.delete_cookie_bytes(99), group], bundle_id=12)
    batch.set_xid(41)
    batch.serialize()
    flags = OFP.ONF_BF_ATOMIC | OFP.ONF_BF_ORDERED
    want = [PARSER.ONFBundleCtrlMsg(dp, 12, OFP.ONF_BCT_OPEN_REQUEST, flags, [])]
    for inner in (ofmsg.flow_mod(dp, f), ofmsg.delete_cookie(dp, 99), ofmsg.group_mod(dp, ofmsg.Group(5, ()), "delete")):
        inner.set_xid(41)
        want.append(PARSER.ONFBundleAddMsg(dp, 12, flags, inner, []))
    want.append(PARSER.ONFBundleCtrlMsg(dp, 12, OFP.ONF_BCT_COMMIT_REQUEST, flags, []))
    assert batch.buf == b"".join(osken_bytes(m, 41) for m in want)
    # the switch reads them as separate messages, each with the batch's xid
    offset, seen = 0, []
    while offset < len(batch.buf):
        version, kind, length, xid = ofproto_parser.header(batch.buf[offset:])
        exp, exp_type = struct.unpack_from("!II", batch.buf, offset + 8)
        seen.append((kind, exp == ofproto_common.ONF_EXPERIMENTER_ID, exp_type, xid))
        offset += length
    assert seen == [(OFP.OFPT_EXPERIMENTER, True, OFP.ONF_ET_BUNDLE_CONTROL, 41)] + \
        [(OFP.OFPT_EXPERIMENTER, True, OFP.ONF_ET_BUNDLE_ADD_MESSAGE, 41)] * 3 + \
        [(OFP.OFPT_EXPERIMENTER, True, OFP.ONF_ET_BUNDLE_CONTROL, 41)]


def test_a_batch_without_a_bundle_is_the_messages_back_to_back():
    dp = FakeDatapath(1, FakeSwitch())
    f = flow(3, 10, {"eth_type": 0x800}, [Goto(4)])
    batch = ofmsg.Batch(dp, [ofmsg.flow_mod_bytes(f, 0), ofmsg.delete_cookie_bytes(8, 0)])
    batch.set_xid(3)
    batch.serialize()
    assert batch.buf == osken_bytes(ofmsg.flow_mod(dp, f), 3) + osken_bytes(ofmsg.delete_cookie(dp, 8), 3)


def flow_stats_reply(flows, xid: int = 9) -> bytes:
    """A flow stats reply as Open vSwitch sends it: each flow's match and instructions as a flow mod carries them."""
    body = b""
    for k, f in enumerate(flows):
        tail = ofmsg.flow_mod_bytes(f)[48:]
        body += struct.pack("!HBxIIHHHH4xQQQ", 48 + len(tail), f.table, k, 7, f.priority, 0, 0, 0, f.cookie, k * 10,
                            k * 1000) + tail
    return struct.pack("!BBHIHH4x", 4, OFP.OFPT_MULTIPART_REPLY, 16 + len(body), xid, OFP.OFPMP_FLOW, 0) + body


def test_flow_stats_parsed_lean_carry_what_os_ken_parses(monkeypatch):
    flows = [f for fs in compile_plan(plan_of(DEFAULT, "vxlan")).values() for f in fs.flows][::7]
    data = flow_stats_reply(flows)
    dp = FakeDatapath(1, FakeSwitch())
    monkeypatch.setattr(PARSER.OFPFlowStatsReply, "cls_stats_body_cls", PARSER.OFPFlowStats)     # os-ken's own
    full = ofproto_parser.msg(dp, *ofproto_parser.header(data), data)
    assert all(isinstance(e, PARSER.OFPFlowStats) for e in full.body)
    ofmsg.lean_flow_stats()
    lean = ofproto_parser.msg(dp, *ofproto_parser.header(data), data)
    assert all(isinstance(e, ofmsg.FlowStatsEntry) for e in lean.body) and len(lean.body) == len(flows)
    for a, b in zip(full.body, lean.body):
        for name in ("length", "table_id", "duration_sec", "duration_nsec", "priority", "cookie", "packet_count",
                     "byte_count"):
            assert getattr(a, name) == getattr(b, name), name
        assert a.match.to_jsondict() == b.match.to_jsondict()
        assert [i.to_jsondict() for i in a.instructions] == [i.to_jsondict() for i in b.instructions]


# the match of a flow-log flow as a security group's learn makes it (controller/flowlog.py), a
# masked one, and an ICMP one
LEARNED_MATCHES = [
    dict(in_port=3, eth_type=0x800, ip_proto=6, reg6=1, ipv4_src="192.168.0.5", ipv4_dst="10.244.1.2", tcp_src=40001,
         tcp_dst=8080),
    dict(eth_type=0x800, ip_proto=17, reg6=2, reg1=7, ipv4_src="10.0.0.1", ipv4_dst="10.0.0.2", udp_src=4789,
         udp_dst=53),
    dict(eth_type=0x800, ipv4_dst=("10.244.0.0", "255.255.0.0"), reg0=(1, 0xFF)),
    dict(eth_type=0x800, ip_proto=1, icmpv4_type=8, icmpv4_code=0, eth_src="02:00:00:00:00:01"),
]


def match_bytes(**fields) -> bytes:
    buf = bytearray()
    PARSER.OFPMatch(**fields).serialize(buf, 0)
    return bytes(buf)


def test_match_items_read_as_os_ken_reads_them():
    for fields in LEARNED_MATCHES:
        data = b"\xff" * 5 + match_bytes(**fields)
        assert ofmsg.match_items(data, 5) == tuple(PARSER.OFPMatch.parser(data, 5).items()), fields
    lean = ofmsg.FlowStatsEntry.parser(flow_stats_reply(
        [f for fs in compile_plan(plan_of(PODSG, "eni")).values() for f in fs.flows][::5])[16:], 0)
    assert lean.match_items() == tuple(lean.match.items())


def test_match_items_refuse_a_match_that_overruns_or_is_not_oxm():
    good = match_bytes(**LEARNED_MATCHES[0])
    with pytest.raises(ValueError, match="not an OXM match"):
        ofmsg.match_items(b"\x00\x00" + good[2:], 0)
    with pytest.raises(ValueError, match="overruns"):
        ofmsg.match_items(good[:2] + struct.pack("!H", 10) + good[4:], 0)      # in_port's 8 bytes end at 12


def flow_removed(cookie: int, fields: dict) -> bytes:
    """An OFPT_FLOW_REMOVED as Open vSwitch sends it when a learned flow has been idle."""
    body = struct.pack("!QHBBIIHHQQ", cookie, 100, OFP.OFPRR_IDLE_TIMEOUT, 70, 12, 500, 10, 0, 4, 400)
    body += match_bytes(**fields)
    return struct.pack("!BBHI", 4, OFP.OFPT_FLOW_REMOVED, 8 + len(body), 9) + body


def test_flow_removed_parsed_lean_carry_what_os_ken_parses():
    dp = FakeDatapath(1, FakeSwitch())
    ofmsg.lean_flow_stats()
    for fields in LEARNED_MATCHES:
        data = flow_removed(0x1700000500000000, fields)
        full = PARSER.OFPFlowRemoved.parser(dp, *ofproto_parser.header(data), data)       # os-ken's own
        lean = ofproto_parser.msg(dp, *ofproto_parser.header(data), data)
        assert isinstance(lean.match, ofmsg.LeanMatch)
        for name in ("cookie", "priority", "reason", "table_id", "duration_sec", "duration_nsec", "idle_timeout",
                     "hard_timeout", "packet_count", "byte_count"):
            assert getattr(lean, name) == getattr(full, name), name
        assert lean.match.items() == tuple(full.match.items()) and lean.match.length == full.match.length


def test_a_flow_stats_entry_shorter_than_its_fixed_part_is_refused():
    bad = struct.pack("!HBxIIHHHH4xQQQ", 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="flow stats entry of 8 bytes"):
        ofmsg.FlowStatsEntry.parser(bad, 0)
