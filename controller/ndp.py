"""IPv6 neighbour advertisements for the vSwitches' neighbour discovery (dual stack): a neighbour
solicitation the vSwitch sent to the controller (controller/ipv6.py) is answered with an
advertisement of the target's MAC, from that address, back out of the port it came in, as
ovn-controller answers OVN's nd_na (RFC 4861 section 7.2.4: solicited, override, and router for
the gateway). Pure: the solicitation's bytes and the plan in, the advertisement's bytes out."""
from __future__ import annotations

from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from kubevpc.planning import Plan

ND_ROUTER, ND_SOLICITED, ND_OVERRIDE = 0b100, 0b010, 0b001     # nd_neighbor.res, as os-ken packs it


def neighbors(plan: Plan, vswitch: str) -> dict[str, tuple[str, bool]]:
    """The IPv6 addresses a vSwitch answers for: address -> (MAC, is the gateway)."""
    vsw = plan.vswitch(vswitch)
    out = {a.ipv6: (a.mac, False) for a in plan.attachments if a.vswitch == vswitch and a.ipv6}
    if vsw.gateway6:
        out[vsw.gateway6] = (vsw.gateway_mac, True)
    return out


def advertisement(plan: Plan, vswitch: str, data: bytes) -> bytes | None:
    """The advertisement answering the solicitation `data` on `vswitch`, or None when it is not a
    solicitation for an address the vSwitch knows."""
    pkt = packet.Packet(data)
    eth, ip6, icmp6 = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    if eth is None or ip6 is None or icmp6 is None or icmp6.type_ != icmpv6.ND_NEIGHBOR_SOLICIT:
        return None
    known = neighbors(plan, vswitch).get(icmp6.data.dst)
    if known is None or ip6.src == "::":          # not ours; or duplicate address detection: no answer
        return None
    mac, router = known
    flags = ND_SOLICITED | ND_OVERRIDE | (ND_ROUTER if router else 0)
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=mac, ethertype=0x86DD))
    reply.add_protocol(ipv6.ipv6(src=icmp6.data.dst, dst=ip6.src, nxt=58, hop_limit=255))
    reply.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_ADVERT, data=icmpv6.nd_neighbor(
        res=flags, dst=icmp6.data.dst, option=icmpv6.nd_option_tla(hw_src=mac))))
    reply.serialize()
    return bytes(reply.data)
