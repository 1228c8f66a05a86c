"""`kubevpc trace` (kubevpc/observe/trace.py and ovstrace.py) without a network: the parser of
`ovs-appctl ofproto/trace` output (tables and flows matched, datapath actions, the flow a
recirculation resumes with) and of `dpif/show`, on text captured from a live run of tests/e2e/data/internet.yaml in vxlan mode (run
kvin: tests/unit/data/trace); the conntrack state each continuation pass is traced in; the
Tracer following a packet from pass to pass, bridge to bridge, bucket to bucket and through VXLAN,
with ovs-appctl and ovs-ofctl replaced by scripts that answer with captured or hand-written
output and check what they are asked; and compare() beside the evaluator's verdict."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubevpc.errors import KubevpcError
from kubevpc.observe import ovstrace
from kubevpc.observe import trace as trace_mod
from kubevpc.observe.ovstrace import (Hit, bucket_words, ct_record, ct_state_after, dpif_ports, fields, flow_text,
                                      group_action, group_buckets, parse, resume_at, split_actions)
from kubevpc.observe.trace import (MAX_CALLS, MAX_LEAVES, REJECT_PORT, Branch, Trace, Tracer, _destination_ip,
                                   _port_name, _table_name, compare)

from . import plans
from .plans import INTERNET, SERVICES

DATA = Path(__file__).parent / "data" / "trace"
FIRST = (DATA / "first-pass.txt").read_text()
RESUMED = (DATA / "resumed.txt").read_text()
DPIF = (DATA / "dpif-show.txt").read_text()
RUN = "kvin"                        # the run the captures were made in


def plan_of(path: Path = INTERNET, mode: str = "vxlan", run: str = RUN):
    return plans.plan_of(path, mode, run)


# the third datapath pass of first-pass.txt (after its second recirculation), as trace-packet-out
# prints a pass that resumes at table 35: SNATed, out of the node's uplink (datapath port 19)
THIRD_PASS = "Flow: " + FIRST.split("\nFlow: ")[2]


# ------------------------------------------------------------------------------ ofproto/trace
def test_parse_the_first_pass_of_a_captured_trace():
    p = parse(FIRST)
    assert p.flow.startswith("tcp,in_port=1001,vlan_tci=0x0000,dl_src=0a:58:0a:f4:00:03,dl_dst=0a:58:0a:f4:00:01,"
                             "nw_src=10.244.0.3,nw_dst=198.18.0.3,")
    assert [(h.bridge, h.table, h.priority, h.cookie, h.match) for h in p.hits] == [
        ("kvin-n0", 0, 200, 0x8000000bc7c9b06, "ip,in_port=1001,dl_src=0a:58:0a:f4:00:03,nw_src=10.244.0.3"),
        ("kvin-n0", 15, 0, 0x700000049956e46, ""),
        ("kvin-n0", 20, 100, 0x1000000dc440dd1, "ip"),
    ]                                              # only the first pass: tables 21-36 come after recirculating
    assert [h.actions for h in p.hits] == [["set_field:0x1->reg0", "goto_table:15"], ["goto_table:20"],
                                           ["ct(table=21,zone=27874,nat)", "nat"]]       # no "->" commentary
    assert p.datapath_actions == "ct(zone=27874,nat),recirc(0x1c36)"
    assert fields(p.final_flow)["reg0"] == "0x1" and "reg0" not in fields(p.flow)
    resumed = fields(p.resumed_flow)
    assert (resumed["recirc_id"], resumed["ct_state"], resumed["ct_zone"]) == ("0x1c36", "new|trk", "27874")
    assert (resumed["nw_src"], resumed["nw_dst"], resumed["tp_dst"]) == ("10.244.0.3", "198.18.0.3", "80")


def test_parse_a_captured_continuation_from_table_21():
    p = parse(RESUMED)
    assert fields(p.flow)["ct_state"] == "new|trk"
    assert [h.table for h in p.hits] == [21, 24, 25, 26, 27, 29, 30]
    assert {h.bridge for h in p.hits} == {"kvin-n0"}
    commit = p.hits[5]
    assert (commit.match, commit.priority, commit.cookie) == ("ct_state=+new+trk,ip,reg4=0/0x2", 100, 0x10000006fb066b1)
    assert commit.actions == ["ct(commit,zone=27874)", "drop", "goto_table:30"]
    assert p.hits[6].actions == ["dec_ttl", "ct(commit,table=35,zone=60642,nat(src=192.168.1.1:61000-65535))",
                                 "nat(src=192.168.1.1:61000-65535)"]
    assert p.datapath_actions == ("ct(commit,zone=27874),set(ipv4(ttl=63)),"
                                  "ct(commit,zone=60642,nat(src=192.168.1.1:61000-65535)),recirc(0x1c38)")
    assert fields(p.final_flow)["nw_ttl"] == "63" and fields(p.final_flow)["nw_src"] == "10.244.0.3"
    # Open vSwitch simulated the SNAT in the flow the recirculation resumes with
    resumed = fields(p.resumed_flow)
    assert (resumed["nw_src"], resumed["tp_src"], resumed["ct_zone"], resumed["nw_ttl"]) == \
        ("192.168.1.1", "61000", "60642", "63")


def test_parse_a_pass_that_leaves_the_bridge():
    p = parse(THIRD_PASS)
    assert [(h.table, h.priority) for h in p.hits] == [(35, 0), (36, 100)]      # "thaw" is no table
    assert p.hits[0].actions == ["set_field:0a:58:c0:a8:01:01->eth_src", "set_field:0a:58:c0:a8:01:fd->eth_dst",
                                 "set_field:0x2->reg1", "goto_table:36"]
    assert p.hits[1].actions == ["output:2"]
    assert split_actions(p.datapath_actions) == ["set(eth(src=0a:58:c0:a8:01:01,dst=0a:58:c0:a8:01:fd))", "19"]
    assert p.resumed_flow == ""
    final = fields(p.final_flow)
    assert (final["dl_src"], final["nw_src"], final["tp_src"]) == ("0a:58:c0:a8:01:01", "192.168.1.1", "61000")


def test_parse_final_flow_unchanged_and_a_drop():
    text = RESUMED.split("\nFlow: ")[1]                  # the resumed pass that conflicts: "Final flow: unchanged"
    p = parse("Flow: " + text)
    assert p.final_flow == p.flow and fields(p.flow)["recirc_id"] == "0x1c38"
    assert p.datapath_actions == "drop" and p.hits == []
    assert parse("").hits == [] and parse("").datapath_actions == ""


def test_split_actions_keeps_parentheses_together():
    assert split_actions("ct(commit,zone=27874),set(ipv4(ttl=63)),ct(commit,zone=60642,nat(src=192.168.1.1:61000-65535)),"
                         "recirc(0x1c37)") == ["ct(commit,zone=27874)", "set(ipv4(ttl=63))",
                                               "ct(commit,zone=60642,nat(src=192.168.1.1:61000-65535))",
                                               "recirc(0x1c37)"]
    assert split_actions("userspace(pid=0,controller(reason=1,dont_send=0,continuation=0,recirc_id=7,rule_cookie=0x1,"
                         "controller_id=0,max_len=65535)),3, 4") == [
        "userspace(pid=0,controller(reason=1,dont_send=0,continuation=0,recirc_id=7,rule_cookie=0x1,controller_id=0,"
        "max_len=65535))", "3", "4"]
    assert split_actions("drop") == ["drop"] and split_actions("") == []


def test_fields_and_flow_text():
    f = fields("ct_state=new|trk,eth,tcp,reg0=0x1,in_port=1001,tp_src=40000,tp_dst=80,tcp_flags=syn")
    assert f == {"ct_state": "new|trk", "eth": "", "tcp": "", "reg0": "0x1", "in_port": "1001", "tp_src": "40000",
                 "tp_dst": "80", "tcp_flags": "syn"}
    assert flow_text(f) == "ct_state=new|trk,eth,tcp,reg0=0x1,in_port=1001,tp_src=40000,tp_dst=80,tcp_flags=syn"
    # ofproto/trace's flow parser knows tp_src and tp_dst for TCP only: UDP says udp_src and udp_dst
    assert flow_text({"in_port": "1", "udp": "", "nw_dst": "192.168.1.2", "tp_src": "49152", "tp_dst": "4789"}) == \
        "in_port=1,udp,nw_dst=192.168.1.2,udp_src=49152,udp_dst=4789"


def test_dpif_show_port_map():
    ports = dpif_ports(lambda *args: DPIF if args == ("dpif/show",) else pytest.fail(f"asked {args}"))
    assert sorted(ports) == list(range(1, 28))          # every datapath port once; patch ports (none) left out
    assert ports[22] == ("kvin-n0", 1001, "kvinp2")
    assert ports[19] == ("kvin-n0", 2, "kvinnu0.0")
    assert ports[21] == ("kvin-n0", 100, "kvinx0")
    assert ports[6] == ("kvin-vr0", 100, "kvinve0")
    assert ports[14] == ("kvin-inet", 11, "kvini1")
    assert ports[9] == ("kvin-ed0", 65534, "kvin-ed0")
    assert not {"kvinei0", "kvinie0", "kvinnp0.0", "kvinrv0", "kvinvr1"} & {name for _, _, name in ports.values()}
    # the capture and the plan of the same run agree on every port that has a datapath number
    plan = plan_of()
    for bridge, ofport, name in ports.values():
        if ofport != 65534:
            assert (name, ofport) in {(p.name, p.ofport) for p in plan.bridge(bridge).ports}, name


# ----------------------------------------------------------------------------------- conntrack
def test_ct_records():
    assert ct_record("ct(zone=27874,nat)") == (27874, "", False)
    assert ct_record("ct(commit,zone=27874)") == (27874, "", True)
    assert ct_record("ct(commit,zone=60642,nat(src=192.168.1.1:61000-65535))") == (60642, "src", True)
    assert ct_record("ct(commit,zone=5,nat(dst=10.244.0.2:8080))") == (5, "dst", True)
    assert ct_record("ct(nat)") == (0, "", False)


@pytest.mark.parametrize("action,history,state", [
    # the first packet, looked up with nat: nothing translated it yet
    ("ct(zone=27874,nat)", [(27874, "", False)], "new|trk"),
    # a commit with SNAT: this action translates it
    ("ct(commit,zone=60642,nat(src=192.168.1.1:61000-65535))", [(27874, "", True), (60642, "src", True)],
     "new|trk|snat"),
    # a lookup with nat after a Service's DNAT was committed in that zone, earlier on the way
    ("ct(zone=27874,nat)", [(27874, "dst", True), (27874, "", False)], "new|trk|dnat"),
    # ... but not after one committed in another zone, nor one that was never committed
    ("ct(zone=27874,nat)", [(5, "dst", True), (27874, "", False)], "new|trk"),
    ("ct(zone=27874,nat)", [(27874, "dst", False), (27874, "", False)], "new|trk"),
    # a lookup without nat translates nothing, whatever was committed
    ("ct(zone=27874)", [(27874, "dst", True), (27874, "", False)], "new|trk"),
    # DNAT committed before, SNAT now, in the same zone: both
    ("ct(commit,zone=7,nat(src=198.19.0.1))", [(7, "dst", True), (7, "src", True)], "new|trk|dnat|snat"),
    # a recirculation that is no ct action (a select group's hash)
    ("hash(l4(0))", [(27874, "dst", True)], "new|trk"),
    ("", [], "new|trk"),
])
def test_ct_state_of_a_continuation(action, history, state):
    assert ct_state_after(action, history) == state


def test_resume_table_and_groups():
    assert resume_at(parse(FIRST)) == ("kvin-n0", 21)
    assert resume_at(parse(RESUMED)) == ("kvin-n0", 35)              # table 29's ct(commit) names no table
    assert resume_at(parse(THIRD_PASS)) is None
    with pytest.raises(KubevpcError, match="without a group action"):
        group_action(parse(FIRST))
    p = parse(ovs("tcp,in_port=1001", [("kvin-n1", [(21, "ip", 10, 1, ["ct(commit,zone=1)"])]),
                                       ("kvin-n0", [(21, "ip", 10, 2, ["group:179111"]), (22, "", 0, 3, ["drop"])])],
                  "tcp", "hash(l4(0)),recirc(0x5)"))
    assert group_action(p) == ("kvin-n0", 179111)


# the Service default/web-inet's group on node-1 as `ovs-ofctl -O OpenFlow13 dump-groups` prints it
# (registers in hex): web-0 (10.244.0.2) and web-1 (10.244.1.2), port 8080 (0x1f90)
BUCKETS = ["set_field:0xaf40002->reg2,set_field:0x1f90->reg3,resubmit(,25)",
           "set_field:0xaf40102->reg2,set_field:0x1f90->reg3,resubmit(,25)"]
DUMP_GROUPS = ("OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):\n"
               f" group_id=179111,type=select,bucket=weight:1,actions={BUCKETS[0]},bucket=weight:1,actions={BUCKETS[1]}\n")


def test_group_buckets_from_dump_groups():
    asked = []

    def ofctl(args):
        asked.append(args)
        return DUMP_GROUPS
    buckets = group_buckets(ofctl, "kvin-n0", 179111)
    assert asked == [["-O", "OpenFlow13", "dump-groups", "kvin-n0", "group_id=179111"]]
    assert buckets == BUCKETS
    assert [bucket_words(b) for b in buckets] == ["endpoint 10.244.0.2:8080", "endpoint 10.244.1.2:8080"]
    assert bucket_words("output:3") == "bucket output:3"
    assert group_buckets(lambda a: DUMP_GROUPS, "kvin-n0", 17) == []              # group_id=17 is not 179111
    assert group_buckets(lambda a: " group_id=4,type=select\n", "kvin-n0", 4) == []


def test_port_and_table_names():
    plan = plan_of()
    assert _port_name(plan, "kvin-n0", "1001") == "1001 (kvinp2, veth from pod/default/client)"
    assert _port_name(plan, "kvin-vs0", "10") == "10 (kvinun0.0, link from kvinnu0.0)"
    assert _port_name(plan, "kvin-n0", "77") == "77"
    assert _port_name(plan, "kvin-nope", "1") == "1"
    assert _table_name(plan, "kvin-n0", 21) == "service"
    assert _table_name(plan, "kvin-vs0", 50) == "sg_ingress"
    assert _table_name(plan, "kvin-ed0", 10) == "translate"
    assert _table_name(plan, "kvin-n0", 99) == "?" and _table_name(plan, "kvin-nope", 0) == "?"


def test_destinations():
    plan = plan_of()
    assert _destination_ip(plan, "svc/default/web-inet") == "172.21.0.11"
    assert _destination_ip(plan, "eip/eip-bastion") == "198.19.0.10"
    assert _destination_ip(plan, "slb/default/web-inet") == "192.168.1.3"
    assert _destination_ip(plan, "198.18.0.3") == "198.18.0.3"
    assert _destination_ip(plan, "inet/server") == "198.18.0.3"
    assert _destination_ip(plan, "node/node-2") == "192.168.1.2"
    for dest, message in [("svc/default/nope", "no Service 'svc/default/nope'"), ("eip/nope", "no EIP 'nope'"),
                          ("slb/default/nope", "no SLB 'slb/default/nope'"),
                          ("pod/default/nope", "no endpoint 'pod/default/nope'; expected pod/<namespace>/<name>, "
                                               "ecs/<name>, node/<name> or inet/<name>")]:
        with pytest.raises(KubevpcError, match=message.replace("(", r"\(").replace(")", r"\)")):
            _destination_ip(plan, dest)
    headless = plan_of(SERVICES)
    with pytest.raises(KubevpcError, match="Service default/web-headless has no ClusterIP"):
        _destination_ip(headless, "svc/default/web-headless")


# ------------------------------------------------------------------------- scripted Open vSwitch
def ovs(flow: str, bridges: list, final: str, actions: str, resumed: str = "", nat: str = "") -> str:
    """ofproto/trace's text, as in the captures: `bridges` is [(bridge, [(table, match, priority,
    cookie, [actions])])]; `resumed`, the Flow of the recirculation after it."""
    lines = [f"Flow: {flow}", ""]
    for bridge, hits in bridges:
        lines += [f'bridge("{bridge}")', "-" * (len(bridge) + 10)]
        for table, match, priority, cookie, acts in hits:
            lines.append(f"{table:2d}. " + (f"{match}, " if match else "") + f"priority {priority}, cookie {cookie:#x}")
            lines += ["    " + a for a in acts]
        lines.append("")
    lines += [f"Final flow: {final}", "Megaflow: recirc_id=0,eth,ip,nw_frag=no", f"Datapath actions: {actions}"]
    if resumed:
        lines += ["", "=" * 79, "recirc(0x99) - resume conntrack with default ct_state=trk|new (use --ct-next to "
                  "customize)", "Replacing src/dst IP/ports to simulate NAT:", f" Initial flow: {nat}",
                  f" Modified flow: {nat}", "=" * 79, "", f"Flow: {resumed}", "", 'bridge("x")', "-" * 11,
                  "    thaw", "", "Final flow: unchanged", "Datapath actions: drop"]
    return "\n".join(lines) + "\n"


class Script:
    """ovs-appctl as a list of the calls expected, in order: (command, bridge, fields the flow must
    have, the actions of a trace-packet-out or None) and the text answered."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.calls: list[tuple] = []

    def __call__(self, *args):
        if args == ("dpif/show",):
            return DPIF
        self.calls.append(args)
        assert self.steps, f"an unexpected call: {args}"
        (command, bridge, want, actions), text = self.steps.pop(0)
        assert (args[0], args[1]) == (command, bridge), args
        got = fields(args[2])
        for key, value in want.items():
            assert got.get(key) == value, f"call {len(self.calls)} {args}: {key}={got.get(key)!r}, expected {value!r}"
        if command == "ofproto/trace-packet-out":
            assert args[3] == actions, args
        else:
            assert len(args) == 3 and "ct_state" not in got, args
        return text


def trace_call(bridge, **want):
    return ("ofproto/trace", bridge, want, None)


def resume_call(bridge, actions, **want):
    return ("ofproto/trace-packet-out", bridge, want, actions)


CLIENT = "in_port=1001,vlan_tci=0x0000,dl_src=0a:58:0a:f4:00:03,dl_dst=0a:58:0a:f4:00:01,nw_src=10.244.0.3"


def to_the_internet(snat: bool = True, dest_port: int = 80) -> list:
    """pod/default/client to inet/server 80: the node's three captured passes (SNAT to the node),
    then the vSwitch and vRouter (a conntrack pass), the edge (the NAT gateway's SNAT) and the
    internet router, written as Open vSwitch would print them."""
    node = "nw_src=192.168.1.1,nw_dst=198.18.0.3,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=no,tp_src=61000,tp_dst=80"
    at_vs0 = f"tcp,in_port=10,vlan_tci=0x0000,dl_src=0a:58:c0:a8:01:01,dl_dst=0a:58:c0:a8:01:fd,{node},tcp_flags=syn"
    at_ed0 = f"tcp,in_port=1,vlan_tci=0x0000,dl_src=0a:58:c0:a8:01:fe,dl_dst=0a:58:c6:13:00:fe,{node},tcp_flags=syn"
    public = "198.19.0.1" if snat else "192.168.1.1"
    out = at_ed0.replace("nw_src=192.168.1.1", f"nw_src={public}").replace("nw_ttl=63", "nw_ttl=62")
    return [
        (trace_call("kvin-n0", in_port="1001", tcp="", nw_src="10.244.0.3", nw_dst="198.18.0.3", tp_src="40000",
                    tp_dst="80", tcp_flags="syn", dl_dst="0a:58:0a:f4:00:01"), FIRST),
        (resume_call("kvin-n0", "resubmit(,21)", ct_state="new|trk", ct_zone="27874", nw_src="10.244.0.3"), RESUMED),
        (resume_call("kvin-n0", "resubmit(,35)", ct_state="new|trk|snat", ct_zone="60642", nw_src="192.168.1.1",
                     tp_src="61000", nw_ttl="63"), THIRD_PASS),
        (trace_call("kvin-vs0", in_port="10", nw_src="192.168.1.1", tp_src="61000", dl_src="0a:58:c0:a8:01:01",
                    nw_dst="198.18.0.3"),
         ovs(at_vs0, [("kvin-vs0", [(0, "ip,in_port=10", 100, 0x11, ["goto_table:20"]),
                                    (20, "ip", 100, 0x12, ["ct(table=30,zone=27872)"])])],
             at_vs0, "ct(zone=27872),recirc(0x20)", resumed=f"recirc_id=0x20,ct_state=new|trk,ct_zone=27872,eth,"
                                                            f"{at_vs0}")),
        (resume_call("kvin-vs0", "resubmit(,30)", ct_state="new|trk", in_port="10"),
         ovs(at_vs0, [("kvin-vs0", [(30, "ct_state=+new+trk,ip", 10, 0x13, ["ct(commit,zone=27872)", "goto_table:40"]),
                                    (40, "ip,dl_dst=0a:58:c0:a8:01:fd", 100, 0x14, ["output:1"])]),
                      ("kvin-vr0", [(0, "ip,in_port=1", 100, 0x15, ["goto_table:20"]),
                                    (20, "ip", 10, 0x16, ["dec_ttl", "goto_table:30"]),
                                    (30, "ip", 10, 0x17, ["output:100"])])],
             at_ed0.replace("in_port=1", "in_port=10").replace("nw_ttl=63", "nw_ttl=62"),
             "ct(commit,zone=27872),set(eth(src=0a:58:c0:a8:01:fe,dst=0a:58:c6:13:00:fe)),set(ipv4(ttl=62)),6")),
        (trace_call("kvin-ed0", in_port="1", nw_src="192.168.1.1", nw_ttl="62", dl_dst="0a:58:c6:13:00:fe"),
         ovs(at_ed0, [("kvin-ed0", [(0, "ip,in_port=1", 100, 0x18, ["goto_table:10"]),
                                    (10, "ip,nw_src=192.168.1.0/24", 50, 0x19,
                                     [f"ct(commit,table=20,zone=27876,nat(src={public}))", f"nat(src={public})"])])],
             at_ed0, f"ct(commit,zone=27876,nat(src={public})),recirc(0x21)",
             resumed=f"recirc_id=0x21,ct_state=new|trk,ct_zone=27876,eth,{out}",
             nat=f"nw_src={public}")),
        (resume_call("kvin-ed0", "resubmit(,20)", ct_state="new|trk|snat", nw_src=public, in_port="1"),
         ovs(out, [("kvin-ed0", [(20, "ip", 10, 0x1a, ["output:2"])]),
                   ("kvin-inet", [(0, "ip,in_port=1", 100, 0x1b, ["goto_table:20"]),
                                  (20, f"ip,nw_dst=198.18.0.3,tp_dst={dest_port}", 100, 0x1c, ["output:11"])])],
             out, "set(eth(src=0a:58:c6:12:00:01,dst=0a:58:c6:12:00:03)),14")),
    ]


def test_a_connection_to_the_internet_pass_by_pass_and_bridge_by_bridge():
    plan = plan_of()
    script = Script(*to_the_internet())
    t = Tracer(plan, appctl=script, ofctl=lambda a: pytest.fail("no group here")).trace("pod/default/client",
                                                                                          "inet/server", 80)
    assert not script.steps, "some expected calls were not made"
    # the continuation of the captured first pass is traced with the very flow resumed.txt was captured with
    assert flow_text({"ct_state": "new|trk", **{k: v for k, v in fields(parse(FIRST).resumed_flow).items()
                                                if k not in ("recirc_id", "ct_state", "eth")}}) == \
        RESUMED.splitlines()[0].removeprefix("Flow: ")
    assert fields(script.calls[1][2]) == fields(RESUMED.splitlines()[0].removeprefix("Flow: "))
    assert (t.outcome, t.delivered_to, t.delivered_at, t.seen_source) == ("delivered", "inet/server",
                                                                          "198.18.0.3:80", "198.19.0.1")
    assert t.reason == "delivered to inet/server at 198.18.0.3:80, from 198.19.0.1"
    assert [(h.bridge, h.role, h.bridges) for h in t.hops] == [
        ("kvin-n0", "node", ["n0"]), ("kvin-vs0", "vswitch", ["vs0", "vr0"]), ("kvin-ed0", "edge", ["ed0", "inet"])]
    n0, vs0, ed0 = t.hops
    assert n0.in_port == "1001 (kvinp2, veth from pod/default/client)"
    assert n0.packet == "10.244.0.3:40000 → 198.18.0.3:80"
    assert vs0.in_port == "10 (kvinun0.0, link from kvinnu0.0)" and vs0.packet == "192.168.1.1:61000 → 198.18.0.3:80"
    assert ed0.in_port == "1 (kvinev0, link from kvinve0)"
    assert n0.outcome == "out of kvinnu0.0, a veth pair, into kvin-vs0 port 10"
    assert vs0.outcome == "out of kvinve0, a veth pair, into kvin-ed0 port 1"
    assert ed0.outcome == "delivered to inet/server through kvini1"
    # tables in the pipeline's names, with the compiler's notes (the captured cookies are this plan's)
    assert [x.split(":")[0] for x in n0.tables] == [
        "n0 table 0 (classify)", "n0 table 15 (unsnat)", "n0 table 20 (conntrack)", "n0 table 21 (service)",
        "n0 table 24 (destination)", "n0 table 25 (egress_policy)", "n0 table 26 (ingress_policy)",
        "n0 table 27 (endpoint)", "n0 table 29 (commit)", "n0 table 30 (route)", "n0 table 35 (snat_out)",
        "n0 table 36 (uplink)"]
    assert n0.tables[0] == "n0 table 0 (classify): pod/default/client: IPv4"
    assert "n0 table 30 (route): pod to the VPC: SNAT to the node address (in the SNAT zone)" in n0.tables
    assert "SNAT to 192.168.1.1:61000-65535 (conntrack zone 60642)" in n0.decisions
    assert "pod to the VPC: SNAT to the node address (in the SNAT zone)" in n0.decisions
    assert not any("everything else" in d or "where the policy tables read them" in d for d in n0.decisions)
    # a flow without a note is shown by its match
    assert vs0.tables[0] == "vs0 table 0 (classify): ip,in_port=10, priority 100 [cookie 0x11]"
    assert vs0.tables[-1] == "vr0 table 30 (neighbor): ip, priority 10 [cookie 0x17]"
    assert ed0.decisions == ["SNAT to 198.19.0.1 (conntrack zone 27876)"]
    doc = json.loads(json.dumps(t.as_dict()))
    assert doc["outcome"] == "delivered" and len(doc["hops"]) == 3 and doc["branches"] == []


def test_the_module_trace_puts_the_evaluator_beside_it(monkeypatch):
    monkeypatch.setattr(ovstrace, "appctl", Script(*to_the_internet()))
    t = trace_mod.trace(plan_of(), "pod/default/client", "inet/server", 80)
    assert t.expected.allowed is True and t.expected.seen_source == "198.19.0.1"
    assert t.disagreement == ""
    assert t.as_dict()["expected"] == {"allowed": True, "reason": "out through the edge as 198.19.0.1",
                                       "seen_source": "198.19.0.1"}


def test_the_module_trace_flags_a_disagreement(monkeypatch):
    """A network that forgot the NAT gateway's SNAT: the server would see the node's address."""
    monkeypatch.setattr(ovstrace, "appctl", Script(*to_the_internet(snat=False)))
    t = trace_mod.trace(plan_of(), "pod/default/client", "inet/server", 80)
    assert t.outcome == "delivered" and t.seen_source == "192.168.1.1"
    assert t.disagreement == "the evaluator expects the server to see 198.19.0.1, the trace delivers from 192.168.1.1"


# --------------------------------------------------------------------------------- select groups
NODE1_POD = ("tcp,reg0=0x1,in_port=1001,vlan_tci=0x0000,dl_src=0a:58:0a:f4:00:03,dl_dst=0a:58:0a:f4:00:01,"
             "nw_src=10.244.0.3,nw_dst={dst},nw_tos=0,nw_ecn=0,nw_ttl={ttl},nw_frag=no,tp_src=40000,tp_dst={port},"
             "tcp_flags=syn")


def via_the_service(first_bucket_drops: bool = False) -> list:
    """pod/default/client to the ClusterIP of default/web-inet: conntrack, the Service's select
    group (two buckets), each bucket's DNAT; web-0 is on the same node, web-1 across VXLAN."""
    vip = NODE1_POD.format(dst="172.21.0.11", ttl=64, port=80)
    ct = "ct_state=new|trk,ct_zone=27874," + vip
    web0 = NODE1_POD.format(dst="10.244.0.2", ttl=64, port=8080)
    web1 = NODE1_POD.format(dst="10.244.1.2", ttl=64, port=8080)
    out1 = web1.replace("dl_src=0a:58:0a:f4:00:03,dl_dst=0a:58:0a:f4:00:01",
                        "dl_src=0a:58:0a:f4:00:01,dl_dst=0a:58:0a:f4:01:01")   # to node-2's pod gateway
    outer_n0 = ("udp,in_port=1,vlan_tci=0x0000,dl_src=0a:58:c0:a8:01:01,dl_dst=0a:58:c0:a8:01:02,nw_src=192.168.1.1,"
                "nw_dst=192.168.1.2,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=49152,tp_dst=4789")
    outer_vs0 = outer_n0.replace("in_port=1,", "in_port=10,")
    outer_n1 = outer_n0.replace("in_port=1,", "in_port=2,")
    inner_n1 = out1.replace("in_port=1001", "in_port=100")
    bucket0, bucket1 = BUCKETS
    dnat = "ct(commit,table=30,zone=27874,nat(dst={}))"
    return [
        (trace_call("kvin-n0", nw_dst="172.21.0.11", tp_dst="80"),
         ovs(vip, [("kvin-n0", [(0, "ip,in_port=1001", 200, 0x8000000bc7c9b06, ["goto_table:20"]),
                                (20, "ip", 100, 0x1000000dc440dd1, ["ct(table=21,zone=27874,nat)", "nat"])])],
             vip, "ct(zone=27874,nat),recirc(0x30)", resumed="recirc_id=0x30,eth," + ct)),
        (resume_call("kvin-n0", "resubmit(,21)", ct_state="new|trk", nw_dst="172.21.0.11"),
         ovs(ct, [("kvin-n0", [(21, "ct_state=+new+trk,tcp,nw_dst=172.21.0.11,tp_dst=80", 200, 0x41,
                               ["group:179111"])])], ct, "hash(l4(0)),recirc(0x31)")),
        # bucket 0: web-0, on this node
        (resume_call("kvin-n0", bucket0, ct_state="new|trk", nw_dst="172.21.0.11", tp_dst="80"),
         ovs(ct, [("kvin-n0", [(25, "ip", 0, 0x42, ["goto_table:29"]),
                               (29, "ip", 100, 0x43, [dnat.format("10.244.0.2:8080"), "nat(dst=10.244.0.2:8080)"])])],
             ct, "ct(commit,zone=27874,nat(dst=10.244.0.2:8080)),recirc(0x32)",
             resumed="recirc_id=0x32,ct_state=new|trk,ct_zone=27874,eth," + web0)),
        (resume_call("kvin-n0", "resubmit(,30)", ct_state="new|trk|dnat", nw_dst="10.244.0.2", tp_dst="8080"),
         ovs(web0, [("kvin-n0", [(30, "ip,nw_dst=10.244.0.2", 100, 0x44, ["output:1000"])])], web0,
             "drop" if first_bucket_drops else "17")),
        # bucket 1: web-1, on node-2: into the VXLAN device
        (resume_call("kvin-n0", bucket1, ct_state="new|trk", nw_dst="172.21.0.11"),
         ovs(ct, [("kvin-n0", [(29, "ip", 100, 0x43, [dnat.format("10.244.1.2:8080")])])],
             ct, "ct(commit,zone=27874,nat(dst=10.244.1.2:8080)),recirc(0x33)",
             resumed="recirc_id=0x33,ct_state=new|trk,ct_zone=27874,eth," + web1)),
        (resume_call("kvin-n0", "resubmit(,30)", ct_state="new|trk|dnat", nw_dst="10.244.1.2"),
         ovs(web1, [("kvin-n0", [(30, "ip,nw_dst=10.244.1.0/24", 100, 0x45, ["output:100"])])], out1, "21")),
        # the outer packet: from the node's own port, across vsw-a, to node-2's
        (trace_call("kvin-n0", in_port="1", udp="", nw_src="192.168.1.1", nw_dst="192.168.1.2", udp_src="49152",
                    udp_dst="4789", dl_dst="0a:58:c0:a8:01:02", dl_src="0a:58:c0:a8:01:01"),
         ovs(outer_n0, [("kvin-n0", [(0, "udp,in_port=1", 100, 0x46, ["output:2"])])], outer_n0, "19")),
        (trace_call("kvin-vs0", in_port="10", udp="", nw_dst="192.168.1.2", udp_dst="4789"),
         ovs(outer_vs0, [("kvin-vs0", [(40, "dl_dst=0a:58:c0:a8:01:02", 100, 0x47, ["output:11"])])], outer_vs0, "25")),
        (trace_call("kvin-n1", in_port="2", udp="", nw_dst="192.168.1.2"),
         ovs(outer_n1, [("kvin-n1", [(0, "udp,in_port=2,tp_dst=4789", 100, 0x48, ["output:1"])])], outer_n1, "3")),
        # decapsulated by node-2's VXLAN device: the inner packet enters at the tunnel port, DNAT kept
        (trace_call("kvin-n1", in_port="100", tcp="", nw_src="10.244.0.3", nw_dst="10.244.1.2", tp_dst="8080",
                    dl_dst="0a:58:0a:f4:01:01"),
         ovs(inner_n1, [("kvin-n1", [(0, "ip,in_port=100", 100, 0x49, ["output:1000"])])], inner_n1, "4")),
    ]


def test_a_service_is_followed_through_every_bucket_and_across_vxlan():
    plan = plan_of()
    script = Script(*via_the_service())
    asked = []

    def ofctl(args):
        asked.append(args)
        return DUMP_GROUPS
    t = Tracer(plan, flows={}, appctl=script, ofctl=ofctl).trace("pod/default/client", "svc/default/web-inet", 80)
    assert not script.steps and asked == [["-O", "OpenFlow13", "dump-groups", "kvin-n0", "group_id=179111"]]
    assert (t.outcome, t.reason) == ("branches", "2 bucket(s) of group 179111")
    assert t.hops[0].outcome == "select group 179111: one bucket per connection; each followed"
    assert [b.via for b in t.branches] == ["endpoint 10.244.0.2:8080", "endpoint 10.244.1.2:8080"]
    web0, web1 = (b.trace for b in t.branches)
    assert (web0.outcome, web0.delivered_to, web0.delivered_at, web0.seen_source) == \
        ("delivered", "pod/default/web-0", "10.244.0.2:8080", "10.244.0.3")
    assert web0.hops[0].decisions == ["DNAT to 10.244.0.2:8080 (conntrack zone 27874)"]
    assert (web1.outcome, web1.delivered_to, web1.delivered_at, web1.seen_source) == \
        ("delivered", "pod/default/web-1", "10.244.1.2:8080", "10.244.0.3")
    assert [(h.bridge, h.in_port.split(" ")[0]) for h in web1.hops] == [
        ("kvin-n0", "1001"), ("kvin-n0", "1"), ("kvin-vs0", "10"), ("kvin-n1", "2"), ("kvin-n1", "100")]
    assert web1.hops[0].outcome == "into the VXLAN device (port 100), to node node-2"
    assert web1.hops[0].decisions[-1] == ("VXLAN VNI 1: 10.244.0.3 → 10.244.1.2 is carried in UDP "
                                          "192.168.1.1:49152 → 192.168.1.2:4789, sent from node node-1's namespace")
    assert web1.hops[1].packet == "192.168.1.1:49152 → 192.168.1.2:4789"
    assert web1.hops[3].outcome == "to node node-2's namespace, whose VXLAN device decapsulates it"
    assert web1.hops[4].outcome == "delivered to pod/default/web-1 through kvinp1"
    assert [x.outcome for x in t.leaves()] == ["delivered", "delivered"]
    doc = t.as_dict()
    assert [b["via"] for b in doc["branches"]] == ["endpoint 10.244.0.2:8080", "endpoint 10.244.1.2:8080"]
    assert doc["branches"][1]["delivered_to"] == "pod/default/web-1"


def test_a_bucket_that_drops_is_a_disagreement(monkeypatch):
    monkeypatch.setattr(ovstrace, "appctl", Script(*via_the_service(first_bucket_drops=True)))
    monkeypatch.setattr(ovstrace, "ofctl", lambda args: DUMP_GROUPS)
    t = trace_mod.trace(plan_of(), "pod/default/client", "svc/default/web-inet", 80)
    assert [x.outcome for x in t.leaves()] == ["dropped", "delivered"]
    assert t.expected.allowed is True
    assert t.disagreement.startswith("the evaluator says it connects, but the trace ends dropped: dropped on n0 in "
                                     "table 30 (route)"), t.disagreement


def test_buckets_beyond_max_leaves_are_not_followed():
    plan = plan_of()
    n = MAX_LEAVES + 4
    vip = NODE1_POD.format(dst="172.21.0.11", ttl=64, port=80)
    group = ovs(vip, [("kvin-n0", [(21, "tcp", 200, 0x41, ["group:179111"])])], vip, "hash(l4(0)),recirc(0x31)")
    drop = ovs(vip, [("kvin-n0", [(25, "ip", 0, 0x42, ["drop"])])], vip, "drop")
    answers = iter([group] + [drop] * MAX_LEAVES)
    buckets = ",".join(f"bucket=weight:1,actions=set_field:{0xaf40002 + i:#x}->reg2,set_field:0x1f90->reg3,resubmit(,25)"
                       for i in range(n))
    t = Tracer(plan, flows={}, appctl=lambda *a: DPIF if a == ("dpif/show",) else next(answers),
               ofctl=lambda a: f" group_id=179111,type=select,{buckets}\n").trace("pod/default/client",
                                                                               "svc/default/web-inet", 80)
    assert len(t.branches) == MAX_LEAVES
    assert t.hops[0].outcome == f"select group 179111: one bucket per connection; {MAX_LEAVES} of {n} followed"
    assert t.branches[-1].via == f"endpoint 10.244.0.{2 + MAX_LEAVES - 1}:8080"
    assert all(x.outcome == "dropped" for x in t.leaves())


def test_an_empty_group_drops():
    plan = plan_of()
    vip = NODE1_POD.format(dst="172.21.0.11", ttl=64, port=80)
    text = ovs(vip, [("kvin-n0", [(21, "tcp", 200, 0x41, ["group:179111"])])], vip, "hash(l4(0)),recirc(0x31)")
    t = Tracer(plan, flows={}, appctl=lambda *a: DPIF if a == ("dpif/show",) else text,
               ofctl=lambda a: " group_id=179111,type=select\n").trace("pod/default/client", "svc/default/web-inet", 80)
    assert (t.outcome, t.reason) == ("dropped", "group 179111 on kvin-n0 has no bucket: nothing to send to (dropped)")
    assert t.hops[0].outcome == "select group 179111 has no bucket"


# ------------------------------------------------------------------------------ ends of a trace
def single(text: str, flows: dict | None = None, dest: str = "inet/server", port: int = 80, proto: str = "tcp"):
    calls = []

    def appctl(*args):
        if args == ("dpif/show",):
            return DPIF
        calls.append(args)
        return text
    t = Tracer(plan_of(), flows=flows or {}, appctl=appctl, ofctl=lambda a: "").trace("pod/default/client", dest,
                                                                                     port, proto)
    return t, calls


def notes(bridge: str, *flows: tuple[int, str, str]) -> dict:
    return {bridge: SimpleNamespace(flows=[SimpleNamespace(cookie=c, feature=f, note=n) for c, f, n in flows])}


PACKET = NODE1_POD.format(dst="198.18.0.3", ttl=64, port=80)


def test_a_drop_names_the_table_and_the_flow():
    text = ovs(PACKET, [("kvin-n0", [(0, "ip", 200, 0x1, ["goto_table:25"]),
                                     (25, "ip,nw_dst=198.18.0.0/24", 50, 0x2, ["drop"])])], PACKET, "drop")
    t, calls = single(text)
    assert (t.outcome, t.hops[0].outcome) == ("dropped", "dropped") and len(calls) == 1
    assert t.reason == "dropped on n0 in table 25 (egress_policy) by ip,nw_dst=198.18.0.0/24"
    t, _ = single(text, notes("kvin-n0", (0x2, "netpol", "default deny: pod/default/client is isolated for egress")))
    assert t.reason == ("dropped on n0 in table 25 (egress_policy): default deny: pod/default/client is isolated "
                        "for egress")
    assert "default deny: pod/default/client is isolated for egress" in t.hops[0].decisions
    t, _ = single(ovs(PACKET, [("kvin-n0", [(26, "", 0, 0x3, [])])], PACKET, "drop"))
    assert t.reason == "dropped on n0 in table 26 (ingress_policy) by its default"
    t, _ = single(ovs(PACKET, [], PACKET, "drop"))
    assert (t.outcome, t.reason) == ("dropped", "dropped")


def test_a_packet_in_is_a_refusal_when_a_reject_flow_sent_it():
    userspace = "userspace(pid=0,controller(reason=1,dont_send=0,continuation=0,recirc_id=9,rule_cookie=0x5,max_len=65535))"
    text = ovs(PACKET, [("kvin-n0", [(21, "tcp,nw_dst=172.21.0.16", 100, 0x5, ["controller(reason=no_match)"])])],
               PACKET, userspace)
    t, _ = single(text, notes("kvin-n0", (0x5, "reject", "Service default/empty: no ready endpoint: reject")))
    assert (t.outcome, t.hops[0].outcome) == ("controller", "to the controller (packet-in)")
    assert t.reason.startswith("sent to the controller, which answers for the Service with a TCP reset")
    t, _ = single(text)
    assert t.reason == "sent to the controller (packet-in)"


def test_ports_the_tracer_does_not_follow():
    t, _ = single(ovs(PACKET, [("kvin-n0", [(0, "ip", 1, 1, ["output:65534"])])], PACKET, "23"))
    assert (t.outcome, t.reason) == ("unfinished", "out of kvin-n0 port 65534 (kvin-n0), which kubevpc does not follow")
    t, _ = single(ovs(PACKET, [("kvin-n0", [(0, "ip", 1, 1, ["output:9"])])], PACKET, "99"))
    assert t.reason == "out of ? port 0 (datapath port 99), which kubevpc does not follow"


def test_several_outputs_follow_the_first():
    t, _ = single(ovs(PACKET, [("kvin-n0", [(0, "ip", 1, 1, ["output:1000", "output:1002"])])], PACKET, "17,20"))
    assert t.hops[0].decisions == ["sent to 2 ports; following the first"]
    assert t.delivered_to == "pod/default/web-0"


def test_a_vxlan_device_without_that_peer_drops():
    t, _ = single(ovs(PACKET, [("kvin-n0", [(30, "ip", 1, 1, ["output:100"])])],
                      PACKET.replace("dl_dst=0a:58:0a:f4:00:01", "dl_dst=0a:58:0a:f4:09:09"), "21"))
    assert (t.outcome, t.reason) == ("dropped", "the VXLAN device knows no peer at 0a:58:0a:f4:09:09: dropped")
    assert t.hops[0].outcome == "into the VXLAN device"


def test_a_recirculation_without_a_ct_table_is_unfinished():
    t, calls = single(ovs(PACKET, [("kvin-n0", [(20, "ip", 1, 1, ["ct(zone=27874)"])])], PACKET,
                          "ct(zone=27874),recirc(0x7)"))
    assert (t.outcome, t.reason) == ("unfinished", "a recirculation without a ct(table=...) to resume from")
    assert len(calls) == 1


def test_a_trace_gives_up_after_max_calls():
    endless = ovs(PACKET, [("kvin-n0", [(21, "ip", 1, 1, ["ct(table=21,zone=27874,nat)"])])], PACKET,
                  "ct(zone=27874,nat),recirc(0x7)", resumed="recirc_id=0x7,ct_state=new|trk,eth," + PACKET)
    t, calls = single(endless)
    assert len(calls) == MAX_CALLS
    assert (t.outcome, t.reason) == ("unfinished", f"gave up after {MAX_CALLS} ofproto/trace calls")
    assert calls[1][0] == "ofproto/trace-packet-out" and calls[1][3] == "resubmit(,21)"


def test_a_ct_action_on_a_patch_neighbour_resumes_there():
    at_vr0 = PACKET
    first = ovs(PACKET, [("kvin-vs1", [(40, "ip", 1, 1, ["output:1"])]),
                         ("kvin-vr0", [(20, "ip", 1, 2, ["ct(table=30,zone=27871)"])])], PACKET,
                "ct(zone=27871),recirc(0x8)", resumed="recirc_id=0x8,ct_state=new|trk,eth," + at_vr0)
    then = ovs(at_vr0, [("kvin-vr0", [(30, "ip", 1, 3, ["drop"])])], at_vr0, "drop")
    answers = iter([first, then])
    calls = []

    def appctl(*args):
        if args == ("dpif/show",):
            return DPIF
        calls.append(args)
        return next(answers)
    t = Tracer(plan_of(), flows={}, appctl=appctl, ofctl=lambda a: "").trace("ecs/bastion", "inet/server", 80)
    assert [c[:2] for c in calls] == [("ofproto/trace", "kvin-vs1"), ("ofproto/trace-packet-out", "kvin-vr0")]
    assert calls[1][3] == "resubmit(,30)"
    assert [h.bridge for h in t.hops] == ["kvin-vs1", "kvin-vr0"]
    assert t.hops[0].outcome == "over a patch port to kvin-vr0"
    assert t.reason == "dropped on vr0 in table 30 (neighbor) by ip"


def test_udp_traces_say_udp_src_and_udp_dst():
    udp = PACKET.replace("tcp,", "udp,").replace(",tcp_flags=syn", "")
    t, calls = single(ovs(udp, [("kvin-n0", [(0, "udp", 1, 1, ["output:1002"])])], udp, "20"),
                      dest="svc/kube-system/kube-dns", port=53, proto="UDP")
    sent = fields(calls[0][2])
    assert "udp" in sent and sent["udp_dst"] == "53" and sent["udp_src"] == "40000" and "tcp_flags" not in sent
    assert sent["nw_dst"] == "172.21.0.10" and t.proto == "udp"
    assert t.delivered_to == "pod/kube-system/kube-dns-0"


def test_bad_requests():
    tracer = Tracer(plan_of(), flows={}, appctl=lambda *a: DPIF, ofctl=lambda a: "")
    with pytest.raises(KubevpcError, match="protocol 'icmp': expected tcp or udp"):
        tracer.trace("pod/default/client", "inet/server", 80, "icmp")
    with pytest.raises(KubevpcError, match=r"no endpoint 'pod/default/nope'; expected pod/<namespace>/<name>"):
        tracer.trace("pod/default/nope", "inet/server", 80)


def test_next_hop_macs():
    plan = plan_of()
    tracer = Tracer(plan, flows={}, appctl=lambda *a: DPIF, ofctl=lambda a: "")
    bastion = plan.host("ecs/bastion")
    assert tracer._next_hop_mac(bastion, "192.168.2.2") == plan.host("ecs/ecs-private").mac      # its subnet
    assert tracer._next_hop_mac(bastion, "192.168.2.253") == bastion.gateway_mac                # the gateway
    assert tracer._next_hop_mac(bastion, "198.18.0.3") == bastion.gateway_mac                   # elsewhere
    node1 = plan.host("ecs/node-1")
    assert tracer._next_hop_mac(node1, "192.168.1.3") == plan.host("slb/default/web-inet").mac
    assert tracer._next_hop_mac(node1, "192.168.1.2") == "0a:58:c0:a8:01:02"


# ------------------------------------------------------------------------- beside the evaluator
def leaf(outcome: str, seen: str = "10.0.0.1", reason: str = "") -> Trace:
    t = Trace("pod/a/b", "pod/c/d", 80, "tcp", [], outcome, reason or f"{outcome} somewhere")
    if outcome == "delivered":
        t.seen_source = seen
    return t


def branches(*leaves: Trace) -> Trace:
    t = Trace("pod/a/b", "svc/c/d", 80, "tcp", [], "branches", "")
    t.branches = [Branch(f"endpoint {i}", x) for i, x in enumerate(leaves)]
    return t


def explanation(allowed, seen: str = "", reason: str = "why", steps=(), branches=()):
    return SimpleNamespace(allowed=allowed, seen_source=seen, reason=reason, steps=tuple(steps),
                           branches=tuple(branches))


def step(stage: str, passes) -> SimpleNamespace:
    return SimpleNamespace(stage=stage, passes=passes, text="")


def test_compare_agreements():
    assert compare(leaf("delivered", "10.0.0.1"), explanation(True, "10.0.0.1")) == ""
    assert compare(leaf("delivered"), explanation(True, "")) == ""                  # no address to check
    assert compare(leaf("dropped"), explanation(False)) == ""
    assert compare(leaf("controller"), explanation(False)) == ""                   # refused: no endpoint
    assert compare(branches(leaf("refused"), leaf("dropped")), explanation(False)) == ""
    assert compare(branches(leaf("delivered"), leaf("dropped")), explanation(None)) == ""
    assert compare(branches(leaf("delivered"), leaf("delivered")), explanation(True, "10.0.0.1")) == ""
    # nothing listens: the evaluator refuses it, the network delivers it (the host refuses it)
    assert compare(leaf("delivered"), explanation(False, steps=[step("destination", False)])) == ""
    # ... also when it is one endpoint of a Service that does not listen
    inner = explanation(False, steps=[step("destination", False)])
    assert compare(branches(leaf("delivered"), leaf("delivered")),
                   explanation(None, branches=[SimpleNamespace(target="x", explanation=inner)])) == ""


def test_compare_disagreements():
    assert compare(leaf("dropped", reason="dropped on vs1 in table 50 (sg_ingress): no rule"), explanation(True)) == \
        "the evaluator says it connects, but the trace ends dropped: dropped on vs1 in table 50 (sg_ingress): no rule"
    assert compare(branches(leaf("delivered"), leaf("unfinished", reason="gave up")), explanation(True)) == \
        "the trace cannot say: it ends unfinished: gave up"
    # an unfinished trace agrees with nothing, a refusal included
    assert compare(leaf("unfinished", reason="out of a port it does not follow"), explanation(False)) == \
        "the trace cannot say: it ends unfinished: out of a port it does not follow"
    assert compare(leaf("delivered", reason="delivered to pod/c/d"), explanation(False, reason="sg-db denies it")) == \
        "the evaluator says it does not connect (sg-db denies it), but the trace delivers it: delivered to pod/c/d"
    # a refusal on one branch does not excuse a delivery on another
    assert compare(branches(leaf("controller"), leaf("delivered", reason="delivered to pod/c/e")),
                   explanation(False, reason="no ready endpoint")) == \
        "the evaluator says it does not connect (no ready endpoint), but the trace delivers it: delivered to pod/c/e"
    assert compare(branches(leaf("delivered"), leaf("delivered")), explanation(None)) == \
        "the evaluator says it depends on the endpoint, but the trace delivers every branch"
    assert compare(branches(leaf("dropped"), leaf("controller")), explanation(None)) == \
        "the evaluator says it depends on the endpoint, but the trace delivers no branch"
    assert compare(branches(leaf("delivered", "10.0.0.1"), leaf("delivered", "10.0.0.9")),
                   explanation(True, "10.0.0.1")) == \
        "the evaluator expects the server to see 10.0.0.1, the trace delivers from 10.0.0.9"


def test_leaves_of_nested_branches():
    a, b, c = leaf("delivered"), leaf("dropped"), leaf("controller")
    t = branches(a, branches(b, c))
    assert t.leaves() == [a, b, c]
    assert leaf("dropped").leaves()[0].outcome == "dropped"


def to_node2_port(port: int) -> list:
    """pod/default/client to node-2 (across the VPC, as the node SNATs it) at `port`."""
    pkt = NODE1_POD.format(dst="192.168.1.2", ttl=64, port=port)
    at_vs0 = pkt.replace("in_port=1001", "in_port=10").replace("nw_src=10.244.0.3", "nw_src=192.168.1.1")
    at_n1 = at_vs0.replace("in_port=10", "in_port=2")
    return [
        (trace_call("kvin-n0", nw_dst="192.168.1.2", tp_dst=str(port)),
         ovs(pkt, [("kvin-n0", [(36, "ip", 1, 1, ["output:2"])])], at_vs0.replace("in_port=10", "in_port=1001"), "19")),
        (trace_call("kvin-vs0", in_port="10"), ovs(at_vs0, [("kvin-vs0", [(60, "ip", 1, 1, ["output:11"])])], at_vs0,
                                                   "25")),
        (trace_call("kvin-n1", in_port="2"), ovs(at_n1, [("kvin-n1", [(0, "ip", 1, 1, ["output:1"])])], at_n1, "3")),
    ]


def test_delivered_to_an_instance_at_the_reject_port_is_refused(monkeypatch):
    monkeypatch.setattr(ovstrace, "appctl", Script(*to_node2_port(REJECT_PORT)))
    t = trace_mod.trace(plan_of(), "pod/default/client", "node/node-2", REJECT_PORT)
    assert t.outcome == "refused" and t.delivered_to == "ecs/node-2" and t.delivered_at == "192.168.1.2:1"
    assert t.reason.endswith("(port 1, where nothing listens: the node refuses it, as kube-proxy does for a Service "
                             "without endpoints)")
    monkeypatch.setattr(ovstrace, "appctl", Script(*to_node2_port(22)))
    t = trace_mod.trace(plan_of(), "pod/default/client", "node/node-2", 22)
    assert t.outcome == "delivered" and t.seen_source == "192.168.1.1"


def test_a_direct_connection_to_port_1_agrees_with_the_evaluator(monkeypatch):
    monkeypatch.setattr(ovstrace, "appctl", Script(*to_node2_port(REJECT_PORT)))
    t = trace_mod.trace(plan_of(), "pod/default/client", "node/node-2", REJECT_PORT)
    assert any(s.stage == "destination" and s.passes is False for s in t.expected.steps)
    assert t.disagreement == ""


def test_hit_dataclass_defaults():
    h = Hit("b", 1, 2, 3, "ip")
    assert h.actions == [] and Hit("b", 1, 2, 3, "").actions is not h.actions


def test_each_bucket_has_its_own_conntrack_history():
    """A DNAT committed on one bucket's way is no part of another bucket's connection."""
    vip = NODE1_POD.format(dst="172.21.0.11", ttl=64, port=80)
    web0 = NODE1_POD.format(dst="10.244.0.2", ttl=64, port=8080)
    script = Script(
        (trace_call("kvin-n0", nw_dst="172.21.0.11"),
         ovs(vip, [("kvin-n0", [(21, "tcp", 200, 0x41, ["group:179111"])])], vip, "hash(l4(0)),recirc(0x31)")),
        (resume_call("kvin-n0", BUCKETS[0]),
         ovs(vip, [("kvin-n0", [(29, "ip", 1, 1, ["ct(commit,table=30,zone=27874,nat(dst=10.244.0.2:8080))"])])], vip,
             "ct(commit,zone=27874,nat(dst=10.244.0.2:8080)),recirc(0x32)", resumed="recirc_id=0x32,eth," + web0)),
        (resume_call("kvin-n0", "resubmit(,30)", ct_state="new|trk|dnat"),
         ovs(web0, [("kvin-n0", [(30, "ip", 1, 2, ["output:1000"])])], web0, "17")),
        # the second bucket looks its connection up with nat: nothing was committed for it
        (resume_call("kvin-n0", BUCKETS[1]),
         ovs(vip, [("kvin-n0", [(28, "ip", 1, 3, ["ct(table=29,zone=27874,nat)"])])], vip,
             "ct(zone=27874,nat),recirc(0x33)", resumed="recirc_id=0x33,eth," + vip)),
        (resume_call("kvin-n0", "resubmit(,29)", ct_state="new|trk", nw_dst="172.21.0.11"),
         ovs(vip, [("kvin-n0", [(29, "ip", 1, 4, ["drop"])])], vip, "drop")),
    )
    t = Tracer(plan_of(), flows={}, appctl=script, ofctl=lambda a: DUMP_GROUPS).trace("pod/default/client",
                                                                                    "svc/default/web-inet", 80)
    assert not script.steps
    assert [x.outcome for x in t.leaves()] == ["delivered", "dropped"]
