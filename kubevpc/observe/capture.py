"""`kubevpc capture`: packets of a running scenario, as pcapng with interface names.

A target names one or more of the run's network devices in the root namespace (the ends of the
veth pairs that Open vSwitch has as ports): a pod's or an instance's own port, a node's uplink,
the VXLAN underlay of a node (its own port, where the outer UDP packets pass), a vRouter's link
to its edge, the internet side (every host of the emulated internet), or a bridge port by
number. Each device is read through an AF_PACKET socket; a BPF filter, compiled by tcpdump
(`tcpdump -ddd`), is attached to the sockets in the kernel. Packets are written as pcapng, one
interface block a device, named after the device and what it is, so Wireshark and tcpdump show
where each packet was seen (`-w -` streams to them).

Patch ports have no network device: what crosses only them (a node's TCP after the first packet
goes through the patch port beside its uplink) cannot be captured there; capture at the pod or
the instance instead.
"""
from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ..errors import KubevpcError
from ..planning import Plan, resolve_endpoint

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
TARGETS_HELP = ("pod/<ns>/<name>, ecs/<name>, node/<name> (its own port), uplink/<node> (the node's uplink veth), "
                "vxlan/<node> (the underlay at the node: outer VXLAN packets), edge/<vpc> (the vRouter's link to its "
                "edge), internet (every internet host's port), port/<bridge>/<ofport> (e.g. port/vs0/10)")


@dataclass(frozen=True)
class Device:
    name: str             # the network device in the root namespace
    what: str             # what it is, for the interface description


def devices(plan: Plan, target: str) -> list[Device]:
    """The devices a target names; KubevpcError saying what is expected otherwise."""
    kind, _, rest = target.partition("/")
    if kind in ("pod", "ecs", "node", "inet"):
        try:
            h = resolve_endpoint(plan, target)
        except KeyError:
            raise KubevpcError(f"no endpoint {target!r} in this run (`kubevpc plan` lists them; expected "
                               "pod/<namespace>/<name>, ecs/<name>, node/<name> or inet/<name>)") from None
        if h.host_network:              # no interface of its own: its node's port carries its packets
            return [Device(plan.network_host(h).veth, f"{h.key} ({h.ip}), hostNetwork: its node {h.node}'s own port, "
                                                      "shared with the node")]
        return [Device(h.veth, f"{h.key} ({h.ip}), at its bridge port")]
    if kind == "internet" and not rest:
        hosts = plan.internet_hosts
        if not hosts:
            raise KubevpcError("this run has no emulated internet")
        return [Device(h.veth, f"{h.key} ({h.ip}), internet side") for h in hosts]
    if kind in ("uplink", "vxlan"):
        try:
            node = plan.node(rest)
        except KeyError:
            raise KubevpcError(f"no node {rest!r}; this run has {', '.join(n.name for n in plan.nodes)}") from None
        if kind == "uplink":
            return [Device(u.port, f"node {node.name}'s uplink to {u.vswitch} (veth pair; the patch port beside it "
                                   "is not seen)") for u in node.uplinks]
        if not node.tunnels:
            raise KubevpcError(f"node {node.name} has no VXLAN device (vxlan mode only)")
        host = plan.host(node.ecs)
        return [Device(host.veth, f"node {node.name}'s own port: the VXLAN underlay ({node.ip})")]
    if kind == "edge":
        vpc = next((v for v in plan.vpcs if v.name == rest), None)
        if vpc is None or plan.edge(rest) is None:
            raise KubevpcError(f"no VPC with an edge named {rest!r}")
        bridge = plan.bridge(vpc.bridge)
        return [Device(p.name, f"the vRouter of {vpc.name} to its edge (private side, before SNAT)")
                for p in bridge.ports if p.kind == "link"]
    if kind == "port":
        bname, _, number = rest.partition("/")
        bridge = next((b for b in plan.bridges if b.name in (bname, f"{plan.run}-{bname}")), None)
        if bridge is None or not number.isdigit():
            raise KubevpcError(f"{target!r}: expected port/<bridge>/<ofport>, e.g. port/vs0/10")
        port = next((p for p in bridge.ports if p.ofport == int(number)), None)
        if port is None:
            raise KubevpcError(f"bridge {bridge.name} has no port {number}")
        if port.kind == "patch":
            raise KubevpcError(f"port {number} of {bridge.name} is a patch port: it has no network device to capture "
                               "on; capture at the pod or instance behind it")
        return [Device(port.name, f"{bridge.name} port {port.ofport} ({port.kind})")]
    raise KubevpcError(f"target {target!r}: expected {TARGETS_HELP}")


def compile_filter(expression: str) -> bytes:
    """A BPF program for Ethernet frames, as tcpdump compiles it, packed as struct sock_filter."""
    try:
        res = subprocess.run(["tcpdump", "-ddd", "-i", "lo", expression], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise KubevpcError("a filter needs tcpdump, which is not installed") from None
    if res.returncode != 0:
        raise KubevpcError(f"filter {expression!r}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'refused'}")
    numbers = [list(map(int, line.split())) for line in res.stdout.splitlines()[1:] if line.strip()]
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in numbers)


def _attach(sock: socket.socket, program: bytes) -> None:
    n = len(program) // 8
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", n, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)     # the kernel copies the program
    del buf


# ------------------------------------------------------------------------------------- pcapng
def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


class PcapngWriter:
    """Section header, one interface description a device (if_name, if_description), and an
    enhanced packet block a packet, with its direction (inbound or outbound at the device)."""

    def __init__(self, out: BinaryIO, devices: list[Device], application: str = "kubevpc capture"):
        self.out = out
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(4, application.encode()) + _option(0, b"")
        out.write(_block(0x0A0D0D0A, shb))
        for d in devices:
            opts = _option(2, d.name.encode()) + _option(3, d.what.encode()) + _option(9, b"\x09") + _option(0, b"")
            out.write(_block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + opts))   # if_tsresol 10^-9
        out.flush()

    def packet(self, interface: int, ts_ns: int, data: bytes, outbound: bool) -> None:
        flags = _option(2, struct.pack("<I", 2 if outbound else 1)) + _option(0, b"")
        body = struct.pack("<IIIII", interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), len(data)) + data
        body += b"\0" * (-len(data) % 4)
        self.out.write(_block(6, body + flags))


def read_pcapng(data: bytes) -> list[tuple[str, bytes]]:
    """(interface name, frame) of every packet of a pcapng stream (enough of the format for tests
    and for `kubevpc capture`'s own output)."""
    names: list[str] = []
    out = []
    pos = 0
    while pos + 12 <= len(data):
        kind, length = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + length - 4]
        if kind == 1:
            name, opts = "", body[8:]
            while len(opts) >= 4:
                code, size = struct.unpack_from("<HH", opts)
                if code == 0:
                    break
                if code == 2:
                    name = opts[4:4 + size].decode()
                opts = opts[4 + size + (-size % 4):]
            names.append(name)
        elif kind == 6:
            iface, _, _, caplen, _ = struct.unpack_from("<IIIII", body)
            out.append((names[iface], body[20:20 + caplen]))
        pos += length
    return out


# ------------------------------------------------------------------------------------ capture
def capture(devs: list[Device], out: BinaryIO, count: int = 0, duration: float = 0.0, expression: str = "",
            stop: Callable[[], bool] = lambda: False, say: Callable[[str], None] = lambda s: None) -> int:
    """Capture on every device until `count` packets (0: no limit), `duration` seconds (0: no
    limit), `stop()` says so, or every device is gone (the run ended). Returns the packets written."""
    program = compile_filter(expression) if expression else b""
    socks = []
    try:
        for d in devs:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            if program:
                _attach(s, program)
            try:
                s.bind((d.name, 0))
            except OSError as exc:
                s.close()
                raise KubevpcError(f"cannot capture on {d.name} ({d.what}): {exc.strerror}") from None
            socks.append(s)
        writer = PcapngWriter(out, devs)
        by_fd = {s.fileno(): i for i, s in enumerate(socks)}
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLIN | select.POLLERR)
        end = time.monotonic() + duration if duration else None
        written = 0
        while socks and not stop() and (not count or written < count):
            wait = 200 if end is None else max(0, min(200, int((end - time.monotonic()) * 1000)))
            if end is not None and time.monotonic() >= end:
                break
            for fd, event in poller.poll(wait):
                i = by_fd[fd]
                try:
                    frame, addr = socks[i].recvfrom(SNAPLEN)
                except OSError:                  # the device is gone: the run ended
                    poller.unregister(fd)
                    say(f"{devs[i].name} is gone")
                    continue
                writer.packet(i, time.time_ns(), frame, addr[2] == PACKET_OUTGOING)
                written += 1
                if count and written >= count:
                    break
            out.flush()
            if not poller.poll(0) and all(not os.path.exists(f"/sys/class/net/{d.name}") for d in devs):
                break
        return written
    finally:
        for s in socks:
            s.close()
