"""Pod QoS in eni mode (scenarios/qos.yaml): the bandwidth annotations shape a pod's traffic, each
direction on its own, measured with iperf3. `shaped` receives at most 100 Mbit/s and sends at most
50 Mbit/s; its twin `free`, on the same node, is not limited. The issue's target: a limit of 100M
gives 100 Mbit/s within 10%."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from kubevpc.lab import Lab

from .conftest import lab_in_mode

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "qos.yaml")
PORT = 5201


@pytest.fixture(scope="module")
def lab():
    runs = lab_in_mode(SCENARIO, "eni")
    yield next(runs)
    next(runs, None)


def mbits(lab: Lab, client: str, server: str) -> float:
    """Mbit/s of a 3-second iperf3 TCP stream from `client` to `server` (the first second left out)."""
    srv = lab.popen(server, ["iperf3", "-s", "-1", "-p", str(PORT)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            res = lab.exec(client, ["iperf3", "-c", lab.address(server), "-p", str(PORT), "-t", "4", "-O", "1",
                                    "-J", "--connect-timeout", "2000"], timeout=30)
            end = _end(res.stdout) if res.returncode == 0 else {}
            if "sum_received" in end or time.monotonic() > deadline:
                break
            time.sleep(0.2)                 # the server is not listening yet, or still busy with the last test
        assert res.returncode == 0 and "sum_received" in end, res.stdout[-500:] + res.stderr[-500:]
        got = end["sum_received"]["bits_per_second"] / 1e6
        print(f"iperf3 {client} -> {server}: {got:.1f} Mbit/s")
        return got
    finally:
        srv.kill()
        srv.wait(timeout=10)


def _end(stdout: str) -> dict:
    """The `end` of iperf3's JSON report; empty when it has none (a test that failed, such as
    one refused by a server still busy with the last: iperf3 then reports only an "error")."""
    try:
        return json.loads(stdout).get("end") or {}
    except ValueError:
        return {}


def test_the_plan_carries_the_limits(lab):
    shaped = lab.host("pod/shaped")
    assert (shaped.ingress_bandwidth, shaped.egress_bandwidth) == (100_000_000, 50_000_000)
    assert lab.host("pod/free").ingress_bandwidth == lab.host("pod/free").egress_bandwidth == 0
    batch = next(h for h in lab.plan.pods if h.name.startswith("batch-"))
    assert (batch.ingress_bandwidth, batch.egress_bandwidth) == (0, 10_000_000)


def test_ingress_bandwidth_limits_what_reaches_the_pod(lab):
    got = mbits(lab, "pod/peer", "pod/shaped")
    assert 90 <= got <= 110, f"{got:.1f} Mbit/s into a pod limited to 100M"
    # twin: the same path into the unlimited pod on the same node
    free = mbits(lab, "pod/peer", "pod/free")
    assert free > 300, f"{free:.1f} Mbit/s into an unlimited pod"


def test_egress_bandwidth_limits_what_the_pod_sends(lab):
    got = mbits(lab, "pod/shaped", "pod/peer")
    assert 45 <= got <= 55, f"{got:.1f} Mbit/s out of a pod limited to 50M"
    free = mbits(lab, "pod/free", "pod/peer")
    assert free > 300, f"{free:.1f} Mbit/s out of an unlimited pod"


def test_a_pod_added_at_runtime_is_shaped_too(lab):
    lab.apply({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "late", "annotations": {"kubernetes.io/ingress-bandwidth": "20M"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}})
    try:
        got = mbits(lab, "pod/peer", "pod/late")
        assert 18 <= got <= 22, f"{got:.1f} Mbit/s into a pod added with a 20M limit"
    finally:
        lab.delete("pod/late", grace_period=0)
