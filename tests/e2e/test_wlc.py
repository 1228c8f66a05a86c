"""The SLB's wlc scheduler end to end, in each pod network mode: a backend holding many open
connections gets few new ones, while an rr SLB over the same backends keeps splitting evenly; once
the connections close, wlc splits evenly again.

tests/e2e/data/wlc.yaml: hold-wlc and hold-rr balance port 9000 of the web pods (eni mode) or of
the nodes (node ports, the other modes). The test runs a server on port 9000 in both pods that
answers as kubevpc's server does and then holds the connection until the client closes it.
"""
from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import time

import pytest

from kubevpc.lab import Lab, Probe

from .conftest import MODES, lab_in_mode
from .test_services import backend_key, wait_health

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "wlc.yaml")
PORT = 9000

HOLDER = r"""
import json, socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(1024)
def serve(conn, addr):
    with conn:
        try:
            conn.sendall((json.dumps({"name": name, "client": "%s:%d" % addr, "proto": "tcp", "port": port})
                          + "\n").encode())
            while conn.recv(4096):
                pass
        except OSError:
            pass
print("listening", flush=True)
while True:
    c, a = srv.accept()
    threading.Thread(target=serve, args=(c, a), daemon=True).start()
"""

# opens COUNT connections one after another; keeps those answered by the backend KEEP (a pod's
# name, or a node's address as the pod saw the client), closes the others, reports, then holds
# the kept ones until its stdin closes
CLIENT = r"""
import json, socket, sys
ip, port, count, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
held, seen = [], []
for _ in range(count):
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"hold\n")
    answer = json.loads(s.makefile().readline())
    who = (answer["name"], answer["client"].rsplit(":", 1)[0])
    seen.append(who)
    if keep in who:
        held.append(s)
    else:
        s.close()
print(json.dumps({"held": len(held), "seen": seen}), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def start(lab: Lab, endpoint: str, code: str, *args: str) -> subprocess.Popen:
    """A helper process of this test in an endpoint's namespaces (it carries the run's name)."""
    pid = lab.net.host_pid(lab.host(endpoint).key)
    return subprocess.Popen(["mnexec", "-a", str(pid), sys.executable, "-c", code, *args, lab.run],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def line_of(proc: subprocess.Popen, deadline: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], deadline)
    assert ready, f"no output within {deadline} s"
    return proc.stdout.readline()


def backend_of(lab: Lab, answer: dict) -> str:
    """Which SLB backend a connection went through: the pod (eni), or the node whose address the
    pod saw (node ports with policy Cluster SNAT to the node)."""
    if lab.plan.cluster.mode == "eni":
        return f"pod/default/{answer['name']}"
    client = answer["client"].rsplit(":", 1)[0]
    return next(n.name for n in lab.plan.nodes if n.ip == client)


def spread(lab: Lab, slb: str, count: int) -> collections.Counter:
    results = lab.probe([Probe("ecs/ecs-client", slb, PORT)] * count, timeout=5)
    assert all(r.outcome == "answered" for r in results), [r.detail for r in results if not r.ok]
    return collections.Counter(backend_of(lab, r.answer) for r in results)


def wait_counted(lab: Lab, listener: str, want: dict[str, int], deadline: float) -> None:
    """Until the controller has counted these connections and programmed every bridge with the
    weights that follow, and the datapath's flow cache has caught up."""
    t0 = time.monotonic()
    while True:
        st = lab.status()
        counted = st.get("wlc_connections", {}).get(listener, {})
        if counted == want and all(b.get("programmed") and b.get("plan_version") == st["plan_version"]
                                   for b in st["bridges"].values()):
            break
        assert time.monotonic() - t0 < deadline, f"counted {counted}, wanted {want}"
        time.sleep(0.1)
    for _ in range(2):
        subprocess.run(["ovs-appctl", "--timeout=10", "revalidator/wait"], check=True, capture_output=True)


def test_wlc_sends_new_connections_away_from_the_busy_backend_and_rr_does_not(lab):
    eni = lab.plan.cluster.mode == "eni"
    ids = ["pod/default/web-0", "pod/default/web-1"] if eni else ["node-1", "node-2"]
    busy, idle = ids
    holders = [start(lab, f"pod/web-{i}", HOLDER, f"web-{i}", str(PORT)) for i in range(2)]
    client = None
    try:
        for h in holders:
            assert line_of(h, 20).strip() == "listening"
        for svc in ("default/hold-wlc", "default/hold-rr"):
            wait_health(lab, svc, {backend_key(lab, svc, b): "healthy" for b in ids}, 20)
        slb = next(s for s in lab.plan.slbs if s.service == "default/hold-wlc")
        [li] = slb.listeners
        key = {b.id: f"{b.ip}:{b.port}" for b in li.backends}
        # before: nothing held, wlc splits evenly (binomial(90, 1/2) outside 25..65: below 1e-5)
        wait_counted(lab, li.name, {key[busy]: 0, key[idle]: 0}, 10)
        assert 25 <= spread(lab, "slb/default/hold-wlc", 90)[busy] <= 65
        # hold the busy backend's share of 30 connections open
        keep = "web-0" if eni else lab.plan.node("node-1").ip
        client = start(lab, "ecs/ecs-client", CLIENT, slb.vip, str(PORT), "30", keep)
        held = json.loads(line_of(client, 30))["held"]
        assert held >= 5, "about half of 30 connections reach each backend"
        wait_counted(lab, li.name, {key[busy]: held, key[idle]: 0}, 10)
        # its weight is now 1/(1+held) of the idle one's: of 90 new connections it expects at
        # most 90/(2+held) < 13; rr over the same backends still gives it about half
        wlc, rr = spread(lab, "slb/default/hold-wlc", 90), spread(lab, "slb/default/hold-rr", 90)
        assert wlc[busy] <= 24 and wlc[idle] >= 66, (held, wlc)
        assert 25 <= rr[busy] <= 65, rr
        # the held connections close: wlc splits evenly again
        client.stdin.close()
        client.wait(timeout=10)
        wait_counted(lab, li.name, {key[busy]: 0, key[idle]: 0}, 15)
        assert 25 <= spread(lab, "slb/default/hold-wlc", 90)[busy] <= 65
    finally:
        for p in holders + ([client] if client else []):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
