"""The small echo-identity server run by every emulated pod and ECS instance.

One asyncio process serves every ``--listen`` port and answers each client
with one JSON object telling who answered and how the connection looked from
the server side::

    {"name": NAME, "client": "IP:PORT", "server": "IP:PORT",
     "proto": "tcp"|"udp"|"http", "port": N, "run": RUNTAG}

``client`` is the peer address exactly as the server's socket saw it (after
any NAT), ``server`` the local address the client reached.  Stdlib only: it
runs inside network namespaces with ``python -m kubevpc.daemons.server``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from kubevpc.daemons.harness import STOP_SIGNALS, Daemon, Refused, write_ready

MAX_READ = 64 * 1024  # cap on bytes read from one client / one datagram
FIRST_BYTES_WAIT = 1.0  # how long a TCP client gets to speak first
CONN_DEADLINE = 5.0  # whole life of one TCP connection
LINGER = 1.0  # after answering, how long we drain input before closing
# The listen backlog of every TCP/HTTP listener: a pod is probed by up to a hundred sources at
# once (a 100 x 100 matrix), and asyncio's default of 100 made a burst overflow the accept queue,
# whose SYNs the kernel then drops: the client sends its SYN again after 1 s, past a probe's
# deadline. The kernel clamps it to net.core.somaxconn of the socket's namespace (4096 by default
# since Linux 5.4, 128 before); kubevpc reads that, never changes it (listen_backlog).
BACKLOG = 4096
SOMAXCONN = "/proc/sys/net/core/somaxconn"
_TIMEOUT = getattr(asyncio, "timeout", None)    # Python 3.11+

HTTP_REQUEST = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) ")

# Linux value; the socket module only exposes IP_PKTINFO from Python 3.13.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr

LISTEN_PROTOS = ("TCP", "UDP", "HTTP")


@dataclass(frozen=True)
class Listen:
    """One ``--listen PROTO:PORT`` entry."""

    proto: str  # "TCP", "UDP" or "HTTP"
    port: int

    def __str__(self) -> str:
        return f"{self.proto}:{self.port}"


def parse_listen(text: str) -> Listen:
    """Parse ``PROTO:PORT`` (protocol case-insensitive); argparse type."""
    proto, sep, port = text.partition(":")
    proto = proto.upper()
    if not sep or proto not in LISTEN_PROTOS or not port.isdigit():
        raise argparse.ArgumentTypeError(
            f"bad --listen {text!r}: expected TCP:PORT, UDP:PORT or HTTP:PORT"
        )
    if not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"bad --listen {text!r}: port out of range")
    return Listen(proto, int(port))


def fmt_addr(addr: tuple) -> str:
    """``IP:PORT`` for a socket address tuple (IPv6 as ``[IP]:PORT``)."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_backlog() -> int:
    """The backlog a listener made now gets: BACKLOG, or net.core.somaxconn of the calling thread's
    network namespace when that is less (the kernel clamps to it). Read in the namespace the
    sockets are made in: a node server's thread is in the pod's then."""
    try:
        with open(SOMAXCONN, encoding="ascii") as fh:
            return max(1, min(BACKLOG, int(fh.read())))
    except (OSError, ValueError):
        return BACKLOG


async def _within(aw, seconds: float):
    """`await aw` with a deadline (asyncio.TimeoutError past it). asyncio.timeout, where there is
    one (3.11), makes no task of its own as wait_for does: three tasks less a connection, for
    servers that take a burst of hundreds."""
    if _TIMEOUT is None:
        return await asyncio.wait_for(aw, seconds)
    async with _TIMEOUT(seconds):
        return await aw


_told_backlog = False     # a process says once that its backlog is clamped


def _tell_backlog(name: str, backlog: int) -> None:
    global _told_backlog
    if backlog < BACKLOG and not _told_backlog:
        _told_backlog = True
        print(f"kubevpc.server: {name}: listen backlog {backlog}: net.core.somaxconn of its network "
              f"namespace is below the {BACKLOG} asked for; a burst of more connections than that to "
              "one port may lose some", file=sys.stderr, flush=True)


class Server:
    """All listeners of one server process, sharing one identity."""

    def __init__(self, name: str, run: str, bind: str, bind6: str = "") -> None:
        self.name = name
        self.run = run
        self.bind = bind
        self.bind6 = bind6          # dual stack: every listener also on this IPv6 address
        self._stream_servers: list[asyncio.AbstractServer] = []
        self._udp_socks: list[socket.socket] = []
        self._conns: set[asyncio.Task] = set()   # connections in progress, ended by close()
        self._closed = False
        self.backlog = BACKLOG      # as clamped in the namespace bind_all made the sockets in

    def answer(self, proto: str, client: tuple, server: tuple) -> dict:
        return {
            "name": self.name,
            "client": fmt_addr(client),
            "server": fmt_addr(server),
            "proto": proto,
            "port": server[1],
            "run": self.run,
        }

    # -- setup / teardown ---------------------------------------------------

    async def start(self, listens: Sequence[Listen]) -> None:
        """Bind every listener (at the IPv4 bind, and at bind6 when given) and serve them; raise
        OSError naming the listener on failure."""
        await self.serve(self.bind_all(listens))

    def bind_all(self, listens: Sequence[Listen]) -> list[tuple[Listen, socket.socket]]:
        """Every listener's socket, bound and not yet listening, made in the calling thread's
        network namespace: a socket stays in the namespace it was made in, so a node server
        (kubevpc.daemons.nodeserver) enters a pod's namespace for this call only. On failure
        nothing stays bound, and the OSError names the listener."""
        socks: list[tuple[Listen, socket.socket]] = []
        self.backlog = listen_backlog()
        try:
            for bind in [self.bind] + ([self.bind6] if self.bind6 else []):
                for listen in listens:
                    try:
                        made = [_udp_socket(listen.port, bind)] if listen.proto == "UDP" else \
                            _stream_sockets(listen.port, bind)     # TCP and HTTP listeners are the same thing
                    except OSError as exc:
                        reason = os.strerror(exc.errno) if exc.errno else str(exc)
                        raise OSError(
                            exc.errno,
                            f"cannot listen on {listen} (port {listen.port}, "
                            f"bind {bind}): {reason}",
                        ) from exc
                    socks += [(listen, sock) for sock in made]
        except OSError:
            for _, sock in socks:
                sock.close()
            raise
        return socks

    async def serve(self, socks: list[tuple[Listen, socket.socket]]) -> None:
        """Listen on sockets bind_all made, and answer on them from the running loop."""
        if any(listen.proto != "UDP" for listen, _ in socks):
            _tell_backlog(self.name, self.backlog)
        for listen, sock in socks:
            if listen.proto == "UDP":
                self._serve_udp(sock)
                continue
            try:
                srv = await asyncio.start_server(self._handle_stream, sock=sock, limit=MAX_READ,
                                                 backlog=self.backlog)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {listen} (port {listen.port}, bind "
                                         f"{sock.getsockname()[0]}): {os.strerror(exc.errno or 0)}") from exc
            self._stream_servers.append(srv)

    def close(self) -> None:
        """Stop listening, and end the connections in progress (as the end of the process does)."""
        self._closed = True
        loop = asyncio.get_running_loop()
        for srv in self._stream_servers:
            srv.close()
        for sock in self._udp_socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        for task in list(self._conns):
            task.cancel()

    # -- TCP / HTTP -----------------------------------------------------------

    async def _handle_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            if self._closed:    # accepted just before close(), started after it: it ends as the others did
                return
            await _within(self._converse(reader, writer), CONN_DEADLINE)
        except (asyncio.TimeoutError, OSError, ValueError):
            pass  # a misbehaving or vanished client is not our problem
        finally:
            self._conns.discard(task)
            writer.close()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        try:
            first = await _within(reader.read(MAX_READ), FIRST_BYTES_WAIT)
        except asyncio.TimeoutError:
            first = b""  # silent client: answer anyway
        if HTTP_REQUEST.match(first):
            head = await _read_http_head(reader, first)
            writer.write(self._http_response(head, peer, local))
        else:
            line = json.dumps(self.answer("tcp", peer, local)) + "\n"
            writer.write(line.encode())
        await writer.drain()
        # Half-close so the client sees the whole answer then EOF, and drain
        # what it still sends: closing with unread input would send a RST.
        if writer.can_write_eof():
            writer.write_eof()
        try:
            await _within(_discard(reader), LINGER)
        except asyncio.TimeoutError:
            pass

    def _http_response(self, head: bytes, peer: tuple, local: tuple) -> bytes:
        method, _, rest = head.partition(b" ")
        target = rest.split(None, 1)[0] if rest.strip() else b"/"
        path = target.split(b"?", 1)[0]
        if path == b"/healthz":
            body, ctype = b"ok\n", "text/plain"
        else:
            body = (json.dumps(self.answer("http", peer, local)) + "\n").encode()
            ctype = "application/json"
        header = (
            "HTTP/1.1 200 OK\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        return header if method == b"HEAD" else header + body

    # -- UDP ------------------------------------------------------------------

    def _serve_udp(self, sock: socket.socket) -> None:
        # A plain socket with loop.add_reader instead of a datagram endpoint:
        # with IP_PKTINFO we learn the destination address of each datagram
        # (for "server" when bound to 0.0.0.0) and reply *from* that address,
        # so the client's connected socket accepts the reply on multi-IP hosts.
        pktinfo = sock.family == socket.AF_INET and _is_wildcard(sock.getsockname()[0])
        self._udp_socks.append(sock)
        asyncio.get_running_loop().add_reader(
            sock.fileno(), self._udp_ready, sock, pktinfo
        )

    def _udp_ready(self, sock: socket.socket, pktinfo: bool) -> None:
        try:
            _, ancdata, _, peer = sock.recvmsg(MAX_READ, socket.CMSG_SPACE(IN_PKTINFO.size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. an ICMP error queued on the socket
        local = sock.getsockname()
        cmsgs: list = []
        for level, kind, data in ancdata:
            if pktinfo and level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _, _, dst = IN_PKTINFO.unpack(data[: IN_PKTINFO.size])
                local = (socket.inet_ntoa(dst), local[1])
                reply_from = IN_PKTINFO.pack(0, dst, b"\0\0\0\0")
                cmsgs = [(socket.IPPROTO_IP, IP_PKTINFO, reply_from)]
        reply = json.dumps(self.answer("udp", peer, local)).encode()
        try:
            sock.sendmsg([reply], cmsgs, 0, peer)
        except (BlockingIOError, InterruptedError):
            pass  # send buffer full: drop, like any UDP server
        except OSError as exc:
            # e.g. broadcast/multicast destination cannot be a source address
            if cmsgs and exc.errno == errno.EINVAL:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass


def _udp_socket(port: int, bind: str) -> socket.socket:
    """A UDP socket bound at (bind, port), non-blocking, asking for IP_PKTINFO when it is an IPv4
    wildcard (see Server._serve_udp)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET and _is_wildcard(bind):
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock


def _stream_sockets(port: int, bind: str) -> list[socket.socket]:
    """The TCP sockets asyncio.start_server(host=bind, port=port) would make, bound, not yet
    listening: one per address the bind resolves to, SO_REUSEADDR set, IPv6 ones IPv6 only."""
    socks: list[socket.socket] = []
    try:
        for af, kind, proto, _, addr in dict.fromkeys(
                socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            sock = socket.socket(af, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if af == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _read_http_head(reader: asyncio.StreamReader, buf: bytes) -> bytes:
    """Read until the end of the request head (or MAX_READ or EOF)."""
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf and len(buf) < MAX_READ:
        chunk = await reader.read(MAX_READ - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop input until EOF."""
    while await reader.read(MAX_READ):
        pass


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_duplicates(
    listens: Sequence[Listen], error: Callable[[str], None]
) -> None:
    seen: dict[tuple[str, int], Listen] = {}
    for listen in listens:
        key = ("udp" if listen.proto == "UDP" else "tcp", listen.port)
        if key in seen:
            error(f"--listen {seen[key]} and {listen} both use {key[0]} port {listen.port}")
        seen[key] = listen


class ServerDaemon(Daemon):
    """The server's process: one asyncio loop binds the listeners and takes the stop signals."""

    NAME = "server"
    DESCRIPTION = (
        "Identity server for emulated pods and ECS instances. Every listener "
        "answers with one JSON object: name, client (peer IP:PORT as seen "
        "here), server (local IP:PORT), proto, port, run. TCP clients get "
        "the JSON line (or an HTTP/1.1 response if they speak HTTP first); "
        "UDP datagrams get one JSON datagram back; GET /healthz answers 'ok'."
    )

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True, help="identity reported in answers")
        p.add_argument(
            "--run",
            required=True,
            metavar="RUNTAG",
            help="run tag, reported in answers and used by cleanup to find the process",
        )
        p.add_argument(
            "--listen",
            required=True,
            action="append",
            type=parse_listen,
            metavar="PROTO:PORT",
            help="TCP:PORT, UDP:PORT or HTTP:PORT (HTTP is TCP that expects HTTP); repeatable",
        )
        p.add_argument("--bind", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
        p.add_argument("--bind6", default="", help="dual stack: also listen at this IPv6 address")
        p.add_argument(
            "--ready-file",
            metavar="PATH",
            help="once every listener is bound, write our pid here (atomically)",
        )

    @classmethod
    def check(cls, args: argparse.Namespace, error: Callable[[str], None]) -> None:
        _check_duplicates(args.listen, error)

    def run(self) -> int:
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        server = Server(self.args.name, self.args.run, self.args.bind, self.args.bind6)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start(self.args.listen)
        except OSError as exc:
            server.close()
            raise Refused(1, exc.strerror) from None
        write_ready(self.args.ready_file)
        await stop.wait()
        server.close()
        return 0


main = ServerDaemon.main

if __name__ == "__main__":
    sys.exit(main())
