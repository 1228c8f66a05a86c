"""Reachability probe run inside a network namespace.

Probes many ``tcp``/``udp``/``http`` targets concurrently, each with its own
deadline, and classifies every outcome as one of ``answered``, ``refused``,
``timeout``, ``unreachable`` or ``error``.  The answer is the JSON object sent
back by :mod:`kubevpc.server`.  Stdlib only (``python -m kubevpc.probe``).

For answered probes ``detail`` is ``local=IP:PORT``, the probe's own socket
address, so callers can compare it with the ``client`` the server saw (SNAT).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
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


async def _probe_tcp(t: Target) -> tuple[dict, str]:
    reader, writer = await asyncio.open_connection(t.host, t.port, limit=MAX_READ)
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


async def _probe_http(t: Target) -> tuple[dict, str]:
    reader, writer = await asyncio.open_connection(t.host, t.port, limit=MAX_READ)
    try:
        local = _fmt_addr(writer.get_extra_info("sockname"))
        host = f"[{t.host}]" if ":" in t.host else t.host
        if t.port != 80:
            host += f":{t.port}"
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kubevpc-probe\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = b""
        while chunk := await reader.read(MAX_READ):
            data += chunk
            if len(data) > MAX_READ:
                raise BadAnswer(f"HTTP response larger than {MAX_READ} bytes")
    finally:
        writer.close()
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
    return answer, local


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


async def _probe_udp(t: Target, timeout: float) -> tuple[dict, str]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _UDPProbe, remote_addr=(t.host, t.port)
    )
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


async def probe_one(t: Target, timeout: float) -> Result:
    """Probe one target within ``timeout`` seconds; never raises."""
    start = time.monotonic()
    answer: dict | None = None
    outcome, detail = "error", ""
    try:
        if t.proto == "tcp":
            coro = _probe_tcp(t)
        elif t.proto == "http":
            coro = _probe_http(t)
        elif t.proto == "udp":
            coro = _probe_udp(t, timeout)
        else:
            raise BadAnswer(f"unknown protocol {t.proto!r}")
        answer, local = await asyncio.wait_for(coro, timeout)
        outcome, detail = "answered", f"local={local}"
    except asyncio.TimeoutError:
        outcome, detail = "timeout", f"no answer within {timeout:g}s"
    except ConnectionRefusedError as exc:
        outcome, detail = "refused", str(exc)
    except BadAnswer as exc:
        answer, detail = exc.answer, str(exc)
    except OSError as exc:
        if exc.errno in UNREACHABLE_ERRNOS:
            outcome = "unreachable"
        detail = str(exc) or type(exc).__name__
    except ValueError as exc:  # StreamReader limit overrun
        detail = f"bad answer: {exc}"
    elapsed_ms = round((time.monotonic() - start) * 1000, 3)
    return Result(
        key=t.key, host=t.host, port=t.port, proto=t.proto,
        ok=outcome == "answered", outcome=outcome, answer=answer,
        elapsed_ms=elapsed_ms, detail=detail,
    )


async def probe_async(targets: Sequence[Target], timeout: float) -> list[Result]:
    """Probe all targets concurrently; results in input order."""
    return list(await asyncio.gather(*(probe_one(t, timeout) for t in targets)))


def probe(targets: list[Target], timeout: float) -> list[Result]:
    """Synchronous wrapper around :func:`probe_async` (starts its own loop)."""
    return asyncio.run(probe_async(targets, timeout))


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
        "targets", nargs="+", metavar="[KEY=]PROTO:HOST:PORT",
        help="e.g. tcp:10.0.0.5:80 or web=http:10.0.0.5:8080",
    )
    args = p.parse_args(argv)
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        p.error(f"bad --timeout {args.timeout!r}: must be > 0")
    try:
        targets = [parse_target(t) for t in args.targets]
    except ValueError as exc:
        p.error(str(exc))
    results = probe(targets, args.timeout)
    if args.json:
        json.dump([asdict(r) for r in results], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(format_line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
