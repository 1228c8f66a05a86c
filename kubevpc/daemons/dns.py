"""The cluster DNS server (the "kube-dns" pod).

``python -m kubevpc.daemons.dns`` serves a zone document (kubevpc.render.dns.zone() makes it) over UDP
and TCP with dnslib's server classes, re-reading the file whenever it changes.

The records and answers follow CoreDNS's *kubernetes* plugin, which
implements the Kubernetes DNS-Based Service Discovery specification:

- https://github.com/kubernetes/dns/blob/master/docs/specification.md
  (schema 1.0.1): A record of a ClusterIP Service; one A per *ready*
  endpoint for a headless Service, plus ``<hostname>.<svc>...`` per
  endpoint; ``_<port>._<proto>`` SRV records for named ports only (one per
  ready endpoint of a headless Service); CNAME for ExternalName;
  ``<a-b-c-d>.<ns>.pod.<zone>`` A records; case-insensitive matching.
- A headless Service with no ready endpoint is NXDOMAIN, not NODATA: spec
  1.0.0 said NODATA, but kube-dns and CoreDNS answered NXDOMAIN and the spec
  was changed to match (kubernetes/dns#234 and PR #245, coredns/coredns#1814);
  CoreDNS's ``findServices`` (plugin/kubernetes/kubernetes.go) still leaves
  ``errNoItems`` in that case.
- https://coredns.io/plugins/kubernetes/: an endpoint's name is its hostname,
  else its dashed IP (``endpoint_pod_names`` off, the default); TTL 5 s.
- CoreDNS plugin/backend_lookup.go: the SOA (``ns.dns.<zone>``,
  ``hostmaster.<zone>``, refresh 7200, retry 1800, expire 86400, minimum =
  TTL, its own TTL capped at 300) goes in the authority section of NXDOMAIN
  and NODATA answers; SRV weights split 100 among the records of one answer;
  the A records of SRV targets go in the additional section.
- plugin/kubernetes/handler.go: answers are authoritative.

Names outside the cluster domain go to the upstream resolvers given with
``--upstream``, the VPC's DNS (100.100.2.136 and .138), as ACK's Corefile has
``forward . /etc/resolv.conf { prefer_udp }``: over UDP whatever the client
used, again over TCP when the answer is truncated, one upstream after the
other within a deadline, SERVFAIL when none answers. Without an upstream they
are REFUSED: the emulator never queries the machine's real resolvers, and
never reads its /etc/resolv.conf.

Where this server departs from CoreDNS besides: a CNAME is returned for a
query of any type (RFC 1034 3.6.2; CoreDNS only does so for A, AAAA and TXT),
only the Pods given to ``zone()`` have pod records (``pods verified``), and
nothing is cached.

With ``--resolver`` the same server is a VPC's DNS resolver instead: it
answers the emulated internet's zone (kubevpc.render.dns.internet_zone) and
NXDOMAIN for every other name, since the emulated internet has no other
names; it sets RA (recursion available), as a recursive resolver does.

Stdlib and dnslib only: it runs inside the DNS pod's network namespace.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    A,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSRecord,
)
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from kubevpc.daemons.harness import ConfigFile, Daemon, Refused, file_stamp, write_seen
from kubevpc.render.dns import internet_zone, zone
from kubevpc.rundir import RunDir

POLL_INTERVAL = 0.2  # seconds between checks of the zone file
SOA_TIMES = (7200, 1800, 86400)  # refresh, retry, expire, as CoreDNS
SOA_TTL_CAP = 300
UDP_MIN = 512  # RFC 1035 limit for clients without EDNS
EDNS_PAYLOAD = 1232  # the UDP size we advertise (DNS flag day 2020)
UPSTREAM_TIMEOUT = 2.0  # seconds a forwarded query may take, every upstream and retry included
MAX_TCP_ANSWER = 65535

log = logging.getLogger("kubevpc.dns")


# -- the loaded zone -------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    """A parsed zone document, ready to answer from (never mutated)."""

    origin: str  # "cluster.local."
    records: dict[str, list[RR]]  # lower-case FQDN -> its records
    names: frozenset[str]  # every name that exists, empty non-terminals included
    soa: RR


def load_zone(doc: dict, serial: int = 0) -> Zone:
    """Parse and check a zone document; ValueError names what is wrong."""
    try:
        origin = _key(doc["domain"])
        ttl = int(doc["ttl"])
        records: dict[str, list[RR]] = {}
        for rec in doc["records"]:
            name = _key(rec["name"])
            if not _under(name, origin):
                raise ValueError(f"{name} is outside {origin}")
            rdata = _rdata(rec["type"], rec["value"])  # checks the type first
            records.setdefault(name, []).append(
                RR(name, getattr(QTYPE, rec["type"]), ttl=ttl, rdata=rdata)
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed zone document: {exc!r}") from exc
    for name, rrs in records.items():
        if len(rrs) > 1 and any(rr.rtype == QTYPE.CNAME for rr in rrs):
            raise ValueError(f"{name} has a CNAME and other records")
    soa = RR(
        origin,
        QTYPE.SOA,
        ttl=min(ttl, SOA_TTL_CAP),
        rdata=SOA(f"ns.dns.{origin}", f"hostmaster.{origin}", (serial, *SOA_TIMES, ttl)),
    )
    records.setdefault(origin, []).append(soa)
    names = set()
    for name in records:
        while name not in names and name != origin:
            names.add(name)
            name = name.split(".", 1)[1]
    return Zone(origin, records, frozenset(names | {origin}), soa)


def _rdata(rtype: str, value: Any) -> Any:
    if rtype == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return AAAA(str(ipaddress.IPv6Address(value)))
    if rtype == "CNAME":
        return CNAME(_key(value))
    if rtype == "SRV":
        nums = [value[k] for k in ("priority", "weight", "port")]
        if not all(isinstance(n, int) and 0 <= n <= 65535 for n in nums):
            raise ValueError(f"bad SRV numbers {nums}")
        return SRV(*nums, target=_key(value["target"]))
    raise ValueError(f"unsupported record type {rtype!r}")


def read_zone(path: str) -> Zone:
    """Load the zone file; its mtime becomes the SOA serial, as CoreDNS uses
    the time of the last change it saw."""
    with open(path) as f:
        doc = json.load(f)
        serial = int(os.fstat(f.fileno()).st_mtime) & 0xFFFFFFFF
    return load_zone(doc, serial)


def _key(name: str | DNSLabel) -> str:
    """The lower-case, dot-terminated form names are compared in."""
    return str(DNSLabel(name)).lower()


def _under(name: str, origin: str) -> bool:
    return name == origin or name.endswith("." + origin)


# -- answering -------------------------------------------------------------------


def answer(zone: Zone, request: DNSRecord) -> DNSRecord:
    """The reply to ``request`` from ``zone`` alone: no recursion, no upstream."""
    header = DNSHeader(id=request.header.id, qr=1, aa=1, rd=request.header.rd)
    reply = DNSRecord(header, questions=list(request.questions))
    if any(rr.rtype == QTYPE.OPT for rr in request.ar):
        reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
    if request.header.opcode != 0 or len(request.questions) != 1:
        header.aa = 0
        header.rcode = RCODE.NOTIMP if request.header.opcode != 0 else RCODE.FORMERR
        return reply
    q = request.q
    qname = _key(q.qname)
    if not _under(qname, zone.origin):
        header.aa = 0
        header.rcode = RCODE.REFUSED
        return reply
    # Follow CNAMEs while they stay in the zone; the RCODE is that of the
    # last name (RFC 6604), and a negative answer carries the SOA (RFC 2308).
    name, owner, seen = qname, q.qname, {qname}
    while True:
        if name not in zone.names:
            header.rcode = RCODE.NXDOMAIN
            reply.add_auth(zone.soa)
            return reply
        rrs = zone.records.get(name, [])
        hits = [rr for rr in rrs if q.qtype in (rr.rtype, QTYPE.ANY)]
        cname = next((rr for rr in rrs if rr.rtype == QTYPE.CNAME), None)
        if hits or cname is None:
            break
        reply.add_answer(_owned(cname, owner))
        name = owner = _key(cname.rdata.label)
        if not _under(name, zone.origin) or name in seen:
            return reply  # the rest is out of our zone (or a loop): the client's job
        seen.add(name)
    if not hits:
        reply.add_auth(zone.soa)  # NODATA
    reply.add_answer(*(_owned(rr, owner) for rr in hits))
    targets = dict.fromkeys(_key(rr.rdata.target) for rr in hits if rr.rtype == QTYPE.SRV)
    reply.ar[:0] = [
        rr
        for target in targets
        for rr in zone.records.get(target, [])
        if rr.rtype in (QTYPE.A, QTYPE.AAAA)
    ]
    return reply


def _owned(rr: RR, owner: str | DNSLabel) -> RR:
    """``rr`` owned by ``owner``: for the queried name, the client's own
    spelling, as resolvers using 0x20 case randomisation check it."""
    return RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata)


def fit_udp(request: DNSRecord, reply: DNSRecord) -> DNSRecord:
    """``reply``, or its truncated (TC) form if it is larger than the client
    takes over UDP (512 bytes, or its EDNS size), so it asks again over TCP."""
    opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
    limit = max(UDP_MIN, opt.rclass) if opt else UDP_MIN
    if len(reply.pack()) <= limit:
        return reply
    header = copy.copy(reply.header)
    header.tc = 1
    opts = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    return DNSRecord(header, questions=list(reply.questions), ar=opts)


def outside(zone: Zone, request: DNSRecord) -> bool:
    """Is ``request`` a standard query of one name outside the zone (which
    ``answer`` refuses)?"""
    return (request.header.opcode == 0 and len(request.questions) == 1
            and not _under(_key(request.q.qname), zone.origin))


def nxdomain(request: DNSRecord) -> DNSRecord:
    """A resolver's NXDOMAIN for a name nothing on the emulated internet holds."""
    reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, rd=request.header.rd, ra=1, rcode=RCODE.NXDOMAIN),
                      questions=list(request.questions))
    if any(rr.rtype == QTYPE.OPT for rr in request.ar):
        reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
    return reply


def servfail(request: DNSRecord) -> DNSRecord:
    """What CoreDNS's forward answers when no upstream did."""
    return DNSRecord(DNSHeader(id=request.header.id, qr=1, rd=request.header.rd, ra=1, rcode=RCODE.SERVFAIL),
                     questions=list(request.questions))


def parse_upstream(text: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` (port 53 by default)."""
    host, _, number = text.partition(":")
    return str(ipaddress.IPv4Address(host)), int(number) if number else 53


def _ask(data: bytes, upstream: tuple[str, int], tcp: bool, timeout: float) -> bytes:
    """One query to one upstream: over a connected UDP socket (so only the
    upstream's datagrams are read), or over TCP with its length prefix."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout)
        sock.connect(upstream)
        if not tcp:
            sock.send(data)
            return sock.recv(MAX_TCP_ANSWER)
        sock.sendall(struct.pack("!H", len(data)) + data)
        head = _read(sock, 2)
        return _read(sock, struct.unpack("!H", head)[0])


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the upstream closed the connection mid-answer")
        buf += chunk
    return buf


def forward(request: DNSRecord, upstreams: list[tuple[str, int]], timeout: float = UPSTREAM_TIMEOUT) -> DNSRecord:
    """``request`` asked of the upstreams, as CoreDNS's forward with
    prefer_udp: UDP first, TCP again for a truncated answer, the next upstream
    when one fails, all within ``timeout`` seconds; SERVFAIL when none answers.
    An answer must carry the request's id and question."""
    end = time.monotonic() + timeout
    data = request.pack()
    for upstream in upstreams:
        for tcp in (False, True):
            left = end - time.monotonic()
            if left <= 0:
                log.warning("forward %s: no answer within %gs", request.q.qname, timeout)
                return servfail(request)
            try:
                reply = DNSRecord.parse(_ask(data, upstream, tcp, left))
            except (OSError, ValueError, struct.error, DNSError) as exc:
                log.warning("forward %s to %s:%d (%s): %s", request.q.qname, *upstream, "tcp" if tcp else "udp", exc)
                break
            if reply.header.id != request.header.id or reply.questions != request.questions:
                log.warning("forward %s to %s:%d: an answer to another question, ignored", request.q.qname, *upstream)
                break
            if not reply.header.tc:
                return reply
    return servfail(request)


class ZoneResolver(BaseResolver):
    """dnslib resolver answering from ``self.zone``; the main thread swaps in
    a new Zone on reload (one attribute store, atomic for the handler threads).
    A name outside the zone is forwarded to ``upstreams`` (the cluster DNS),
    NXDOMAIN (``resolver``: a VPC's DNS), or else REFUSED."""

    def __init__(self, zone: Zone, upstreams: list[tuple[str, int]] | None = None, resolver: bool = False,
                 timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.zone = zone
        self.upstreams = list(upstreams or [])
        self.resolver = resolver
        self.timeout = timeout

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        if outside(self.zone, request) and self.resolver:
            reply = nxdomain(request)
        elif outside(self.zone, request) and self.upstreams:
            reply = forward(request, self.upstreams, self.timeout)
        else:
            reply = answer(self.zone, request)
            reply.header.ra = int(self.resolver)
        return fit_udp(request, reply) if handler.protocol == "udp" else reply


# -- the server process ----------------------------------------------------------


def reload_if_changed(
    resolver: ZoneResolver, path: str, last: tuple[int, int, int] | None
) -> tuple[int, int, int] | None:
    """Swap in the zone file if it changed since ``last``; keep the last good
    zone if the new file cannot be read or parsed. Returns the new stamp."""
    stamp = file_stamp(path)
    if stamp == last:
        return last
    try:
        resolver.zone = read_zone(path)
    except (OSError, ValueError) as exc:
        log.error("zone %s not loaded, still serving the previous one: %s", path, exc)
    else:
        log.info("zone %s reloaded: %d names", path, len(resolver.zone.names))
    write_seen(path, stamp)
    return stamp


class DnsServer(Daemon):
    """``python -m kubevpc.daemons.dns``: the server's process, one dnslib server for UDP and one
    for TCP on each address, following the zone file."""

    NAME = "dns"
    DESCRIPTION = (
        "Cluster DNS server (kube-dns / CoreDNS kubernetes plugin answers) "
        "for a JSON zone document made by kubevpc.render.dns.zone(). Serves UDP and "
        "TCP, authoritative for the zone's domain; any other name is forwarded to the "
        "--upstream resolvers (CoreDNS's forward with prefer_udp), or REFUSED without one. "
        "With --resolver, a VPC's DNS resolver: the zone of the emulated internet, "
        "NXDOMAIN for any other name. Re-reads the zone file when it changes, and says which "
        "version it serves in ZONE.seen."
    )
    LOG = "records"
    REPORT = "log"

    def __init__(self, args: argparse.Namespace, log: logging.Logger | None) -> None:
        super().__init__(args, log)
        self.stopped = threading.Event()
        self.servers: list[DNSServer] = []

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--zone", required=True, metavar="FILE", help="JSON zone document")
        p.add_argument("--listen", required=True, action="append", metavar="IP",
                       help="address to serve on (again for more)")
        p.add_argument("--port", type=int, default=53, help="UDP and TCP port (default 53)")
        p.add_argument("--upstream", action="append", default=[], metavar="IP[:PORT]",
                       help="forward names outside the zone here, in this order (again for more)")
        p.add_argument("--upstream-timeout", type=float, default=UPSTREAM_TIMEOUT, metavar="SECONDS",
                       help=f"deadline of a forwarded query (default {UPSTREAM_TIMEOUT:g})")
        p.add_argument("--resolver", action="store_true",
                       help="a VPC's DNS resolver: NXDOMAIN for names outside the zone, RA set")
        p.add_argument(
            "--ready",
            metavar="FILE",
            help="once every socket is bound, write our pid here (atomically)",
        )
        p.add_argument("--log", metavar="FILE", help="log here instead of standard error")

    @classmethod
    def check(cls, args: argparse.Namespace, error) -> None:
        try:
            args.upstreams = [parse_upstream(u) for u in args.upstream]
        except ValueError as exc:
            error(f"--upstream: expected IP or IP:PORT ({exc})")
        if args.resolver and args.upstreams:
            error("--resolver answers from its zone alone: expected no --upstream")
        if not 0 < args.upstream_timeout <= 30:
            error("--upstream-timeout: expected seconds between 0 and 30")

    def stop(self) -> None:
        super().stop()
        self.stopped.set()

    def start(self) -> None:
        self.stamp = file_stamp(self.args.zone)
        try:
            self.resolver = ZoneResolver(read_zone(self.args.zone), getattr(self.args, "upstreams", []),
                                         self.args.resolver, self.args.upstream_timeout)
        except (OSError, ValueError) as exc:
            raise Refused(1, f"cannot load zone {self.args.zone}: {exc}") from None
        # One log line per answer: dnslib's reply line already names the question.
        logger = DNSLogger("-request", prefix=False, logf=log.info)
        try:
            for address in self.args.listen:
                for tcp in (False, True):
                    self.servers.append(
                        DNSServer(self.resolver, address=address, port=self.args.port, tcp=tcp, logger=logger)
                    )
        except OSError as exc:
            for srv in self.servers:
                srv.server.server_close()
            self.servers = []
            raise Refused(1, f"cannot listen on {address} port {self.args.port}: {exc.strerror}") from None
        write_seen(self.args.zone, self.stamp)
        for srv in self.servers:
            # Not start_thread(): its serve_forever polls every 0.5 s, which is
            # how long each stop() would then take.
            threading.Thread(
                target=srv.server.serve_forever, args=(POLL_INTERVAL,), daemon=True
            ).start()

    def serve(self) -> int:
        where = "resolver" if self.resolver.resolver else \
            f"upstream {', '.join('%s:%d' % u for u in self.resolver.upstreams) or 'none'}"
        log.info("serving %s on %s port %d (udp, tcp; %s)", self.resolver.zone.origin, ", ".join(self.args.listen),
                 self.args.port, where)
        while not self.stopped.wait(POLL_INTERVAL):
            self.stamp = reload_if_changed(self.resolver, self.args.zone, self.stamp)
        return 0

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
            srv.server.server_close()


main = DnsServer.main


# -- the builder's side ----------------------------------------------------------------


class ZoneFile(ConfigFile):
    """The zone document, dns-zone.json in the run directory."""

    def __init__(self, rundir: RunDir, plan: Any) -> None:
        super().__init__(rundir.dns_zone)
        self.plan = plan

    def build(self) -> dict:
        return zone(self.plan.services, self.plan.pods, self.plan.dns.domain)

    def dry_run(self, doc: object) -> None:
        load_zone(doc)


class ResolverZoneFile(ZoneFile):
    """The emulated internet's names, resolver-zone.json in the run directory: what every VPC's
    DNS resolver answers."""

    def __init__(self, rundir: RunDir, plan: Any) -> None:
        ConfigFile.__init__(self, rundir.resolver_zone)
        self.plan = plan

    def build(self) -> dict:
        return internet_zone(self.plan.internet_hosts, self.plan.internet.domain)


def write_zone(rundir: RunDir, plan: Any) -> None:
    """Write the records the cluster DNS serves; a running server reloads them."""
    ZoneFile(rundir, plan).write()


def write_resolver_zone(rundir: RunDir, plan: Any) -> None:
    """Write the records the VPCs' resolvers serve."""
    ResolverZoneFile(rundir, plan).write()


def upstreams(plan: Any) -> list[str]:
    """Where the cluster DNS forwards: the resolver of the cluster's VPC, at both its addresses
    (what an ACK node's /etc/resolv.conf lists); none without one."""
    if plan.cluster is None or plan.resolver(plan.cluster.vpc) is None:
        return []
    return list(plan.internet.resolvers)


def dns_command(rundir: RunDir, ip: str, ready: str, upstream: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The cluster DNS server, on the DNS pod's address, forwarding to `upstream`."""
    extra = [a for u in upstream for a in ("--upstream", u)]
    return DnsServer.argv("--zone", rundir.dns_zone, "--listen", ip, "--port", "53", *extra, "--ready", ready,
                          "--log", rundir.dns_log)


def resolver_command(rundir: RunDir, h: Any, addresses: list[str] | tuple[str, ...], ready: str) -> list[str]:
    """A VPC's DNS resolver (host `h`), on each of its addresses."""
    listen = [a for ip in addresses for a in ("--listen", ip)]
    return DnsServer.argv("--zone", rundir.resolver_zone, *listen, "--port", "53", "--resolver", "--ready", ready,
                          "--log", rundir.resolver_log(h.name))

if __name__ == "__main__":
    sys.exit(main())
