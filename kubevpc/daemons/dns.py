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

Where this server departs from CoreDNS: names outside the cluster domain
are REFUSED (the emulator must never query the machine's real resolvers,
so there is no ``forward``), a CNAME is returned for a query of any type
(RFC 1034 3.6.2; CoreDNS only does so for A, AAAA and TXT), and only the
Pods given to ``zone()`` have pod records (``pods verified``).

Stdlib and dnslib only: it runs inside the DNS pod's network namespace.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import logging
import os
import sys
import threading
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
    DNSHeader,
    DNSLabel,
    DNSRecord,
)
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from kubevpc.daemons.harness import ConfigFile, Daemon, Refused, file_stamp
from kubevpc.render.dns import zone
from kubevpc.rundir import RunDir

POLL_INTERVAL = 0.2  # seconds between checks of the zone file
SOA_TIMES = (7200, 1800, 86400)  # refresh, retry, expire, as CoreDNS
SOA_TTL_CAP = 300
UDP_MIN = 512  # RFC 1035 limit for clients without EDNS
EDNS_PAYLOAD = 1232  # the UDP size we advertise (DNS flag day 2020)

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


class ZoneResolver(BaseResolver):
    """dnslib resolver answering from ``self.zone``; the main thread swaps in
    a new Zone on reload (one attribute store, atomic for the handler threads)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = answer(self.zone, request)
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
    return stamp


class DnsServer(Daemon):
    """``python -m kubevpc.daemons.dns``: the server's process, one dnslib server for UDP and one
    for TCP, following the zone file."""

    NAME = "dns"
    DESCRIPTION = (
        "Cluster DNS server (kube-dns / CoreDNS kubernetes plugin answers) "
        "for a JSON zone document made by kubevpc.render.dns.zone(). Serves UDP and "
        "TCP, authoritative for the zone's domain, REFUSED for any other name "
        "(there is no upstream); re-reads the zone file when it changes."
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
        p.add_argument("--listen", required=True, metavar="IP", help="address to serve on")
        p.add_argument("--port", type=int, default=53, help="UDP and TCP port (default 53)")
        p.add_argument(
            "--ready",
            metavar="FILE",
            help="once both sockets are bound, write our pid here (atomically)",
        )
        p.add_argument("--log", metavar="FILE", help="log here instead of standard error")

    def stop(self) -> None:
        super().stop()
        self.stopped.set()

    def start(self) -> None:
        self.stamp = file_stamp(self.args.zone)
        try:
            self.resolver = ZoneResolver(read_zone(self.args.zone))
        except (OSError, ValueError) as exc:
            raise Refused(1, f"cannot load zone {self.args.zone}: {exc}") from None
        # One log line per answer: dnslib's reply line already names the question.
        logger = DNSLogger("-request", prefix=False, logf=log.info)
        try:
            for tcp in (False, True):
                self.servers.append(
                    DNSServer(self.resolver, address=self.args.listen, port=self.args.port, tcp=tcp, logger=logger)
                )
        except OSError as exc:
            for srv in self.servers:
                srv.server.server_close()
            self.servers = []
            raise Refused(1, f"cannot listen on {self.args.listen} port {self.args.port}: {exc.strerror}") from None
        for srv in self.servers:
            # Not start_thread(): its serve_forever polls every 0.5 s, which is
            # how long each stop() would then take.
            threading.Thread(
                target=srv.server.serve_forever, args=(POLL_INTERVAL,), daemon=True
            ).start()

    def serve(self) -> int:
        log.info("serving %s on %s port %d (udp, tcp)", self.resolver.zone.origin, self.args.listen, self.args.port)
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


def write_zone(rundir: RunDir, plan: Any) -> None:
    """Write the records the cluster DNS serves; a running server reloads them."""
    ZoneFile(rundir, plan).write()


def dns_command(rundir: RunDir, ip: str, ready: str) -> list[str]:
    """The cluster DNS server, on the DNS pod's address."""
    return DnsServer.argv("--zone", rundir.dns_zone, "--listen", ip, "--port", "53", "--ready", ready,
                          "--log", rundir.dns_log)

if __name__ == "__main__":
    sys.exit(main())
