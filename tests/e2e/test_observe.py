"""Seeing how traffic flows, in each pod network mode, on the default scenario: `kubevpc trace`
follows real packets' flows bridge by bridge and agrees with the evaluator (`kubevpc explain`),
`kubevpc capture` writes what the devices saw, and the vSwitches' flow log and rule counters
count what real connections sent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from kubevpc.observe.capture import read_pcapng
from kubevpc.cli.observe import status_lines
from kubevpc.control import describe
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain

ECS_DB = "ecs/ecs-db"
WEB0 = "pod/default/web-0"
KUBEVPC = [sys.executable, "-m", "kubevpc.cli"]

CLIENT = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"x" * int(sys.argv[3]))
answer = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
print(json.dumps({"local": "%s:%d" % s.getsockname(), "answer": len(answer), "answer_text": answer.decode()}))
s.close()
"""


def bridges_of(t) -> list[str]:
    """The bridges a trace crossed, in order, each once per visit."""
    out: list[str] = []
    for h in t.hops:
        for b in h.bridges:
            if not out or out[-1] != b:
                out.append(b)
    return out


def short(lab, bridge: str) -> str:
    return bridge.removeprefix(lab.plan.run + "-")


def vswitch_bridge(lab, endpoint: str) -> str:
    return short(lab, lab.plan.vswitch(lab.host(endpoint).vswitch).bridge)


# --------------------------------------------------------------------------------------- trace
def test_trace_of_an_allowed_path_lists_the_bridges_in_order_and_the_accepting_rule(mode_lab):
    lab = mode_lab
    t = lab.trace(WEB0, ECS_DB, 5432)
    vrouter = next(short(lab, b.name) for b in lab.plan.bridges if b.role == "vrouter" and b.owner == "vpc-prod")
    expected = [short(lab, lab.host(WEB0).bridge), vswitch_bridge(lab, "ecs/node-1"), vrouter,
                vswitch_bridge(lab, ECS_DB)]
    assert bridges_of(t) == expected, [(h.role, h.bridges) for h in t.hops]
    assert t.outcome == "delivered" and t.delivered_to == ECS_DB, t.reason
    decisions = [d for h in t.hops for d in h.decisions]
    assert any("sg-db rule 1 (accept tcp/5432 from sg-nodes" in d for d in decisions), decisions
    assert not t.disagreement
    # the connection really works, from the address the trace says the server sees
    r = lab.connect(WEB0, ECS_DB, 5432)
    assert r.ok and r.answer["client"].rsplit(":", 1)[0] == t.seen_source, (r, t.seen_source)


def test_trace_of_a_denied_path_names_the_denying_rule(mode_lab):
    t = mode_lab.trace(WEB0, ECS_DB, 6379)
    assert t.outcome == "dropped", t.reason
    assert t.reason.startswith(f"dropped on {vswitch_bridge(mode_lab, ECS_DB)} in table 50 (sg_ingress)"), t.reason
    assert "ecs/ecs-db: inbound denied unless a rule or group membership allows it" in t.reason
    assert not t.disagreement
    assert not mode_lab.connect(WEB0, ECS_DB, 6379, timeout=1.0).ok


def test_trace_through_a_clusterip_shows_the_dnat_to_the_endpoint(mode_lab):
    lab = mode_lab
    dns = lab.host("pod/kube-system/kube-dns-0")
    t = lab.trace("pod/shop/client", "svc/kube-system/kube-dns", 53, "udp")
    (branch,) = t.branches                      # one ready endpoint: one bucket
    assert branch.via == f"endpoint {dns.ip}:53"
    decisions = [d for h in branch.trace.hops for d in h.decisions]
    assert f"DNAT to {dns.ip}:53" in " ".join(decisions), decisions
    assert any(d.startswith("kube-system/kube-dns:53/UDP (cluster-ip): DNAT to pod/kube-system/kube-dns-0") for d in
               decisions), decisions
    (leaf,) = t.leaves()
    assert leaf.outcome == "delivered" and leaf.delivered_to == dns.key
    assert not t.disagreement
    # a port the Service does not have: no DNAT, and no endpoint is reached
    other = lab.trace("pod/shop/client", "svc/kube-system/kube-dns", 54, "udp")
    assert not other.branches and all(x.outcome != "delivered" for x in other.leaves()), other.reason


def test_explain_and_trace_agree_on_the_default_scenarios_checks(mode_lab):
    lab = mode_lab
    checks = default_checks(lab.plan) + declared_checks(lab.plan)
    assert any(c.expect for c in checks) and any(not c.expect for c in checks)
    wrong = []
    for c in checks:
        e = explain(lab.plan, c.source, c.dest, c.port, c.proto)
        t = lab.trace(c.source, c.dest, c.port, c.proto)
        delivered = all(x.outcome == "delivered" for x in t.leaves())
        if t.disagreement or delivered != e.allowed or e.allowed != c.expect:
            wrong.append(f"{c.title}: {c.source} -> {c.dest} {c.port}/{c.proto}: expected {c.expect}, explain "
                         f"{e.allowed} ({e.reason}), trace {t.outcome} ({t.reason}) {t.disagreement or ''}")
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------------------------- capture
def _capture(lab, target: str, traffic, filt: str = "") -> list[tuple[str, bytes]]:
    """Run `kubevpc capture` on a target while `traffic()` runs; the frames it wrote, which
    tcpdump must read too."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cap.pcapng")
        cap = subprocess.Popen([*KUBEVPC, "capture", lab.run, target, "-w", path, "-d", "6"]
                               + (["-f", filt] if filt else []), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        try:
            time.sleep(2)                                    # the sockets are open
            traffic()
        finally:
            _, err = cap.communicate(timeout=30)
        assert cap.returncode == 0, err
        with open(path, "rb") as fh:
            frames = read_pcapng(fh.read())
        if shutil.which("tcpdump"):
            tcpdump = subprocess.run(["tcpdump", "-r", path, "-nn"], capture_output=True, text=True, timeout=20)
            assert tcpdump.returncode == 0 and tcpdump.stdout, tcpdump.stderr
    return frames


def _ip(frame: bytes, at: int) -> str:
    return ".".join(str(b) for b in frame[at:at + 4])


def test_capture_on_the_vxlan_underlay_shows_the_outer_header_and_the_inner_pods(mode_lab):
    lab = mode_lab
    src, dst = "pod/shop/client", "pod/default/web-2"        # node-1 to node-3: across vSwitches
    pod_a, pod_b = lab.address(src), lab.address(dst)

    def traffic():
        for _ in range(3):
            assert lab.connect(src, dst, 8080).ok

    ipv4 = [f for _, f in _capture(lab, src if lab.plan.cluster.mode != "vxlan" else "vxlan/node-1", traffic)
            if f[12:14] == b"\x08\x00"]
    vxlan = [f for f in ipv4 if f[23] == 17 and int.from_bytes(f[36:38], "big") == 4789]
    if lab.plan.cluster.mode == "vxlan":
        # outer Ethernet, IP, UDP and VXLAN headers (50 bytes), then the pods' own frame
        inner = {(_ip(f, 50 + 26), _ip(f, 50 + 30)) for f in vxlan}
        assert (pod_a, pod_b) in inner and (pod_b, pod_a) in inner, inner
        outer = {(_ip(f, 26), _ip(f, 30)) for f in vxlan}
        assert (lab.address("node/node-1"), lab.address("node/node-3")) in outer, outer
        return
    # the twin: without an overlay the pods' packets travel as they are, and there is no VXLAN underlay
    plain = {(_ip(f, 26), _ip(f, 30)) for f in ipv4}
    assert not vxlan and (pod_a, pod_b) in plain and (pod_b, pod_a) in plain, plain
    refused = subprocess.run([*KUBEVPC, "capture", lab.run, "vxlan/node-1", "-w", os.devnull], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "has no VXLAN device (vxlan mode only)" in refused.stdout + refused.stderr


# ------------------------------------------------------------------------------ flow log, counters
def _send(lab, source: str, dest: str, port: int, size: int) -> dict:
    """Connect, send `size` bytes, read the answer to the end; the server's answer names the
    client address it saw."""
    res = lab.exec(source, [sys.executable, "-c", CLIENT, lab.address(dest), str(port), str(size)], timeout=10)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _settled(lab, pred, window: int) -> list[dict]:
    """The written records `pred` picks, once none of the flows behind them is alive any more
    (each has expired and its last counts are written)."""
    deadline = time.monotonic() + 2 * window + 5
    while time.monotonic() < deadline:
        records = [r for r in lab.flow_log(active=True) if pred(r)]
        if records and not any(r["log-status"] == "ACTIVE" for r in records):
            return records
        time.sleep(0.5)
    pytest.fail(f"no settled flow log records within {2 * window + 5} s: "
                f"{[r for r in lab.flow_log(active=True) if pred(r)]}")


def _total(records: list[dict]) -> tuple[int, int, int]:
    """packets, bytes, and packets whose bytes are not counted (the first of each learned flow)."""
    return (sum(r["packets"] for r in records), sum(r["bytes"] for r in records),
            sum(1 for r in records if r.get("first-packet-bytes")))


def test_flow_log_records_accept_with_plausible_bytes_and_reject_for_the_security_group(mode_lab):
    lab = mode_lab
    window = lab.plan.flow_log_window
    assert window == 10
    db = lab.address(ECS_DB)
    sent = _send(lab, WEB0, ECS_DB, 5432, 1000)
    answer = json.loads(sent["answer_text"])
    seen_ip, seen_port = answer["client"].rsplit(":", 1)     # what ecs-db saw: after SNAT in vxlan mode
    seen_port = int(seen_port)
    denied = lab.connect(WEB0, ECS_DB, 6379, timeout=1.5)
    assert not denied.ok
    source_eni = "eni-default-web-0" if lab.plan.cluster.mode == "eni" else "eni-node-1"

    def conn(r, eni, direction):
        there = (r["srcaddr"], r["srcport"], r["dstaddr"], r["dstport"])
        want = (seen_ip, seen_port, db, 5432) if direction == "out" and eni == source_eni or \
            direction == "in" and eni == "eni-ecs-db" else (db, 5432, seen_ip, seen_port)
        return r["eni-id"] == eni and r["direction"] == direction and there == want

    out = _settled(lab, lambda r: conn(r, source_eni, "out"), window)
    assert {r["action"] for r in out} == {"ACCEPT"} and {r["protocol"] for r in out} == {6}
    assert {r["vpc-id"] for r in out} == {"vpc-prod"}
    packets, nbytes, uncounted = _total(out)
    assert uncounted == 1, out                                 # the SYN
    # 1000 bytes of payload, and every counted packet's Ethernet, IP and TCP headers (54 to 94 bytes)
    assert 1000 + 54 * (packets - 1) <= nbytes <= 1000 + 94 * (packets - 1), out
    assert all(r["end"] >= r["start"] >= int(time.time()) - 120 for r in out)
    # the same connection entering ecs-db's ENI, as many packets
    ins = _settled(lab, lambda r: conn(r, "eni-ecs-db", "in"), window)
    assert {r["action"] for r in ins} == {"ACCEPT"} and _total(ins)[:2] == (packets, nbytes)
    # the answer leaving ecs-db's ENI: its payload and the headers of every packet
    back = _settled(lab, lambda r: conn(r, "eni-ecs-db", "out"), window)
    p_back, b_back, first_back = _total(back)
    assert first_back == 0 and sent["answer"] + 54 * p_back <= b_back <= sent["answer"] + 94 * p_back, back
    # the denied twin: 6379 rejected at ecs-db's ENI, nothing but SYNs counted
    rejects = _settled(lab, lambda r: r["eni-id"] == "eni-ecs-db" and r["dstport"] == 6379
                       and r["srcaddr"] == seen_ip and r["action"] == "REJECT", window)
    syns, syn_bytes, first = _total(rejects)
    assert syns >= 1 and 60 * (syns - first) <= syn_bytes <= 80 * (syns - first), rejects
    assert not [r for r in lab.flow_log() if r["eni-id"] == "eni-ecs-db" and r["dstport"] == 6379
                and r["action"] == "ACCEPT"]
    assert not [r for r in lab.flow_log() if r["dstport"] == 5432 and r["action"] == "REJECT"]


def test_flowlog_command_prints_the_records_as_json_lines(mode_lab):
    lab = mode_lab
    _send(lab, WEB0, ECS_DB, 5432, 10)
    res = subprocess.run([*KUBEVPC, "flowlog", lab.run, "-o", "json", "--active", "--eni", "eni-ecs-db"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert records and all(r["eni-id"] == "eni-ecs-db" for r in records)
    assert any(r["log-status"] == "ACTIVE" and r["dstport"] == 5432 for r in records)
    bad = subprocess.run([*KUBEVPC, "flowlog", "kvzz9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no live run named kvzz9" in bad.stderr + bad.stdout


def test_security_group_drop_counter_rises_by_the_packets_the_denied_probe_sent(mode_lab):
    lab = mode_lab
    name = "ecs/ecs-db: inbound denied unless a rule or group membership allows it (the default)"

    def dropped() -> int:
        return sum(c.packets for c in lab.rule_counters() if c.name == name and c.action == "drop")

    script = ("import socket, sys, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for i in range(5):\n    s.sendto(b'x' * 100, (sys.argv[1], int(sys.argv[2]))); time.sleep(0.05)\n")
    def settled(expected: int) -> int:
        # Open vSwitch adds the datapath's counts to its flows' when its revalidators run (every 500 ms)
        deadline = time.monotonic() + 5
        while (n := dropped() - before) != expected and time.monotonic() < deadline:
            time.sleep(0.25)
        return n

    before = dropped()
    # five UDP datagrams to ecs-db, which sg-db does not open to UDP: each a new connection, each dropped
    assert lab.exec(WEB0, [sys.executable, "-c", script, lab.address(ECS_DB), "5433"]).returncode == 0
    assert settled(5) == 5
    # the twin: as many datagrams to a pod that takes them are not counted there
    assert lab.exec(WEB0, [sys.executable, "-c", script, lab.address("pod/default/web-2"), "53"]).returncode == 0
    time.sleep(1.5)
    assert settled(5) == 5
    # `kubevpc status` shows it among the top drops (what the control channel's describe gives it)
    lines = status_lines(describe(lab))
    assert any(line.startswith(f"drop: security group {name}: ") for line in lines), lines
