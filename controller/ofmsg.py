"""Translate `Flow` values into os-ken OpenFlow 1.3 messages. The only os-ken-specific code
besides the application shell in app.py."""
from __future__ import annotations

from os_ken.ofproto import nicira_ext

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


def flow_mod(dp, f: Flow):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions = [_action(dp, a) for a in f.actions if not isinstance(a, Goto)]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    inst += [parser.OFPInstructionGotoTable(a.table) for a in f.actions if isinstance(a, Goto)]
    return parser.OFPFlowMod(dp, cookie=f.cookie, table_id=f.table, command=ofp.OFPFC_ADD, priority=f.priority,
                             match=parser.OFPMatch(**dict(f.match)), instructions=inst)


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
