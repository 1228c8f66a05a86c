"""A NAT gateway's DNAT entries and an EIP bound to a pod, end to end (tests/e2e/data/dnat.yaml, whose
header lists every entry). eni mode only: a pod has an address of the VPC only there (Terway), and
DNAT to an instance does not depend on the mode, so one lab holds both. Every allowed path has its
refused twin (an unmapped port, a security group that does not admit the internet, an address
nobody holds any more), and the evaluator (`kubevpc explain`) agrees with every probe."""
from __future__ import annotations

import os

import pytest
import yaml

from kubevpc.evaluator.explain import explain
from kubevpc.lab import Probe

from .conftest import lab_in_mode

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "dnat.yaml")
QUICK = 1.0             # seconds to wait for a connection that must time out


@pytest.fixture(scope="module", params=["eni"])
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def public(lab, name: str) -> str:
    return next(e.ip for e in lab.plan.eips if e.name == name)


def seen(result) -> str:
    assert result.outcome == "answered", result.detail
    return result.answer["client"].rsplit(":", 1)[0]


def probe_and_agree(lab, probes: list[Probe]) -> list:
    """The probes' results, each held to the evaluator: it connects exactly when explain says so,
    and the server sees the client address explain names."""
    results = lab.probe(probes, timeout=QUICK)
    for p, r in zip(probes, results):
        e = explain(lab.plan, p.source, p.dest, p.port, p.proto)
        assert (r.outcome == "answered") == bool(e.allowed), f"{p}: {r.outcome} ({r.detail}); explain: {e.reason}"
        if e.allowed:
            assert seen(r) == e.seen_source, f"{p}: the server saw {seen(r)}, explain says {e.seen_source}"
    return results


# ---------------------------------------------------------------------------- DNAT to an instance
def test_dnat_forwards_a_port_of_the_eip_to_the_instance_with_the_client_address_kept(lab):
    client = lab.address("inet/client")
    tcp, udp, closed, unmapped = probe_and_agree(lab, [
        Probe("inet/client", "eip/eip-dnat", 80), Probe("inet/client", "eip/eip-dnat", 53, "udp"),
        Probe("inet/client", "eip/eip-dnat", 81), Probe("inet/client", "eip/eip-dnat", 82)])
    assert (tcp.answer["name"], seen(tcp)) == ("ecs-web", client)
    assert (udp.answer["name"], seen(udp)) == ("ecs-web", client)
    # twins: 81 reaches ecs-web's 8081, which listens, but sg-web does not admit it; 82 has no entry
    assert lab.connect("ecs/ecs-web", "127.0.0.1", 8081).ok, "ecs-web listens on 8081"
    assert (closed.outcome, unmapped.outcome) == ("timeout", "timeout"), (closed.detail, unmapped.detail)


def test_the_dnat_target_leaves_through_the_snat_entry_while_its_dnat_entries_serve(lab):
    """Replies of a DNAT connection go back through the edge's conntrack as the DNAT EIP; the
    instance's own connections go out as the SNAT entry's EIP, at the same time."""
    results = probe_and_agree(lab, [Probe("ecs/ecs-web", "inet/server", 80), Probe("inet/client", "eip/eip-dnat", 80),
                                    Probe("ecs/ecs-web", "inet/server", 53, "udp")] * 3)
    assert {seen(r) for r in results[0::3] + results[2::3]} == {public(lab, "eip-ngw")}
    assert {r.answer["name"] for r in results[1::3]} == {"ecs-web"}


def test_ip_mapping_takes_every_port_and_the_instance_leaves_as_its_eip(lab):
    client = lab.address("inet/client")
    results = probe_and_agree(lab, [Probe("inet/client", "eip/eip-map", 22), Probe("inet/client", "eip/eip-map", 80),
                                    Probe("inet/client", "eip/eip-map", 5000, "udp"),
                                    Probe("ecs/ecs-map", "inet/server", 80),
                                    Probe("inet/client", "eip/eip-ngw", 22)])        # the twin: no entry there
    assert [(r.answer or {}).get("name") for r in results[:3]] == ["ecs-map"] * 3
    assert {seen(r) for r in results[:3]} == {client}
    assert seen(results[3]) == public(lab, "eip-map") != public(lab, "eip-ngw"), "IP mapping wins over SNAT"
    assert results[4].outcome == "timeout", results[4].detail
    ping = lab.exec("inet/client", ["ping", "-c", "1", "-W", "2", public(lab, "eip-map")])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_trace_names_the_dnat_entry_and_the_security_group_that_drops(lab):
    web = lab.address("ecs/ecs-web")
    t = lab.trace("inet/client", "eip/eip-dnat", 80)
    decisions = " ".join(d for h in t.hops for d in h.decisions)
    assert "DNAT entry web" in decisions and f"DNAT to {web}:8080" in decisions, decisions
    assert t.outcome == "delivered" and t.seen_source == lab.address("inet/client") and not t.disagreement
    closed = lab.trace("inet/client", "eip/eip-dnat", 81)
    assert closed.outcome == "dropped" and "ecs/ecs-web: inbound denied" in closed.reason, closed.reason
    assert not closed.disagreement
    none = lab.trace("inet/client", "eip/eip-dnat", 82)
    assert none.outcome == "dropped" and "no DNAT entry" in none.reason and not none.disagreement


# ---------------------------------------------------------------------------------- eni pods
def test_dnat_to_an_eni_pod_and_its_security_group(lab):
    client = lab.address("inet/client")
    ok, closed = probe_and_agree(lab, [Probe("inet/client", "eip/eip-dnat", 8080),
                                       Probe("inet/client", "eip/eip-dnat", 9090)])
    assert (ok.answer["name"], seen(ok)) == ("game", client)
    assert closed.outcome == "timeout", closed.detail
    # the twin's port listens: a pod on game's node reaches it (no security group on the node bridge)
    assert lab.connect("pod/default/client", "pod/default/game", 9090).ok


def test_a_pods_eip_both_ways(lab):
    """The internet reaches voip at its EIP with the client's address; voip leaves as its EIP (the
    internet host's server reports it), where another pod leaves through the NAT gateway."""
    client = lab.address("inet/client")
    into, closed, out, out_udp, other = probe_and_agree(lab, [
        Probe("inet/client", "eip/eip-pod", 8080), Probe("inet/client", "eip/eip-pod", 9090),
        Probe("pod/default/voip", "inet/server", 80), Probe("pod/default/voip", "inet/server", 53, "udp"),
        Probe("pod/default/client", "inet/server", 80)])
    assert (into.answer["name"], seen(into)) == ("voip", client)
    assert closed.outcome == "timeout", closed.detail               # sg-pods admits 8080 only
    assert seen(out) == seen(out_udp) == public(lab, "eip-pod")
    assert seen(other) == public(lab, "eip-ngw")


# ------------------------------------------------------------------------------ pods come and go
def _manifest(name: str) -> dict:
    with open(SCENARIO, encoding="utf-8") as f:
        return next(m for m in yaml.safe_load(f)["manifests"] if m["metadata"]["name"] == name)


def test_a_deleted_pod_leaves_its_eip_unbound_and_its_dnat_entries_idle_until_it_is_back(lab):
    pod_eip, dnat = public(lab, "eip-pod"), public(lab, "eip-dnat")
    lab.delete("pod/default/voip", grace_period=0)
    lab.delete("pod/default/game", grace_period=0)
    try:
        assert next(e for e in lab.plan.eips if e.name == "eip-pod").bound == ""
        gone = probe_and_agree(lab, [Probe("inet/client", pod_eip, 8080), Probe("inet/client", dnat, 8080),
                                     Probe("inet/client", dnat, 80)])       # the twin: the instance's entry serves
        assert [r.outcome for r in gone] == ["timeout", "timeout", "answered"], [r.detail for r in gone]
        assert "held by nobody" in explain(lab.plan, "inet/client", pod_eip, 8080).reason
    finally:
        lab.apply(_manifest("voip"), _manifest("game"))
    back = probe_and_agree(lab, [Probe("inet/client", pod_eip, 8080), Probe("inet/client", dnat, 8080),
                                 Probe("pod/default/voip", "inet/server", 80)])
    assert [(r.answer or {}).get("name") for r in back[:2]] == ["voip", "game"]
    assert seen(back[2]) == pod_eip


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
