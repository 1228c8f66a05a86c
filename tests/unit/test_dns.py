"""Unit tests for the cluster DNS: zone records, resolv.conf (kubevpc.render.dns), and the real server
on loopback queried with dnspython. No root; every wait has a deadline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kubevpc.daemons.dns import load_zone
from kubevpc.daemons.harness import taken
from kubevpc.render.dns import resolv_conf, zone
from tests.unit.procs import EXIT_DEADLINE, run_module, stop_process, wait_for

LO = "127.0.0.1"
READY_DEADLINE = 5.0
QUERY_TIMEOUT = 2.0
RELOAD_DEADLINE = 5.0
SVC = "default.svc.cluster.local."


# -- model stand-ins (the planner's pydantic models, duck-typed) -----------------


def port(name: str, number: int, protocol: str = "TCP") -> SimpleNamespace:
    return SimpleNamespace(name=name, port=number, protocol=protocol)


def ep(ip: str, ready: bool = True, hostname: str = "", name: str = "") -> SimpleNamespace:
    return SimpleNamespace(name=name or f"pod-{ip}", ip=ip, ready=ready, hostname=hostname)


def svc(name: str, **kw: Any) -> SimpleNamespace:
    fields = dict(
        name=name, namespace="default", type="ClusterIP", cluster_ip="",
        headless=False, external_name="", ports=[], endpoints=[],
    )
    return SimpleNamespace(**(fields | kw))


def pod(name: str, ip: str, namespace: str = "default") -> SimpleNamespace:
    return SimpleNamespace(name=name, namespace=namespace, ip=ip)


def records(doc: dict) -> set[tuple]:
    """The zone's records as comparable tuples (SRV value as a tuple)."""
    out = set()
    for r in doc["records"]:
        v = r["value"]
        if r["type"] == "SRV":
            v = (v["priority"], v["weight"], v["port"], v["target"])
        out.add((r["name"], r["type"], v))
    return out


# -- zone() ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_cluster_ip_service_a_and_srv_for_named_ports_only(kind: str) -> None:
    s = svc("web", type=kind, cluster_ip="10.96.0.10",
            ports=[port("http", 8080), port("dns", 53, "UDP"), port("", 9000)])
    assert records(zone([s], [])) == {
        ("web." + SVC, "A", "10.96.0.10"),
        ("_http._tcp.web." + SVC, "SRV", (0, 100, 8080, "web." + SVC)),
        ("_dns._udp.web." + SVC, "SRV", (0, 100, 53, "web." + SVC)),
    }


def test_headless_service_ready_endpoints_only() -> None:
    s = svc("db", headless=True, ports=[port("pg", 5432), port("", 9187)], endpoints=[
        ep("10.244.1.5", hostname="db-0"),
        ep("10.244.2.6"),
        ep("10.244.3.7", ready=False, hostname="db-2"),
    ])
    assert records(zone([s], [])) == {
        ("db." + SVC, "A", "10.244.1.5"),
        ("db." + SVC, "A", "10.244.2.6"),
        ("db-0.db." + SVC, "A", "10.244.1.5"),
        ("10-244-2-6.db." + SVC, "A", "10.244.2.6"),
        ("_pg._tcp.db." + SVC, "SRV", (0, 50, 5432, "db-0.db." + SVC)),
        ("_pg._tcp.db." + SVC, "SRV", (0, 50, 5432, "10-244-2-6.db." + SVC)),
    }


def test_headless_service_without_ready_endpoints_has_no_records() -> None:
    # CoreDNS answers NXDOMAIN for it (spec 1.0.1), so the name must not exist.
    s = svc("db", headless=True, ports=[port("pg", 5432)],
            endpoints=[ep("10.244.3.7", ready=False, hostname="db-2")])
    assert zone([s], [])["records"] == []


@pytest.mark.parametrize("external, expected", [
    ("Example.COM", {("ext." + SVC, "CNAME", "example.com.")}),
    ("db.example.com.", {("ext." + SVC, "CNAME", "db.example.com.")}),
    ("192.0.2.1", set()),  # CoreDNS makes no record of an IP address
])
def test_external_name_service_is_a_cname(external: str, expected: set) -> None:
    s = svc("ext", type="ExternalName", external_name=external, ports=[port("http", 80)])
    assert records(zone([s], [])) == expected


def test_pod_records_by_dashed_ip() -> None:
    doc = zone([], [pod("web-0", "10.244.1.5"), pod("client", "fd00::5", "shop")])
    assert records(doc) == {
        ("10-244-1-5.default.pod.cluster.local.", "A", "10.244.1.5"),
        ("fd00--5.shop.pod.cluster.local.", "AAAA", "fd00::5"),
    }


def test_zone_document_domain_ttl_json_and_no_duplicates() -> None:
    s = svc("web", cluster_ip="10.96.0.10")
    doc = zone([s, s], [], domain="Corp.Example.", ttl=30)
    assert json.loads(json.dumps(doc)) == doc
    assert doc == {"domain": "corp.example", "ttl": 30, "records": [
        {"name": "web.default.svc.corp.example.", "type": "A", "value": "10.96.0.10"},
    ]}


# -- resolv_conf() ---------------------------------------------------------------


def test_resolv_conf_cluster_first() -> None:
    assert resolv_conf("shop", "10.96.0.10") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )
    assert resolv_conf("a", "10.0.0.10", domain="corp.example.").startswith(
        "search a.svc.corp.example svc.corp.example corp.example\n"
    )


# -- load_zone() -----------------------------------------------------------------


def _doc(*recs: dict) -> dict:
    return {"domain": "cluster.local", "ttl": 5, "records": list(recs)}


@pytest.mark.parametrize("doc", [
    _doc({"name": "a.cluster.local.", "type": "MX", "value": "x"}),
    _doc({"name": "a.cluster.local.", "type": "NOPE", "value": "x"}),
    _doc({"name": "a.cluster.local.", "type": "A", "value": "10.0.0"}),
    _doc({"name": "a.example.com.", "type": "A", "value": "10.0.0.1"}),
    _doc({"name": "a.cluster.local.", "type": "A", "value": "10.0.0.1"},
         {"name": "a.cluster.local.", "type": "CNAME", "value": "b.cluster.local."}),
    _doc({"name": "a.cluster.local.", "type": "SRV",
          "value": {"priority": 0, "weight": 100, "port": 70000, "target": "a.cluster.local."}}),
    _doc({"name": "a.cluster.local.", "type": "A"}),
    {"domain": "cluster.local", "records": []},
], ids=["type", "unknown-type", "ip", "outside", "cname-and-a", "srv-port", "no-value", "no-ttl"])
def test_load_zone_rejects_bad_documents(doc: dict) -> None:
    with pytest.raises(ValueError):
        load_zone(doc)


# -- the server ------------------------------------------------------------------


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((LO, 0))
            number = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((LO, number))
                except OSError:
                    continue
                return number
    raise RuntimeError("no port free for both UDP and TCP")


@dataclass
class DnsServer:
    proc: subprocess.Popen
    port: int
    zone_file: Path
    log_file: Path
    ready_file: Path


def launch(tmp_path: Path, doc: dict | str, number: int | None = None) -> DnsServer:
    zone_file, log_file, ready_file = (tmp_path / n for n in ("zone.json", "dns.log", "dns.ready"))
    zone_file.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    number = number or free_port()
    proc = run_module("kubevpc.daemons.dns", "--zone", str(zone_file), "--listen", LO,
                      "--port", str(number), "--ready", str(ready_file), "--log", str(log_file))
    return DnsServer(proc, number, zone_file, log_file, ready_file)


def wait_ready(server: DnsServer) -> None:
    wait_for("ready file", server.ready_file.exists, READY_DEADLINE, server.proc)


def stop(server: DnsServer) -> int:
    return stop_process(server.proc, EXIT_DEADLINE)


@pytest.fixture
def start_dns(tmp_path: Path) -> Iterator[Callable[[dict], DnsServer]]:
    """Start ready servers on demand; every one is stopped at the end of the test."""
    servers: list[DnsServer] = []

    def start(doc: dict) -> DnsServer:
        sub = tmp_path / f"s{len(servers)}"
        sub.mkdir()
        server = launch(sub, doc)
        servers.append(server)
        wait_ready(server)
        return server

    yield start
    for server in servers:
        stop(server)


CLUSTER = [
    svc("web", cluster_ip="10.96.0.10", ports=[port("http", 8080), port("", 53, "UDP")]),
    svc("db", headless=True, ports=[port("pg", 5432)], endpoints=[
        ep("10.244.1.5", hostname="db-0"), ep("10.244.2.6"), ep("10.244.3.7", ready=False),
    ]),
    svc("idle", headless=True, ports=[port("pg", 5432)], endpoints=[ep("10.244.3.8", ready=False)]),
    svc("ext", type="ExternalName", external_name="www.example.com"),
    svc("alias", type="ExternalName", external_name="web.default.svc.cluster.local"),
    svc("big", headless=True, endpoints=[ep(f"10.244.9.{i}") for i in range(1, 41)]),
]
PODS = [pod("web-0", "10.244.1.5")]


@pytest.fixture(scope="module")
def cluster_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = launch(tmp_path_factory.mktemp("dns"), zone(CLUSTER, PODS))
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)


def ask(server: DnsServer, name: str, rdtype: str = "A", tcp: bool = False,
        **make: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **make)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, LO, port=server.port, timeout=QUERY_TIMEOUT)


def answers(reply: dns.message.Message, rdtype: str = "A") -> set[str]:
    kind = dns.rdatatype.from_text(rdtype)
    return {rd.to_text() for rrset in reply.answer if rrset.rdtype == kind for rd in rrset}


def is_negative(reply: dns.message.Message, rcode: int) -> bool:
    """Authoritative, no answer, the zone's SOA in authority."""
    soa = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    return (reply.rcode() == rcode and not reply.answer and bool(reply.flags & dns.flags.AA)
            and len(soa) == 1 and soa[0].name.to_text() == "cluster.local.")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cluster_ip_service_a(cluster_dns: DnsServer, tcp: bool) -> None:
    reply = ask(cluster_dns, "web." + SVC, tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert answers(reply) == {"10.96.0.10"}
    assert reply.answer[0].ttl == 5


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_headless_service_all_ready_addresses(cluster_dns: DnsServer, tcp: bool) -> None:
    assert answers(ask(cluster_dns, "db." + SVC, tcp=tcp)) == {"10.244.1.5", "10.244.2.6"}
    assert answers(ask(cluster_dns, "db-0.db." + SVC, tcp=tcp)) == {"10.244.1.5"}
    assert answers(ask(cluster_dns, "10-244-2-6.db." + SVC, tcp=tcp)) == {"10.244.2.6"}


def test_headless_service_without_ready_endpoints_is_nxdomain(cluster_dns: DnsServer) -> None:
    assert is_negative(ask(cluster_dns, "idle." + SVC), dns.rcode.NXDOMAIN)


def test_external_name_answers_cname_to_an_a_query(cluster_dns: DnsServer) -> None:
    reply = ask(cluster_dns, "ext." + SVC)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.authority
    assert answers(reply, "CNAME") == {"www.example.com."} and answers(reply) == set()
    # any other type too (RFC 1034), and nothing is forwarded anywhere
    assert answers(ask(cluster_dns, "ext." + SVC, "MX"), "CNAME") == {"www.example.com."}


def test_cname_into_the_zone_is_followed(cluster_dns: DnsServer) -> None:
    reply = ask(cluster_dns, "alias." + SVC)
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert answers(reply) == {"10.96.0.10"}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_srv_records(cluster_dns: DnsServer, tcp: bool) -> None:
    reply = ask(cluster_dns, "_http._tcp.web." + SVC, "SRV", tcp=tcp)
    assert answers(reply, "SRV") == {"0 100 8080 web." + SVC}
    assert {rd.to_text() for rrset in reply.additional for rd in rrset} == {"10.96.0.10"}
    reply = ask(cluster_dns, "_pg._tcp.db." + SVC, "SRV", tcp=tcp)
    assert answers(reply, "SRV") == {
        "0 50 5432 db-0.db." + SVC, "0 50 5432 10-244-2-6.db." + SVC,
    }


def test_nxdomain_with_soa(cluster_dns: DnsServer) -> None:
    assert is_negative(ask(cluster_dns, "nope." + SVC), dns.rcode.NXDOMAIN)
    assert is_negative(ask(cluster_dns, "_dns._udp.web." + SVC, "SRV"), dns.rcode.NXDOMAIN)


def test_nodata_with_soa(cluster_dns: DnsServer) -> None:
    assert is_negative(ask(cluster_dns, "web." + SVC, "AAAA"), dns.rcode.NOERROR)
    assert is_negative(ask(cluster_dns, "web." + SVC, "TXT", tcp=True), dns.rcode.NOERROR)


@pytest.mark.parametrize("name", [
    SVC, "svc.cluster.local.", "_tcp.web." + SVC, "default.pod.cluster.local.", "cluster.local.",
])
def test_empty_non_terminals_exist(cluster_dns: DnsServer, name: str) -> None:
    assert is_negative(ask(cluster_dns, name), dns.rcode.NOERROR)


def test_apex_soa(cluster_dns: DnsServer) -> None:
    (soa,) = answers(ask(cluster_dns, "cluster.local.", "SOA"), "SOA")
    mname, rname, serial, *times = soa.split()
    assert (mname, rname) == ("ns.dns.cluster.local.", "hostmaster.cluster.local.")
    assert int(serial) > 0 and times == ["7200", "1800", "86400", "5"]


@pytest.mark.parametrize("name", ["www.example.com.", "notcluster.local.", "local.", "."])
def test_outside_the_domain_is_refused(cluster_dns: DnsServer, name: str) -> None:
    reply = ask(cluster_dns, name)
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    assert not reply.flags & dns.flags.AA


def test_names_are_case_insensitive(cluster_dns: DnsServer) -> None:
    reply = ask(cluster_dns, "WEB.Default.SVC.Cluster.Local.")
    assert answers(reply) == {"10.96.0.10"}
    assert reply.answer[0].name.to_text() == "WEB.Default.SVC.Cluster.Local."  # 0x20 kept
    assert answers(ask(cluster_dns, "DB-0.DB.default.svc.CLUSTER.local.")) == {"10.244.1.5"}


def test_pod_record(cluster_dns: DnsServer) -> None:
    assert answers(ask(cluster_dns, "10-244-1-5.default.pod.cluster.local.")) == {"10.244.1.5"}


def test_large_udp_answer_is_truncated_and_complete_over_tcp(cluster_dns: DnsServer) -> None:
    everyone = {f"10.244.9.{i}" for i in range(1, 41)}
    short = ask(cluster_dns, "big." + SVC)
    assert short.flags & dns.flags.TC and not short.answer
    assert answers(ask(cluster_dns, "big." + SVC, tcp=True)) == everyone
    assert answers(ask(cluster_dns, "big." + SVC, use_edns=0, payload=1232)) == everyone


def test_zone_file_changes_are_picked_up_and_bad_files_ignored(start_dns: Callable) -> None:
    server = start_dns(zone([svc("web", cluster_ip="10.96.0.10")], []))
    tmp = server.zone_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(zone([svc("web", cluster_ip="10.96.0.99")], [])))
    os.replace(tmp, server.zone_file)
    wait_for("reloaded answer", lambda: answers(ask(server, "web." + SVC)) == {"10.96.0.99"},
             RELOAD_DEADLINE, server.proc)

    server.zone_file.write_text("{not json")
    wait_for("log of the bad zone", lambda: "still serving the previous one" in server.log_file.read_text(),
             RELOAD_DEADLINE, server.proc)
    assert answers(ask(server, "web." + SVC)) == {"10.96.0.99"}


def test_the_server_says_which_zone_it_serves(start_dns: Callable) -> None:
    """ZONE.seen names the file version that answers, so the Lab returns from a change only once a
    name asked afterwards gets the new answer (a recreated StatefulSet pod was once NXDOMAIN)."""
    server = start_dns(zone([svc("web", cluster_ip="10.96.0.10")], []))
    assert taken(str(server.zone_file)), "the file it started with"
    tmp = server.zone_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(zone([svc("web", cluster_ip="10.96.0.99")], [])))
    os.replace(tmp, server.zone_file)
    # Not taken until it serves the new one; once taken, the new answer comes.
    assert not taken(str(server.zone_file)) or answers(ask(server, "web." + SVC)) == {"10.96.0.99"}
    wait_for("the new zone taken", lambda: taken(str(server.zone_file)), RELOAD_DEADLINE, server.proc)
    assert answers(ask(server, "web." + SVC)) == {"10.96.0.99"}
    server.zone_file.write_text("{not json")
    wait_for("a bad zone acknowledged", lambda: taken(str(server.zone_file)), RELOAD_DEADLINE, server.proc)
    assert answers(ask(server, "web." + SVC)) == {"10.96.0.99"}, "the last good zone serves on"


def test_sigterm_stops_cleanly(start_dns: Callable) -> None:
    server = start_dns(zone([], []))
    assert stop(server) == 0


def test_no_ready_file_when_a_socket_cannot_bind(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LO, 0))
        taken.listen()
        server = launch(tmp_path, zone([], []), number=taken.getsockname()[1])
        try:
            assert server.proc.wait(READY_DEADLINE) == 1
        finally:
            stop(server)
    assert not server.ready_file.exists()
    assert "cannot listen" in server.log_file.read_text()


def test_unreadable_zone_at_start_is_an_error(tmp_path: Path) -> None:
    server = launch(tmp_path, "{not json")
    try:
        assert server.proc.wait(READY_DEADLINE) == 1
    finally:
        stop(server)
    assert not server.ready_file.exists()
