"""`kubevpc capture` (kubevpc/observe/capture.py) without a network: the devices each kind of target
names in plans of the scenarios (and the errors for targets that name none), the pcapng it
writes (block by block, read back by read_pcapng and, when it is installed, by tcpdump), the BPF
filter tcpdump compiles for it (run on frames by a small BPF interpreter), and the capture loop
on sockets that are not AF_PACKET ones."""
from __future__ import annotations

import errno
import io
import select
import shutil
import socket
import struct
import subprocess
import time
from types import SimpleNamespace

import pytest

from kubevpc.observe import capture as capture_mod
from kubevpc.observe.capture import (LINKTYPE_ETHERNET, SNAPLEN, SO_ATTACH_FILTER, TARGETS_HELP, Device, PcapngWriter,
                             capture, compile_filter, devices, read_pcapng)
from kubevpc.errors import KubevpcError

from .plans import DEFAULT, INTERNET, MODES, NETPOL, PODSG, plan_of

HAS_TCPDUMP = shutil.which("tcpdump") is not None


# ------------------------------------------------------------------------------------ targets
def test_targets_help_names_every_kind():
    for kind in ("pod/<ns>/<name>", "ecs/<name>", "node/<name>", "uplink/<node>", "vxlan/<node>", "edge/<vpc>",
                 "internet", "port/<bridge>/<ofport>"):
        assert kind in TARGETS_HELP


@pytest.mark.parametrize("mode", MODES)
def test_endpoints_are_their_own_ports(mode):
    plan = plan_of(DEFAULT, mode)
    web0 = "10.244.0.2" if mode != "eni" else "192.168.1.3"           # eni: an address of vsw-h
    assert devices(plan, "pod/default/web-0") == [Device("kvp0", f"pod/default/web-0 ({web0}), at its bridge port")]
    assert devices(plan, "pod/web-0") == devices(plan, "pod/default/web-0")          # namespace default
    assert devices(plan, "pod/shop/client") == [Device("kvp3", f"pod/shop/client ({plan.host('pod/shop/client').ip}), "
                                                               "at its bridge port")]
    assert devices(plan, "ecs/ecs-db") == [Device("kve3", "ecs/ecs-db (192.168.2.50), at its bridge port")]
    assert devices(plan, "node/node-3") == [Device("kve2", "ecs/node-3 (192.168.2.1), at its bridge port")]
    assert devices(plan, "ecs/node-3") == devices(plan, "node/node-3")
    assert devices(plan, "uplink/node-1") == [
        Device("kvnu0.0", "node node-1's uplink to vsw-h (veth pair; the patch port beside it is not seen)")]
    assert devices(plan, "uplink/node-3") == [
        Device("kvnu2.0", "node node-3's uplink to vsw-i (veth pair; the patch port beside it is not seen)")]
    assert devices(plan, "port/vs1/10") == [Device("kve3", "kv-vs1 port 10 (veth)")]
    assert devices(plan, "port/kv-vs0/10") == [Device("kvun0.0", "kv-vs0 port 10 (link)")]
    assert devices(plan, "port/n0/1000") == [Device("kvp0", "kv-n0 port 1000 (veth)")]


def test_vxlan_targets_in_vxlan_mode():
    plan = plan_of(DEFAULT, "vxlan")
    assert devices(plan, "vxlan/node-1") == [Device("kve0", "node node-1's own port: the VXLAN underlay (192.168.1.1)")]
    assert devices(plan, "vxlan/node-3") == [Device("kve2", "node node-3's own port: the VXLAN underlay (192.168.2.1)")]
    assert devices(plan, "port/n0/100") == [Device("kvx0", "kv-n0 port 100 (vxlan)")]


def test_the_internet_edge_and_its_hosts():
    for mode in ("vxlan", "eni"):
        plan = plan_of(INTERNET, mode)
        assert devices(plan, "internet") == [Device("kvi0", "inet/client (198.18.0.2), internet side"),
                                             Device("kvi1", "inet/server (198.18.0.3), internet side")]
        assert devices(plan, "inet/server") == [Device("kvi1", "inet/server (198.18.0.3), at its bridge port")]
        assert devices(plan, "edge/vpc") == [Device("kvve0", "the vRouter of vpc to its edge (private side, "
                                                             "before SNAT)")]
        assert devices(plan, "port/ed0/1") == [Device("kvev0", "kv-ed0 port 1 (link)")]
        assert devices(plan, "port/inet/11") == [Device("kvi1", "kv-inet port 11 (veth)")]


def test_a_node_with_two_uplinks():
    plan = plan_of(PODSG, "eni")
    assert devices(plan, "uplink/node-2") == [
        Device("kvnu1.0", "node node-2's uplink to vsw-a (veth pair; the patch port beside it is not seen)"),
        Device("kvnu1.1", "node node-2's uplink to vsw-pods (veth pair; the patch port beside it is not seen)")]


@pytest.mark.parametrize("path,mode", [(p, m) for p in (DEFAULT, NETPOL, INTERNET) for m in MODES] + [(PODSG, "eni")])
def test_every_target_names_real_devices(path, mode):
    """Every device a target names is a port of the plan with a network device (not a patch port),
    with a name the kernel takes (15 bytes at most), with the longest run name."""
    plan = plan_of(path, mode, run="kvxxxx")
    ports = {p.name: (b, p) for b in plan.bridges for p in b.ports}
    targets = [h.key for h in plan.hosts if h.kind in ("pod", "ecs", "internet")]
    targets += [f"node/{n.name}" for n in plan.nodes] + [f"uplink/{n.name}" for n in plan.nodes]
    targets += [f"vxlan/{n.name}" for n in plan.nodes if mode == "vxlan"]
    targets += [f"edge/{v.name}" for v in plan.vpcs if plan.edge(v.name)]
    targets += ["internet"] if plan.internet_hosts else []
    short = lambda b: b.name.removeprefix(plan.run + "-")   # noqa: E731
    targets += [f"port/{short(b)}/{p.ofport}" for b in plan.bridges for p in b.ports if p.kind != "patch"]
    seen = set()
    for target in targets:
        found = devices(plan, target)
        assert found, target
        for d in found:
            assert d.name in ports and ports[d.name][1].kind != "patch", (target, d)
            assert len(d.name.encode()) <= 15, d.name
            seen.add(d.name)
    # every port with a device can be captured on by some target
    assert seen == {name for name, (_, p) in ports.items() if p.kind != "patch"}


@pytest.mark.parametrize("path,mode,target,message", [
    (DEFAULT, "vxlan", "pod/default/nope", "no endpoint 'pod/default/nope' in this run"),
    (DEFAULT, "vxlan", "ecs/nope", "no endpoint 'ecs/nope' in this run"),
    (DEFAULT, "vxlan", "node/nope", "no endpoint 'node/nope' in this run"),
    (DEFAULT, "vxlan", "inet/server", "no endpoint 'inet/server' in this run"),
    (DEFAULT, "vxlan", "internet", "this run has no emulated internet"),
    (DEFAULT, "vxlan", "uplink/node-9", "no node 'node-9'; this run has node-1, node-2, node-3"),
    (DEFAULT, "vxlan", "vxlan/node-9", "no node 'node-9'; this run has node-1, node-2, node-3"),
    (DEFAULT, "vxlan", "uplink/", "no node ''; this run has node-1, node-2, node-3"),
    (DEFAULT, "vpc-route", "vxlan/node-1", "node node-1 has no VXLAN device (vxlan mode only)"),
    (DEFAULT, "eni", "vxlan/node-2", "node node-2 has no VXLAN device (vxlan mode only)"),
    (INTERNET, "eni", "vxlan/node-1", "node node-1 has no VXLAN device (vxlan mode only)"),
    (DEFAULT, "vxlan", "edge/vpc-prod", "no VPC with an edge named 'vpc-prod'"),
    (INTERNET, "vxlan", "edge/nope", "no VPC with an edge named 'nope'"),
    (DEFAULT, "vxlan", "port/vs0/1", "port 1 of kv-vs0 is a patch port: it has no network device to capture on; "
                                     "capture at the pod or instance behind it"),
    (DEFAULT, "eni", "port/n0/50", "port 50 of kv-n0 is a patch port"),
    (INTERNET, "vxlan", "port/inet/1", "port 1 of kv-inet is a patch port"),
    (DEFAULT, "vxlan", "port/vs0/999", "bridge kv-vs0 has no port 999"),
    (DEFAULT, "vxlan", "port/nope/1", "'port/nope/1': expected port/<bridge>/<ofport>, e.g. port/vs0/10"),
    (DEFAULT, "vxlan", "port/vs0/x", "'port/vs0/x': expected port/<bridge>/<ofport>, e.g. port/vs0/10"),
    (DEFAULT, "vxlan", "port/vs0", "'port/vs0': expected port/<bridge>/<ofport>, e.g. port/vs0/10"),
    (DEFAULT, "vxlan", "port/vs0/-1", "'port/vs0/-1': expected port/<bridge>/<ofport>"),
    (DEFAULT, "vxlan", "bogus", f"target 'bogus': expected {TARGETS_HELP}"),
    (DEFAULT, "vxlan", "", f"target '': expected {TARGETS_HELP}"),
    (DEFAULT, "vxlan", "internet/x", f"target 'internet/x': expected {TARGETS_HELP}"),
    (DEFAULT, "vxlan", "svc/kube-system/kube-dns", f"target 'svc/kube-system/kube-dns': expected {TARGETS_HELP}"),
    (DEFAULT, "vxlan", "POD/default/web-0", f"target 'POD/default/web-0': expected {TARGETS_HELP}"),
])
def test_bad_targets_say_what_is_wrong(path, mode, target, message):
    with pytest.raises(KubevpcError) as exc:
        devices(plan_of(path, mode), target)
    assert str(exc.value).startswith(message), str(exc.value)


# ------------------------------------------------------------------------------------- pcapng
def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(block type, body) of each block, checking the lengths at both ends and the alignment."""
    out, pos = [], 0
    while pos < len(data):
        kind, length = struct.unpack_from("<II", data, pos)
        assert length % 4 == 0 and length >= 12 and pos + length <= len(data), (kind, length)
        assert struct.unpack_from("<I", data, pos + length - 4)[0] == length
        out.append((kind, data[pos + 8:pos + length - 4]))
        pos += length
    assert pos == len(data)
    return out


def options(buf: bytes) -> list[tuple[int, bytes]]:
    """Options up to opt_endofopt (which must be there), each padded to 32 bits with zeros."""
    out, pos = [], 0
    while True:
        code, size = struct.unpack_from("<HH", buf, pos)
        if code == 0:
            assert size == 0 and pos + 4 == len(buf), "opt_endofopt ends the options"
            return out
        value = buf[pos + 4:pos + 4 + size]
        assert len(value) == size
        pad = buf[pos + 4 + size:pos + 4 + size + (-size % 4)]
        assert pad == b"\0" * (-size % 4)
        out.append((code, value))
        pos += 4 + size + (-size % 4)


DEVS = [Device("kvp0", "pod/default/web-0 (10.244.0.2), at its bridge port"),
        Device("kvnu0.0", "node node-1's uplink to vsw-h (veth pair; the patch port beside it is not seen)"),
        Device("kvi1", "inet/server (198.18.0.3) → ü, internet side")]          # UTF-8, not 1 byte a character
T0 = 1_700_000_000_123_456_789                                                   # ns: more than 32 bits


def write(packets, devs=DEVS, application="kubevpc capture") -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out, devs, application)
    for p in packets:
        w.packet(*p)
    return out.getvalue()


def test_pcapng_blocks():
    frames = [(0, T0, b"\x01" * 60, False), (1, T0 + 1, b"\x02" * 61, True), (2, T0 + 10**9, b"\x03" * 62, False),
              (0, T0 + 2 * 10**9 + 7, b"\x04" * 63, True), (1, 5, b"\x05", False), (2, 2**40, b"\x06" * 1514, True)]
    data = write(frames)
    bs = blocks(data)
    assert [k for k, _ in bs] == [0x0A0D0D0A] + [1] * 3 + [6] * len(frames)
    # section header: byte-order magic, version 1.0, section length unknown, the application
    magic, major, minor, section = struct.unpack_from("<IHHq", bs[0][1])
    assert (magic, major, minor, section) == (0x1A2B3C4D, 1, 0, -1)
    assert options(bs[0][1][16:]) == [(4, b"kubevpc capture")]
    # one interface block a device, in order: Ethernet, the snap length, its name and what it is, ns
    for (kind, body), d in zip(bs[1:4], DEVS):
        linktype, reserved, snaplen = struct.unpack_from("<HHI", body)
        assert (linktype, reserved, snaplen) == (LINKTYPE_ETHERNET, 0, SNAPLEN) == (1, 0, 262144)
        assert options(body[8:]) == [(2, d.name.encode()), (3, d.what.encode()), (9, b"\x09")]
    # a packet block a packet: its interface, the timestamp in two halves, lengths, the frame, direction
    for (kind, body), (iface, ts, frame, outbound) in zip(bs[4:], frames):
        i, hi, lo, caplen, length = struct.unpack_from("<IIIII", body)
        assert (i, (hi << 32) | lo, caplen, length) == (iface, ts, len(frame), len(frame))
        assert body[20:20 + caplen] == frame
        padded = 20 + caplen + (-caplen % 4)
        assert body[20 + caplen:padded] == b"\0" * (-caplen % 4)
        assert options(body[padded:]) == [(2, struct.pack("<I", 2 if outbound else 1))]   # epb_flags
    assert read_pcapng(data) == [(DEVS[i].name, frame) for i, _, frame, _ in frames]


def test_pcapng_without_packets_and_application_name():
    data = write([], devs=[Device("kve3", "x")], application="kubevpc capture kv1")
    bs = blocks(data)
    assert [k for k, _ in bs] == [0x0A0D0D0A, 1]
    assert options(bs[0][1][16:]) == [(4, b"kubevpc capture kv1")]
    assert read_pcapng(data) == []
    assert read_pcapng(b"") == []


def test_read_pcapng_skips_blocks_it_does_not_know():
    data = write([(0, T0, b"abc", False)], devs=[Device("kvp0", "x")])
    bs = blocks(data)
    nrb = capture_mod._block(4, b"\0\0\0\0")                   # a name resolution block, empty
    stream = data[:len(data) - 12 - len(bs[-1][1])] + nrb + data[len(data) - 12 - len(bs[-1][1]):]
    assert read_pcapng(stream) == [("kvp0", b"abc")]


def ethernet_ipv4(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes = b"hello",
                  ip6: bool = False) -> bytes:
    """A frame as a veth would carry it (TCP: a SYN)."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ip6:
        ip = struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + b"\xfd" + b"\0" * 14 + b"\x01" + \
            b"\xfd" + b"\0" * 14 + b"\x02"
        return b"\x0a\x58\x0a\xf4\x00\x02" + b"\x0a\x58\x0a\xf4\x00\x01" + b"\x86\xdd" + ip + l4
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, socket.inet_aton(src),
                         socket.inet_aton(dst))
    checksum = sum(struct.unpack("!10H", header))
    while checksum >> 16:
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header = header[:10] + struct.pack("!H", ~checksum & 0xFFFF) + header[12:]
    return b"\x0a\x58\x0a\xf4\x00\x02" + b"\x0a\x58\x0a\xf4\x00\x01" + b"\x08\x00" + header + l4


@pytest.mark.skipif(not HAS_TCPDUMP, reason="tcpdump is not installed")
def test_tcpdump_reads_what_is_written(tmp_path):
    frames = [(0, T0, ethernet_ipv4("10.244.0.2", "192.168.2.50", 6, 40000, 5432), True),
              (1, T0 + 1_500_000_000, ethernet_ipv4("192.168.1.1", "192.168.1.2", 17, 49152, 4789, b"x" * 50), False),
              (2, T0 + 3 * 10**9 + 42, ethernet_ipv4("198.19.0.1", "198.18.0.3", 17, 61000, 53), True)]
    path = tmp_path / "capture.pcapng"
    path.write_bytes(write(frames))
    res = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-tt", "--time-stamp-precision=nano"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3, res.stdout
    assert lines[0].startswith("1700000000.123456789 IP 10.244.0.2.40000 > 192.168.2.50.5432: Flags [S]")
    assert lines[1].startswith("1700000001.623456789 IP 192.168.1.1.49152 > 192.168.1.2.4789: ")
    assert lines[2].startswith("1700000003.123456831 IP 198.19.0.1.61000 > 198.18.0.3.53: ")
    assert "reading from file" in res.stderr and "EN10MB" in res.stderr


# -------------------------------------------------------------------------------------- BPF
def run_bpf(program: bytes, frame: bytes) -> int:
    """Classic BPF (struct sock_filter, as packed for SO_ATTACH_FILTER) on one frame: what it
    returns (0 drops it). Loads beyond the frame end the program with 0, as in the kernel."""
    insns = [struct.unpack_from("HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0

    def load(offset: int, size: int) -> int | None:
        if offset < 0 or offset + size > len(frame):
            return None
        return int.from_bytes(frame[offset:offset + size], "big")
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        cls, size, mode = code & 0x07, {0x00: 4, 0x08: 2, 0x10: 1}.get(code & 0x18), code & 0xE0
        pc += 1
        if cls in (0x00, 0x01):                     # ld, ldx
            if mode == 0x00:
                v = k
            elif mode == 0x20:
                v = load(k, size)
            elif mode == 0x40:
                v = load(x + k, size)
            elif mode == 0x60:
                v = mem[k]
            elif mode == 0x80:
                v = len(frame)
            elif mode == 0xA0:                      # ldx msh: 4 * (P[k] & 0xf)
                b = load(k, 1)
                v = None if b is None else 4 * (b & 0x0F)
            else:
                raise AssertionError(f"ld mode {mode:#x}")
            if v is None:
                return 0
            if cls == 0x00:
                a = v
            else:
                x = v
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:                           # alu
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            a = {0x00: lambda: a + operand, 0x10: lambda: a - operand, 0x20: lambda: a * operand,
                 0x30: lambda: a // operand, 0x40: lambda: a | operand, 0x50: lambda: a & operand,
                 0x60: lambda: a << operand, 0x70: lambda: a >> operand, 0x80: lambda: -a,
                 0x90: lambda: a % operand, 0xA0: lambda: a ^ operand}[op]() & 0xFFFFFFFF
        elif cls == 0x05:                           # jmp
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == 0x06:                           # ret
            return a if code & 0x10 else k
        elif cls == 0x07:                           # tax, txa
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise AssertionError("the program ran off its end")


@pytest.mark.skipif(not HAS_TCPDUMP, reason="tcpdump is not installed")
def test_compile_filter_packs_what_tcpdump_compiles():
    program = compile_filter("udp port 4789")
    assert len(program) % 8 == 0 and 8 < len(program) < 8 * 64
    numbers = subprocess.run(["tcpdump", "-ddd", "-i", "lo", "udp port 4789"], capture_output=True, text=True,
                             timeout=20).stdout.split()
    assert len(program) // 8 == int(numbers[0])
    assert struct.unpack("HBBI", program[:8]) == tuple(map(int, numbers[1:5]))       # ldh [12]
    vxlan = ethernet_ipv4("192.168.1.1", "192.168.1.2", 17, 49152, 4789)
    assert run_bpf(program, vxlan) == SNAPLEN
    assert run_bpf(program, ethernet_ipv4("192.168.1.2", "192.168.1.1", 17, 4789, 49152)) == SNAPLEN
    assert run_bpf(program, ethernet_ipv4("10.244.0.3", "172.21.0.10", 17, 40000, 53)) == 0
    assert run_bpf(program, ethernet_ipv4("10.244.0.3", "192.168.1.2", 6, 40000, 4789)) == 0
    assert run_bpf(program, ethernet_ipv4("", "", 17, 40000, 4789, ip6=True)) == SNAPLEN
    syn = compile_filter("tcp[tcpflags] & tcp-syn != 0 and host 192.168.2.50")
    assert run_bpf(syn, ethernet_ipv4("10.244.0.2", "192.168.2.50", 6, 40000, 5432)) == SNAPLEN
    assert run_bpf(syn, ethernet_ipv4("10.244.0.2", "192.168.2.51", 6, 40000, 5432)) == 0
    assert run_bpf(syn, ethernet_ipv4("10.244.0.2", "192.168.2.50", 17, 40000, 5432)) == 0


@pytest.mark.skipif(not HAS_TCPDUMP, reason="tcpdump is not installed")
def test_a_filter_tcpdump_refuses():
    with pytest.raises(KubevpcError, match=r"^filter 'port nonsense': tcpdump: unknown port 'nonsense'$"):
        compile_filter("port nonsense")
    with pytest.raises(KubevpcError, match=r"^filter 'udp and \(': .*syntax error"):
        compile_filter("udp and (")


def test_a_filter_without_tcpdump(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("tcpdump")
    monkeypatch.setattr(capture_mod.subprocess, "run", missing)
    with pytest.raises(KubevpcError, match="^a filter needs tcpdump, which is not installed$"):
        compile_filter("udp")


# ------------------------------------------------------------------------------ the capture loop
class FakePacketSocket:
    """An AF_PACKET socket's part that capture() uses, over a socket pair: one byte a frame makes
    it readable; recvfrom answers the frame and an address whose pkttype says the direction."""

    frames: dict[str, list] = {}
    made: list = []

    def __init__(self, family, kind, proto):
        assert (family, kind, proto) == (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.r, self.w = socket.socketpair()
        self.name, self.queue, self.options, self.closed = "", [], [], False
        FakePacketSocket.made.append(self)

    def setsockopt(self, level, option, value):
        self.options.append((level, option, value))

    def bind(self, address):
        name, proto = address
        if name not in self.frames:
            raise OSError(errno.ENODEV, "No such device")
        self.name, self.queue = name, list(self.frames[name])
        self.w.send(b"x" * len(self.queue))

    def fileno(self):
        return self.r.fileno()

    def recvfrom(self, size):
        assert size == 262144
        self.r.recv(1)
        frame, outbound = self.queue.pop(0)
        if frame is None:
            raise OSError(errno.ENETDOWN, "Network is down")
        return frame, (self.name, 0x0800, 4 if outbound else 0, 1, b"\x0a\x58\x0a\xf4\x00\x02")

    def close(self):
        self.closed = True
        self.r.close()
        self.w.close()


@pytest.fixture
def fake_sockets(monkeypatch):
    FakePacketSocket.frames, FakePacketSocket.made = {}, []
    monkeypatch.setattr(capture_mod, "socket", SimpleNamespace(socket=FakePacketSocket, AF_PACKET=socket.AF_PACKET,
                                                               SOCK_RAW=socket.SOCK_RAW, htons=socket.htons,
                                                               SOL_SOCKET=socket.SOL_SOCKET))
    return FakePacketSocket


def test_capture_writes_every_packet_of_every_device(fake_sockets):
    """Devices that do not exist (kvtest*): once read empty, the run is over and capture() returns."""
    a, b = Device("kvtest0", "pod/x/a"), Device("kvtest1", "node n's uplink")
    fake_sockets.frames = {"kvtest0": [(b"A" * 60, False), (b"B" * 61, True)], "kvtest1": [(b"C" * 70, True)]}
    out = io.BytesIO()
    before = time.time_ns()
    said = []
    assert capture([a, b], out, say=said.append) == 3
    after = time.time_ns()
    data = out.getvalue()
    assert sorted(read_pcapng(data)) == [("kvtest0", b"A" * 60), ("kvtest0", b"B" * 61), ("kvtest1", b"C" * 70)]
    packets = [body for kind, body in blocks(data) if kind == 6]
    by_frame = {}
    for body in packets:
        i, hi, lo, caplen, _ = struct.unpack_from("<IIIII", body)
        flags = options(body[20 + caplen + (-caplen % 4):])
        by_frame[body[20:20 + caplen][:1]] = (i, flags[0][1])
        assert before <= (hi << 32 | lo) <= after
    assert by_frame == {b"A": (0, struct.pack("<I", 1)), b"B": (0, struct.pack("<I", 2)),
                        b"C": (1, struct.pack("<I", 2))}
    assert [s.name for s in fake_sockets.made] == ["kvtest0", "kvtest1"]
    assert all(s.closed for s in fake_sockets.made) and not any(s.options for s in fake_sockets.made)
    assert said == []


def test_capture_stops_at_the_count(fake_sockets):
    fake_sockets.frames = {"kvtest0": [(bytes([i]) * 60, False) for i in range(10)]}
    out = io.BytesIO()
    assert capture([Device("kvtest0", "x")], out, count=4) == 4
    assert [f[:1] for _, f in read_pcapng(out.getvalue())] == [b"\0", b"\1", b"\2", b"\3"]
    # three devices readable at once: the count is kept within one look at them
    fake_sockets.frames = {f"kvtest{i}": [(bytes([i]) * 60, False)] for i in range(3)}
    out = io.BytesIO()
    assert capture([Device(f"kvtest{i}", "x") for i in range(3)], out, count=1) == 1
    assert len(read_pcapng(out.getvalue())) == 1


def test_a_device_that_goes_away(fake_sockets):
    fake_sockets.frames = {"kvtest0": [(b"A" * 60, False), (None, False)], "kvtest1": [(b"C" * 60, True)]}
    said = []
    out = io.BytesIO()
    assert capture([Device("kvtest0", "x"), Device("kvtest1", "y")], out, say=said.append) == 2
    assert said == ["kvtest0 is gone"]


def test_capture_until_stopped_or_the_duration(fake_sockets):
    """lo exists, so only stop() or the duration ends these (the fake socket never reads lo)."""
    fake_sockets.frames = {"lo": []}
    t0 = time.monotonic()
    assert capture([Device("lo", "x")], io.BytesIO(), duration=0.3) == 0
    assert 0.25 <= time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert capture([Device("lo", "x")], io.BytesIO(), stop=lambda: True) == 0
    assert time.monotonic() - t0 < 1


def test_a_device_that_cannot_be_bound(fake_sockets):
    fake_sockets.frames = {"kvtest0": []}
    out = io.BytesIO()
    with pytest.raises(KubevpcError, match=r"^cannot capture on kvgone \(node n's uplink\): No such device$"):
        capture([Device("kvtest0", "x"), Device("kvgone", "node n's uplink")], out)
    assert all(s.closed for s in fake_sockets.made) and len(fake_sockets.made) == 2
    assert out.getvalue() == b""                               # nothing written before every device is open


def test_the_filter_is_attached_to_every_socket(fake_sockets, monkeypatch):
    program = struct.pack("HBBI", 0x06, 0, 0, 262144) * 3
    monkeypatch.setattr(capture_mod, "compile_filter", lambda expression: program if expression == "udp" else None)
    fake_sockets.frames = {"kvtest0": [], "kvtest1": []}
    assert capture([Device("kvtest0", "x"), Device("kvtest1", "y")], io.BytesIO(), expression="udp") == 0
    for s in fake_sockets.made:
        [(level, option, value)] = s.options
        assert (level, option) == (socket.SOL_SOCKET, SO_ATTACH_FILTER)
        n, address = struct.unpack("HL", value)           # struct sock_fprog: the length and a pointer
        assert n == 3 and address != 0


def test_select_poll_takes_the_fake_sockets():
    """The fake is pollable as capture() polls it (guards the fake, not capture)."""
    s = FakePacketSocket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    FakePacketSocket.frames = {"kvtest0": [(b"A", False)]}
    s.bind(("kvtest0", 0))
    p = select.poll()
    p.register(s, select.POLLIN)
    assert p.poll(1000) == [(s.fileno(), select.POLLIN)]
    s.close()
