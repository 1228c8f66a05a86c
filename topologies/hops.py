"""The checksum hops of vxlan node bridges (KUBEVPC_VXLAN_CSUM_HOP): a veth pair per node bridge, both
ends in the root namespace and on that bridge, made with the network (or with a node added to it)
and recorded in the ledger first, so that teardown and `kubevpc clean` remove them as any link.

Open vSwitch sends into the end at OFPORT_NODE_HOP_OUT, whose TX checksum offload, TSO and GSO are
off: the kernel completes an offloaded checksum as the packet leaves by it (skb_checksum_help) and
cuts a TSO packet into segments with full checksums (software GSO); the packet comes back in by the
other end, whose GRO stays off so the segments are not merged again. Both ends get the pods' MTU:
Open vSwitch 3.1 sizes the segments of a TSO packet by the MTU of the veth it sends into, and they
must fit the VXLAN device and the pods behind it. Why, and which packets take the hop:
controller/csumhop.py."""
from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from typing import Sequence

from kubevpc.errors import BuildError
from kubevpc.planning import OFPORT_NODE_HOP_OUT, NodePlan, Plan

from .netns import SIOCETHTOOL, no_ipv6
from .shell import sh

ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO = 0x17, 0x1F, 0x24, 0x2C     # <linux/ethtool.h>


def hop_pairs(plan: Plan, nodes: Sequence[NodePlan] | None = None) -> list[tuple[str, str]]:
    """(the end Open vSwitch sends into, the end it comes back in by) of each node bridge's hop, of
    every node or of `nodes`; none in a plan without hops."""
    bridges = {n.bridge for n in (plan.nodes if nodes is None else nodes)}
    out = []
    for b in plan.bridges:
        if b.name in bridges:
            hop = sorted((p for p in b.ports if p.kind == "hop"), key=lambda p: p.ofport != OFPORT_NODE_HOP_OUT)
            if hop:
                out.append((hop[0].name, hop[0].peer))
    return out


def make_hops(ledger, plan: Plan, nodes: Sequence[NodePlan] | None = None) -> int:
    """Make the hops of every node (or of `nodes`) before their bridges take them as ports: the
    veth pairs at the pods' MTU, no IPv6, the sending end's offloads off, up. How many were made."""
    pairs = hop_pairs(plan, nodes)
    if not pairs:
        return 0
    ends = [name for pair in pairs for name in pair]
    ledger.record("link", *ends)
    mtu = plan.cluster.pod_mtu
    sh(["ip", "-batch", "-"], "".join(f"link add {a} mtu {mtu} type veth peer name {b} mtu {mtu}\n" for a, b in pairs))
    no_ipv6(ends)
    try:
        for a, b in pairs:
            for cmd in (ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO):
                ethtool_set(a, cmd, 0)
            ethtool_set(b, ETHTOOL_SGRO, 0)
    except OSError as exc:
        raise BuildError(f"could not turn the checksum hop's offloads off ({exc}): without it, Service traffic "
                         "to other nodes would carry wrong checksums; unset KUBEVPC_VXLAN_CSUM_HOP") from None
    sh(["ip", "-batch", "-"], "".join(f"link set {n} up\n" for n in ends))
    return len(pairs)


def ethtool_set(ifname: str, cmd: int, value: int) -> None:
    """`ethtool -K` for one feature (struct ethtool_value), in the calling thread's namespace."""
    data = ctypes.create_string_buffer(struct.pack("II", cmd, value), 8)
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(data))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
