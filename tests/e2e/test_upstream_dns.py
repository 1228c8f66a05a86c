"""The VPC's DNS resolver as the cluster DNS's upstream, end to end (tests/e2e/data/upstream-dns.yaml;
its header says what each object shows), in vxlan mode, where the cluster DNS's queries leave as its
node, and in eni mode, where they leave from the DNS pod's own VPC address; the unit tests
(tests/unit/test_upstream_dns.py) hold the flows of all three modes to the evaluator.

A pod resolves a name of the emulated internet through its search path and the cluster DNS, which
forwards it to the VPC's resolver at 100.100.2.136 and .138, and reaches that host by name through
the NAT gateway; an ECS instance asks the resolver itself. Twins: a name nothing holds is NXDOMAIN,
a cluster name still resolves, a security group that drops the resolver's range leaves an instance
without DNS, the resolver answers DNS only and opens nothing, and with the resolver stopped the
cluster DNS answers SERVFAIL within its deadline. The machine's /etc/resolv.conf is never used.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.reach import reach
from kubevpc.lab.checks import run_checks
from kubevpc.render.dns import vpc_resolv_conf

from .conftest import lab_in_mode
from .test_services import resolve

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "upstream-dns.yaml")
VPC_DNS = ("100.100.2.136", "100.100.2.138")


@pytest.fixture(scope="module", params=["vxlan", "eni"])
def lab(request):
    runs = lab_in_mode(SCENARIO, request.param)
    yield next(runs)
    next(runs, None)


# asks `server` directly (no resolv.conf): [[server, name, rtype, tcp], ...] -> {"i": rcode and addresses, or "timeout"}
DIG = """
import json, sys
import dns.exception, dns.message, dns.query, dns.rcode
out = {}
for i, (server, name, rtype, tcp) in enumerate(json.loads(sys.argv[1])):
    q = dns.message.make_query(name, rtype)
    try:
        r = (dns.query.tcp if tcp else dns.query.udp)(q, server, timeout=float(sys.argv[2]))
    except (dns.exception.Timeout, OSError):
        out[str(i)] = "timeout"
        continue
    out[str(i)] = [dns.rcode.to_text(r.rcode()), sorted(rr.to_text() for s in r.answer for rr in s)]
print(json.dumps(out))
"""

# a connection by name, as any program makes one: getaddrinfo through /etc/resolv.conf, then TCP
CONNECT = """
import json, socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        s.sendall(b"kubevpc-probe\\n")
        print(s.makefile().readline().strip())
except socket.gaierror as exc:
    print(json.dumps({"gaierror": exc.args[1]}))
"""


def dig(lab, endpoint: str, queries: list[tuple[str, str, str, bool]], timeout: float = 2.0) -> list:
    res = lab.exec(endpoint, [sys.executable, "-c", DIG, json.dumps(queries), str(timeout)], timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    return [got[str(i)] for i in range(len(queries))]


def connect_by_name(lab, endpoint: str, name: str, port: int) -> dict:
    res = lab.exec(endpoint, [sys.executable, "-c", CONNECT, name, str(port)], timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_the_declared_checks_pass(lab):
    outcomes = run_checks(lab, declared_checks(lab.plan), timeout=1.0)
    assert len(outcomes) == len(lab.plan.expect)
    assert all(o.passed for o in outcomes), [(o.check.title, o.outcome, o.why) for o in outcomes if not o.passed]


def test_a_pod_resolves_the_internet_through_its_search_path_and_the_cluster_dns(lab):
    server = lab.address("inet/server")
    got = resolve(lab, "pod/default/client", [
        ("server.example.net", "A"), ("server.example.net.", "A"), ("web", "A"),
        ("nosuch.example.net", "A"), ("www.example.org.", "A")])
    # fewer dots than ndots:5: the search path's cluster names are NXDOMAIN first, then the name itself
    assert got["server.example.net/A"] == [server] and got["server.example.net./A"] == [server]
    assert got["web/A"] == [lab.service("web").cluster_ip], "a cluster name still resolves"
    # twins: nothing on the emulated internet holds these; nothing asks the machine's resolvers
    assert got["nosuch.example.net/A"] == "NXDOMAIN" and got["www.example.org./A"] == "NXDOMAIN"
    with open(lab.net.rundir.dns_log, encoding="utf-8") as fh:
        assert "server.example.net" in fh.read()


def test_a_pod_reaches_an_internet_host_by_name_through_the_nat_gateway(lab):
    answer = connect_by_name(lab, "pod/default/client", "server.example.net", 80)
    (gw,) = lab.plan.nat_gateways
    assert answer.get("name") == "server", answer
    assert answer["client"].rsplit(":", 1)[0] == gw.public_ips[0], "out through its SNAT, as by address"
    assert "gaierror" in connect_by_name(lab, "pod/default/client", "nosuch.example.net", 80)


def test_instances_ask_the_vpc_resolver_at_both_addresses(lab):
    server = lab.address("inet/server")
    assert "nameserver 100.100.2.136" in lab.exec("node/node-1", ["cat", "/etc/resolv.conf"]).stdout
    queries = [(ip, "server.example.net.", "A", tcp) for ip in VPC_DNS for tcp in (False, True)]
    assert dig(lab, "ecs/ecs-client", queries + [(VPC_DNS[0], "nosuch.example.net.", "A", False)]) == \
        [["NOERROR", [server]]] * 4 + [["NXDOMAIN", []]]
    getent = lab.exec("ecs/ecs-client", ["getent", "hosts", "server.example.net"])
    assert getent.returncode == 0 and server in getent.stdout, getent.stdout + getent.stderr
    resolver = lab.host("resolver/vpc")
    for proto in ("udp", "tcp"):
        assert reach(lab.plan, lab.host("ecs/ecs-client"), resolver, 53, proto).allowed


def test_a_security_group_that_drops_the_resolvers_range_leaves_an_instance_without_dns(lab):
    assert dig(lab, "ecs/ecs-nodns", [(VPC_DNS[0], "server.example.net.", "A", False)], timeout=1.0) == ["timeout"]
    v = reach(lab.plan, lab.host("ecs/ecs-nodns"), lab.host("resolver/vpc"), 53, "udp")
    assert not v.allowed and "sg-nodns" in v.reason


def test_the_resolver_answers_dns_only_and_opens_nothing(lab):
    resolver = lab.host("resolver/vpc")
    assert lab.connect("pod/default/client", VPC_DNS[0], 80, timeout=1).outcome == "timeout"
    assert lab.connect("ecs/ecs-client", VPC_DNS[1], 8080, timeout=1).outcome == "timeout"
    ping = lab.exec("ecs/ecs-client", ["ping", "-c", "1", "-W", "1", VPC_DNS[0]])
    assert ping.returncode != 0, "not even ping: the vRouter lets DNS through and nothing else"
    for dest, port in (("pod/default/web", 8080), ("inet/server", 80)):
        assert lab.connect("resolver/vpc", dest, port, timeout=1).outcome == "timeout", dest
        assert not reach(lab.plan, resolver, lab.host(dest), port, "tcp").allowed
    assert not reach(lab.plan, lab.host("pod/default/client"), resolver, 80, "tcp").allowed


def test_resolv_confs_are_the_runs_and_the_machines_is_untouched(lab):
    with open("/etc/resolv.conf", encoding="utf-8") as fh:
        machine = fh.read()
    assert lab.exec("ecs/ecs-client", ["cat", "/etc/resolv.conf"]).stdout == vpc_resolv_conf(VPC_DNS)
    assert f"nameserver {lab.plan.dns.ip}" in lab.exec("pod/default/client", ["cat", "/etc/resolv.conf"]).stdout
    netns = lab.host("ecs/ecs-client").netns
    via_ip_netns = subprocess.run(["ip", "netns", "exec", netns, "cat", "/etc/resolv.conf"],
                                  capture_output=True, text=True).stdout
    assert via_ip_netns == vpc_resolv_conf(VPC_DNS), "`ip netns exec` sees the instance's resolv.conf too"
    with open("/etc/resolv.conf", encoding="utf-8") as fh:
        assert fh.read() == machine
    mounts = subprocess.run(["findmnt", "-n", "/etc/resolv.conf"], capture_output=True, text=True).stdout
    assert not mounts.strip(), f"something is mounted over the machine's /etc/resolv.conf: {mounts}"


def test_with_the_resolver_stopped_the_cluster_dns_answers_servfail(lab):
    """Last: it stops the resolver, then starts it again."""
    dns_ip = lab.plan.dns.ip
    lab.stop_server("resolver/vpc")
    try:
        got = dig(lab, "pod/default/client", [(dns_ip, "server.example.net.", "A", False),
                                               (dns_ip, "web.default.svc.cluster.local.", "A", False)], timeout=6.0)
        assert got[0] == ["SERVFAIL", []], got
        assert got[1] == ["NOERROR", [lab.service("web").cluster_ip]], "the cluster's own names do not need it"
    finally:
        lab.start_server("resolver/vpc")
    assert dig(lab, "pod/default/client", [(dns_ip, "server.example.net.", "A", False)]) == \
        [["NOERROR", [lab.address("inet/server")]]]
