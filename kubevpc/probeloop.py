"""Probes from many network namespaces in one process, all driven by one selector loop.

`Lab.probe` used to start `python -m kubevpc.probe` in every source's namespace: a 100 x 100
matrix was 100 interpreters starting on two cores, then each firing its 100 connections at once,
and a quarter to a half of the allowed cells timed out (issue 21). Here one process makes each
probe's socket in its source's namespace (kubevpc.daemons.nsenter: a socket keeps the namespace
it was made in, so its bind, connect and routes are the source's) and drives every connection
from one loop:

- Each probe has its own deadline, counted from its own start. A probe is a timeout only if its
  own connection got no answer within it, as with kubevpc.probe.
- Pacing: at most `cap` probes are counted in flight at once (PACE_CAP). A probe counts while it
  may be giving a server work: from its start until it ends, except a TCP probe whose handshake
  has not completed within `window` s (PACE_WINDOW), or a UDP probe older than that. The server's
  kernel completes a handshake at once when its accept queue has room, so such a probe is most
  likely dropped by a policy on the way, and costs the servers nothing. Were it to count for its
  whole deadline, a matrix whose quarter is denied would be held to `cap` denied probes a second.
  A probe whose handshake completes late counts again.
- Order: probes start round-robin over their `spread` (the destination's node, whose one server
  answers for all its pods), and within one over the destination addresses, so no server gets a
  burst while others idle.
- Source ports: each `group` (a source namespace) takes the ports of `ports` in order, as
  `python -m kubevpc.probe --source-ports` does in one namespace (kubevpc.probe.PortRange).

Results are kubevpc.probe's, classified by its own functions: the same outcomes (answered,
refused, timeout, unreachable, error), answers, details (`local=IP:PORT` for an answer) and
elapsed_ms.

    python -S -m kubevpc.probeloop < REQUEST

REQUEST is one JSON object: {"timeout": S, "ports": [FIRST, LAST] or null, "cap": N, "window": S,
"probes": [{"key": K, "target": "PROTO:HOST:PORT", "netns": "/proc/PID/ns/net" or "",
"group": G, "spread": S}, ...]}. It prints the JSON list of results in the order of "probes".
Exit status 2 on a bad request or a namespace that cannot be opened. Stdlib only.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import json
import math
import os
import resource
import selectors
import socket
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from kubevpc.daemons.harness import raise_open_files
from kubevpc.daemons.nsenter import entered, own_namespace
from kubevpc.probe import (MAX_READ, PROTOS, UDP_SENDS, BadAnswer, PortRange, Result, Target, _fmt_addr,
                           _parse_json_object, failure, http_request, parse_http, parse_port_range, parse_target,
                           result, timed_out)

# Probes counted in flight at once. Little's law: the servers' answers then come within
# PACE_CAP / (connections a second the servers serve); at a pessimistic 500 a second (four node
# servers sharing two cores with Open vSwitch) that is 0.26 s, well within a 1 s deadline, and
# unloaded (a few ms a connection) 128 in flight allow tens of thousands a second, more than the
# servers serve. KUBEVPC_PROBE_CAP (kubevpc/lab/probing.py) sets another for measuring.
PACE_CAP = 128
# How long a probe without a completed handshake (or a UDP probe without an answer) counts
# against PACE_CAP: a handshake through the emulated VPC takes milliseconds; one unanswered
# after 0.1 s is most likely dropped. KUBEVPC_PROBE_WINDOW sets another.
PACE_WINDOW = 0.1
OPEN_CAP = 8192                 # sockets open at once, at most (and the open files limit less FD_SPARE)
FD_SPARE = 64
TCP_REQUEST = b"kubevpc-probe\n"
DEADLINE, WINDOW, RESEND = 0, 1, 2      # timers


@dataclass(frozen=True)
class Job:
    """One probe: its target (its key included), the namespace its socket is made in ("": this
    process's), the group whose source ports it takes, and what it is spread over."""

    target: Target
    netns: str = ""
    group: str = ""
    spread: str = ""


class _Probe:
    """A probe in flight."""

    __slots__ = ("index", "job", "start", "sock", "addr", "connected", "out", "buf", "local", "counted",
                 "done", "registered")

    def __init__(self, index: int, job: Job) -> None:
        self.index, self.job, self.start = index, job, time.monotonic()
        self.sock: socket.socket | None = None
        self.addr: tuple = ()
        self.connected = False          # TCP: handshake completed
        self.out = b""                  # request bytes not yet sent
        self.buf = b""                  # answer bytes read so far
        self.local = ""
        self.counted = False            # against the pacing cap
        self.done = False
        self.registered = False


def interleave(lists: Iterable[Sequence[int]]) -> list[int]:
    """The first of each list, then the second of each, and so on."""
    return [x for tier in itertools.zip_longest(*lists) for x in tier if x is not None]


def spread_order(jobs: Sequence[Job]) -> list[int]:
    """Indices of `jobs` in the order they start: round-robin over their spread (a job without
    one is its own by destination address), and within one spread over destination addresses;
    jobs to one address keep their order."""
    spreads: dict[str, dict[str, list[int]]] = {}
    for i, job in enumerate(jobs):
        spreads.setdefault(job.spread or job.target.host, {}).setdefault(job.target.host, []).append(i)
    return interleave([interleave(list(hosts.values())) for hosts in spreads.values()])


def open_cap() -> int:
    """Sockets the loop may hold open: OPEN_CAP, less where the open files limit is lower."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, min(OPEN_CAP, (soft if soft != resource.RLIM_INFINITY else OPEN_CAP) - FD_SPARE))


class Loop:
    """Runs `jobs` (see the module's documentation); run() returns their results in order."""

    def __init__(self, jobs: Sequence[Job], timeout: float, ports: tuple[int, int] | None = None,
                 cap: int = PACE_CAP, window: float = PACE_WINDOW, max_open: int | None = None,
                 enter: Callable[[str, int, str], Any] = entered) -> None:
        self.jobs, self.timeout, self.ports = list(jobs), timeout, ports
        self.cap, self.window = max(1, cap), window
        self.max_open = max_open or open_cap()
        self.enter = enter
        self.results: list[Result | None] = [None] * len(self.jobs)
        self.ranges: dict[str, PortRange] = {}
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _Probe, int]] = []
        self.seq = itertools.count()
        self.load = 0                   # probes counted against cap
        self.open = 0                   # probes with a socket open
        self.peak = 0                   # the most counted at once (for tests and measurements)
        self.home: int | None = None

    def run(self) -> list[Result]:
        queue = deque(spread_order(self.jobs))
        try:
            while queue or self.open:
                self._start(queue)
                if self.open:
                    self._wait()
        finally:
            for key in list(self.sel.get_map().values()):
                key.fileobj.close()
            self.sel.close()
            if self.home is not None:
                os.close(self.home)
        return self.results  # type: ignore[return-value]

    # -- starting -----------------------------------------------------------------------
    def _start(self, queue: deque) -> None:
        """Start as many queued probes as the caps allow, each namespace entered once a batch."""
        room = min(self.cap - self.load, self.max_open - self.open, len(queue))
        if room <= 0:
            return
        by_netns: dict[str, list[int]] = {}
        for _ in range(room):
            i = queue.popleft()
            by_netns.setdefault(self.jobs[i].netns, []).append(i)
        for netns, batch in by_netns.items():
            try:
                with self._entered(netns):
                    for i in batch:
                        self._begin(i)
            except OSError as exc:          # the namespace could not be entered: none of them began
                for i in batch:
                    if self.results[i] is None:
                        p = _Probe(i, self.jobs[i])
                        self._finish(p, "error", str(exc) or type(exc).__name__)

    def _entered(self, netns: str):
        if not netns:
            return contextlib.nullcontext()
        if self.home is None:
            self.home = own_namespace()
        return self.enter(netns, self.home, "the probe loop")

    def _begin(self, i: int) -> None:
        """A probe's socket made (in the namespace entered), bound, connecting; never raises."""
        p = _Probe(i, self.jobs[i])
        t = p.job.target
        try:
            if t.proto not in PROTOS:
                raise BadAnswer(f"unknown protocol {t.proto!r}")
            family = socket.AF_INET6 if ":" in t.host else socket.AF_INET
            p.sock = socket.socket(family, socket.SOCK_DGRAM if t.proto == "udp" else socket.SOCK_STREAM)
            self.open += 1
            self._count(p, True)
            p.sock.setblocking(False)
            if self.ports:
                self.ranges.setdefault(p.job.group, PortRange(*self.ports)).bind(p.sock)
            p.addr = (t.host, t.port, 0, 0) if family == socket.AF_INET6 else (t.host, t.port)
            self._timer(p.start + self.timeout, p, DEADLINE)
            if self.window < self.timeout:
                self._timer(p.start + self.window, p, WINDOW)
            if t.proto == "udp":
                self._connect_udp(p)
            else:
                self._connect_tcp(p)
        except (BadAnswer, OSError, ValueError) as exc:
            self._finish(p, *failure(exc))

    def _connect_tcp(self, p: _Probe) -> None:
        err = p.sock.connect_ex(p.addr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"Connect call failed {p.addr}")     # as asyncio's sock_connect says
        self._register(p, selectors.EVENT_WRITE)

    def _connect_udp(self, p: _Probe) -> None:
        """Connected, sent now and again at even intervals within the deadline (kubevpc.probe)."""
        p.sock.connect(p.addr)
        p.local = _fmt_addr(p.sock.getsockname())
        self._register(p, selectors.EVENT_READ)
        for n in range(1, UDP_SENDS):
            self._timer(p.start + self.timeout * n / UDP_SENDS, p, RESEND)
        self._resend(p)

    # -- the loop -----------------------------------------------------------------------
    def _wait(self) -> None:
        """One round: wait for a socket or the next timer; sockets ready are served before timers
        are: an answer already there when its deadline passes is still an answer."""
        wait = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None
        for key, _ in self.sel.select(wait):
            self._ready(key.data)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, p, kind = heapq.heappop(self.timers)
            if p.done:
                continue
            if kind == DEADLINE:
                self._finish(p, "timeout", timed_out(self.timeout))
            elif kind == WINDOW and not p.connected:
                self._count(p, False)
            elif kind == RESEND:
                self._resend(p)

    def _ready(self, p: _Probe) -> None:
        if p.done:
            return
        try:
            if p.job.target.proto != "udp" and not p.connected:
                self._connected(p)
            elif p.out:
                self._send(p)
            else:
                self._read(p)
        except (BlockingIOError, InterruptedError):
            pass
        except (BadAnswer, OSError, ValueError) as exc:
            self._finish(p, *failure(exc))

    def _connected(self, p: _Probe) -> None:
        err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"Connect call failed {p.addr}")
        p.connected = True
        self._count(p, True)
        p.local = _fmt_addr(p.sock.getsockname())
        p.out = http_request(p.job.target) if p.job.target.proto == "http" else TCP_REQUEST
        self._send(p)

    def _send(self, p: _Probe) -> None:
        p.out = p.out[p.sock.send(p.out):]
        if not p.out:
            self._register(p, selectors.EVENT_READ)

    def _resend(self, p: _Probe) -> None:
        try:
            p.sock.send(b"kubevpc-probe")
        except (BlockingIOError, InterruptedError):
            pass            # a full send buffer drops the datagram, as asyncio's transport does
        except OSError as exc:
            self._finish(p, *failure(exc))

    def _read(self, p: _Probe) -> None:
        proto = p.job.target.proto
        data = p.sock.recv(MAX_READ + 1)
        if proto == "udp":
            return self._answered(p, _parse_json_object(data))
        if proto == "http":
            if data:
                p.buf += data
                if len(p.buf) > MAX_READ:
                    raise BadAnswer(f"HTTP response larger than {MAX_READ} bytes")
                return
            return self._answered(p, parse_http(p.buf))
        self._read_line(p, data)

    def _read_line(self, p: _Probe, data: bytes) -> None:
        """A TCP probe's answer: its first line (or what came before the end), as asyncio's
        StreamReader.readline within MAX_READ."""
        p.buf += data
        end = p.buf.find(b"\n")
        if end >= 0:
            if end + 1 > MAX_READ:
                raise ValueError("Separator is found, but chunk is longer than limit")
            return self._answered(p, _parse_json_object(p.buf[:end + 1]))
        if len(p.buf) > MAX_READ:
            raise ValueError("Separator is not found, and chunk exceed the limit")
        if not data:
            if not p.buf:
                raise BadAnswer("connection closed without an answer")
            self._answered(p, _parse_json_object(p.buf))

    # -- bookkeeping --------------------------------------------------------------------
    def _answered(self, p: _Probe, answer: dict) -> None:
        self._finish(p, "answered", f"local={p.local}", answer)

    def _finish(self, p: _Probe, outcome: str, detail: str, answer: dict | None = None) -> None:
        if p.done:
            return
        p.done = True
        self.results[p.index] = result(p.job.target, outcome, answer, p.start, detail)
        self._count(p, False)
        if p.sock is not None:
            if p.registered:
                self.sel.unregister(p.sock)
            p.sock.close()
            self.open -= 1

    def _count(self, p: _Probe, counted: bool) -> None:
        if p.counted != counted:
            p.counted = counted
            self.load += 1 if counted else -1
            self.peak = max(self.peak, self.load)

    def _register(self, p: _Probe, events: int) -> None:
        if p.registered:
            self.sel.modify(p.sock, events, p)
        else:
            self.sel.register(p.sock, events, p)
            p.registered = True

    def _timer(self, when: float, p: _Probe, kind: int) -> None:
        heapq.heappush(self.timers, (when, next(self.seq), p, kind))


def probe_many(jobs: Sequence[Job], timeout: float, ports: tuple[int, int] | None = None, cap: int = PACE_CAP,
               window: float = PACE_WINDOW) -> list[Result]:
    """Run `jobs` from this process; their results in order."""
    return Loop(jobs, timeout, ports, cap, window).run()


# -- the process ------------------------------------------------------------------------
def _number(doc: dict, name: str, default: float, low: float) -> float:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} {value!r}: expected a number >= {low:g}")
    return value


def parse_request(doc: Any) -> tuple[list[Job], float, tuple[int, int] | None, int, float]:
    """The request's jobs, timeout, ports, cap and window; ValueError naming what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("probes"), list):
        raise ValueError('expected a JSON object with a list "probes"')
    timeout = _number(doc, "timeout", 2.0, 0.0)
    if timeout <= 0:
        raise ValueError(f"timeout {timeout!r}: must be > 0")
    ports = None
    if doc.get("ports") is not None:
        if not (isinstance(doc["ports"], list) and len(doc["ports"]) == 2):
            raise ValueError(f"ports {doc['ports']!r}: expected [FIRST, LAST]")
        block = parse_port_range("%s:%s" % tuple(doc["ports"]))
        ports = (block.next, block.last)
    cap, window = int(_number(doc, "cap", PACE_CAP, 1)), _number(doc, "window", PACE_WINDOW, 0.0)
    jobs = []
    for n, item in enumerate(doc["probes"]):
        if not isinstance(item, dict) or not isinstance(item.get("target"), str):
            raise ValueError(f"probes[{n}]: expected an object with a string target")
        fields = {k: item.get(k, "") for k in ("key", "netns", "group", "spread")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise ValueError(f"probes[{n}]: key, netns, group and spread are strings")
        target = replace(parse_target(item["target"]), key=fields["key"])
        jobs.append(Job(target, fields["netns"], fields["group"], fields["spread"]))
    return jobs, timeout, ports, cap, window


def check_namespaces(jobs: Sequence[Job]) -> None:
    """Every source namespace can be opened (OSError naming the first that cannot): a source gone
    fails the call, as a `mnexec -a PID` of a process gone does."""
    for netns in dict.fromkeys(j.netns for j in jobs if j.netns):
        os.close(os.open(netns, os.O_RDONLY | os.O_CLOEXEC))


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m kubevpc.probeloop", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        jobs, timeout, ports, cap, window = parse_request(json.loads(sys.stdin.buffer.read() or b"null"))
        check_namespaces(jobs)
    except (ValueError, OSError) as exc:
        print(f"kubevpc.probeloop: {exc}", file=sys.stderr)
        return 2
    raise_open_files()
    results = probe_many(jobs, timeout, ports, cap, window)
    json.dump([asdict(r) for r in results], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
