"""North-south traffic end to end, in every mode: the emulated internet, EIPs, the NAT gateway and
an internet-facing SLB (tests/e2e/data/internet.yaml). Every allowed path has a refused twin, and
no packet of the emulated internet shows up on the machine's own interfaces."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import threading
import time

import pytest

from kubevpc.evaluator.explain import explain
from kubevpc.lab import Lab, Probe

from .conftest import MODES, lab_in_mode
from .test_services import backend_key, wait_health

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "internet.yaml")
EMULATED_INTERNET = ipaddress.IPv4Network("198.18.0.0/15")


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def eip(lab: Lab, name: str) -> str:
    return next(e.ip for e in lab.plan.eips if e.name == name)


def nat_ip(lab: Lab) -> str:
    (gw,) = lab.plan.nat_gateways
    return gw.public_ips[0]


def slb_healthy(lab: Lab) -> str:
    """The internet-facing SLB's public address; the first time, waits until its checker counts
    every backend healthy and a connection goes through (the controller then has them in its group)."""
    slb = lab.plan.slbs[0]
    if lab.run not in _forwarding:
        wait_health(lab, slb.service, {backend_key(lab, slb.service, b.id): "healthy"
                                       for b in slb.listeners[0].backends}, 20)
        end = time.monotonic() + 10
        while not lab.connect("inet/client", slb.public_ip, 80, timeout=0.5).ok:
            assert time.monotonic() < end, "the SLB forwards nothing 10 s after its backends became healthy"
        _forwarding.add(lab.run)
    return slb.public_ip


_forwarding: set[str] = set()      # runs whose SLB was seen forwarding


def seen_by_server(result) -> str:
    assert result.outcome == "answered", result.detail
    return result.answer["client"].rsplit(":", 1)[0]


# ------------------------------------------------------------------------------------------ EIP
def test_eip_maps_the_instance_both_ways(lab):
    inbound = lab.connect("inet/client", "eip/eip-bastion", 80)
    assert inbound.answer["name"] == "bastion"
    assert seen_by_server(inbound) == lab.address("inet/client"), "an EIP is 1:1: the client's address is kept"
    outbound = lab.connect("ecs/bastion", "inet/server", 80)
    assert seen_by_server(outbound) == eip(lab, "eip-bastion") != nat_ip(lab), "the EIP wins over the NAT gateway"


def test_eip_inbound_still_meets_the_security_group(lab):
    """bastion listens on 80 and 81; its group opens only 80 to the internet."""
    assert lab.connect("ecs/bastion", "127.0.0.1", 81).ok, "the server listens on 81"
    r = lab.connect("inet/client", "eip/eip-bastion", 81, timeout=1.0)
    assert r.outcome == "timeout", r


def test_trace_shows_the_eip_both_ways_and_the_security_group_that_drops(lab):
    bastion = lab.address("ecs/bastion")
    t = lab.trace("inet/client", "eip/eip-bastion", 80)
    assert f"DNAT to {bastion}" in " ".join(d for h in t.hops for d in h.decisions)
    assert t.outcome == "delivered" and t.seen_source == lab.address("inet/client") and not t.disagreement
    closed = lab.trace("inet/client", "eip/eip-bastion", 81)
    assert closed.outcome == "dropped" and "table 50 (sg_ingress): ecs/bastion: inbound denied" in closed.reason
    assert not closed.disagreement
    out = lab.trace("ecs/bastion", "inet/server", 80)
    assert f"SNAT to {eip(lab, 'eip-bastion')}" in " ".join(d for h in out.hops for d in h.decisions)
    assert out.seen_source == eip(lab, "eip-bastion") and not out.disagreement


# ---------------------------------------------------------------------------------- NAT gateway
def test_trace_to_the_internet_shows_the_snat_of_the_nat_gateway(lab):
    t = lab.trace("pod/default/client", "inet/server", 80)
    decisions = [d for h in t.hops for d in h.decisions]
    assert any(d.startswith(f"SNAT to {nat_ip(lab)}:") for d in decisions), decisions
    assert t.outcome == "delivered" and t.seen_source == nat_ip(lab) and not t.disagreement, t.reason
    # the twin: no EIP, no SNAT entry: the edge drops it, and the trace says where and why
    none = lab.trace("ecs/ecs-nosnat", "inet/server", 80)
    assert none.outcome == "dropped" and "no EIP, no SNAT entry" in none.reason and not none.disagreement
    assert not any("SNAT to" in d for h in none.hops for d in h.decisions if nat_ip(lab) in d)
@pytest.mark.parametrize("source", ["ecs/ecs-private", "node/node-1", "node/node-2", "pod/default/client"])
def test_snat_entries_take_their_sources_out_through_the_nat_gateway(lab, source):
    r = lab.connect(source, "inet/server", 80)
    assert seen_by_server(r) == nat_ip(lab)
    udp = lab.connect(source, "inet/server", 53, "udp")
    assert seen_by_server(udp) == nat_ip(lab)


def test_without_eip_or_snat_entry_there_is_no_way_out(lab):
    assert lab.connect("ecs/ecs-private", "inet/server", 80).ok          # the twin, same vSwitch
    r = lab.connect("ecs/ecs-nosnat", "inet/server", 80, timeout=1.0)
    assert r.outcome == "timeout", r


def test_ping_through_the_nat_gateway_and_to_an_eip(lab):
    out = lab.exec("pod/default/client", ["ping", "-c", "1", "-W", "2", lab.address("inet/server")])
    assert out.returncode == 0, out.stdout + out.stderr
    into = lab.exec("inet/client", ["ping", "-c", "1", "-W", "2", eip(lab, "eip-bastion")])
    assert into.returncode == 0, into.stdout + into.stderr
    closed = lab.exec("inet/client", ["ping", "-c", "1", "-W", "1", nat_ip(lab)])
    assert closed.returncode != 0, "the NAT gateway's address answers nothing from outside"


def test_nothing_unsolicited_gets_in(lab):
    """Not to the NAT gateway's address (even on a port a connection from inside just used), not to
    private addresses, not to public addresses nobody holds."""
    out = lab.connect("ecs/ecs-private", "inet/server", 80)
    assert out.ok
    probes = [Probe("inet/client", nat_ip(lab), 80), Probe("inet/client", nat_ip(lab), 53, "udp"),
              Probe("inet/client", lab.address("ecs/ecs-private"), 80),
              Probe("inet/client", lab.address("pod/default/web-0"), 8080),
              Probe("inet/client", str(ipaddress.IPv4Network(lab.plan.internet.public_cidr)[99]), 80)]
    for r in lab.probe(probes, timeout=1.0):
        assert r.outcome == "timeout", r


def test_a_dnat_entry_forwards_a_port_of_the_nat_gateway_to_an_instance(lab):
    """DNAT entry private-web: the NAT gateway's EIP, port 81, is ecs-private's port 80, with the
    client's address kept, in every mode; the evaluator says the same. The twins, the gateway's
    ports without an entry, time out in test_nothing_unsolicited_gets_in."""
    got = lab.connect("inet/client", nat_ip(lab), 81)
    assert got.outcome == "answered" and got.answer["name"] == "ecs-private", got.detail
    assert got.answer["client"].rsplit(":", 1)[0] == lab.address("inet/client")
    v = explain(lab.plan, "inet/client", "eip/eip-ngw", 81)
    assert v.allowed and v.seen_source == lab.address("inet/client"), v
    assert "DNAT entry private-web" in " ".join(step.text for step in v.steps), v
    assert lab.connect("inet/client", nat_ip(lab), 82, timeout=1).outcome == "timeout"


def test_the_nat_gateway_keeps_the_pods_address_in_eni_mode(lab):
    """The edge's connection table is the NAT gateway's log: in eni mode it shows the pod itself, in
    the other modes the node that masqueraded it (as ACK does)."""
    pod = lab.host("pod/default/client")
    r = lab.connect("pod/default/client", "inet/server", 80)
    assert seen_by_server(r) == nat_ip(lab)
    local_port = r.detail.rsplit(":", 1)[1]
    edge = lab.plan.bridge(lab.plan.edge(lab.plan.cluster.vpc).bridge)
    table = subprocess.run(["ovs-appctl", "dpctl/dump-conntrack", f"zone={edge.zone}"], capture_output=True,
                           text=True, check=True).stdout
    mine = [line for line in table.splitlines() if f"dst={lab.address('inet/server')}," in line and "dport=80)" in line]
    if lab.plan.cluster.mode == "eni":
        mine = [line for line in mine if f"sport={local_port}," in line]
        assert any(f"orig=(src={pod.ip}," in line for line in mine), "\n".join(mine) or table
    else:       # masqueraded by the node: the gateway never sees the pod's address
        assert any(f"orig=(src={lab.plan.node(pod.node).ip}," in line for line in mine), "\n".join(mine) or table
        assert f"src={pod.ip}," not in table, table


# -------------------------------------------------------------------------------- internet SLB
def test_internet_facing_slb_balances_clients_from_the_internet(lab):
    results = lab.probe([Probe("inet/client", slb_healthy(lab), 80)] * 20)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    assert {r.answer["name"] for r in results} == {"web-0", "web-1"}
    if lab.plan.cluster.mode == "eni":      # the SLB sends to the pods, which see the client
        assert {seen_by_server(r) for r in results} == {lab.address("inet/client")}
    else:                                   # externalTrafficPolicy Cluster: masqueraded by the node
        assert {seen_by_server(r) for r in results} <= {n.ip for n in lab.plan.nodes}


def test_internet_facing_slb_has_no_other_listener(lab):
    assert lab.connect("inet/client", slb_healthy(lab), 80).ok
    r = lab.connect("inet/client", slb_healthy(lab), 8080, timeout=1.0)
    assert r.outcome == "timeout", r


# --------------------------------------------------------------------------- the machine itself
def _real_interfaces(lab: Lab) -> list[str]:
    ours = {e.name for e in lab.net.ledger.entries() if e.kind == "link"}
    ours |= {p.name for b in lab.plan.bridges for p in b.ports} | {b.name for b in lab.plan.bridges}
    return [n for n in os.listdir("/sys/class/net") if n not in ours and n not in ("ovs-netdev", "ovs-system")]


def test_no_emulated_packet_reaches_the_machines_interfaces(lab):
    """Sniff every interface of the root namespace that is not the run's own (lo included) while
    traffic flows both ways across the edge: no packet from or to the emulated internet."""
    names = _real_interfaces(lab)
    assert "lo" in names
    control = lab.host("inet/client").veth      # the run's own: it must see the traffic, or the sniffer is blind
    socks = []
    for name in names + [control]:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((name, 0))
        s.settimeout(0.2)
        socks.append((name, s))
    leaked: list[str] = []
    seen = {"packets": 0, "control": 0}
    stop = threading.Event()

    def sniff(name: str, s: socket.socket) -> None:
        while not stop.is_set():
            try:
                frame = s.recv(65535)
            except socket.timeout:
                continue
            except OSError as exc:      # an interface that is down carries nothing
                if exc.errno == errno.ENETDOWN:
                    return
                raise
            if name != control:
                seen["packets"] += 1
            if frame[12:14] != b"\x08\x00" or len(frame) < 34:      # IPv4 after an Ethernet header (lo has one too)
                continue
            src, dst = ipaddress.IPv4Address(frame[26:30]), ipaddress.IPv4Address(frame[30:34])
            if src in EMULATED_INTERNET or dst in EMULATED_INTERNET:
                if name == control:
                    seen["control"] += 1
                else:
                    leaked.append(f"{name}: {src} -> {dst}")

    threads = [threading.Thread(target=sniff, args=pair, daemon=True) for pair in socks]
    for t in threads:
        t.start()
    try:
        probes = [Probe("pod/default/client", "inet/server", 80), Probe("ecs/bastion", "inet/server", 80),
                  Probe("node/node-1", "inet/server", 53, "udp"), Probe("inet/client", "eip/eip-bastion", 80),
                  Probe("inet/client", slb_healthy(lab), 80)]
        results = lab.probe(probes * 5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:      # a packet lo must show
            udp.sendto(b"kubevpc", ("127.0.0.1", 9))
        assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        for _, s in socks:
            s.close()
    assert not leaked, leaked[:10]
    assert seen["control"] > 0 and seen["packets"] > 0, seen
    # the root namespace has no route or address in the emulated internet either
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert "198.18." not in routes + addrs and "198.19." not in routes + addrs
