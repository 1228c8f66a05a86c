"""The controller's answer for a node's own connection to a Service without endpoints (the node
bridge sends it here: the node would see its own address as the source of a refusal from itself,
a martian): a TCP reset for TCP, ICMP port unreachable (ICMPv6 port unreachable in IPv6, RFC 4443
type 1 code 4) for UDP, as the Service address would answer, as kube-proxy's REJECT does. Pure:
the packet's bytes in, the answer's bytes out."""
from __future__ import annotations

from os_ken.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp


def refusal(data: bytes) -> bytes | None:
    """The answer to the first packet `data`, or None when it is neither TCP nor UDP over IP."""
    pkt = packet.Packet(data)
    eth, ip4, ip6 = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(ipv6.ipv6)
    seg, dgram = pkt.get_protocol(tcp.tcp), pkt.get_protocol(udp.udp)
    ip = ip4 or ip6
    if eth is None or ip is None or (seg is None and dgram is None):
        return None
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=0x86DD if ip6 else 0x0800))
    if seg is not None:
        reply.add_protocol(ipv6.ipv6(dst=ip.src, src=ip.dst, nxt=6, hop_limit=64) if ip6 else
                           ipv4.ipv4(dst=ip.src, src=ip.dst, proto=6, ttl=64))
        reply.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=0,
                                   ack=(seg.seq + 1) & 0xFFFFFFFF, bits=tcp.TCP_RST | tcp.TCP_ACK))
    elif ip6:
        original = data[14:14 + 40 + 8]
        reply.add_protocol(ipv6.ipv6(dst=ip.src, src=ip.dst, nxt=58, hop_limit=64))
        reply.add_protocol(icmpv6.icmpv6(type_=icmpv6.ICMPV6_DST_UNREACH, code=4, data=b"\0\0\0\0" + original))
    else:
        original = data[14:14 + ip.header_length * 4 + 8]
        reply.add_protocol(ipv4.ipv4(dst=ip.src, src=ip.dst, proto=1, ttl=64))
        reply.add_protocol(icmp.icmp(type_=3, code=3, data=icmp.dest_unreach(data=original)))
    reply.serialize()
    return bytes(reply.data)
