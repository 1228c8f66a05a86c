"""The flow-table simulator the flow unit tests use (tests/unit/fakeoftable.py): OVS lookup
semantics with conjunctions, and walks through a pipeline."""
from __future__ import annotations

import pytest

from controller.flows import ETH_IP, Conjunction, Ct, Goto, Move, Output, Resubmit, SetField, flow
from tests.unit.fakeoftable import FakeOFTable, lookup


def packet(src: str, dst: str, proto: int, port: int) -> dict:
    return {"eth_type": ETH_IP, "ipv4_src": src, "ipv4_dst": dst, "ip_proto": proto,
            {6: "tcp_dst", 17: "udp_dst"}[proto]: port}


def _conj(prio, match, cid, k, n):
    return flow(0, prio, match, [Conjunction(cid, k, n)], "netpol")


def test_conjunction_semantics():
    go, drop = [Goto(1)], []
    flows = [_conj(50, {"ipv4_src": "10.0.0.1"}, 7, 1, 2), _conj(50, {"ipv4_src": "10.0.0.2"}, 7, 1, 2),
             _conj(50, {"ip_proto": 6, "tcp_dst": 80}, 7, 2, 2), flow(0, 50, {"conj_id": 7}, go),
             flow(0, 10, {"ipv4_dst": "10.0.0.9"}, drop), flow(0, 0, None, go)]
    tcp = packet("10.0.0.1", "10.0.0.9", 6, 80)
    assert lookup(flows, tcp).actions == tuple(go)                                  # both clauses
    assert lookup(flows, {**tcp, "tcp_dst": 81}).actions == ()                      # clause 2 missing
    assert lookup(flows, packet("10.0.0.3", "10.0.0.9", 6, 80)).actions == ()       # clause 1 missing
    assert lookup(flows, packet("10.0.0.2", "10.0.0.8", 17, 80)).actions == tuple(go)  # falls to 0
    # an ordinary flow above the conjunction wins; one below loses
    assert lookup(flows + [flow(0, 60, {"ipv4_src": "10.0.0.1"}, drop)], tcp).actions == ()
    # the conj_id flow competes in the second search: below the drop at 10, the drop wins there
    low = [f if f.match != (("conj_id", 7),) else flow(0, 5, {"conj_id": 7}, go) for f in flows]
    assert lookup(low, tcp).actions == ()
    assert lookup(low, {**tcp, "ipv4_dst": "10.0.0.8"}).actions == tuple(go)
    # an incomplete conjunction above lets a complete one below decide
    above = [_conj(70, {"ipv4_src": "10.0.0.1"}, 8, 1, 2), _conj(70, {"ip_proto": 17}, 8, 2, 2),
             flow(0, 70, {"conj_id": 8}, drop)]
    assert lookup(flows + above, tcp).actions == tuple(go)
    assert lookup(flows + above, packet("10.0.0.1", "10.0.0.8", 17, 80)).actions == ()
    assert lookup([f for f in flows if f.match != (("conj_id", 7),)], tcp).actions == ()  # no conj_id flow


def test_masks_and_prefixes():
    flows = [flow(0, 10, {"ipv4_dst": ("10.1.0.0", "255.255.0.0")}, [Output(1)]),
             flow(0, 20, {"ipv4_dst": "10.1.2.3"}, [Output(2)]),
             flow(0, 30, {"eth_type": ETH_IP, "ip_proto": 6, "tcp_dst": (0x1000, 0xF000)}, [Output(3)]),
             flow(0, 40, {"reg1": (4, 4)}, [Output(4)])]
    assert lookup(flows, {"ipv4_dst": "10.1.9.9"}).actions == (Output(1),)
    assert lookup(flows, {"ipv4_dst": "10.1.2.3"}).actions == (Output(2),)
    assert lookup(flows, {"ipv4_dst": "10.2.0.1"}) is None
    assert lookup(flows, {**packet("1.1.1.1", "10.1.2.3", 6, 0x1FFF)}).actions == (Output(3),)
    assert lookup(flows, {**packet("1.1.1.1", "10.1.2.3", 6, 0x2000)}).actions == (Output(2),)
    assert lookup(flows, {"reg1": 7, "ipv4_dst": "10.1.2.3"}).actions == (Output(4),)
    with pytest.raises(AssertionError, match="bits outside its mask"):
        lookup([flow(0, 1, {"reg1": (5, 4)}, [])], {"reg1": 5})


def test_equal_priority_flows_that_disagree_are_refused():
    flows = [flow(0, 5, {"ipv4_dst": "10.0.0.1"}, [Output(1)]), flow(0, 5, {"ip_proto": 6}, [Output(2)])]
    with pytest.raises(AssertionError, match="disagree"):
        lookup(flows, packet("10.0.0.2", "10.0.0.1", 6, 80))


def test_walk_follows_gotos_registers_and_resubmits():
    table = FakeOFTable([
        flow(0, 10, {"in_port": 5}, [SetField("in_port", 1), Resubmit(0)]),
        flow(0, 5, {"in_port": 1}, [SetField("reg0", 3), Goto(10)]),
        flow(10, 5, {"reg0": 3}, [Move("ipv4_dst", "reg2", 32), Resubmit(40), Goto(20)]),
        flow(20, 5, {"reg2": 0x0A000001, "reg6": 9}, [Ct(1, table=30)]),
        flow(40, 0, None, [SetField("reg6", 9)]),
    ])
    w = table.walk({"in_port": 5, "ipv4_dst": "10.0.0.1"})
    assert [(f.table, f.priority) for f in w.path] == [(0, 10), (0, 5), (10, 5), (40, 0), (20, 5)]
    assert w.end == 20 and not w.missed and w.last.actions == (Ct(1, table=30),)
    assert (w.packet["in_port"], w.packet["reg2"]) == (1, 0x0A000001)
    miss = table.walk({"in_port": 1, "reg0": 3, "ipv4_dst": "10.0.0.2"}, 0)
    assert miss.missed and miss.end == 20
    assert table.walk({"in_port": 1}, 0, until=10).end == 10


def test_walk_refuses_to_go_back():
    with pytest.raises(AssertionError, match="goto back"):
        FakeOFTable([flow(5, 0, None, [Goto(1)])]).walk({}, 5)
