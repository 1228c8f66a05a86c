"""Work inside the hosts' network namespaces from the builder's process, without a process per
namespace: a thread enters each in turn (in_each_namespace) and sets a host's addresses and
routes over netlink (host_addresses), and shapes a pod's traffic to its bandwidth limits (shape,
shape_ingress); root-side interfaces get no IPv6 (no_ipv6)."""
from __future__ import annotations

import os
import socket
from typing import Callable

from kubevpc.errors import BuildError
from kubevpc.planning import HostPlan

SIOCETHTOOL, ETHTOOL_STXCSUM, CLONE_NEWNET, ETH_P_ALL = 0x8946, 0x17, 0x40000000, 3
IFA_F_NODAD = 0x02          # an IPv6 address without duplicate address detection
IFB_NAME = "ifb0"           # a shaped pod's ingress shaper, in its namespace


def in_each_namespace(jobs: list[tuple[str, str, Callable[[], None]]]) -> None:
    """Run each (network namespace file, what, work) with the namespace entered, without a process
    per namespace: `ip -n` and `ip netns exec` copy the mount table, which holds one entry per
    named namespace, so a call per host made bring-up grow faster than linearly. One short-lived
    thread enters each namespace in turn (setns affects only the calling thread); sockets it
    opens there, netlink included, belong to that namespace."""
    import ctypes
    import threading
    errors: list[str] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for netns, what, job in jobs:
            try:
                fd = os.open(netns, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                finally:
                    os.close(fd)
                job()
            except Exception as exc:      # noqa: BLE001 - reported with the namespace, below
                errors.append(f"{what}: {exc}")
    worker = threading.Thread(target=work, name="kubevpc-netns")
    worker.start()
    worker.join()
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BuildError("; ".join(errors[:3]) + more)


def tx_checksum_off(ifname: str) -> None:
    """`ethtool -K IF tx off` in the calling thread's namespace (SIOCETHTOOL, ETHTOOL_STXCSUM)."""
    import ctypes
    import fcntl
    import struct
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)


def host_addresses(h: HostPlan, routes: list[tuple[str, int]], checksums_off: bool) -> None:
    """A host's side of its veth, in the calling thread's namespace, over netlink (pyroute2): no
    IPv6 address (addr_gen_mode none, before the link is up), its MAC, MTU and address, lo up,
    the default route through its gateway and (dst, mtu) routes through the same gateway."""
    from pyroute2 import IPRoute
    with open(f"/proc/sys/net/ipv6/conf/{h.ifname}/addr_gen_mode", "w", encoding="ascii") as fh:
        fh.write("1\n")
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        found = ipr.link_lookup(ifname=h.ifname)
        if not found:
            raise BuildError(f"its interface {h.ifname} is missing (was the namespace changed by hand?)")
        idx = found[0]
        ipr.link("set", index=idx, address=h.mac, mtu=h.mtu)
        ipr.addr("add", index=idx, address=h.ip, prefixlen=h.prefixlen)
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=h.gateway, oif=idx)
        if h.ipv6:
            ipv6_address(ipr, idx, h)
        for dst, mtu in routes:
            ipr.route("add", dst=dst, gateway=h.gateway, oif=idx, metrics={"attrs": [("RTAX_MTU", mtu)]})
        if h.egress_bandwidth:
            shape(ipr, idx, h.egress_bandwidth)
        if h.ingress_bandwidth:
            shape_ingress(ipr, idx, h.ingress_bandwidth)
    if checksums_off:
        tx_checksum_off(h.ifname)


def ipv6_address(ipr, index: int, h: HostPlan) -> None:
    """Dual stack: the host's IPv6 address in its vSwitch's /64, usable at once (nodad: no duplicate
    address detection, which the vSwitch would not answer anyway), and the default IPv6 route
    through the vSwitch gateway's IPv6 address. Still no link-local address (addr_gen_mode none):
    the gateway is a global address on the link, and neighbour discovery uses the host's global
    address as its source. Only the host's namespace is touched; the root namespace keeps no IPv6."""
    with open(f"/proc/sys/net/ipv6/conf/{h.ifname}/disable_ipv6", "w", encoding="ascii") as fh:
        fh.write("0\n")
    ipr.addr("add", index=index, address=h.ipv6, prefixlen=64, flags=IFA_F_NODAD)
    ipr.route("add", dst="::/0", gateway=h.gateway6, oif=index, family=socket.AF_INET6)


def shape(ipr, index: int, bits: int) -> None:
    """A token bucket filter as the root qdisc of interface `index`: what leaves it is held to
    `bits` per second. The bucket holds 10 ms at that rate, and at least a 64 KiB segment (GSO)
    and a frame; packets wait at most 25 ms, as in the CNI bandwidth plugin (latencyInMillis)."""
    burst = max(bits // 800, 65536 + 1514)
    ipr.tc("add", "tbf", index=index, handle="1:", rate=f"{bits}bit", burst=burst, latency="25ms")


def shape_ingress(ipr, index: int, bits: int) -> None:
    """What reaches a pod through interface `index`, held to `bits` per second: its tc ingress hook
    redirects every packet to an IFB device of the pod's (IFB_NAME), whose token bucket filter
    passes them back to the pod's stack. The CNI bandwidth plugin shapes at the root side of the
    veth instead; here Open vSwitch owns the qdisc of its ports and replaces one it did not make
    whenever the bridge is reconfigured, and on the userspace datapath it reads a port through a
    packet socket, which sees a packet before the tc ingress hook does. So both limits sit on the
    pod's side, whichever datapath runs."""
    ipr.link("add", ifname=IFB_NAME, kind="ifb")
    ifb = ipr.link_lookup(ifname=IFB_NAME)[0]
    ipr.link("set", index=ifb, state="up")
    shape(ipr, ifb, bits)
    ipr.tc("add", "ingress", index=index, handle="ffff:")
    ipr.tc("add-filter", "u32", index=index, parent="ffff:", protocol=ETH_P_ALL, prio=1, keys=["0x0/0x0+0"],
           target=0x10000, action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb})


def no_ipv6(ifnames: list[str]) -> None:
    """Root-side interfaces get no IPv6 at all: no link-local address and no fe80::/64 or ff00::/8
    route appears in the root namespace (the VPC is IPv4 only)."""
    for ifname in ifnames:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w", encoding="ascii") as fh:
            fh.write("1")


def add_addresses(ifname: str, ips, prefixlen: int) -> None:
    """More addresses on an interface of the calling thread's namespace (a VPC resolver's second)."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for ip in ips:
            ipr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
