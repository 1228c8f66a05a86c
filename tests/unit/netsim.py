"""The first packet of a connection through every bridge it crosses, in the compiled flows: a
network-wide walk on top of the flow-table simulator (tests/unit/fakeoftable.py), for tests that
hold the flows to the evaluator end to end.

What it follows, as Open vSwitch would for a new connection's first packet:
- flows by table (fakeoftable's lookup), set_field, move, goto_table, resubmit, output (to the
  port a packet came in by only as IN_PORT: an output to that port by number is dropped), dec_ttl
  (the packet's nw_ttl, TTL when sent, in IPv6 its hop limit; never expires here);
- select groups: every bucket, each a branch of its own (the datapath's hash picks one);
- conntrack, for a first packet: a lookup shows +trk+new (for a reply, +trk+est+rpl); a commit with NAT rewrites the
  addresses and ports and shows +dnat or +snat, and stores its ct_mark; ct without a table does
  not recirculate, and the packet is then untracked;
- ports by the plan's bridges: a veth delivers to its namespace; a patch port, a link (veth
  pair between bridges) or a checksum hop (a veth pair on one bridge) enters the peer port at table
  0 with every register and conntrack field cleared; the VXLAN port reaches the node whose pod gateway MAC the packet is addressed to (as
  the kernel's VXLAN device forwards by its FDB).

A walk ends in a delivery to a namespace, a drop (the last flow met), or a packet to the
controller. Replies are not followed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from controller.compile import compile_plan
from controller.flows import (CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_SNAT, CT_TRK, Ct, DecTtl, Goto, GroupAction, Learn, Move, Output,
                              OutputReg, Resubmit, SetField)
from kubevpc.planning import HostPlan, Plan

from .fakeoftable import FakeOFTable, _value

STATE = ("ct_state", "ct_mark", "conj_id", "in_port", "xxreg2") + tuple(f"reg{i}" for i in range(8))
L4_DST = {6: "tcp_dst", 17: "udp_dst"}
L4_SRC = {6: "tcp_src", 17: "udp_src"}
TTL = 64                            # a sent packet's TTL (hop limit in IPv6), which dec_ttl lowers


@dataclass
class End:
    """Where one branch of the walk ended: delivered to `host` (a namespace's key), dropped (the
    last flow), or sent to the controller; `packet` as it was then, `path` the (bridge, flow)s."""

    kind: str                       # "delivered", "dropped" or "controller"
    host: str = ""
    packet: dict = field(default_factory=dict)
    path: list = field(default_factory=list)

    def __str__(self) -> str:
        last = f"{self.path[-1][0]}: {self.path[-1][1].to_ofctl()}" if self.path else "-"
        v = 6 if "ipv6_src" in self.packet else 4
        return f"{self.kind} {self.host} {self.packet.get(f'ipv{v}_src')}->{self.packet.get(f'ipv{v}_dst')} (last: {last})"


class Network:
    """A plan's compiled bridges, wired as the plan wires them."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.reply = False                  # the walk under way follows a reply (send(reply=True))
        self.tables = {name: FakeOFTable.of(fs) for name, fs in compile_plan(plan).items()}
        self.ports: dict[tuple[str, int], object] = {}
        by_name = {p.name: (b.name, p.ofport) for b in plan.bridges for p in b.ports}
        for b in plan.bridges:
            for p in b.ports:
                if p.kind == "veth":
                    self.ports[(b.name, p.ofport)] = p.peer                   # a namespace's host key
                elif p.kind in ("patch", "link", "hop"):
                    self.ports[(b.name, p.ofport)] = by_name[p.peer]          # (bridge, ofport)
                else:
                    self.ports[(b.name, p.ofport)] = "vxlan"

    def send(self, src: HostPlan, dst_ip: str, port: int, proto: str = "tcp", sport: int = 40000,
             reply: bool = False, eth_dst: str = "") -> list[End]:
        """The first packet from `src` to dst_ip:port, sent to its gateway (every destination this
        helper is used for is off-link), or to `eth_dst` (a neighbour on the link). An IPv6
        dst_ip is sent from src's IPv6 address. `reply`: a reply of an established connection
        instead (conntrack shows +trk+est+rpl wherever it is looked up, and translates nothing):
        where the route tables take it."""
        number = {"tcp": 6, "udp": 17}[proto]
        if ":" in dst_ip:
            ip = {"eth_type": 0x86DD, "ipv6_src": src.ipv6, "ipv6_dst": dst_ip}
        else:
            ip = {"eth_type": 0x0800, "ipv4_src": src.ip, "ipv4_dst": dst_ip}
        packet = {**ip, "eth_src": src.mac, "eth_dst": eth_dst or src.gateway_mac, "ip_proto": number,
                  L4_SRC[number]: sport, L4_DST[number]: port, "nw_ttl": TTL}
        self.reply = reply
        return self._enter(src.bridge, src.ofport, packet, [], hops=0)

    def solicit(self, src: HostPlan, target: str) -> list[End]:
        """An IPv6 neighbour solicitation from `src` for `target`, to its solicited-node multicast
        address (RFC 4861)."""
        self.reply = False
        packet = {"eth_type": 0x86DD, "eth_src": src.mac, "eth_dst": "33:33:ff:00:00:01", "ipv6_src": src.ipv6,
                  "ipv6_dst": "ff02::1:ff00:1", "ip_proto": 58, "icmpv6_type": 135, "icmpv6_code": 0,
                  "ipv6_nd_target": target}
        return self._enter(src.bridge, src.ofport, packet, [], hops=0)

    # -------------------------------------------------------------------------------- the walk
    def _enter(self, bridge: str, in_port: int, packet: dict, path: list, hops: int) -> list[End]:
        assert hops < 16, "the packet loops between bridges"
        st = {k: v for k, v in packet.items() if k not in STATE}
        st.update({"in_port": in_port, "ct_state": 0, "ct_mark": 0, "conj_id": 0, "xxreg2": 0},
                  **{f"reg{i}": 0 for i in range(8)})
        st["_hops"] = hops
        return self._table(bridge, 0, st, path, top=True)

    def _table(self, bridge: str, table: int, st: dict, path: list, top: bool = False) -> list[End]:
        f = self.tables[bridge].lookup(table, st)
        if f is None:
            return [End("dropped", packet=dict(st), path=list(path))] if top else []
        path.append((bridge, f))
        ends, decided = self._run(bridge, f.actions, st, path)
        if top and not decided and not ends:
            return [End("dropped", packet=dict(st), path=list(path))]
        return ends

    def _run(self, bridge: str, actions, st: dict, path: list) -> tuple[list[End], bool]:
        """Run actions; returns what ended, and whether the packet's way was decided here (a goto,
        a group, a recirculation or an output), as opposed to falling off the end of the list."""
        ends: list[End] = []
        for a in actions:
            if isinstance(a, SetField):
                st[a.field] = a.value
            elif isinstance(a, Move):
                st[a.dst] = _value(st, a.src)
            elif isinstance(a, Resubmit):
                ends += self._table(bridge, a.table, st, path)
            elif isinstance(a, Goto):
                return ends + self._table(bridge, a.table, st, path, top=True), True
            elif isinstance(a, (Output, OutputReg)):
                ends += self._output(bridge, a.port if isinstance(a, Output) else st[f"reg{a.reg}"], st, path)
            elif isinstance(a, GroupAction):
                for bucket in self.tables[bridge].groups[a.group_id].buckets:
                    fork, branch = dict(st), list(path)
                    got, _ = self._run(bridge, bucket.actions, fork, branch)
                    ends += got or [End("dropped", packet=fork, path=branch)]
                return ends, True
            elif isinstance(a, Ct):
                self._conntrack(a, st)
                if a.table is not None:
                    return ends + self._table(bridge, a.table, st, path, top=True), True
            elif isinstance(a, DecTtl):
                st["nw_ttl"] -= 1
            else:
                assert isinstance(a, Learn), f"not simulated: {a}"
        return ends, bool(ends)

    def _conntrack(self, a: Ct, st: dict) -> None:
        """A new connection's first packet: tracked and new; a commit's NAT and mark applied. A
        reply (`send(reply=True)`): tracked, established, a reply; nothing translated."""
        if a.table is None:
            st["ct_state"] = 0              # no recirculation: the packet is not tracked after it
        elif self.reply:
            st["ct_state"] = CT_TRK | CT_EST | CT_RPL
            return
        else:
            st["ct_state"] = CT_TRK | CT_NEW
        if a.mark is not None:
            st["ct_mark"] = a.mark
        six = st.get("eth_type") == 0x86DD
        if a.nat is not None and a.nat.kind == "dst":
            st["ipv6_dst" if six else "ipv4_dst"] = a.nat.ip
            if a.nat.port_min:              # nat(dst=IP) alone keeps the port (an EIP, an IP mapping)
                st[L4_DST[st["ip_proto"]]] = a.nat.port_min
            st["ct_state"] |= CT_DNAT if a.table is not None else 0
        elif a.nat is not None and a.nat.kind == "src":
            st["ipv6_src" if six else "ipv4_src"] = a.nat.ip
            if a.nat.port_min:
                st[L4_SRC[st["ip_proto"]]] = a.nat.port_min
            st["ct_state"] |= CT_SNAT if a.table is not None else 0

    def _output(self, bridge: str, port, st: dict, path: list) -> list[End]:
        if port == "controller":
            return [End("controller", packet=dict(st), path=list(path))]
        if port == "in_port":
            port = st["in_port"]
        elif port == st["in_port"]:
            return []                       # Open vSwitch drops an output to the port it came in by, but IN_PORT
        peer = self.ports[(bridge, port)]
        packet = {k: v for k, v in st.items() if k not in STATE and not k.startswith("_")}
        if isinstance(peer, str) and peer != "vxlan":
            return [End("delivered", peer, packet, list(path))]
        if peer == "vxlan":
            node = next(n for n in self.plan.nodes if n.gateway_mac == st["eth_dst"])
            peer = (node.bridge, node.tunnels[0].ofport)
        return self._enter(peer[0], peer[1], packet, list(path), st["_hops"] + 1)
