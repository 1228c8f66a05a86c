"""tests/unit/netsim.py with connections remembered and checksums followed: a connection's packets
after the first, and its replies, walked through the compiled flows as Open vSwitch's userspace
datapath would take them (for the checksum hop, tests/unit/test_csum_hop.py).

Conntrack, per zone: a lookup finds the connection a packet belongs to, in its original direction or
as a reply (+trk+est, +rpl for a reply; a UDP connection stays +new until its first reply), or none
(+trk+new), and shows the connection's ct_mark; with `nat` it also translates the packet as the
connection was NATed (forward, or the reverse for a reply), and flags it +dnat or +snat as
lib/conntrack.c does (a reply of a DNAT shows +snat). A commit makes the connection if there is
none, with its NAT (an SNAT takes the lowest free port of its range) and its mark, or sets the mark
of the one there is.

Checksums, as Open vSwitch 3.1 treats them (docs/performance.md, "What was wrong", 2): a packet from
a namespace whose offloads are on leaves with its checksum `partial` (the pseudo-header sum), any
other `full`. A NAT of a `partial` packet spoils it (`bad`); the kernel completes a `partial` one on
the way out of the checksum hop's sending end or into a VXLAN device (`full`), and a VXLAN device
completes a `bad` one wrongly: the far end drops it (an End of kind "bad checksum"). A local
receiver accepts any. Every packet a node bridge sends into its hop is recorded in `into_hop`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from controller.flows import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_SNAT, CT_TRK, Ct
from kubevpc.planning import OFPORT_NODE_HOP_OUT, HostPlan, Plan

from .netsim import L4_DST, L4_SRC, TTL, End, Network


@dataclass
class Conn:
    orig: tuple                     # (src, sport, dst, dport, proto) of its first packet
    reply: tuple                    # what its replies look like
    nat: str                        # "", "src" or "dst"
    mark: int = 0
    replied: bool = False


def _tuple(st: dict) -> tuple:
    return st["ipv4_src"], st[L4_SRC[st["ip_proto"]]], st["ipv4_dst"], st[L4_DST[st["ip_proto"]]], st["ip_proto"]


def _reverse(t: tuple) -> tuple:
    return t[2], t[3], t[0], t[1], t[4]


class CtNetwork(Network):
    """A plan's compiled bridges, with conntrack that remembers and checksums that can go wrong.
    `offloaded(host)`: does this host's NIC keep its offloads (its packets leave `partial`)?"""

    def __init__(self, plan: Plan, offloaded=lambda h: h.kind == "pod" and not h.host_network):
        super().__init__(plan)
        self.offloaded = offloaded
        self.conns: dict[int, list[Conn]] = defaultdict(list)
        self.into_hop: list[tuple[str, dict]] = []       # (bridge, packet) sent into a checksum hop
        self.hop_out = {(b.name, p.ofport) for b in plan.bridges for p in b.ports
                        if p.kind == "hop" and p.ofport == OFPORT_NODE_HOP_OUT}

    # ------------------------------------------------------------------------------- sending
    def open(self, src: HostPlan, dst_ip: str, port: int, proto: str = "tcp", sport: int = 40000) -> list[End]:
        """A connection's first packet from `src` (its node's own namespace for a node)."""
        return self._from(src, src.ip, sport, dst_ip, port, {"tcp": 6, "udp": 17}[proto])

    def answer(self, end: End) -> list[End]:
        """The reply of the host a packet was delivered to, to the address and port it came from."""
        p = end.packet
        return self._from(self.plan.host(end.host), p["ipv4_dst"], p[L4_DST[p["ip_proto"]]], p["ipv4_src"],
                          p[L4_SRC[p["ip_proto"]]], p["ip_proto"])

    def again(self, src: HostPlan, dst_ip: str, port: int, proto: str = "tcp", sport: int = 40000) -> list[End]:
        """A later packet of the connection `open` started."""
        return self.open(src, dst_ip, port, proto, sport)

    def _from(self, src: HostPlan, ip: str, sport: int, dst_ip: str, dport: int, number: int) -> list[End]:
        home = self.plan.network_host(src)
        packet = {"eth_type": 0x0800, "ipv4_src": ip, "ipv4_dst": dst_ip, "eth_src": home.mac,
                  "eth_dst": home.gateway_mac, "ip_proto": number, L4_SRC[number]: sport, L4_DST[number]: dport,
                  "nw_ttl": TTL, "csum": "partial" if self.offloaded(home) else "full"}
        self.reply = False
        return self._enter(home.bridge, home.ofport, packet, [], hops=0)

    # ----------------------------------------------------------------------------- conntrack
    def _conntrack(self, a: Ct, st: dict) -> None:
        t = _tuple(st)
        conn, rpl = self._find(a.zone, t)
        state = CT_TRK | (CT_NEW if conn is None else CT_EST | CT_RPL if rpl else
                          CT_EST if conn.replied or st["ip_proto"] == 6 else CT_NEW)
        if conn is not None and rpl:
            conn.replied = True
        if conn is not None and a.nat is not None:
            state |= self._translate(st, conn, rpl)
        if a.commit and conn is None:
            conn = self._commit(a, st, t)
            state |= CT_DNAT if conn.nat == "dst" else CT_SNAT if conn.nat == "src" else 0
        elif a.commit and a.mark is not None:
            conn.mark = a.mark
        st["ct_mark"] = conn.mark if conn is not None else 0
        st["ct_state"] = state if a.table is not None else 0     # no recirculation: untracked after it

    def _find(self, zone: int, t: tuple) -> tuple[Conn | None, bool]:
        for c in self.conns[zone]:
            if c.orig == t:
                return c, False
            if c.reply == t:
                return c, True
        return None, False

    def _translate(self, st: dict, conn: Conn, rpl: bool) -> int:
        """Rewrite the packet as its connection's NAT says; the ct_state flag it shows."""
        want = _reverse(conn.orig) if rpl else _reverse(conn.reply)
        if not conn.nat or want == _tuple(st):
            return 0
        self._set(st, want)
        return (CT_SNAT if conn.nat == "dst" else CT_DNAT) if rpl else (CT_DNAT if conn.nat == "dst" else CT_SNAT)

    def _commit(self, a: Ct, st: dict, t: tuple) -> Conn:
        nat = a.nat.kind if a.nat is not None else ""
        new = list(t)
        if nat == "dst":
            new[2], new[3] = a.nat.ip, a.nat.port_min or t[3]
        elif nat == "src":
            taken = {c.reply for c in self.conns[a.zone]}
            port = a.nat.port_min
            while (t[2], t[3], a.nat.ip, port, t[4]) in taken:
                port += 1
            new[0], new[1] = a.nat.ip, port
        conn = Conn(orig=t, reply=_reverse(tuple(new)), nat=nat, mark=a.mark or 0)
        self.conns[a.zone].append(conn)
        if tuple(new) != t:
            self._set(st, tuple(new))
        return conn

    @staticmethod
    def _set(st: dict, t: tuple) -> None:
        st["ipv4_src"], st[L4_SRC[t[4]]], st["ipv4_dst"], st[L4_DST[t[4]]] = t[:4]
        if st.get("csum") == "partial":
            st["csum"] = "bad"              # Open vSwitch 3.1 updates the pseudo-header sum as a full checksum

    # -------------------------------------------------------------------------------- ports
    def _output(self, bridge: str, port, st: dict, path: list) -> list[End]:
        number = st["in_port"] if port == "in_port" else port
        if (bridge, number) in self.hop_out:
            self.into_hop.append((bridge, {k: v for k, v in st.items() if not k.startswith("_")}))
            st = {**st, "csum": "full" if st.get("csum") == "partial" else st.get("csum")}
        elif self.ports.get((bridge, number)) == "vxlan":
            if st.get("csum") == "bad":
                return [End("bad checksum", packet={k: v for k, v in st.items() if not k.startswith("_")},
                            path=list(path))]
            st = {**st, "csum": "full"}
        return super()._output(bridge, port, st, path)
