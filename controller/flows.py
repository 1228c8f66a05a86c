"""Flows as plain data.

Compilers return `Flow` values; nothing here talks to a switch. The os-ken application turns them
into OFPFlowMod messages (controller/ofmsg.py), tests compare them, and `to_ofctl()` renders them
in ovs-ofctl syntax so a dump from the switch and the compiler's output read the same way.

Match fields use the OpenFlow 1.3 / Nicira names that os-ken's OFPMatch accepts (eth_type,
ipv4_dst, ct_state, reg0, ...). Values are ints, strings ("10.0.0.0/24", "0a:58:..."), or
(value, mask) pairs.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Any, Union

# ct_state bits (nicira_ext)
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
CT_SNAT, CT_DNAT = 0x40, 0x80          # the ct action that tracked the packet also NATed it

ETH_ARP, ETH_IP, ETH_IPV6 = 0x0806, 0x0800, 0x86DD
IPPROTO = {"icmp": 1, "tcp": 6, "udp": 17}
IPPROTO_ICMPV6 = 58
ND_NS, ND_NA = 135, 136                # ICMPv6 neighbour solicitation and advertisement
PROTO = {"TCP": "tcp", "UDP": "udp"}   # a Service's or listener's protocol: the prefix of its port fields


def ct_state(plus: int = 0, minus: int = 0) -> tuple[int, int]:
    return (plus, plus | minus)


# ------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Output:
    port: int | str                  # a number, or "in_port" / "controller"

    def ofctl(self) -> str:
        return f"output:{self.port}" if isinstance(self.port, int) else self.port.upper()


@dataclass(frozen=True)
class OutputReg:
    reg: int                         # output to the port number held in reg<N>

    def ofctl(self) -> str:
        return f"output:NXM_NX_REG{self.reg}[]"


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any

    def ofctl(self) -> str:
        return f"set_field:{self.value}->{self.field}"


@dataclass(frozen=True)
class Move:
    src: str
    dst: str
    n_bits: int

    def ofctl(self) -> str:
        narrower = self.dst.startswith("reg") and self.n_bits < 32      # e.g. a 16-bit port into a register
        return f"move:{self.src}[]->{self.dst}[{f'0..{self.n_bits - 1}' if narrower else ''}]"


@dataclass(frozen=True)
class DecTtl:
    def ofctl(self) -> str:
        return "dec_ttl"


@dataclass(frozen=True)
class Goto:
    table: int

    def ofctl(self) -> str:
        return f"goto_table:{self.table}"


@dataclass(frozen=True)
class Nat:
    kind: str = ""                   # "" (reverse/apply existing), "src" or "dst"
    ip: str = ""
    port_min: int = 0
    port_max: int = 0

    def ofctl(self) -> str:
        if not self.kind:
            return "nat"
        ports = f":{self.port_min}-{self.port_max}" if self.port_min else ""
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip      # ovs-actions(7): an IPv6 address in brackets
        return f"nat({self.kind}={ip}{ports})"


@dataclass(frozen=True)
class Ct:
    zone: int
    commit: bool = False
    table: int | None = None         # recirculate into this table after conntrack
    nat: Nat | None = None
    mark: int | None = None          # stored in the connection's ct_mark on commit

    def ofctl(self) -> str:
        parts = (["commit"] if self.commit else []) + [f"zone={self.zone}"]
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.nat is not None:
            parts.append(self.nat.ofctl())
        if self.mark is not None:
            parts.append(f"exec(set_field:{self.mark:#x}->ct_mark)")
        return f"ct({','.join(parts)})"


@dataclass(frozen=True)
class Resubmit:
    """Run the packet through `table` now and come back (a call, unlike goto_table)."""

    table: int

    def ofctl(self) -> str:
        return f"resubmit(,{self.table})"


@dataclass(frozen=True)
class GroupAction:
    group_id: int

    def ofctl(self) -> str:
        return f"group:{self.group_id}"


@dataclass(frozen=True)
class Conjunction:
    """One dimension of a conjunctive match: all `n_clauses` clauses must match for conj_id."""

    conj_id: int
    clause: int                      # 1-based, as ovs-ofctl writes it
    n_clauses: int

    def ofctl(self) -> str:
        return f"conjunction({self.conj_id},{self.clause}/{self.n_clauses})"


@dataclass(frozen=True)
class LearnMatch:
    """In a learned flow: match `field` against the value `src` had in the learning packet
    (src == field: 'the same field'), or against a constant when `value` is given."""

    field: str
    n_bits: int
    src: str = ""
    value: int | None = None


@dataclass(frozen=True)
class LearnLoad:
    """In a learned flow: load `dst` with the value `src` had in the learning packet, or a constant."""

    dst: str
    n_bits: int
    src: str = ""
    value: int | None = None


@dataclass(frozen=True)
class Learn:
    """Add a flow to `table` from the current packet (session affinity). Learned flows carry
    `cookie` and are deleted with the flow that learned them (delete_learned)."""

    table: int
    priority: int
    hard_timeout: int
    cookie: int
    specs: tuple = ()                # LearnMatch and LearnLoad values
    idle_timeout: int = 0
    send_flow_rem: bool = False      # the switch tells the controller when a learned flow expires (flow logs)

    def ofctl(self) -> str:
        parts = [f"table={self.table}", f"priority={self.priority}", f"hard_timeout={self.hard_timeout}"]
        if self.idle_timeout:
            parts.append(f"idle_timeout={self.idle_timeout}")
        parts += [f"cookie={self.cookie:#x}", "delete_learned"] + (["send_flow_rem"] if self.send_flow_rem else [])
        for s in self.specs:
            if isinstance(s, LearnMatch):
                parts.append(f"{s.field}={s.value:#x}" if s.value is not None else
                             (f"{s.field}[]" if s.src in ("", s.field) else f"{s.field}[]={s.src}[]"))
            else:
                parts.append(f"load:{s.value:#x}->{s.dst}[]" if s.value is not None else f"load:{s.src}[]->{s.dst}[]")
        return f"learn({','.join(parts)})"


Action = Union[Output, OutputReg, SetField, Move, DecTtl, Goto, Ct, Resubmit, GroupAction, Conjunction, Learn]


@dataclass(frozen=True)
class Bucket:
    actions: tuple
    weight: int = 1


@dataclass(frozen=True)
class Group:
    """An OpenFlow select group: one bucket is chosen per connection (by a hash of the packet's
    5-tuple); each bucket's actions run on the packet."""

    group_id: int
    buckets: tuple[Bucket, ...]
    note: str = ""

    def ofctl(self) -> str:
        buckets = ",".join(f"bucket=weight:{b.weight},actions={','.join(a.ofctl() for a in b.actions)}"
                           for b in self.buckets)
        return f"group_id={self.group_id},type=select,{buckets}" if buckets else f"group_id={self.group_id},type=select"


# --------------------------------------------------------------------------------------- flows
FEATURES = {"base": 1, "arp": 2, "l2": 3, "route": 4, "secgroup": 5, "tunnel": 6, "snat": 7,
            "pod": 8, "host": 9, "spoof": 10, "service": 11, "affinity": 12, "netpol": 13, "learned": 14, "reject": 15, "slb": 16,
            "eip": 17, "natgw": 18, "edge": 19, "internet": 20, "uplink": 21,
            "flowlog": 22,          # the vSwitches' flow log tables
            "flowlog_record": 23,   # flows the vSwitches learn for the flow log: they belong to the switch
            "resolver": 24,         # a vRouter's way to and from its VPC's DNS resolver
            "nd": 25,               # IPv6 neighbour discovery (dual stack)
            "hop": 26}              # the checksum hop of a vxlan node bridge (controller/csumhop.py)


FLOWLOG_TABLES = (70, 71)          # the vSwitch's flowlog and flowlog_learn (controller/pipeline.py)


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: tuple[tuple[str, Any], ...]
    actions: tuple[Action, ...]
    feature: str = "base"
    obj: int = 0                     # object id within the feature (24 bits)
    note: str = ""                   # why this flow exists, for dumps and docs

    @functools.cached_property
    def cookie(self) -> int:
        """[8 bits feature][24 bits object][32 bits content hash]: dump, replace or delete by
        feature and object, and tell a changed flow from an unchanged one without comparing.
        Worked out once per flow (the reconcile asks for it again and again)."""
        digest = hashlib.blake2b(self.key_text().encode(), digest_size=4).digest()
        return (FEATURES[self.feature] << 56) | ((self.obj & 0xFFFFFF) << 32) | int.from_bytes(digest, "big")

    def key_text(self) -> str:
        return f"{self.table}|{self.priority}|{self.match_ofctl()}|{self.actions_ofctl()}"

    @property
    def drops(self) -> bool:
        """Does a packet matching this flow stop here? No output, goto, group or recirculation;
        counting it for the flow log (a resubmit to the vSwitch's flowlog tables) forwards nothing."""
        return not any(isinstance(a, (Goto, Output, OutputReg, GroupAction)) or (isinstance(a, Ct) and a.table is not None)
                       or (isinstance(a, Resubmit) and a.table not in FLOWLOG_TABLES) for a in self.actions)

    def match_ofctl(self) -> str:
        return ",".join(_field_ofctl(k, v) for k, v in self.match)

    def actions_ofctl(self) -> str:
        return ",".join(a.ofctl() for a in self.actions) or "drop"

    def to_ofctl(self) -> str:
        match = self.match_ofctl()
        return (f"cookie={self.cookie:#x},table={self.table},priority={self.priority}"
                f"{',' + match if match else ''} actions={self.actions_ofctl()}")


def flow(table: int, priority: int, match: dict[str, Any] | None, actions: list | tuple,
         feature: str = "base", obj: int = 0, note: str = "") -> Flow:
    return Flow(table, priority, tuple((match or {}).items()), tuple(actions), feature, obj, note)


_CT_NAMES = [(CT_NEW, "new"), (CT_EST, "est"), (CT_REL, "rel"), (CT_RPL, "rpl"), (CT_INV, "inv"),
             (CT_TRK, "trk"), (CT_SNAT, "snat"), (CT_DNAT, "dnat")]


@functools.lru_cache(maxsize=1 << 16, typed=True)
def _field_ofctl(name: str, value: Any) -> str:
    """One match field as ovs-ofctl writes it (remembered: the same fields recur in many flows)."""
    if name == "ct_state":
        val, mask = value
        return "ct_state=" + "".join(("+" if val & bit else "-") + text for bit, text in _CT_NAMES if mask & bit)
    if name == "eth_type":
        return {ETH_ARP: "arp", ETH_IP: "ip", ETH_IPV6: "ipv6"}.get(value, f"dl_type={value:#06x}")
    if isinstance(value, tuple):
        return f"{name}={value[0]:#x}/{value[1]:#x}" if isinstance(value[0], int) else f"{name}={value[0]}/{value[1]}"
    return f"{name}={value}"


# -------------------------------------------------------------------------------------- helpers
def ipv4_net(cidr: str) -> str | tuple[str, str]:
    """ipv4 match value: a plain address for /32, else address/mask."""
    net = ipaddress.IPv4Network(cidr)
    return str(net.network_address) if net.prefixlen == 32 else (str(net.network_address), str(net.netmask))


def ipv6_net(cidr: str) -> str | tuple[str, str]:
    """ipv6 match value: a plain address for /128, else address/mask."""
    net = ipaddress.IPv6Network(cidr)
    return str(net.network_address) if net.prefixlen == 128 else (str(net.network_address), str(net.netmask))


@dataclass(frozen=True)
class Family:
    """What a flow matches for one IP family: its ethertype, address fields, ICMP protocol number and
    how a CIDR is written; V4 and V6 below."""

    version: int
    eth_type: int
    src: str
    dst: str
    icmp: int
    everything: str

    def net(self, cidr: str) -> str | tuple[str, str]:
        return ipv4_net(cidr) if self.version == 4 else ipv6_net(cidr)

    def proto(self, name: str) -> int:
        """A rule's protocol: icmp is ICMPv6 in IPv6."""
        return self.icmp if name == "icmp" else IPPROTO[name]


V4 = Family(4, ETH_IP, "ipv4_src", "ipv4_dst", 1, "0.0.0.0/0")
V6 = Family(6, ETH_IPV6, "ipv6_src", "ipv6_dst", IPPROTO_ICMPV6, "::/0")


def ipv4_match(field: str, cidr: str) -> dict:
    """A match on `field` for `cidr`; none for 0.0.0.0/0, which OpenFlow writes as no match."""
    return {} if prefixlen(cidr) == 0 else {field: ipv4_net(cidr)}


def prefixlen(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr).prefixlen


def prefixlen6(cidr: str) -> int:
    return ipaddress.IPv6Network(cidr).prefixlen


def ip_int(ip: str) -> int:
    """An address as a register holds it."""
    return int(ipaddress.IPv4Address(ip))


def addr_int(ip: str) -> int:
    """An IPv4 or IPv6 address as a register (reg2, or the 128-bit xxreg2) holds it."""
    return int(ipaddress.ip_address(ip))


def stable_ids(keys: list[str]) -> dict[str, int]:
    """Stable 20-bit ids from names, so adding a Service does not renumber the others."""
    out: dict[str, int] = {}
    used: set[int] = set()
    for key in sorted(keys):
        i = zlib.crc32(key.encode()) % 0xFFFFF + 1
        while i in used:
            i = i % 0xFFFFF + 1
        used.add(i)
        out[key] = i
    return out


def port_masks(first: int, last: int) -> list[tuple[int, int]]:
    """Cover [first, last] with (value, mask) pairs for tcp_dst/udp_dst matches."""
    out = []
    while first <= last:
        size = first & -first if first else 1 << 16
        while size > 1 and first + size - 1 > last:
            size >>= 1
        out.append((first, 0xFFFF & ~(size - 1)))
        first += size
    return out


def arp_responder(table: int, ip: str, mac: str, extra: dict[str, Any] | None = None,
                  priority: int = 100, feature: str = "arp", obj: int = 0, note: str = "") -> Flow:
    """Answer an ARP request for `ip` with `mac`, from the switch, out of the port it came in."""
    return flow(table, priority, {"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip, **(extra or {})}, [
        Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
        Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac), Move("arp_spa", "arp_tpa", 32),
        SetField("arp_spa", ip), Output("in_port")], feature, obj, note or f"ARP: {ip} is at {mac}")


@dataclass
class FlowSet:
    """The flows (and select groups) one bridge should hold, in the order compilers produced them."""

    bridge: str
    flows: list[Flow] = field(default_factory=list)
    groups: dict[int, Group] = field(default_factory=dict)

    def add(self, *flows: Flow) -> None:
        self.flows.extend(flows)

    def add_group(self, group: Group) -> None:
        if group.group_id in self.groups:
            raise ValueError(f"{self.bridge}: group {group.group_id} defined twice")
        self.groups[group.group_id] = group

    def ofctl(self) -> list[str]:
        return [f.to_ofctl() for f in sorted(self.flows, key=lambda f: (f.table, -f.priority, f.key_text()))]

    def groups_ofctl(self) -> list[str]:
        return [g.ofctl() for _, g in sorted(self.groups.items())]
