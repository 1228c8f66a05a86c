"""Flow logs on the vSwitches: the flowlog table (learned flows that count a connection at one side
of an ENI) and flowlog_learn (what a security group's decision learns there). The security groups
(controller/secgroup.py) count and learn with `count` and `learn`; kubevpc/observe/flowlog.py reads the
learned flows back into records."""
from __future__ import annotations

from kubevpc.planning import Plan

from .flows import ETH_IP, FEATURES, IPPROTO, Flow, Learn, LearnMatch, Resubmit, SetField, flow
from .pipeline import (FLOWLOG_ACCEPT_AT_DEST, FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_IN, FLOWLOG_OUT,
                       FLOWLOG_REJECT_AT_DEST, FLOWLOG_REJECT_AT_SOURCE, REG_FLOWLOG_CODE, REG_FLOWLOG_SIDE, REG_OUT,
                       VSWITCH)

# what a learned flow of the flow log matches, per protocol: (eth_type, ip_proto or None, port fields)
_FLOWLOG_PROTOCOLS = (("tcp", IPPROTO["tcp"], ("tcp_src", "tcp_dst")), ("udp", IPPROTO["udp"], ("udp_src", "udp_dst")),
                      ("icmp", IPPROTO["icmp"], ()), ("ip", None, ()))


def count(side: int) -> list:
    """Count the packet in the flowlog table at this side of its ENI (a learned flow, if any, matches)."""
    return [SetField(REG_FLOWLOG_SIDE, side), Resubmit(VSWITCH.table("flowlog"))]


def learn(code: int) -> list:
    """Learn the flowlog flows of the connection a security group just decided (code: FLOWLOG_*_AT_*)."""
    return [SetField(REG_FLOWLOG_CODE, code), Resubmit(VSWITCH.table("flowlog_learn"))]


def flowlog_cookie(direction: int, accept: bool, first: bool) -> int:
    """The cookie of a learned flow-log flow: its direction at the ENI (FLOWLOG_OUT or FLOWLOG_IN),
    its action, and whether the packet that learned it travels in its direction (that packet is
    not in its counts); kubevpc.observe.flowlog.decode_cookie reads them back."""
    return (FEATURES["flowlog_record"] << 56) | (((direction << 2) | (int(first) << 1) | int(accept)) << 32)


def _learned(plan: Plan, direction: int, accept: bool, port_from: str, reverse: bool, proto, ports) -> Learn:
    """A learned flow-log flow: the connection's tuple in this direction (reversed for replies),
    the ENI's port (from in_port or reg1 of the learning packet) and the side it is counted at.
    The switch reports it to the controller when it has been idle for the window (send_flow_rem)."""
    src, dst = ("ipv4_dst", "ipv4_src") if reverse else ("ipv4_src", "ipv4_dst")
    specs = [LearnMatch("eth_type", 16, value=ETH_IP)]
    specs.append(LearnMatch("ip_proto", 8, value=proto) if proto is not None else LearnMatch("ip_proto", 8))
    specs += [LearnMatch(REG_FLOWLOG_SIDE, 32, value=direction),
              LearnMatch("in_port" if direction == FLOWLOG_OUT else REG_OUT, 32, src=port_from),
              LearnMatch("ipv4_src", 32, src=src), LearnMatch("ipv4_dst", 32, src=dst)]
    if ports:
        a, b = ports if not reverse else (ports[1], ports[0])
        specs += [LearnMatch(ports[0], 16, src=a), LearnMatch(ports[1], 16, src=b)]
    return Learn(table=VSWITCH.table("flowlog"), priority=100, hard_timeout=0, idle_timeout=plan.flow_log_window,
                 cookie=flowlog_cookie(direction, accept, not reverse), specs=tuple(specs), send_flow_rem=True)


def flowlog_flows(plan: Plan) -> list[Flow]:
    """The flowlog table (learned flows, and nothing to do for the rest) and flowlog_learn: for a
    connection a security group decided, the flows that count it at the ENI, by protocol. At the
    source's ENI (sg_egress, in_port is its port): out in the packet's direction, in for replies;
    at the destination's (sg_ingress, reg1 is its port): in, and out for replies. A rejected
    connection gets one flow, in the packet's direction."""
    t_log, t_learn = VSWITCH.table("flowlog"), VSWITCH.table("flowlog_learn")
    out = [flow(t_log, 0, None, [], "flowlog", note="no flow-log flow for this packet: nothing to count"),
           flow(t_learn, 0, None, [], "flowlog", note="nothing to learn")]
    plans = {FLOWLOG_ACCEPT_AT_SOURCE: [(FLOWLOG_OUT, True, "in_port", False), (FLOWLOG_IN, True, "in_port", True)],
             FLOWLOG_ACCEPT_AT_DEST: [(FLOWLOG_IN, True, REG_OUT, False), (FLOWLOG_OUT, True, REG_OUT, True)],
             FLOWLOG_REJECT_AT_DEST: [(FLOWLOG_IN, False, REG_OUT, False)],
             FLOWLOG_REJECT_AT_SOURCE: [(FLOWLOG_OUT, False, "in_port", False)]}
    words = {FLOWLOG_ACCEPT_AT_SOURCE: "accepted at the source's ENI", FLOWLOG_ACCEPT_AT_DEST:
             "accepted at the destination's ENI", FLOWLOG_REJECT_AT_DEST: "rejected at the destination's ENI",
             FLOWLOG_REJECT_AT_SOURCE: "rejected at the source's ENI"}
    for code, learns in plans.items():
        for name, proto, ports in _FLOWLOG_PROTOCOLS:
            match = {REG_FLOWLOG_CODE: code, "eth_type": ETH_IP, **({"ip_proto": proto} if proto else {})}
            out.append(flow(t_learn, 100 if proto else 90, match,
                            [_learned(plan, *x, proto, ports) for x in learns], "flowlog", code,
                            f"flow log: a {name} connection {words[code]}"))
    return out
