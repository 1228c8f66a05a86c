"""One server process per node (issue 21; KUBEVPC_SERVERS=node, the default), end to end with
tests/e2e/data/nodeservers.yaml (its header says what runs where). One lab, in vpc-route mode:
how the servers run does not depend on the pod network mode, and tests/unit/test_nodeserver.py
holds the answers to a pod server's own, byte for byte. Each allowed path has its refused twin,
and the evaluator agrees with the probes (the scenario's `expect:` list). The lab's teardown must
leave nothing of the run, although the hosts' veths are now left to their namespaces to remove."""
from __future__ import annotations

import os
import signal
import time

import pytest

from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe
from kubevpc.lab.checks import run_checks
from topologies.servers import servers_mode

from .conftest import lab_in_mode
from .test_pods_runtime import leftovers
from .test_services import client_ip, name

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "nodeservers.yaml")
CLIENT, WEB0, WEB1, SOLO, HOSTWEB = (f"pod/default/{n}" for n in ("client", "web-0", "web-1", "solo", "hostweb"))
ON_NODE_1 = (WEB0, WEB1, SOLO, HOSTWEB)


@pytest.fixture(scope="module")
def lab():
    if servers_mode() != "node":
        pytest.skip("KUBEVPC_SERVERS=pod: a process per pod (tests/e2e/test_connectivity.py covers it)")
    runs = lab_in_mode(SCENARIO, "vpc-route")
    built = next(runs)
    run = built.run
    yield built
    next(runs, None)
    assert leftovers(run) == [], "teardown removed every namespace, link and bridge of the run"


def same_netns(pid: int, other: int) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/proc/{other}/ns/net").st_ino


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
        return fh.read().strip()


def sockets(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))


def listening(lab, endpoint: str) -> str:
    res = lab.exec(endpoint, ["ss", "-Hltnp"], timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_the_pods_of_a_node_share_its_one_process_in_the_nodes_namespace(lab):
    node1, node2 = (lab.net.host_pid(f"ecs/node-{i}") for i in (1, 2))
    (n1,) = {lab.net.servers[k].pid for k in ON_NODE_1}
    n2, plain = lab.net.servers[CLIENT].pid, lab.net.servers["ecs/ecs-plain"].pid
    assert len({n1, n2, plain}) == 3
    assert (comm(n1), comm(n2), comm(plain)) == ("kv:node-1", "kv:node-2", "kv:ecs-plain")
    assert same_netns(n1, node1) and same_netns(n2, node2) and not same_netns(n1, node2)
    assert same_netns(plain, lab.net.host_pid("ecs/ecs-plain")), "twin: an instance that is no node has its own"
    assert set(lab.net.nodeservers) == {"node-1", "node-2"}
    recorded = {int(e.name) for e in lab.net.ledger.entries() if e.kind == "process" and e.token == lab.run}
    assert {n1, n2, plain} <= recorded, "the ledger lists the node servers"
    assert {s["endpoint"]: s["pid"] for s in lab.servers() if s["endpoint"] in ON_NODE_1} == dict.fromkeys(ON_NODE_1, n1)


def test_each_pod_answers_on_its_own_ports_with_its_own_name_and_the_client_it_saw(lab):
    got = lab.probe([Probe(CLIENT, WEB0, 8080), Probe(CLIENT, WEB0, 53, "udp"), Probe(CLIENT, WEB0, 8080, "http"),
                     Probe(CLIENT, WEB1, 8081), Probe(CLIENT, HOSTWEB, 7000)])
    assert [r.outcome for r in got] == ["answered"] * 5, [r.detail for r in got]
    assert [name(r) for r in got] == ["web-0", "web-0", "web-0", "web-1", "hostweb"]
    assert {client_ip(r) for r in got} == {lab.address(CLIENT)}
    assert got[2].answer["status"] == 200 and got[4].answer["server"] == f"{lab.address('node/node-1')}:7000"
    # twins: the same process listens on 8081 in web-1's namespace only, and on 7000 in node-1's only
    twins = lab.probe([Probe(CLIENT, WEB0, 8081), Probe(CLIENT, WEB0, 7000), Probe(CLIENT, HOSTWEB, 8080)], timeout=1)
    assert [r.outcome for r in twins] == ["refused"] * 3, [r.detail for r in twins]
    assert not explain(lab.plan, CLIENT, WEB0, 8081).allowed, "the evaluator refuses it too"


def test_the_sockets_are_in_the_pods_namespaces_and_held_by_the_node_server(lab):
    n1 = lab.net.servers[WEB0].pid
    web0, web1, node = listening(lab, WEB0), listening(lab, WEB1), listening(lab, "node/node-1")
    assert ":8080 " in web0 and f"pid={n1}," in web0 and '"kv:node-1"' in web0, web0
    assert ":8081 " not in web0 and ":7000 " not in web0, web0
    assert ":8081 " in web1 and ":8080 " in web1, web1
    assert ":7000 " in node and ":8080 " not in node and ":8081 " not in node, node


def test_one_pods_server_stops_and_starts_alone(lab):
    n1 = lab.net.servers[WEB0].pid
    lab.stop_server(WEB0)
    try:
        gone, kept = lab.probe([Probe(CLIENT, WEB0, 8080), Probe(CLIENT, WEB1, 8080)], timeout=1)
        assert gone.outcome == "refused" and kept.ok and name(kept) == "web-1", (gone, kept)
        states = {s["endpoint"]: (s["state"], s["pid"]) for s in lab.servers()}
        assert states[WEB0] == ("stopped", n1) and states[WEB1] == ("running", n1)
        assert lab.down_reason(WEB0) == f"the server of {WEB0} was stopped (kubevpc stop-server)"
    finally:
        lab.start_server(WEB0)
    r = lab.connect(CLIENT, WEB0, 8080)
    assert r.ok and name(r) == "web-0" and lab.net.servers[WEB0].pid == n1, "the same process serves it again"


def test_a_dead_node_server_shows_and_its_pods_start_again(lab):
    n2 = lab.net.servers[CLIENT].pid
    os.kill(n2, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lab.net.servers[CLIENT].poll() is None:
        assert time.monotonic() < deadline, "the dead node server is seen"
        time.sleep(0.05)
    try:
        [s] = [s for s in lab.servers() if s["endpoint"] == CLIENT]
        assert (s["state"], s["pid"]) == ("dead", n2)
        [outcome] = run_checks(lab, [c for c in declared_checks(lab.plan)
                                     if c.source == CLIENT and c.dest == WEB0 and c.port == 8080])
        assert outcome.passed, "the client's namespace still connects: only its server is gone"
        assert lab.down_reason(CLIENT) == f"the server of {CLIENT} is not running (pid {n2})"
        assert lab.connect(WEB0, CLIENT, 9000, timeout=1).outcome == "refused"
        assert lab.connect(CLIENT, WEB1, 8080).ok, "twin: node-1's server lives on"
    finally:
        lab.start_server(CLIENT)
    n3 = lab.net.servers[CLIENT].pid
    assert n3 != n2 and comm(n3) == "kv:node-2"
    r = lab.connect(WEB0, CLIENT, 9000)
    assert r.ok and name(r) == "client" and client_ip(r) == lab.address(WEB0)


def test_a_deleted_pod_takes_its_sockets_out_of_the_node_server(lab):
    n1 = lab.net.servers[WEB0].pid
    netns = lab.host(SOLO).netns
    assert ":8082 " in listening(lab, SOLO) and f"pid={n1}," in listening(lab, SOLO)
    before = sockets(n1)
    lab.delete(SOLO, grace_period=0)
    deadline = time.monotonic() + 5
    while sockets(n1) != before - 1:         # solo's one listener: nothing holds its namespace
        assert time.monotonic() < deadline, (before, sockets(n1))
        time.sleep(0.05)
    assert not os.path.exists(f"/run/netns/{netns}") and SOLO not in lab.net.servers
    assert ":8080 " in listening(lab, WEB0), "twin: the other pods' sockets stay"
    assert lab.connect(CLIENT, WEB0, 8080).ok


def test_the_scenarios_expectations_hold(lab):
    outcomes = run_checks(lab, declared_checks(lab.plan), timeout=1)
    assert len(outcomes) == 6 and sum(not o.check.expect for o in outcomes) == 2, "four allowed, two refused or denied twins"
    assert all(o.passed for o in outcomes), [o.as_dict() for o in outcomes if not o.passed]
