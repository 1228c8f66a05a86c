"""How packets travel: VXLAN really crosses the underlay, MTUs, and the fast TCP path."""
from __future__ import annotations

import subprocess
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
        import json
        bps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
        assert bps > 50e6, f"{bps / 1e6:.0f} Mbit/s"
    finally:
        server.kill()
        server.wait(timeout=5)
