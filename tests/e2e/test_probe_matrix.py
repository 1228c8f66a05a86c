"""Lab.probe from one process (kubevpc.probeloop) on a real network, in each pod network mode:
bench-matrix's generated scenario at 32 pods (namespaces a and b, 16 each; b admits only its own
pods), with a UDP port on every pod and a host-network pod in a. Every cell of the 32 x 32 matrix
agrees with the evaluator, the allowed ones with their denied twins (a to b); the server still sees
the probe's own address; a host-network pod probes from its node's namespace, with its node's
address; UDP cells work through the same loop; the per-source path (KUBEVPC_PROBE=per-source)
gives the same cells."""
from __future__ import annotations


import pytest

from kubevpc.bench import matrix
from kubevpc.lab import Probe
from kubevpc.lab.probing import PROBE_ENV

from .conftest import MODES, lab_of_doc

PODS = 32
UDP_PORT = 5353
WEB = ["pod/a/web-*", "pod/b/web-*"]
HOSTCLIENT, HOSTCLIENT_NODE = "pod/a/hostclient", "node-1"


def scenario(mode: str) -> dict:
    """matrix_scenario(PODS), its pods serving UDP_PORT too, and a host-network pod in a on node-1."""
    doc = matrix.matrix_scenario(PODS, mode)
    for m in doc["manifests"]:
        if m["kind"] == "Deployment":
            m["spec"]["template"]["spec"]["containers"][0]["ports"].append(
                {"name": "dns", "containerPort": UDP_PORT, "protocol": "UDP"})
    doc["manifests"].append({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "hostclient", "namespace": "a", "labels": {"app": "hostclient"}},
                             "spec": {"nodeName": HOSTCLIENT_NODE, "hostNetwork": True,
                                      "containers": [{"name": "c", "ports": [{"containerPort": 7001}]}]}})
    return doc


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_of_doc(scenario(request.param), request.param, "kubevpc-probe-matrix-")


def differing(m) -> str:
    return "\n".join(f"{c.source} -> {c.dest} {c.port}/{c.protocol}: expected {c.expected}, observed "
                     f"{c.outcome} in {c.elapsed_ms:.0f} ms; {c.reason}" for c in m.differences[:20])


def client_ip(r) -> str:
    return r.answer["client"].rpartition(":")[0].strip("[]")


def test_every_cell_of_32_x_32_agrees_with_the_evaluator(lab, monkeypatch):
    monkeypatch.delenv(PROBE_ENV, raising=False)
    m = lab.matrix(WEB, [(matrix.PORT, "tcp")], timeout=1.0)
    assert len(m.cells) == PODS * PODS
    assert not m.differences, f"{len(m.differences)} cells differ (probing took {m.probe_s:.1f} s):\n{differing(m)}"
    allowed = [c for c in m.cells if c.expected]
    denied = [c for c in m.cells if not c.expected]
    # twins: a -> b is denied by b's policy (16 x 16 cells, dropped: their SYNs time out), the rest connects
    assert len(allowed) == PODS * PODS - (PODS // 2) ** 2 and all(c.outcome == "answered" for c in allowed)
    assert all(c.source.startswith("pod/a/") and c.dest.startswith("pod/b/") for c in denied)
    assert {c.outcome for c in denied} == {"timeout"}
    assert all(c.elapsed_ms >= 1000 for c in denied), "a denied cell ran out its own deadline"
    assert m.probe_s < 15, f"{len(m.cells)} cells took {m.probe_s:.1f} s"


def test_the_server_sees_the_probes_own_address_over_tcp_and_udp(lab):
    a, b = "pod/a/web-0", "pod/b/web-0"
    got = lab.probe([Probe(b, a, matrix.PORT), Probe(b, a, UDP_PORT, "udp"),
                     Probe(a, b, matrix.PORT), Probe(a, b, UDP_PORT, "udp")], timeout=0.5)
    for r in got[:2]:
        assert r.outcome == "answered", r.detail
        assert r.answer["name"] == "web-0" and client_ip(r) == lab.address(b), r.answer
        assert r.detail == f"local={r.answer['client']}", "no NAT between pods: the server saw the probe's socket"
    assert [r.outcome for r in got[2:]] == ["timeout", "timeout"], "twins: b admits only its own pods"


def test_a_host_network_pod_probes_from_its_nodes_namespace_over_tcp_and_udp(lab):
    dests = ["pod/a/web-0", "pod/a/web-1", *(f"pod/b/web-{i}" for i in range(PODS // 2))]
    m = lab.matrix([HOSTCLIENT, "pod/a/web-0", "pod/b/web-0"], [(matrix.PORT, "tcp"), (UDP_PORT, "udp")],
                   dests=dests, timeout=0.5)
    assert not m.differences, f"{len(m.differences)} cells differ:\n{differing(m)}"
    for who in (HOSTCLIENT, "pod/a/web-0"):
        for proto in ("tcp", "udp"):
            mine = [c for c in m.cells if c.source == who and c.protocol == proto]
            assert any(c.expected for c in mine) and not all(c.expected for c in mine), \
                f"{who} over {proto}: allowed cells and denied twins"
    # a pod on its own node sees the node's address: the host-network pod's socket is the node's
    local = next(h.key for h in lab.plan.pods if h.namespace == "a" and h.name.startswith("web-")
                 and h.node == HOSTCLIENT_NODE)
    got = lab.probe([Probe(HOSTCLIENT, local, matrix.PORT), Probe(HOSTCLIENT, local, UDP_PORT, "udp")], timeout=0.5)
    for r in got:
        assert r.outcome == "answered" and client_ip(r) == lab.address(f"node/{HOSTCLIENT_NODE}"), (r.detail, r.answer)


def test_the_per_source_path_gives_the_same_cells(lab, monkeypatch):
    sources, ports = [HOSTCLIENT, "pod/a/web-1", "pod/b/web-1"], [(matrix.PORT, "tcp"), (UDP_PORT, "udp")]
    dests = ["pod/a/web-2", "pod/b/web-2", "pod/b/web-3"]
    monkeypatch.delenv(PROBE_ENV, raising=False)
    one = lab.matrix(sources, ports, dests, timeout=0.5)
    monkeypatch.setenv(PROBE_ENV, "per-source")
    each = lab.matrix(sources, ports, dests, timeout=0.5)
    assert not one.differences and not each.differences, differing(one) + differing(each)
    cells = lambda m: [(c.source, c.dest, c.port, c.protocol, c.observed, c.outcome) for c in m.cells]  # noqa: E731
    assert cells(one) == cells(each)
    assert {c.observed for c in one.cells} == {True, False}


def test_no_packet_ins(lab):
    assert lab.status()["errors"] == []
