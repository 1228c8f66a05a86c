"""Stateful security groups at the vSwitch port of each instance (and each eni pod): sg_egress at
the source's port, sg_ingress at the destination's. With flow logs, what passes is counted and
what a rule decides is learned (controller/flowlog.py)."""
from __future__ import annotations

from kubevpc.planning import OFPORT_VROUTER_ON_VSWITCH, BridgePlan, Plan

from .flowlog import count, learn
from .flows import CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, V4, V6, Ct, Family, Flow, Goto, ct_state, flow, \
    port_masks
from .pipeline import (FLOWLOG_ACCEPT_AT_DEST, FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_IN, FLOWLOG_OUT,
                       FLOWLOG_REJECT_AT_DEST, FLOWLOG_REJECT_AT_SOURCE, REG_OUT, VSWITCH)

_NEW = ct_state(CT_TRK | CT_NEW)
T_EGRESS, T_L2, T_INGRESS, T_OUTPUT = (VSWITCH.table(n) for n in ("sg_egress", "l2", "sg_ingress", "output"))


class _AllRule:
    """Group membership acts as an accept-all rule at the lowest rule priority."""

    protocol = "all"
    port_min = port_max = 0


def _rule_matches(rule, peer_field: str, peers: list[str], fam: Family = V4) -> list[dict]:
    """The match dicts of one security group rule, for each peer address and port block."""
    base: dict = {"eth_type": fam.eth_type}
    if rule.protocol != "all":
        base["ip_proto"] = fam.proto(rule.protocol)
    port_field = f"{rule.protocol}_dst" if rule.protocol in ("tcp", "udp") else ""
    blocks = port_masks(rule.port_min, rule.port_max) if rule.port_min else [None]
    out = []
    for peer in peers:
        for block in blocks:
            m = dict(base)
            if peer != fam.everything:
                m[peer_field] = fam.net(peer)
            if block is not None:
                m[port_field] = block if block[1] != 0xFFFF else block[0]
            out.append(m)
    return out


def _of_priority(sg_priority: int, policy: str) -> int:
    """SG priority 1 is highest; at equal priority drop wins."""
    return 1000 + (100 - sg_priority) * 2 + (1 if policy == "drop" else 0)


def security_group_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """Established, related and invalid traffic, the vRouter's side, and every attachment's groups."""
    vsw = plan.vswitch(bridge.owner)
    groups = {g.name: g for g in plan.groups}
    logs = plan.flow_log_window > 0
    # flow logs: every packet that passes is counted at its side of the ENI; what a rule decides is learned
    count_out, count_in = (count(FLOWLOG_OUT), count(FLOWLOG_IN)) if logs else ([], [])
    # IPv6 (dual stack) is held to the same groups; flow logs record IPv4 only
    families = [(V4, count_out, count_in)] + ([(V6, [], [])] if vsw.ipv6_cidr else [])
    out = []
    for fam, c_out, c_in in families:
        out += _state_flows(fam, bridge.zone, c_out, c_in)
    # learn, then count: a retry of a new connection is counted (its first packet is not: the learned flow
    # is installed after it)
    verdicts: tuple[list, list, list, list] = ([], [], [], [])
    if logs:
        verdicts = (learn(FLOWLOG_ACCEPT_AT_SOURCE) + count_out, learn(FLOWLOG_REJECT_AT_SOURCE) + count_out,
                    learn(FLOWLOG_ACCEPT_AT_DEST) + count_in, learn(FLOWLOG_REJECT_AT_DEST) + count_in)
    for obj, a in enumerate((a for a in plan.attachments if a.vswitch == vsw.name), start=1):
        out += _attachment_flows(a, obj, groups, bridge.zone, verdicts)
        if a.ipv6:
            out += _attachment_flows(a, obj, groups, bridge.zone, ([], [], [], []), V6)
    return out


def _state_flows(fam: Family, zone: int, count_out: list, count_in: list) -> list[Flow]:
    """Invalid dropped, established and related passed (counted for the flow log), and new
    connections from or to the vRouter, of one family."""
    ip = {"eth_type": fam.eth_type}
    est = ct_state(CT_TRK | CT_EST, CT_NEW | CT_INV)
    rel = ct_state(CT_TRK | CT_REL, CT_NEW | CT_INV)
    inv = ct_state(CT_TRK | CT_INV)
    out = []
    for table, nxt, counted in ((T_EGRESS, T_L2, count_out), (T_INGRESS, T_OUTPUT, count_in)):
        out += [flow(table, 3000, {**ip, "ct_state": inv}, [], "secgroup", note="invalid: dropped"),
                flow(table, 2900, {**ip, "ct_state": est}, [*counted, Goto(nxt)], "secgroup",
                     note="established connections pass"),
                flow(table, 2900, {**ip, "ct_state": rel}, [*counted, Goto(nxt)], "secgroup",
                     note="related packets (ICMP errors) pass")]
    # traffic from the vRouter was checked by the vSwitch it came from
    return out + [
        flow(T_EGRESS, 2000, {**ip, "ct_state": _NEW, "in_port": OFPORT_VROUTER_ON_VSWITCH},
             [Goto(T_L2)], "secgroup", note="from the vRouter: egress was checked at the source"),
        flow(T_INGRESS, 2000, {**ip, "ct_state": _NEW, REG_OUT: OFPORT_VROUTER_ON_VSWITCH},
             [Ct(zone, commit=True), Goto(T_OUTPUT)], "secgroup",
             note="to the vRouter: ingress is checked at the destination; commit here")]


def _peers(rule, groups: dict, fam: Family) -> list[str]:
    """Who a rule names in `fam`: its CIDR of that family, or its peer group's members' addresses
    of that family (a rule with a CIDR of the other family names nobody here)."""
    if rule.group:
        g = groups[rule.group]
        return list(g.members) if fam is V4 else list(g.members6)
    cidr = rule.cidr if fam is V4 else rule.ipv6_cidr
    return [cidr] if cidr else []


def _attachment_flows(a, obj: int, groups: dict, zone: int, verdicts: tuple[list, list, list, list],
                      fam: Family = V4) -> list[Flow]:
    """One attachment's defaults (outbound allowed, inbound denied), its groups' members and rules,
    in one family. `verdicts`: the actions of (egress accept, egress reject, ingress accept, ingress reject)."""
    out_ok, out_no, in_ok, in_no = verdicts
    addr = fam.net(a.ip if fam is V4 else a.ipv6)
    src = {"eth_type": fam.eth_type, "ct_state": _NEW, "in_port": a.ofport, fam.src: addr}
    dst = {"eth_type": fam.eth_type, "ct_state": _NEW, REG_OUT: a.ofport, fam.dst: addr}
    out = [flow(T_EGRESS, 10, src, [*out_ok, Goto(T_L2)], "secgroup", obj,
                f"{a.owner}: outbound allowed unless a rule drops it (the default)"),
           flow(T_INGRESS, 10, {k: v for k, v in dst.items()}, in_no, "secgroup", obj,
                f"{a.owner}: inbound denied unless a rule or group membership allows it (the default)")]
    accept_in = [*in_ok, Ct(zone, commit=True), Goto(T_OUTPUT)]
    for gname in a.security_groups:
        g = groups[gname]
        out += [flow(T_INGRESS, _of_priority(100, "accept") - 100, {**dst, **m}, accept_in, "secgroup", obj,
                     f"{a.owner}: members of {g.name} reach each other")
                for m in _rule_matches(_AllRule, fam.src, list(g.members if fam is V4 else g.members6), fam)]
        for number, rule in enumerate(g.rules, start=1):
            peers = _peers(rule, groups, fam)
            note = f"{rule.direction} of {a.owner}: {rule.text(g.name, number)}"
            priority = _of_priority(rule.priority, rule.policy)
            if rule.direction == "egress":
                actions = [*out_ok, Goto(T_L2)] if rule.policy == "accept" else out_no
                out += [flow(T_EGRESS, priority, {**src, **m}, actions, "secgroup", obj, note)
                        for m in _rule_matches(rule, fam.dst, peers, fam)]
            else:
                actions = accept_in if rule.policy == "accept" else in_no
                out += [flow(T_INGRESS, priority, {**dst, **m}, actions, "secgroup", obj, note)
                        for m in _rule_matches(rule, fam.src, peers, fam)]
    return out


def anti_spoofing_flows(plan: Plan, bridge: BridgePlan) -> list[Flow]:
    """Below every attachment: anything else a port sends as new is not from an address behind it,
    and anything else to a port is not for an address behind it."""
    vsw = plan.vswitch(bridge.owner)
    atts = [a for a in plan.attachments if a.vswitch == vsw.name]
    out = []
    for fam in [V4] + ([V6] if vsw.ipv6_cidr else []):
        out += [flow(T_EGRESS, 5, {"eth_type": fam.eth_type, "ct_state": _NEW, "in_port": a.ofport}, [], "spoof",
                     note=f"port {a.ofport}: source address not behind this port (spoofed): dropped")
                for a in {a.ofport: a for a in atts}.values()]
        out.append(flow(T_INGRESS, 5, {"eth_type": fam.eth_type, "ct_state": _NEW}, [], "secgroup",
                        note="destination address not behind the chosen port: dropped"))
    return out
