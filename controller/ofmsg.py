"""Translate `Flow` values into os-ken OpenFlow 1.3 messages. The only os-ken-specific code
besides the application shell in app.py.

Flow mods are many (tens of thousands for a thousand NetworkPolicies) and os-ken builds each
one slowly: OFPMatch normalises every field through three conversions, about 45 us a flow. So
`flow_mod_bytes` writes the same bytes itself: each match field's OXM TLV and each action list's
instructions are made by os-ken once, remembered, and joined under the fixed header
(tests/unit/test_ofmsg.py holds them equal to os-ken's OFPFlowMod, flow by flow, for every
scenario's flows). `Batch` sends such bytes, and os-ken's own messages, in one write, inside one
ONF bundle (OpenFlow 1.3 extension 230, which Open vSwitch implements since 2.6) when asked: the
switch then applies the whole change at once, or none of it, as kube-proxy's iptables-restore
does; OVN's ovn-controller puts its group and flow changes in one bundle the same way.
"""
from __future__ import annotations

import functools
import struct
from types import SimpleNamespace

from os_ken.ofproto import nicira_ext, ofproto_common, ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from .flows import (Conjunction, Ct, DecTtl, Flow, Goto, Group, GroupAction, Learn, LearnLoad, LearnMatch, Move,
                    Output, OutputReg, Resubmit, SetField)

NX_NAT_F_SRC, NX_NAT_F_DST = 1 << 0, 1 << 1
NX_LEARN_F_SEND_FLOW_REM = 1 << 0
NX_LEARN_F_DELETE_LEARNED = 1 << 1


def _action(dp, action):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(action, Output):
        port = {"in_port": ofp.OFPP_IN_PORT, "controller": ofp.OFPP_CONTROLLER}.get(action.port, action.port)
        return parser.OFPActionOutput(port, ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else 0)
    if isinstance(action, OutputReg):
        return parser.NXActionOutputReg(nicira_ext.ofs_nbits(0, 31), f"reg{action.reg}", 0)
    if isinstance(action, SetField):
        if action.field == "in_port":   # OVS refuses set_field on OXM in_port; NXM_OF_IN_PORT may be loaded
            return parser.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst="in_port_nxm", value=action.value)
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst, n_bits=action.n_bits)
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, Ct):
        # the mark goes first: os-ken's NXActionNAT declares a padded length without writing the
        # padding when ports are given, which is only harmless for the last nested action
        nested = [parser.OFPActionSetField(ct_mark=action.mark)] if action.mark is not None else []
        if action.nat is not None:
            nat = action.nat
            flags = {"": 0, "src": NX_NAT_F_SRC, "dst": NX_NAT_F_DST}[nat.kind]
            kwargs = {}
            if nat.ip:
                v = "ipv6" if ":" in nat.ip else "ipv4"
                kwargs.update({f"range_{v}_min": nat.ip, f"range_{v}_max": nat.ip})
            if nat.port_min:
                kwargs.update(range_proto_min=nat.port_min, range_proto_max=nat.port_max)
            nested.append(parser.NXActionNAT(flags, **kwargs))
        return parser.NXActionCT(
            flags=nicira_ext.NX_CT_F_COMMIT if action.commit else 0, zone_src="", zone_ofs_nbits=action.zone,
            recirc_table=nicira_ext.NX_CT_RECIRC_NONE if action.table is None else action.table, alg=0,
            actions=nested)
    if isinstance(action, Resubmit):
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=action.table)   # OFPP_IN_PORT, 16-bit in NX
    if isinstance(action, GroupAction):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, Conjunction):
        return parser.NXActionConjunction(clause=action.clause - 1, n_clauses=action.n_clauses, id_=action.conj_id)
    if isinstance(action, Learn):
        specs = []
        for s in action.specs:
            if isinstance(s, LearnMatch):
                src = s.value if s.value is not None else ((s.src or s.field), 0)
                specs.append(parser.NXFlowSpecMatch(src=src, dst=(s.field, 0), n_bits=s.n_bits))
            elif isinstance(s, LearnLoad):
                src = s.value if s.value is not None else (s.src, 0)
                specs.append(parser.NXFlowSpecLoad(src=src, dst=(s.dst, 0), n_bits=s.n_bits))
        return parser.NXActionLearn(table_id=action.table, specs=specs, idle_timeout=action.idle_timeout,
                                    hard_timeout=action.hard_timeout, priority=action.priority,
                                    cookie=action.cookie, flags=NX_LEARN_F_DELETE_LEARNED | (
                                        NX_LEARN_F_SEND_FLOW_REM if action.send_flow_rem else 0))
    raise TypeError(f"no translation for action {action!r}")


def _instructions(dp, actions: tuple) -> list:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    applied = [_action(dp, a) for a in actions if not isinstance(a, Goto)]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, applied)] if applied else []
    return inst + [parser.OFPInstructionGotoTable(a.table) for a in actions if isinstance(a, Goto)]


def flow_mod(dp, f: Flow):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=f.cookie, table_id=f.table, command=ofp.OFPFC_ADD, priority=f.priority,
                             match=parser.OFPMatch(**dict(f.match)), instructions=_instructions(dp, f.actions))


def delete_cookie(dp, cookie: int):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=ofp.OFPTT_ALL,
                             command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             match=parser.OFPMatch())


def group_mod(dp, g: Group, command: str):
    """command: "add", "modify" or "delete"."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    cmd = {"add": ofp.OFPGC_ADD, "modify": ofp.OFPGC_MODIFY, "delete": ofp.OFPGC_DELETE}[command]
    buckets = [] if command == "delete" else [
        parser.OFPBucket(weight=b.weight, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                         actions=[_action(dp, a) for a in b.actions]) for b in g.buckets]
    return parser.OFPGroupMod(dp, cmd, ofp.OFPGT_SELECT, g.group_id, buckets)


# ------------------------------------------------------------------------------ flow mods, fast
OFP = ofproto_v1_3
_OSKEN = SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser, id=0)   # what encoding needs of a datapath
_HEADER = struct.Struct(OFP.OFP_HEADER_PACK_STR)
_FLOW_MOD = struct.Struct(OFP.OFP_FLOW_MOD_PACK_STR0)
_MATCH_HEADER = struct.Struct("!HH")
ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


@functools.lru_cache(maxsize=1 << 16, typed=True)
def _oxm(name: str, value) -> tuple[str, int, bytes]:
    """One match field as os-ken's OFPMatch writes it: (its normalised name, the key OFPMatch
    sorts fields by, its OXM TLV)."""
    key, user = OFP.oxm_normalize_user(name, value)
    num, val, mask = OFP.oxm_from_user(key, user)
    again = OFP.oxm_from_user(*OFP.oxm_to_user(num, val, mask))     # OFPMatch.serialize converts once more
    buf = bytearray()
    OFP.oxm_serialize(*again, buf, 0)
    return key, (num[0] if isinstance(num, tuple) else num), bytes(buf)


def match_bytes(match: tuple) -> bytes:
    """A flow's match (its (field, value) pairs) as an OXM ofp_match, padded to 8 bytes."""
    fields: dict[str, tuple[int, bytes]] = {}
    for name, value in match:
        key, order, tlv = _oxm(name, value)
        fields[key] = (order, tlv)          # a later value of a field replaces it where it was, as a dict does
    body = b"".join(tlv for _order, tlv in sorted(fields.values(), key=lambda f: f[0]))
    length = 4 + len(body)
    return _MATCH_HEADER.pack(OFP.OFPMT_OXM, length) + body + bytes(-length % 8)


@functools.lru_cache(maxsize=1 << 14)
def instructions_bytes(actions: tuple) -> bytes:
    """A flow's actions as os-ken writes its instructions (apply-actions, then goto-table)."""
    buf = bytearray()
    for inst in _instructions(_OSKEN, actions):
        inst.serialize(buf, len(buf))
    return bytes(buf)


def flow_mod_bytes(f: Flow, xid: int = 0) -> bytes:
    """The bytes of `flow_mod(dp, f)`, serialized with this xid."""
    body = match_bytes(f.match) + instructions_bytes(f.actions)
    return _HEADER.pack(OFP.OFP_VERSION, OFP.OFPT_FLOW_MOD, OFP.OFP_FLOW_MOD_SIZE - 8 + len(body), xid) + \
        _FLOW_MOD.pack(f.cookie, 0, f.table, OFP.OFPFC_ADD, 0, 0, f.priority, OFP.OFP_NO_BUFFER, 0, 0, 0) + body


_EMPTY_MATCH = match_bytes(())


def delete_cookie_bytes(cookie: int, xid: int = 0) -> bytes:
    """The bytes of `delete_cookie(dp, cookie)`, serialized with this xid."""
    return _HEADER.pack(OFP.OFP_VERSION, OFP.OFPT_FLOW_MOD, OFP.OFP_FLOW_MOD_SIZE, xid) + _FLOW_MOD.pack(
        cookie, ALL_COOKIE_BITS, OFP.OFPTT_ALL, OFP.OFPFC_DELETE, 0, 0, OFP.OFP_DEFAULT_PRIORITY, OFP.OFP_NO_BUFFER,
        OFP.OFPP_ANY, OFP.OFPG_ANY, 0) + _EMPTY_MATCH


# ---------------------------------------------------------------------------------- batches
_EXPERIMENTER = struct.Struct("!II")
_BUNDLE_CTRL = struct.Struct(OFP.ONF_BUNDLE_CTRL_PACK_STR)
_BUNDLE_ADD = struct.Struct(OFP.ONF_BUNDLE_ADD_MSG_PACK_STR)
BUNDLE_FLAGS = OFP.ONF_BF_ATOMIC | OFP.ONF_BF_ORDERED


def _with_xid(data: bytes, xid: int) -> bytes:
    return data[:4] + struct.pack("!I", xid) + data[8:]


def bundle_ctrl_bytes(bundle_id: int, kind: int, xid: int) -> bytes:
    """ONF_ET_BUNDLE_CONTROL: open (ONF_BCT_OPEN_REQUEST) or commit (ONF_BCT_COMMIT_REQUEST)."""
    body = _EXPERIMENTER.pack(ofproto_common.ONF_EXPERIMENTER_ID, OFP.ONF_ET_BUNDLE_CONTROL) + \
        _BUNDLE_CTRL.pack(bundle_id, kind, BUNDLE_FLAGS)
    return _HEADER.pack(OFP.OFP_VERSION, OFP.OFPT_EXPERIMENTER, 8 + len(body), xid) + body


def bundle_add_bytes(bundle_id: int, inner: bytes, xid: int) -> bytes:
    """ONF_ET_BUNDLE_ADD_MESSAGE around one message (which carries the same xid)."""
    body = _EXPERIMENTER.pack(ofproto_common.ONF_EXPERIMENTER_ID, OFP.ONF_ET_BUNDLE_ADD_MESSAGE) + \
        _BUNDLE_ADD.pack(bundle_id, BUNDLE_FLAGS) + _with_xid(inner, xid)
    return _HEADER.pack(OFP.OFP_VERSION, OFP.OFPT_EXPERIMENTER, 8 + len(body), xid) + body


class Batch(ofproto_parser.MsgBase):
    """Several messages written at once, all with this message's xid: `parts` are encoded
    messages (bytes, from flow_mod_bytes or delete_cookie_bytes) or os-ken's messages (group
    mods). With a `bundle_id`, they go inside one atomic, ordered bundle: open, each one added,
    commit. The switch's answer to a commit comes before its answer to a barrier sent after it."""

    def __init__(self, datapath, parts: list, bundle_id: int | None = None):
        super().__init__(datapath)
        self.parts, self.bundle_id = parts, bundle_id

    def encoded(self) -> list[bytes]:
        """Every part's bytes, with this message's xid."""
        out = []
        for part in self.parts:
            if not isinstance(part, bytes):
                part.xid = None
                part.set_xid(self.xid)
                part.serialize()
                part = bytes(part.buf)
            out.append(_with_xid(part, self.xid))
        return out

    def serialize(self):
        xid = self.xid or 0
        self.xid = xid
        parts = self.encoded()
        if self.bundle_id is not None:
            parts = [bundle_ctrl_bytes(self.bundle_id, OFP.ONF_BCT_OPEN_REQUEST, xid),
                     *(bundle_add_bytes(self.bundle_id, p, xid) for p in parts),
                     bundle_ctrl_bytes(self.bundle_id, OFP.ONF_BCT_COMMIT_REQUEST, xid)]
        self.buf = b"".join(parts)


# ------------------------------------------------------------------------ flow stats, lean
_FLOW_STATS = struct.Struct(OFP.OFP_FLOW_STATS_0_PACK_STR)


class FlowStatsEntry:
    """One entry of a flow stats reply as os-ken's OFPFlowStats has it, with its fixed part (the
    cookie and the counters: all a read-back and the flow log's windows need) read at once, and
    its match and instructions only when asked for. A read-back of a bridge with 19,000 flows
    takes os-ken 830 ms to parse in full, and this 30 ms."""

    __slots__ = ("_buf", "_offset", "_full", "length", "table_id", "duration_sec", "duration_nsec", "priority",
                 "idle_timeout", "hard_timeout", "flags", "cookie", "packet_count", "byte_count")

    @classmethod
    def parser(cls, buf, offset: int) -> FlowStatsEntry:
        entry = cls()
        (entry.length, entry.table_id, entry.duration_sec, entry.duration_nsec, entry.priority, entry.idle_timeout,
         entry.hard_timeout, entry.flags, entry.cookie, entry.packet_count,
         entry.byte_count) = _FLOW_STATS.unpack_from(buf, offset)
        if entry.length < _FLOW_STATS.size + 4 or offset + entry.length > len(buf):
            raise ValueError(f"flow stats entry of {entry.length} bytes at offset {offset} of {len(buf)}")
        entry._buf, entry._offset, entry._full = buf, offset, None
        return entry

    def _parsed(self):
        if self._full is None:
            self._full = ofproto_v1_3_parser.OFPFlowStats.parser(self._buf, self._offset)
        return self._full

    @property
    def match(self):
        return self._parsed().match

    def match_items(self) -> tuple:
        """The match's (field, value) pairs, as os-ken's `match.items()` gives them, without
        parsing the rest of the entry (match_items)."""
        return match_items(self._buf, self._offset + _FLOW_STATS.size)

    @property
    def instructions(self):
        return self._parsed().instructions


_MATCH_AT = struct.Struct("!HH")


@functools.lru_cache(maxsize=1 << 16)
def _oxm_item(tlv: bytes) -> tuple:
    """One OXM TLV as os-ken's OFPMatch.parser turns it into a (field, value) pair, remembered:
    the flow log's learned flows repeat the same few fields, addresses and ports by the thousand."""
    n, value, mask, _ = OFP.oxm_parse(tlv, 0)
    return OFP.oxm_to_user(n, value, mask)


def match_items(buf, offset: int) -> tuple:
    """The (field, value) pairs of the OXM ofp_match at `offset` of `buf`, in wire order, equal to
    os-ken's OFPMatch.parser(buf, offset).items() (tests/unit/test_ofmsg.py), which also decodes
    the match the pre-OXM way and is 10 times slower: a flow log window of a 100 x 100 matrix
    parses about 30,000 learned flows' matches."""
    mtype, length = _MATCH_AT.unpack_from(buf, offset)
    if mtype != OFP.OFPMT_OXM or length < 4 or offset + length > len(buf):
        raise ValueError(f"not an OXM match of {length} bytes at offset {offset} of {len(buf)}")
    out, pos, end = [], offset + 4, offset + length
    while pos < end:
        size = 4 + buf[pos + 3]
        if pos + size > end:
            raise ValueError(f"an OXM field of {size} bytes at offset {pos} overruns the match's end {end}")
        out.append(_oxm_item(bytes(buf[pos:pos + size])))
        pos += size
    return tuple(out)


class LeanMatch:
    """A flow removed message's match, read only when asked for (items(), as OFPMatch's)."""

    __slots__ = ("_buf", "_offset", "length")

    def __init__(self, buf, offset: int) -> None:
        self._buf, self._offset = buf, offset
        self.length = _MATCH_AT.unpack_from(buf, offset)[1]

    def items(self) -> tuple:
        return match_items(self._buf, self._offset)


def _flow_removed_parser(datapath, version, msg_type, msg_len, xid, buf):
    """OFPFlowRemoved.parser with a LeanMatch (a learned flow-log flow's end is one such message)."""
    msg = ofproto_parser.MsgBase.parser.__func__(ofproto_v1_3_parser.OFPFlowRemoved, datapath, version, msg_type,
                                                 msg_len, xid, buf)
    (msg.cookie, msg.priority, msg.reason, msg.table_id, msg.duration_sec, msg.duration_nsec, msg.idle_timeout,
     msg.hard_timeout, msg.packet_count, msg.byte_count) = struct.unpack_from(
        OFP.OFP_FLOW_REMOVED_PACK_STR0, msg.buf, OFP.OFP_HEADER_SIZE)
    msg.match = LeanMatch(msg.buf, OFP.OFP_FLOW_REMOVED_SIZE - OFP.OFP_MATCH_SIZE)
    return msg


def lean_flow_stats() -> None:
    """Have os-ken parse flow stats replies into FlowStatsEntry, and flow removed messages with a
    LeanMatch (for this process)."""
    ofproto_v1_3_parser.OFPFlowStatsReply.cls_stats_body_cls = FlowStatsEntry
    ofproto_v1_3_parser._MSG_PARSERS[OFP.OFPT_FLOW_REMOVED] = _flow_removed_parser     # os-ken's registry
