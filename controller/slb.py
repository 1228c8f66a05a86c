"""SLB listeners on the vSwitches: every vSwitch of the VPC balances the SLB connections its own
clients open (a distributed load balancer, as OVN does), over the backends its health checkers
call healthy, weighted by their established connections for wlc listeners."""
from __future__ import annotations

import re

from kubevpc.planning import BridgePlan, Plan

from .flows import (CT_EST, CT_NEW, CT_RPL, CT_TRK, ETH_IP, IPPROTO, PROTO, Bucket, Ct, Flow, Goto, Group, GroupAction,
                    Nat, Resubmit, SetField, ct_state, flow, ip_int, stable_ids)
from .pipeline import REG_EP_IP, REG_EP_PORT, REG_SVC, VSWITCH

WLC_SCALE = 100     # a wlc bucket weighs weight x WLC_SCALE / (1 + its established connections)
CONNTRACK_ENTRY = re.compile(
    r"^(?P<proto>tcp|udp),orig=\(src=[0-9.]+,dst=(?P<dst>[0-9.]+),sport=\d+,dport=(?P<dport>\d+)\),"
    r"reply=\(src=(?P<rsrc>[0-9.]+),dst=[0-9.]+,sport=(?P<rsport>\d+),")
TCP_STATE = re.compile(r"state(?:_orig)?=(?P<state>[A-Z_0-9]+)")


def wlc_weight(weight: int, active: int) -> int:
    """Weighted least connections as bucket weights: a backend's share of new connections falls
    as its established ones grow (LVS picks the lowest active/weight outright; a select group can
    only weigh its buckets). OpenFlow weights are 16 bits; at least 1 keeps a loaded backend in."""
    return max(1, min(0xFFFF, round(weight * WLC_SCALE / (1 + active))))


def active_connections(plan: Plan, dump: str) -> dict[str, dict[str, int]]:
    """The established connections of every wlc listener's backends, {listener: {"ip:port": n}},
    read from `ovs-appctl dpctl/dump-conntrack` (userspace or kernel datapath): entries whose
    original direction went to the VIP and port and whose reply comes from a backend (the SLB's
    DNAT). TCP counts in state ESTABLISHED only, as LVS's active connections; UDP counts every
    entry."""
    wanted: dict[tuple[str, str, int], tuple[str, set[str]]] = {}
    out: dict[str, dict[str, int]] = {}
    for slb in plan.slbs:
        if slb.scheduler != "wlc":
            continue
        for li in slb.listeners:
            keys = {f"{b.ip}:{b.port}" for b in li.backends}
            wanted[(PROTO[li.protocol], slb.vip, li.port)] = (li.name, keys)
            out[li.name] = {k: 0 for k in sorted(keys)}
    if not wanted:
        return out
    for line in dump.splitlines():
        m = CONNTRACK_ENTRY.match(line.strip())
        if not m:
            continue
        hit = wanted.get((m["proto"], m["dst"], int(m["dport"])))
        if hit is None:
            continue
        name, keys = hit
        backend = f"{m['rsrc']}:{m['rsport']}"
        if backend not in keys:
            continue
        if m["proto"] == "tcp":
            st = TCP_STATE.search(line)
            if not st or st["state"] != "ESTABLISHED":
                continue
        out[name][backend] += 1
    return out


def slb_flows(plan: Plan, bridge: BridgePlan, health: dict | None,
              loads: dict | None = None) -> tuple[list[Flow], list[Group]]:
    """Every vSwitch of the VPC balances the SLB connections its own clients open (a distributed
    load balancer, as OVN does): replies pass the client's vSwitch, whose conntrack undoes the DNAT,
    so the client sees the VIP. The backend sees the client's address, as with Alibaba's layer-4
    listeners. `health`: the checkers' view ({listener: {"ip:port": healthy}}), None counts every
    backend healthy. `loads`: the wlc listeners' established connections per backend (see
    active_connections); None counts none. Returns the flows and one select group per listener
    with a healthy backend."""
    t_slb, t_be, t_next = VSWITCH.table("slb"), VSWITCH.table("slb_backend"), VSWITCH.table("sg_egress")
    vsw = plan.vswitch(bridge.owner)
    flows = [flow(t_slb, 0, None, [Goto(t_next)], "slb", note="not for an SLB listener"),
             flow(t_be, 0, None, [], "slb", note="no such backend (a group changed under a packet): dropped")]
    groups: list[Group] = []
    here = {a.ip: a for a in plan.attachments if a.vswitch == vsw.name and "/" not in a.ip}
    ids = stable_ids([li.name for slb in plan.slbs for li in slb.listeners])
    for slb in plan.slbs:
        if plan.vswitch(slb.vswitch).vpc != vsw.vpc:
            continue
        for li in slb.listeners:
            state = (health or {}).get(li.name, {})
            up = [b for b in li.backends if b.weight > 0 and (health is None or state.get(f"{b.ip}:{b.check_port}"))]
            f, g = _listener(bridge.zone, vsw, here, slb, li, ids[li.name], up, (loads or {}).get(li.name, {}))
            flows += f
            groups += g
    return flows, groups


def _listener(zone: int, vsw, here: dict, slb, li, lid: int, up: list,
              active: dict) -> tuple[list[Flow], list[Group]]:
    """One listener on one vSwitch (its attachments by address: `here`): its select group over the
    backends `up`, DNAT to each, and the MAC of every backend for the later packets of a connection."""
    t_slb, t_be, t_next = VSWITCH.table("slb"), VSWITCH.table("slb_backend"), VSWITCH.table("sg_egress")
    proto = PROTO[li.protocol]
    m = {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_NEW), "ip_proto": IPPROTO[proto],
         "ipv4_dst": slb.vip, f"{proto}_dst": li.port}
    if not up:
        return [flow(t_slb, 100, m, [], "slb", lid, f"SLB {li.name}: no healthy backend: dropped")], []
    flows = [flow(t_slb, 100, m, [SetField(REG_SVC, lid), GroupAction(lid)], "slb", lid,
                  f"SLB {li.name} ({slb.scheduler}): one of {len(up)} healthy backends")]
    weights = [wlc_weight(b.weight, active.get(f"{b.ip}:{b.port}", 0)) if slb.scheduler == "wlc"
               else b.weight for b in up]
    group = Group(lid, tuple(Bucket((SetField(REG_EP_IP, ip_int(b.ip)), SetField(REG_EP_PORT, b.port),
                                     Resubmit(t_be)), weight=w) for b, w in zip(up, weights)), note=li.name)
    for b in up:
        mac = here[b.ip].mac if b.ip in here else vsw.gateway_mac
        flows.append(flow(t_be, 100, {"eth_type": ETH_IP, "ip_proto": IPPROTO[proto], REG_SVC: lid,
                                      REG_EP_IP: ip_int(b.ip), REG_EP_PORT: b.port},
                          [SetField("eth_dst", mac), Ct(zone, commit=True, table=t_next,
                                                        nat=Nat("dst", b.ip, b.port, b.port), mark=lid)],
                          "slb", lid, f"SLB {li.name}: DNAT to {b.id} {b.ip}:{b.port}"
                          + ("" if b.ip in here else ", through the vRouter")))
    # later packets of the connection: conntrack applied the DNAT, but a client on this
    # vSwitch, or the vRouter, addressed them to the VIP's MAC
    for b in li.backends:
        mac = here[b.ip].mac if b.ip in here else vsw.gateway_mac
        flows.append(flow(t_slb, 90, {"eth_type": ETH_IP, "ct_state": ct_state(CT_TRK | CT_EST, CT_NEW | CT_RPL),
                                      "ct_mark": lid, "ip_proto": IPPROTO[proto], "ipv4_dst": b.ip,
                                      f"{proto}_dst": b.port},
                          [SetField("eth_dst", mac), Goto(t_next)], "slb", lid,
                          f"SLB {li.name}: established, to {b.id}: its MAC"))
    return flows, [group]
