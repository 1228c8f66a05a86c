"""What must connect connects, what must be refused is refused, in each pod network mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks
from topologies.servers import servers_mode

REQUIRED_KINDS = ("pod to pod, same node", "pod to pod, across nodes on one vSwitch", "pod to pod, across vSwitches",
                  "pod to ECS", "ECS to pod", "ECS to ECS across vSwitches", "ECS to another VPC")


def test_default_checks_all_pass(mode_lab):
    checks = default_checks(mode_lab.plan) + declared_checks(mode_lab.plan)
    titles = {c.title.removesuffix(" (UDP)") for c in checks}
    assert set(REQUIRED_KINDS) <= titles, f"missing kinds of path: {set(REQUIRED_KINDS) - titles}"
    assert any(c.expect for c in checks) and any(not c.expect for c in checks)
    outcomes = run_checks(mode_lab, checks)
    failed = [f"{o.check.title}: {o.check.source} -> {o.check.dest}:{o.check.port}/{o.check.proto} expected "
              f"{'connect' if o.check.expect else 'refuse'}, got {o.outcome} (server saw {o.client or '-'}, "
              f"expected {o.check.seen_source or '-'}): {o.check.reason}" for o in outcomes if not o.passed]
    assert not failed, "\n".join(failed)


def test_pod_to_pod_keeps_the_client_address(mode_lab):
    for dst in ("pod/shop/client", "pod/default/web-1", "pod/default/web-2"):
        port = 9000 if dst == "pod/shop/client" else 8080
        r = mode_lab.connect("pod/default/web-0", dst, port)
        assert r.ok, (dst, r.outcome, r.detail)
        assert r.answer["client"].rsplit(":", 1)[0] == mode_lab.address("pod/default/web-0")
        assert r.answer["name"] == dst.rsplit("/", 1)[1]


def test_udp_pod_to_pod_across_vswitches(mode_lab):
    r = mode_lab.connect("pod/default/web-0", "pod/default/web-2", 53, "udp")
    assert r.ok and r.answer["proto"] == "udp" and r.answer["name"] == "web-2"
    refused = mode_lab.connect("pod/default/web-0", "pod/default/web-2", 54, "udp")
    assert refused.outcome == "refused", refused     # ICMP port unreachable comes back through conntrack


def test_pod_to_ecs_source_address(mode_lab):
    r = mode_lab.connect("pod/default/web-0", "ecs/ecs-db", 5432)
    assert r.ok, r.outcome
    seen = r.answer["client"].rsplit(":", 1)[0]
    if mode_lab.plan.cluster.mode == "vxlan":
        assert seen == mode_lab.address("node/node-1"), "vxlan: pod traffic leaves SNATed to its node"
        assert int(r.answer["client"].rsplit(":", 1)[1]) >= 61000, "SNAT ports stay above the node's own range"
    else:
        assert seen == mode_lab.address("pod/default/web-0")


def test_security_group_allows_5432_and_refuses_6379(mode_lab):
    allowed, denied = mode_lab.probe([Probe("pod/default/web-0", "ecs/ecs-db", 5432),
                                      Probe("pod/default/web-0", "ecs/ecs-db", 6379)], timeout=1.5)
    assert allowed.ok
    assert denied.outcome == "timeout", "sg-db drops 6379 silently; the server there is listening"
    # the server on 6379 is up: from the same host it answers
    local = mode_lab.exec("ecs/ecs-db", [sys.executable, "-m", "kubevpc.probe", "--json", "tcp:127.0.0.1:6379"])
    answer = json.loads(local.stdout)[0]
    assert answer["ok"] and answer["answer"]["name"] == "ecs-db" and answer["answer"]["port"] == 6379, local


def test_ecs_to_pod_follows_mode_and_security_groups(mode_lab):
    allowed = mode_lab.connect("ecs/ecs-db", "pod/shop/client", 9000)
    refused = mode_lab.connect("ecs/ecs-db", "pod/default/web-0", 8080)
    assert refused.outcome == "timeout"
    if mode_lab.plan.cluster.mode == "vxlan":
        assert allowed.outcome == "timeout", "overlay pod addresses are not routable in the VPC"
    else:
        assert allowed.ok and allowed.answer["client"].startswith(mode_lab.address("ecs/ecs-db") + ":")


def test_vpcs_are_isolated(mode_lab):
    isolated = mode_lab.probe([Probe("ecs/ecs-other", "ecs/ecs-db", 5432), Probe("ecs/node-1", "ecs/ecs-other", 80),
                               Probe("pod/default/web-0", "ecs/ecs-other", 80)], timeout=1.0)
    assert [r.outcome for r in isolated] == ["timeout"] * 3
    inside = mode_lab.connect("ecs/node-3", "ecs/ecs-db", 5432)      # the allowed twin, across vSwitches
    assert inside.ok


def test_no_packet_in_in_steady_state(mode_lab):
    mode_lab.connect("pod/default/web-0", "pod/default/web-2", 8080)
    bridges = mode_lab.status()["bridges"]
    assert bridges and all(b["programmed"] for b in bridges.values())
    assert sum(b["packet_in"] for b in bridges.values()) == 0


def test_traceroute_shows_the_hops(mode_lab):
    mode = mode_lab.plan.cluster.mode
    target = mode_lab.address("ecs/ecs-db")
    out = mode_lab.exec("pod/default/web-0", ["traceroute", "-n", "-T", "-p", "5432", "-w", "1", "-q", "1", "-m", "5",
                                               target]).stdout
    hops = [line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1]
    vsw_h_gw = mode_lab.plan.vswitch("vsw-h").gateway
    expected = {"vpc-route": ["10.244.0.1", vsw_h_gw, target],
                "eni": [vsw_h_gw, target],
                "vxlan": ["10.244.0.1", "*", target]}[mode]     # vxlan: the SNATed hop cannot be answered
    assert hops == expected, out


def test_bulk_tcp_across_vswitches(mode_lab):
    """A real TCP stream between pods on nodes of different vSwitches: segmentation offload,
    checksums and the node uplinks must all be right, not only the first packets."""
    lab = mode_lab
    server = subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid("pod/default/web-2")), "iperf3", "-s", "-1",
                               "-p", "5202"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        res = lab.exec("pod/default/web-0", ["iperf3", "-c", lab.address("pod/default/web-2"), "-p", "5202",
                                             "-t", "2", "-J"], timeout=30)
        assert res.returncode == 0, res.stdout[-500:] + res.stderr
        bps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
        assert bps > 100e6, f"{bps / 1e6:.1f} Mbit/s"
    finally:
        server.kill()
        server.wait(timeout=5)


def test_each_pod_server_runs_in_its_nodes_server_or_a_process_of_its_own(mode_lab):
    """KUBEVPC_SERVERS=node (the default): the servers of a node's pods run in one process, kv:<node>,
    in the node's namespace (kubevpc.daemons.nodeserver); an instance that is no node has a forked
    process of its own, kv:<name>, in its namespace. KUBEVPC_SERVERS=pod: every pod and instance
    has a forked process of its own (kubevpc.daemons.forkserver). Either way, killing one pod's
    server takes down that pod's server alone until it is started again."""
    lab = mode_lab
    pods = [h for h in lab.plan.hosts if h.servers and h.app not in ("dns", "ingress")]
    assert pods
    by_node = servers_mode() == "node"
    owners: dict[int, set] = {}
    for h in pods:
        proc = lab.net.servers[h.key]
        served = by_node and bool(h.node)
        home = lab.net.host_pid(lab.plan.node(h.node).ecs if served else h.key)
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(f"/proc/{home}/ns/net").st_ino, h.key
        with open(f"/proc/{proc.pid}/comm") as fh:
            assert fh.read().strip() == f"kv:{h.node if served else h.name}"[:15]
        owners.setdefault(proc.pid, set()).add(h.node if served else h.key)
    assert all(len(o) == 1 for o in owners.values()), f"a process serves two nodes or hosts: {owners}"
    assert len(owners) == len({h.node if by_node and h.node else h.key for h in pods})
    web0, web1 = lab.net.servers["pod/default/web-0"], lab.net.servers["pod/default/web-1"]
    web0.kill()
    web0.wait(timeout=5)
    try:
        gone, kept = lab.probe([Probe("pod/shop/client", "pod/default/web-0", 8080), Probe("pod/shop/client", "pod/default/web-1", 8080)])
        assert gone.outcome == "refused" and kept.ok, (gone, kept)
        assert web1.poll() is None and lab.net.servers["pod/shop/client"].poll() is None, "web-0's alone"
    finally:
        lab.start_server("pod/default/web-0")
    assert lab.connect("pod/shop/client", "pod/default/web-0", 8080).ok
