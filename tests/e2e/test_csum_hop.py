"""The checksum hop of vxlan mode (controller/csumhop.py, topologies/hops.py), with
tests/e2e/data/csumhop.yaml (its header lists the pods and Services), in two labs: as built by
default, where on the userspace datapath the pods keep their offloads (TSO) and every node bridge has
its hop, and with KUBEVPC_VXLAN_CSUM_HOP=0, where every namespace sends full checksums and there is
no hop (the way kubevpc fell back to before the hop, and still does where it cannot apply). Bulk data (iperf3 for 1 s, at least 4 MiB) crosses every path that a node bridge NATs and then tunnels, and
the paths beside them, with the client address the server saw; each allowed path has a refused twin,
and every path at the pods' own server is held to `kubevpc explain` and the scenario's expectations.
Where the hop is in force, each bulk transfer is also seen taking the hop on the node that should
send it there (the hop port's packet count), and no other.

vxlan only: the switch changes nothing in the other modes (tests/unit/test_csum_hop.py)."""
from __future__ import annotations

import json
import re
import os
import subprocess
import time

import pytest

from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks

from tests.csumhop_paths import PATHS
from .conftest import lab_in_mode, slow
from .test_services import client_ip

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "csumhop.yaml")
BYTES = 4 << 20                  # at least this much crosses in each bulk test of 1 s
IPERF = 5201                     # bulk-0's iperf3, behind bulk:5201, bulk-np:30201 and bulk-local:30202


@pytest.fixture(scope="module", params=["default", "0"], ids=["hop", "no-hop"])
def lab(request):
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "default":                  # before the lab builds: the builder reads it
            mp.delenv("KUBEVPC_VXLAN_CSUM_HOP", raising=False)
        else:
            mp.setenv("KUBEVPC_VXLAN_CSUM_HOP", request.param)
        runs = lab_in_mode(SCENARIO, "vxlan")
        lab = next(runs)
        lab.hop_setting = request.param
        yield lab
        next(runs, None)


def hop_in_force(lab) -> bool:
    return lab.builder.offloads.csum_hop


def hop_packets(lab) -> dict[str, int]:
    """Packets Open vSwitch has sent into each node's hop, by node."""
    out = {}
    for b in lab.plan.bridges:
        port = next((p.name for p in b.ports if p.kind == "hop" and p.ofport == 110), None)
        if port:       # the switch's own port counters (the database's statistics lag by up to 5 s)
            text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--timeout=5", "dump-ports", b.name, "110"],
                                  capture_output=True, text=True, check=True).stdout
            out[b.owner] = int(re.search(r"tx pkts=(\d+)", text).group(1))
    return out


def address(lab, ref: str) -> str:
    return lab.plan.service(ref.removeprefix("svc/")).cluster_ip if ref.startswith("svc/") else lab.address(ref)


def connected(run: subprocess.CompletedProcess) -> bool:
    """Did the iperf3 client run its test? iperf3 3.12 with -J exits 0 even when it could not
    connect, and says so in the JSON's "error"."""
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        return False
    return run.returncode == 0 and "error" not in doc


def bulk(lab, client: str, dest: str, port: int) -> tuple[subprocess.CompletedProcess, dict]:
    """iperf3 from `client` to `dest`:`port` for 1 s, against a one-off server in bulk-0:
    the client's run and the server's report (empty when no connection came)."""
    server = lab.popen("pod/bulk-0", ["iperf3", "-s", "-1", "-J", "-p", str(IPERF)], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        run = lab.exec(client, ["iperf3", "-c", address(lab, dest), "-p", str(port), "-t", "1", "-J",
                                "--connect-timeout", str(int(slow(2000)))], timeout=slow(30))
        if not connected(run):
            server.kill()
        out, _ = server.communicate(timeout=slow(10))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
    return run, (json.loads(out) if out.strip() else {})


def test_the_hop_is_in_force_where_the_datapath_needs_it(lab):
    offloads = lab.builder.offloads
    if lab.hop_setting == "0":
        assert not offloads.csum_hop and not hop_packets(lab) and "checksum hop" not in offloads.note
        if lab.net.datapath.kind == "netdev":
            pod = lab.exec("pod/client-1", ["ethtool", "-k", "eth0"]).stdout
            assert "tx-checksumming: off" in pod, "KUBEVPC_VXLAN_CSUM_HOP=0: the pods send full checksums"
        return
    if lab.net.datapath.kind != "netdev":
        assert not offloads.csum_hop and "checksum hop" not in offloads.note
        pytest.skip(f"no hop on the kernel datapath: {offloads.note}")
    if not lab.net.datapath.userspace_tso:
        assert not offloads.csum_hop and "checksum hop not in force: no userspace TSO" in offloads.note
        pytest.skip(f"no hop on this datapath: {offloads.note}")
    assert offloads.csum_hop and offloads.link_mtu == 1500, offloads
    assert set(hop_packets(lab)) == {"node-1", "node-2", "node-3"}
    pod = lab.exec("pod/client-1", ["ethtool", "-k", "eth0"]).stdout
    assert "tx-checksumming: on" in pod and "tcp-segmentation-offload: on" in pod, "the pods keep their offloads"
    node = lab.exec("node/node-1", ["ethtool", "-k", "eth0"]).stdout
    assert "tx-checksumming: off" in node, "the instances keep full checksums"
    out_end = next(p.name for p in lab.plan.bridge(lab.plan.node("node-1").bridge).ports if p.ofport == 110)
    hop = subprocess.run(["ethtool", "-k", out_end], capture_output=True, text=True).stdout
    assert "tx-checksumming: off" in hop and "tx-tcp-segmentation: off" in hop, hop     # IPv4 TSO: segmented in software


# (client, destination, port, whom the server sees, the node whose hop it takes)
BULK = [
    ("pod/client-1", "svc/default/bulk", IPERF, "pod/client-1", "node-1"),       # ClusterIP, endpoint elsewhere
    ("pod/client-2", "svc/default/bulk", IPERF, "pod/client-2", ""),             # ClusterIP, endpoint here
    ("pod/client-1", "node/node-1", 30201, "node/node-1", "node-1"),             # own node's NodePort, Cluster
    ("pod/client-1", "node/node-2", 30201, "node/node-2", "node-2"),             # beyond the tunnel, Cluster
    ("pod/client-1", "node/node-2", 30202, "pod/client-1", "node-2"),            # beyond the tunnel, Local
    ("ecs/ecs-client", "node/node-1", 30201, "node/node-1", ""),                 # the VPC, Cluster
    ("ecs/ecs-client", "node/node-2", 30202, "ecs/ecs-client", ""),              # the VPC, Local
    ("pod/client-1", "pod/bulk-0", IPERF, "pod/client-1", ""),                   # pod to pod across nodes
    ("pod/client-2", "pod/bulk-0", IPERF, "pod/client-2", ""),                   # pod to pod on one node
]


@pytest.mark.parametrize("client, dest, port, seen, hop", BULK, ids=[f"{c}->{d}:{p}" for c, d, p, _, _ in BULK])
def test_bulk_data_crosses_with_the_client_address_right(lab, client, dest, port, seen, hop):
    before = hop_packets(lab) if hop_in_force(lab) else {}
    run, report = bulk(lab, client, dest, port)
    assert connected(run), run.stdout[-800:] + run.stderr
    # the server's own count of a 1 s test (iperf3 stops counting when the client says the test is
    # over, so a test of a fixed size, -n, counted less than it sent on fast paths)
    got = report["end"]["sum_received"]
    assert got["bytes"] >= BYTES, got
    assert report["start"]["connected"][0]["remote_host"] == lab.address(seen), report.get("start")
    if hop_in_force(lab):
        after = hop_packets(lab)
        # 4 MiB: thousands of segments one way or hundreds of ACKs the other; nothing else runs
        took = {node for node in after if after[node] - before[node] > 20}
        assert took == ({hop} if hop else set()), (before, after)


# the refused twins of the bulk paths: a denied pod (NetworkPolicy at bulk-0), Local NodePorts of
# nodes without an endpoint
TWINS = [("pod/denied-1", "svc/default/bulk", IPERF), ("pod/denied-2", "svc/default/bulk", IPERF),
         ("pod/client-1", "node/node-1", 30202), ("pod/client-1", "node/node-3", 30202),
         ("ecs/ecs-client", "node/node-1", 30202), ("pod/denied-1", "pod/bulk-0", IPERF),
         ("pod/denied-2", "pod/bulk-0", IPERF)]


@pytest.mark.parametrize("client, dest, port", TWINS, ids=[f"{c}->{d}:{p}" for c, d, p in TWINS])
def test_bulk_data_does_not_cross_where_it_must_not(lab, client, dest, port):
    run, report = bulk(lab, client, dest, port)
    assert not connected(run) and not report, run.stdout[-400:]




def test_every_path_is_as_kubevpc_explain_says(lab):
    results = lab.probe([Probe(s, d, p) for s, d, p in PATHS], timeout=slow(1.5))
    wrong = []
    for (s, d, p), r in zip(PATHS, results):
        want = explain(lab.plan, s, d, p)
        got = (r.outcome == "answered", client_ip(r) if r.ok else "")
        if got != (want.allowed, want.seen_source):
            wrong.append(f"{s} -> {d}:{p}: {r.outcome} {got[1]}; explain: {want.allowed} {want.seen_source} "
                         f"({want.reason})")
    assert not wrong, "\n".join(wrong)
    assert sum(r.outcome == "answered" for r in results) == 10, "ten allowed, eight refused"


def test_the_scenarios_expectations_hold(lab):
    outcomes = run_checks(lab, declared_checks(lab.plan), timeout=slow(1))
    assert len(outcomes) == 8 and all(o.passed for o in outcomes), [o.as_dict() for o in outcomes if not o.passed]


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
