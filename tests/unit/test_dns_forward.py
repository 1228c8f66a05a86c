"""The DNS server's two new roles (kubevpc.daemons.dns), as real processes on loopback queried with
dnspython: a VPC's resolver (--resolver: the emulated internet's zone, NXDOMAIN for anything else)
and the cluster DNS forwarding outside names to it (--upstream: CoreDNS's forward with prefer_udp,
a deadline, SERVFAIL when no upstream answers). No root; every wait has a deadline."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from kubevpc.render.dns import internet_zone, zone
from tests.unit.procs import run_module, stop_process, wait_for

from .test_dns import CLUSTER, LO, PODS, QUERY_TIMEOUT, READY_DEADLINE, SVC, answers, free_port

INTERNET = [SimpleNamespace(name="server", ip="198.18.0.2"), SimpleNamespace(name="client", ip="198.18.0.3")]
# a name with more addresses than fit in 512 bytes: its UDP answer is truncated
BIG = {"domain": "example.net", "ttl": 60,
       "records": [{"name": "big.example.net.", "type": "A", "value": f"198.18.1.{i}"} for i in range(1, 41)]}


class Server(SimpleNamespace):
    """A DNS server process: proc, port, zone_file, log_file, ready_file."""


def launch(tmp: Path, doc: dict, *args: str, listen: tuple[str, ...] = (LO,)) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    s = Server(port=free_port(), zone_file=tmp / "zone.json", log_file=tmp / "dns.log", ready_file=tmp / "ready")
    s.zone_file.write_text(json.dumps(doc))
    where = [a for ip in listen for a in ("--listen", ip)]
    s.proc = run_module("kubevpc.daemons.dns", "--zone", str(s.zone_file), *where, "--port", str(s.port), *args,
                        "--ready", str(s.ready_file), "--log", str(s.log_file))
    return s


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ready servers on demand; all are stopped at the end."""
    started: list[Server] = []

    def start(doc: dict, *args: str, **kw) -> Server:
        s = launch(tmp_path / f"s{len(started)}", doc, *args, **kw)
        started.append(s)
        wait_for("ready file", s.ready_file.exists, READY_DEADLINE, s.proc)
        return s

    yield start
    for s in started:
        stop_process(s.proc)


def ask(s: Server, name: str, rdtype: str = "A", tcp: bool = False, where: str = LO, **make) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **make)
    return (dns.query.tcp if tcp else dns.query.udp)(q, where, port=s.port, timeout=QUERY_TIMEOUT + 3)


@pytest.fixture
def pair(servers) -> tuple[Server, Server]:
    """A VPC resolver with the internet's zone, and a cluster DNS forwarding to it."""
    resolver = servers(internet_zone(INTERNET, "example.net"), "--resolver")
    cluster = servers(zone(CLUSTER, PODS), "--upstream", f"{LO}:{resolver.port}", "--upstream-timeout", "1")
    return resolver, cluster


# ------------------------------------------------------------------------------------ resolver
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_resolver_answers_the_internets_names_and_nxdomain_for_the_rest(servers, tcp):
    r = servers(internet_zone(INTERNET, "example.net"), "--resolver")
    reply = ask(r, "server.example.net.", tcp=tcp)
    assert answers(reply) == {"198.18.0.2"} and reply.flags & dns.flags.RA
    missing = ask(r, "nosuch.example.net.", tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer and missing.flags & dns.flags.RA
    for outside in ("www.example.org.", "kubernetes.io.", "web.default.svc.cluster.local."):
        reply = ask(r, outside, tcp=tcp)
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer, outside
        assert not reply.flags & dns.flags.AA, "not authoritative for what it does not hold"


def test_the_resolver_serves_each_of_its_addresses(servers):
    r = servers(internet_zone(INTERNET, "example.net"), "--resolver", listen=(LO, "127.0.0.2"))
    for where in (LO, "127.0.0.2"):
        reply = ask(r, "client.example.net.", where=where)
        assert answers(reply) == {"198.18.0.3"}, where


@pytest.mark.parametrize("args,words", [(("--resolver", "--upstream", "127.0.0.1"), "expected no --upstream"),
                                        (("--upstream", "not-an-address"), "expected IP or IP:PORT"),
                                        (("--upstream-timeout", "0"), "--upstream-timeout")])
def test_bad_command_lines_are_refused(tmp_path, args, words):
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps(internet_zone(INTERNET, "example.net")))
    proc = run_module("kubevpc.daemons.dns", "--zone", str(zone_file), "--listen", LO, "--port", str(free_port()),
                      *args, "--ready", str(tmp_path / "ready"), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=READY_DEADLINE)
    assert proc.returncode == 2 and words in err
    assert not (tmp_path / "ready").exists()


# ---------------------------------------------------------------------------------- forwarding
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_cluster_dns_forwards_outside_names_to_the_resolver(pair, tcp):
    resolver, cluster = pair
    reply = ask(cluster, "server.example.net.", tcp=tcp)
    assert answers(reply) == {"198.18.0.2"} and reply.flags & dns.flags.RA
    assert ask(cluster, "nosuch.example.net.", tcp=tcp).rcode() == dns.rcode.NXDOMAIN     # the resolver's word
    assert ask(cluster, "www.example.org.", tcp=tcp).rcode() == dns.rcode.NXDOMAIN
    # the twin: a cluster name is still the cluster DNS's own, authoritative
    local = ask(cluster, "web." + SVC, tcp=tcp)
    assert answers(local) == {"10.96.0.10"} and local.flags & dns.flags.AA
    assert ask(cluster, "nosuch." + SVC, tcp=tcp).rcode() == dns.rcode.NXDOMAIN
    assert "server.example.net" in resolver.log_file.read_text(), "the resolver was asked"


def test_the_answer_keeps_the_clients_id_and_question(pair):
    _, cluster = pair
    q = dns.message.make_query("Server.Example.NET.", "A")
    reply = dns.query.udp(q, LO, port=cluster.port, timeout=QUERY_TIMEOUT)
    assert reply.id == q.id and reply.question == q.question and answers(reply) == {"198.18.0.2"}


def test_a_truncated_upstream_answer_is_asked_again_over_tcp(servers):
    resolver = servers(BIG, "--resolver")
    cluster = servers(zone(CLUSTER, PODS), "--upstream", f"{LO}:{resolver.port}")
    everyone = {f"198.18.1.{i}" for i in range(1, 41)}
    assert answers(ask(cluster, "big.example.net.", tcp=True)) == everyone
    short = ask(cluster, "big.example.net.")          # to a UDP client without EDNS: truncated ...
    assert short.flags & dns.flags.TC and not short.answer
    assert answers(ask(cluster, "big.example.net.", use_edns=0, payload=1232)) == everyone    # ... unless it takes it


def test_no_upstream_answering_is_servfail_within_the_deadline(servers):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # takes queries, answers none
    silent.bind((LO, 0))
    try:
        cluster = servers(zone(CLUSTER, PODS), "--upstream", f"{LO}:{silent.getsockname()[1]}",
                          "--upstream-timeout", "0.5")
        t0 = time.monotonic()
        reply = ask(cluster, "server.example.net.")
        took = time.monotonic() - t0
    finally:
        silent.close()
    assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    assert 0.4 < took < 2.5, took
    assert "no answer within" in cluster.log_file.read_text() or "timed out" in cluster.log_file.read_text()


def test_the_next_upstream_is_asked_when_one_refuses(servers):
    resolver = servers(internet_zone(INTERNET, "example.net"), "--resolver")
    closed = free_port()                 # nothing listens: ICMP port unreachable, at once
    cluster = servers(zone(CLUSTER, PODS), "--upstream", f"{LO}:{closed}", "--upstream", f"{LO}:{resolver.port}")
    assert answers(ask(cluster, "server.example.net.")) == {"198.18.0.2"}


def test_without_an_upstream_outside_names_are_still_refused(servers):
    cluster = servers(zone(CLUSTER, PODS))
    assert ask(cluster, "server.example.net.").rcode() == dns.rcode.REFUSED
