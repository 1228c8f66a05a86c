"""Reachability probe run inside a network namespace.

Probes many ``tcp``/``udp``/``http`` targets concurrently, each with its own
deadline, and classifies every outcome as one of ``answered``, ``refused``,
``timeout``, ``unreachable`` or ``error``.  The answer is the JSON object sent
back by :mod:`kubevpc.daemons.server`.  Stdlib only (``python -m kubevpc.probe``).

For answered probes ``detail`` is ``local=IP:PORT``, the probe's own socket
address, so callers can compare it with the ``client`` the server saw (SNAT).

Source ports: with ``--source-ports FIRST:LAST`` every probe binds a port of that
range, in order, skipping ports already bound in the namespace. A caller that
never hands out a range twice within conntrack's timeouts gets probes that are
always new connections. Left to the kernel, a probe may draw the source port of
an earlier probe to the same destination whose conntrack entries are still
alive: a UDP flow (30 s on the userspace datapath) is then let through as
established after a NetworkPolicy has denied it, and a TCP SYN meets the entry
of an earlier SYN that a policy dropped (SYN_SENT, 30 s), so the new
connection's SYN-ACK is out of that entry's window and dropped after a policy
has allowed it (docs/design.md, "Probes are new connections").
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

PROTOS = ("tcp", "udp", "http")
OUTCOMES = ("answered", "refused", "timeout", "unreachable", "error")
MAX_READ = 64 * 1024  # cap on an answer
UDP_SENDS = 4  # first datagram + up to 3 retransmissions
UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    proto: str  # "tcp" | "udp" | "http"
    key: str = ""


@dataclass(frozen=True)
class Result:
    key: str
    host: str
    port: int
    proto: str
    ok: bool
    outcome: str  # one of OUTCOMES
    answer: dict | None
    elapsed_ms: float
    detail: str


class PortRange:
    """Hands out the source ports ``first..last`` in order, each once."""

    def __init__(self, first: int, last: int) -> None:
        self.next, self.last = first, last

    def bind(self, sock: socket.socket) -> None:
        """Bind ``sock`` to the next free port of the range; OSError when none is left."""
        while self.next <= self.last:
            port, self.next = self.next, self.next + 1
            try:
                sock.bind(("::" if sock.family == socket.AF_INET6 else "0.0.0.0", port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRNOTAVAIL, f"no source port left in the range up to {self.last}")


# Below the kernel's ephemeral range (32768-60999), so no kernel-chosen port is
# ever one of them, below the default NodePort range (30000-32767), and above
# the well-known ports servers use.
SOURCE_PORTS = (10000, 29999)
BLOCK_SLACK = 16  # ports beyond the count of probes, for ports found in use


class PortBlocks:
    """The caller's side: successive blocks of the source port range, wrapping round.

    Every source namespace of one round of probes is given the same block (conntrack tells
    sources apart by address); the next round starts after it.  A port comes back after
    ``(last - first + 1) / block`` rounds: 20,000 ports, about 380 rounds of a 9 x 9 matrix
    on four ports (36 probes a source, 52 ports a block), minutes at the fastest, against
    conntrack's 30 s (UDP, TCP SYN_SENT) and 45 s (TCP TIME_WAIT).
    """

    def __init__(self, first: int = SOURCE_PORTS[0], last: int = SOURCE_PORTS[1]) -> None:
        import threading
        self.first, self.last, self.next = first, last, first
        self._lock = threading.Lock()

    def take(self, count: int) -> tuple[int, int]:
        """A block for ``count`` probes per source: (first, last), inclusive."""
        size = min(count + BLOCK_SLACK, self.last - self.first + 1)
        with self._lock:
            if self.next + size - 1 > self.last:
                self.next = self.first
            block = (self.next, self.next + size - 1)
            self.next += size
        return block


class BadAnswer(Exception):
    """The peer answered, but not with what a kubevpc server sends."""

    def __init__(self, message: str, answer: dict | None = None) -> None:
        super().__init__(message)
        self.answer = answer


def _fmt_addr(addr: Any) -> str:
    if not isinstance(addr, tuple):
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_json_object(data: bytes) -> dict:
    try:
        obj = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        raise BadAnswer(f"answer is not JSON: {data[:80]!r}") from None
    if not isinstance(obj, dict):
        raise BadAnswer(f"answer is not a JSON object: {data[:80]!r}")
    return obj


# -- one probe per protocol; each returns (answer, local address) -------------


def _socket(t: Target, kind: int, ports: PortRange) -> socket.socket:
    """A non-blocking socket for ``t``, bound to the next port of ``ports``."""
    sock = socket.socket(socket.AF_INET6 if ":" in t.host else socket.AF_INET, kind)
    try:
        sock.setblocking(False)
        ports.bind(sock)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open(t: Target, ports: PortRange | None):
    if ports is None:
        return await asyncio.open_connection(t.host, t.port, limit=MAX_READ)
    sock = _socket(t, socket.SOCK_STREAM, ports)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (t.host, t.port))
        return await asyncio.open_connection(sock=sock, limit=MAX_READ)
    except BaseException:
        sock.close()
        raise


async def _probe_tcp(t: Target, ports: PortRange | None = None) -> tuple[dict, str]:
    reader, writer = await _open(t, ports)
    try:
        local = _fmt_addr(writer.get_extra_info("sockname"))
        writer.write(b"kubevpc-probe\n")
        await writer.drain()
        line = await reader.readline()  # ValueError past MAX_READ
        if not line:
            raise BadAnswer("connection closed without an answer")
        return _parse_json_object(line), local
    finally:
        writer.close()


async def _probe_http(t: Target, ports: PortRange | None = None) -> tuple[dict, str]:
    reader, writer = await _open(t, ports)
    try:
        local = _fmt_addr(writer.get_extra_info("sockname"))
        writer.write(http_request(t))
        await writer.drain()
        data = b""
        while chunk := await reader.read(MAX_READ):
            data += chunk
            if len(data) > MAX_READ:
                raise BadAnswer(f"HTTP response larger than {MAX_READ} bytes")
    finally:
        writer.close()
    return parse_http(data), local


def http_request(t: Target) -> bytes:
    """The GET an http probe sends (the server answers its JSON in the body)."""
    host = f"[{t.host}]" if ":" in t.host else t.host
    if t.port != 80:
        host += f":{t.port}"
    return (f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kubevpc-probe\r\n"
            "Connection: close\r\n\r\n").encode()


def parse_http(data: bytes) -> dict:
    """The answer of a whole HTTP response (read to its end): the body's JSON object with the
    response's "status"; BadAnswer when it is none."""
    if not data:
        raise BadAnswer("connection closed without an answer")
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    head, _, body = data.partition(sep)
    lines = head.decode("latin-1").splitlines()
    first = lines[0] if lines else ""
    status_line = first.split(None, 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/")
        or not status_line[1].isdigit()
    ):
        raise BadAnswer(f"not an HTTP response: {first[:80]!r}")
    status = int(status_line[1])
    # Content-Length, when present, bounds the body (the server closes anyway).
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            body = body[: int(value)]
    try:
        answer = _parse_json_object(body)
    except BadAnswer as exc:
        raise BadAnswer(f"HTTP {status}: {exc}", {"status": status}) from None
    answer["status"] = status
    return answer


class _UDPProbe(asyncio.DatagramProtocol):
    """Resolves ``reply`` with the first datagram or the first socket error."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # On a connected socket an ICMP port unreachable arrives here as
        # ConnectionRefusedError (host/net unreachable as OSError).
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _probe_udp(t: Target, timeout: float, ports: PortRange | None = None) -> tuple[dict, str]:
    loop = asyncio.get_running_loop()
    if ports is None:
        transport, proto = await loop.create_datagram_endpoint(
            _UDPProbe, remote_addr=(t.host, t.port)
        )
    else:
        sock = _socket(t, socket.SOCK_DGRAM, ports)
        try:
            sock.connect((t.host, t.port))
        except BaseException:
            sock.close()
            raise
        transport, proto = await loop.create_datagram_endpoint(_UDPProbe, sock=sock)
    try:
        local = _fmt_addr(transport.get_extra_info("sockname"))
        # Send now and retransmit at even intervals within the deadline.
        for _ in range(UDP_SENDS):
            transport.sendto(b"kubevpc-probe")
            done, _ = await asyncio.wait({proto.reply}, timeout=timeout / UDP_SENDS)
            if done:
                break
        data = await proto.reply  # the caller's deadline ends the wait
        return _parse_json_object(data), local
    finally:
        transport.close()


# -- classification -------------------------------------------------------------


def failure(exc: BaseException) -> tuple[str, str, dict | None]:
    """How a probe that raised `exc` ended: (outcome, detail, answer). Shared by this module's
    asyncio probes and kubevpc.probeloop's selector loop, so both classify alike."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused", str(exc), None
    if isinstance(exc, BadAnswer):
        return "error", str(exc), exc.answer
    if isinstance(exc, OSError):
        outcome = "unreachable" if exc.errno in UNREACHABLE_ERRNOS else "error"
        return outcome, str(exc) or type(exc).__name__, None
    if isinstance(exc, ValueError):     # an answer line past MAX_READ
        return "error", f"bad answer: {exc}", None
    raise exc


def timed_out(timeout: float) -> str:
    """The detail of a probe that got no answer within its deadline."""
    return f"no answer within {timeout:g}s"


def result(t: Target, outcome: str, answer: dict | None, start: float, detail: str) -> Result:
    """A probe's Result, its time counted from `start` (time.monotonic())."""
    return Result(key=t.key, host=t.host, port=t.port, proto=t.proto, ok=outcome == "answered",
                  outcome=outcome, answer=answer, elapsed_ms=round((time.monotonic() - start) * 1000, 3),
                  detail=detail)


async def probe_one(t: Target, timeout: float, ports: PortRange | None = None) -> Result:
    """Probe one target within ``timeout`` seconds; never raises."""
    start = time.monotonic()
    answer: dict | None = None
    try:
        if t.proto == "tcp":
            coro = _probe_tcp(t, ports)
        elif t.proto == "http":
            coro = _probe_http(t, ports)
        elif t.proto == "udp":
            coro = _probe_udp(t, timeout, ports)
        else:
            raise BadAnswer(f"unknown protocol {t.proto!r}")
        answer, local = await asyncio.wait_for(coro, timeout)
        outcome, detail = "answered", f"local={local}"
    except asyncio.TimeoutError:
        outcome, detail = "timeout", timed_out(timeout)
    except (BadAnswer, OSError, ValueError) as exc:     # ConnectionRefusedError is an OSError
        outcome, detail, answer = failure(exc)
    return result(t, outcome, answer, start, detail)


async def probe_async(targets: Sequence[Target], timeout: float,
                      ports: PortRange | None = None) -> list[Result]:
    """Probe all targets concurrently; results in input order.  Each probe
    binds its own port of ``ports`` (when given)."""
    return list(await asyncio.gather(*(probe_one(t, timeout, ports) for t in targets)))


def probe(targets: list[Target], timeout: float, ports: PortRange | None = None) -> list[Result]:
    """Synchronous wrapper around :func:`probe_async` (starts its own loop)."""
    return asyncio.run(probe_async(targets, timeout, ports))


def parse_port_range(text: str) -> PortRange:
    """``FIRST:LAST``, both 1..65535, FIRST <= LAST."""
    first, sep, last = text.partition(":")
    if not (sep and first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last) <= 65535):
        raise ValueError(f"bad --source-ports {text!r}: expected FIRST:LAST with 1 <= FIRST <= LAST <= 65535")
    return PortRange(int(first), int(last))


# -- command line -----------------------------------------------------------------


def parse_target(text: str) -> Target:
    """Parse ``[KEY=]PROTO:HOST:PORT``; IPv6 hosts as ``[addr]``."""
    key, sep, spec = text.partition("=")
    if not sep:
        key, spec = "", text
    proto, _, hostport = spec.partition(":")
    host, _, port = hostport.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    proto = proto.lower()
    if proto not in PROTOS or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad target {text!r}: expected [KEY=]tcp|udp|http:HOST:PORT")
    return Target(host=host, port=int(port), proto=proto, key=key)


def format_line(r: Result) -> str:
    """One readable line per result."""
    mark = "OK  " if r.ok else "FAIL"
    key = f"{r.key} " if r.key else ""
    line = f"{mark} {key}{r.proto}:{r.host}:{r.port} {r.outcome} {r.elapsed_ms:.1f}ms"
    if r.answer and "name" in r.answer:
        line += f" name={r.answer['name']} client={r.answer.get('client')}"
        if "status" in r.answer:
            line += f" status={r.answer['status']}"
    return f"{line} ({r.detail})" if r.detail else line


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kubevpc.probe",
        description="Probe kubevpc servers concurrently and report each outcome "
        "(answered, refused, timeout, unreachable, error). Exits 0 whatever "
        "the outcomes; 2 on bad arguments.",
    )
    p.add_argument(
        "--timeout", type=float, default=2.0,
        help="per-target deadline in seconds (default 2)",
    )
    p.add_argument(
        "--json", action="store_true",
        help="print a JSON list of results, in input order",
    )
    p.add_argument(
        "--source-ports", metavar="FIRST:LAST",
        help="bind the probes to these source ports, in order, skipping ports in use "
        "(default: the kernel picks, and may repeat a recent one)",
    )
    p.add_argument(
        "targets", nargs="+", metavar="[KEY=]PROTO:HOST:PORT",
        help="e.g. tcp:10.0.0.5:80 or web=http:10.0.0.5:8080",
    )
    args = p.parse_args(argv)
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        p.error(f"bad --timeout {args.timeout!r}: must be > 0")
    try:
        targets = [parse_target(t) for t in args.targets]
        ports = parse_port_range(args.source_ports) if args.source_ports else None
    except ValueError as exc:
        p.error(str(exc))
    results = probe(targets, args.timeout, ports)
    if args.json:
        json.dump([asdict(r) for r in results], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(format_line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
