"""How packets travel: VXLAN really crosses the underlay, MTUs, and the fast TCP path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kubevpc.lab import Lab

from .conftest import SCENARIO


@pytest.fixture(scope="module")
def vxlan_lab():
    lab = Lab(SCENARIO, mode="vxlan")
    lab.up()
    yield lab
    lab.down()


def _capture(lab, endpoint: str, bpf: str, action) -> str:
    """tcpdump inside an endpoint's namespace while `action` runs; returns the decoded lines."""
    pid = lab.net.host_pid(lab.host(endpoint).key)
    cap = subprocess.Popen(["mnexec", "-a", str(pid), "tcpdump", "-l", "-n", "-i", "eth0", "-c", "20", bpf],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    try:
        action()
        time.sleep(0.3)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=5)
    return out


def test_vxlan_crosses_vswitch_and_vrouter(vxlan_lab):
    lab = vxlan_lab
    n1, n3 = lab.address("node/node-1"), lab.address("node/node-3")
    out = _capture(lab, "node/node-1", "udp port 4789",
                   lambda: lab.connect("pod/default/web-0", "pod/default/web-2", 8080))
    assert f"{n1}." in out and f"{n3}.4789" in out, out     # outer header: node-1 -> node-3, VXLAN port
    assert "VXLAN" in out and lab.address("pod/default/web-2") in out, out   # inner pod addresses
    # node-1 and node-3 are on different vSwitches: the vRouter routed the outer packets
    flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"{lab.run}-vr0", f"table=30,ip,nw_dst={n3}"],
                           capture_output=True, text=True).stdout
    routed = [line for line in flows.splitlines() if "priority=100," in line]
    assert len(routed) == 1 and "n_packets=0," not in routed[0], flows


def test_no_vxlan_in_vpc_route_mode():
    lab = Lab(SCENARIO, mode="vpc-route").up()
    try:
        out = _capture(lab, "node/node-1", "udp port 4789",
                       lambda: lab.connect("pod/default/web-0", "pod/default/web-2", 8080))
        assert "VXLAN" not in out
        r = lab.connect("pod/default/web-0", "pod/default/web-2", 8080)
        assert r.ok        # the twin: the same path works, unencapsulated
    finally:
        lab.down()


def test_pod_mtu_is_underlay_minus_50(vxlan_lab):
    lab = vxlan_lab
    mtu = lab.exec("pod/default/web-0", ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
    assert mtu == "1450"
    target = lab.address("pod/default/web-2")
    fits = lab.exec("pod/default/web-0", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", target])
    too_big = lab.exec("pod/default/web-0", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", target])
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert too_big.returncode != 0


def test_tcp_bulk_transfer_works(vxlan_lab):
    """Checksums are right on this datapath: a real TCP stream across nodes through the tunnel."""
    lab = vxlan_lab
    target = lab.address("pod/default/web-2")
    server = subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid("pod/default/web-2")), "iperf3", "-s", "-1",
                               "-p", "5201"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        res = lab.exec("pod/default/web-0", ["iperf3", "-c", target, "-p", "5201", "-t", "2", "-J"], timeout=30)
        assert res.returncode == 0, res.stdout[-500:] + res.stderr
        bps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
        assert bps > 50e6, f"{bps / 1e6:.0f} Mbit/s"
    finally:
        server.kill()
        server.wait(timeout=5)


# -------------------------------------------------------- a UDP flow keeps its order across the switch
_RECEIVE = r'''
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(10)
seqs = []
try:
    while True:
        seqs.append(int.from_bytes(s.recv(2048)[:4], "big"))
        s.settimeout(1.0)
except socket.timeout:
    pass
print(json.dumps(seqs), flush=True)
'''
_SOURCES = r'''
import collections, json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(10)
sources = collections.Counter()
try:
    while True:
        sources[s.recvfrom(2048)[1][0]] += 1
        s.settimeout(1.0)
except socket.timeout:
    pass
print(json.dumps(sources), flush=True)
'''
_SEND = r'''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
burst = int(sys.argv[5]) if len(sys.argv) > 5 else 50      # datagrams between pauses of 0.5 ms
for i in range(int(sys.argv[4])):
    s.sendto(i.to_bytes(4, "big") + b"x" * 1000, (sys.argv[1], int(sys.argv[2])))
    if i % burst == burst - 1:
        time.sleep(0.0005)
'''


def overtaken(seqs: list[int]) -> int:
    """The most datagrams sent after one that arrived before it."""
    import bisect
    seen: list[int] = []
    worst = 0
    for i, n in enumerate(seqs):
        worst = max(worst, i - bisect.bisect_left(seen, n))
        bisect.insort(seen, n)
    return worst


def test_overtaken_counts_later_datagrams_that_arrived_first():
    assert overtaken([0, 1, 2, 3]) == 0
    assert overtaken([1, 2, 3, 0, 4]) == 3
    assert overtaken([0, 2, 1, 3]) == 1


@pytest.mark.parametrize("mode", ["vpc-route", "eni"])
def test_a_udp_service_flow_across_nodes_arrives_in_order(mode):
    """A Service's first UDP datagrams leave the client's node by the veth pair (their commit
    takes 4 recirculations). The rest must take it too, not the patch port beside it, or they
    overtake the first ones still queued in the veth pair (30 datagrams did, before the fix).
    Open vSwitch itself may let the one datagram that set up the datapath flow arrive second.
    The client's gateway is resolved first: datagrams queued for an ARP reply are sent on from
    one core while the sender's next ones leave from the other, out of order, in any kernel."""
    lab = Lab(os.path.join(os.path.dirname(__file__), "data", "udp-order.yaml"), mode=mode).up()
    try:
        sinks = ["pod/default/sink-1", "pod/default/sink-2"]      # on node-1 and node-2; the client on node-3
        vip = lab.plan.service("default/sink").cluster_ip
        veth = lab.plan.node("node-3").uplinks[0].ofport
        before = _uplink_packets(lab, "node-3", veth)
        for n in range(5):
            got = _send_to_sinks(lab, _RECEIVE, "pod/default/client", lab.address(sinks[0]),
                                 [vip, "53", str(34000 + n), "5000"])
            seqs = max(got, key=len)
            assert len(seqs) >= 4500 and min(map(len, got)) == 0, f"flow {n}: {[len(g) for g in got]} received"
            assert overtaken(seqs) <= 1, f"flow {n}: a datagram was overtaken by {overtaken(seqs)}: {seqs[:40]}"
        sent = _uplink_packets(lab, "node-3", veth) - before
        assert sent >= 5 * 4500, f"only {sent} packets left node-3 by the veth pair"
    finally:
        lab.down()


@pytest.mark.parametrize("mode", ["vpc-route", "eni"])
def test_every_datagram_of_a_masqueraded_udp_flow_is_masqueraded(mode):
    """A NodePort with externalTrafficPolicy Cluster masquerades: the endpoint sees node-3, the
    node the client sent to, as the source of every datagram. Conntrack shows a UDP flow new
    until its first reply, so the datagrams after the first (which chose the endpoint) must be
    SNATed as well, not only the established ones; before that fix the endpoint got one."""
    lab = Lab(os.path.join(os.path.dirname(__file__), "data", "udp-order.yaml"), mode=mode).up()
    try:
        node3 = lab.address("ecs/node-3")
        got = _send_to_sinks(lab, _SOURCES, "ecs/ecs-client", node3, [node3, "30053", "35000", "500", "5"])
        seen = {src: n for g in got for src, n in g.items()}
        assert list(seen) == [node3] and seen[node3] >= 450, f"sources seen by the endpoints: {seen}"
    finally:
        lab.down()


def _send_to_sinks(lab, receiver: str, client: str, warm: str, send_args: list[str]) -> list:
    """Start `receiver` on UDP 7777 in both sinks of udp-order.yaml, resolve the client's next hop
    (a ping to `warm`), run _SEND in the client with `send_args`; what each receiver printed."""
    sinks = ["pod/default/sink-1", "pod/default/sink-2"]
    receivers = [subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid(s)), sys.executable, "-c", receiver, "7777"],
                                  stdout=subprocess.PIPE, text=True) for s in sinks]
    try:
        for r in receivers:
            assert r.stdout.readline().strip() == "ready"
        lab.exec(client, ["ping", "-c", "1", "-W", "2", warm])
        lab.exec(client, [sys.executable, "-c", _SEND, *send_args], timeout=60).check_returncode()
        return [json.loads(r.communicate(timeout=30)[0]) for r in receivers]
    finally:
        for r in receivers:
            r.kill()
            r.wait(timeout=5)


def _uplink_packets(lab, node: str, ofport: int) -> int:
    """Packets the node's bridge sent from table 36 (uplink) by the uplink's veth pair."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--no-names", "dump-flows", lab.plan.node(node).bridge,
                          "table=36"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split("n_packets=")[1].split(",")[0]) for line in out.splitlines()
               if line.rstrip().endswith(f"actions=output:{ofport}"))
