"""The checksum hop of vxlan mode (KUBEVPC_VXLAN_CSUM_HOP=1; controller/csumhop.py): the plan's hop
ports, the flows, the offloads chosen, the switch read, and connections walked through the compiled
bridges with conntrack and checksums followed (tests/unit/ctsim.py) in tests/e2e/data/csumhop.yaml:
a connection's first packet, its reply and a later packet, for every path the e2e module moves bulk
data through, against the scenario's expectations and the evaluator.

The checksum model: a pod with offloads on sends `partial` checksums; a NAT spoils one, a VXLAN
device then completes it wrongly and the far end drops it. Without the hop, pods with offloads on
(KUBEVPC_FULL_CHECKSUMS=0) lose exactly the Service traffic the issue measured failing; with it,
every connection ends as it does with full checksums everywhere (today's default), and only the
packets that are NATed and then tunnelled take the hop.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from controller.compile import compile_plan
from controller.csumhop import INTO_HOP
from controller.flows import SetField
from controller.pipeline import FLAG_CSUM_DONE, PIPELINES, REG_FLAGS
from kubevpc.errors import BuildError
from kubevpc.evaluator.checks import declared_checks
from kubevpc.evaluator.explain import explain
from kubevpc.planning import (IFNAMSIZ, OFPORT_NODE_HOP_IN, OFPORT_NODE_HOP_OUT, Plan, has_csum_hops, make_plan,
                              resolve_endpoint, with_csum_hops)
from kubevpc.scenario.load import load
from topologies.datapath import (LINK_MTU, Datapath, checksums_off, csum_hop_setting, offloads_for)
from tests.csumhop_paths import PATHS

from .ctsim import CtNetwork
from .test_flows import targets

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "e2e" / "data" / "csumhop.yaml"
NETDEV_TSO = Datapath("netdev", True, "")
RUN = "kv1"


def plan_of(hop: bool, mode: str = "vxlan", scenario: Path = SCENARIO, run: str = RUN) -> Plan:
    return make_plan(load(str(scenario), mode=mode), run, csum_hop=hop)


PLAN, HOP = plan_of(False), plan_of(True)


def pods_offloaded(h) -> bool:
    return h.kind == "pod" and not h.host_network


# ======================================================================================== the plan
def test_every_node_bridge_gets_a_hop_in_vxlan_mode_only():
    for b in (b for b in HOP.bridges if b.role == "node"):
        k = b.name.removeprefix(f"{RUN}-n")
        hop = [(p.name, p.ofport, p.kind, p.peer) for p in b.ports if p.kind == "hop"]
        assert hop == [(f"{RUN}ck{k}o", OFPORT_NODE_HOP_OUT, "hop", f"{RUN}ck{k}i"),
                       (f"{RUN}ck{k}i", OFPORT_NODE_HOP_IN, "hop", f"{RUN}ck{k}o")], b.name
    assert not has_csum_hops(PLAN) and has_csum_hops(HOP)
    assert HOP.model_copy(update={"bridges": PLAN.bridges}) == PLAN, "the hop's ports are all it adds"
    for mode in ("vpc-route", "eni"):           # only vxlan NATs before a tunnel
        assert plan_of(True, mode) == plan_of(False, mode), mode


def test_the_hop_is_made_once_and_kept_by_a_running_scenarios_changes():
    assert with_csum_hops(PLAN) == HOP and with_csum_hops(HOP) == HOP
    loaded = load(str(SCENARIO), mode="vxlan")
    changed = make_plan(loaded, RUN, ready={"pod/default/client-2": False}, previous=HOP)
    assert has_csum_hops(changed), "a change planned against the running plan keeps its hops"
    assert not has_csum_hops(make_plan(loaded, RUN, previous=PLAN))
    assert not has_csum_hops(make_plan(loaded, RUN, previous=HOP, csum_hop=False))


def test_hop_names_fit_ifnamsiz_with_the_longest_run_name():
    plan = plan_of(True, run="abcdef")
    names = [p.name for b in plan.bridges for p in b.ports if p.kind == "hop"]
    assert names and max(map(len, names)) <= IFNAMSIZ and len(set(names)) == len(names)


# ======================================================================================= the flows
def test_the_hop_only_adds_flows_and_every_other_flow_stays_as_it_was():
    """With the switch off nothing changes (the goldens hold that); with it on, the flows of the
    plan without it are all still there, unchanged, and every added flow is the hop's."""
    without, with_hop = compile_plan(PLAN), compile_plan(HOP)
    for name, fs in with_hop.items():
        old = set(without[name].ofctl())
        added = [f for f in fs.flows if f.to_ofctl() not in old]
        assert old <= set(fs.ofctl()), name
        assert {f.feature for f in added} <= {"hop"}, name
        assert bool(added) == (HOP.bridge(name).role == "node"), name
        assert fs.groups == without[name].groups


def test_the_hops_flows_follow_the_declared_pipeline_forwards():
    node = PIPELINES["node"]
    for name, fs in compile_plan(HOP).items():
        for f in (f for f in fs.flows if f.feature == "hop"):
            assert f.table in {t.id for t in node.tables}, f.to_ofctl()
            for t in targets(f):
                assert t in node.by_id(f.table).next and t > f.table, f.to_ofctl()


def test_nothing_back_from_the_hop_goes_into_it_again():
    """Every flow into the hop takes only packets not yet through it: tables 16 and 19 are reached
    only from table 15's flows that need the flag clear; in table 27 a flow of higher priority
    takes the same packet from the hop's own port and commits it instead. What comes back is
    classified once, as a pod's, with the flag set."""
    for name, fs in compile_plan(HOP).items():
        into = [f for f in fs.flows if INTO_HOP in f.actions]
        assert bool(into) == (HOP.bridge(name).role == "node"), name
        if not into:
            continue
        to_checks = [f for f in fs.flows if f.feature == "hop" and f.table == 15]
        assert to_checks and all(dict(f.match)[REG_FLAGS] == (0, FLAG_CSUM_DONE) for f in to_checks)
        assert not any(t in (16, 19) for f in fs.flows if f not in to_checks for t in targets(f))
        for f in into:
            assert f.table in (16, 19, 27), f.to_ofctl()
            if f.table == 27:
                shadow = [g for g in fs.flows if g.table == 27 and g.priority > f.priority
                          and dict(g.match) == {**dict(f.match), "in_port": OFPORT_NODE_HOP_IN}]
                assert len(shadow) == 1 and INTO_HOP not in shadow[0].actions, f.to_ofctl()
        back = [f for f in fs.flows if f.table == 0 and dict(f.match).get("in_port") == OFPORT_NODE_HOP_IN]
        assert len(back) == 1 and SetField(REG_FLAGS, FLAG_CSUM_DONE) in back[0].actions, name


# ======================================================================================== the walks
N1, N2, N3 = "192.168.1.1", "192.168.1.2", "192.168.2.1"
BULK0 = "10.244.1.2"


def address(plan: Plan, ref: str) -> str:
    return plan.service(ref.removeprefix("svc/")).cluster_ip if ref.startswith("svc/") else \
        resolve_endpoint(plan, ref).ip


def connection(net: CtNetwork, source: str, dst_ip: str, port: int, proto: str = "tcp") -> dict:
    """First packet, reply and a later packet of one connection: where each ended (kind, host) and
    the client address the server saw; with every packet sent into a hop, by bridge."""
    src = resolve_endpoint(net.plan, source)
    first = net.open(src, dst_ip, port, proto)
    assert len(first) == 1, [str(e) for e in first]         # one endpoint: no branches
    out = {"first": (first[0].kind, first[0].host), "client": first[0].packet.get("ipv4_src"), "reply": None}
    if first[0].kind == "delivered":
        reply = net.answer(first[0])
        out["reply"] = (reply[0].kind, reply[0].host, reply[0].packet.get("ipv4_src"))
    later = net.again(src, dst_ip, port, proto)
    out["later"] = (later[0].kind, later[0].host)
    out["hops"] = [bridge.removeprefix(f"{RUN}-") for bridge, _ in net.into_hop]
    return out


def test_the_scenarios_expectations_are_the_evaluators():
    checks = declared_checks(PLAN)
    assert len(checks) == 8 and not [c.reason for c in checks if c.reason.startswith("declared")]


@pytest.mark.parametrize("source, dest, port", PATHS, ids=lambda x: str(x))
def test_every_path_connects_with_the_hop_as_the_evaluator_says(source, dest, port):
    """With the hop and the pods' offloads on, a connection's first packet lands where `kubevpc
    explain` says, with the client address it says; its reply comes back from the address the
    client asked; a later packet follows the first; no packet is lost to a bad checksum; and all of
    it exactly as without the hop with full checksums everywhere (today's default)."""
    want = explain(PLAN, source, dest, port)
    dst = address(PLAN, dest)
    got = connection(CtNetwork(HOP, offloaded=pods_offloaded), source, dst, port)
    assert (got["first"][0] == "delivered") is want.allowed, (got, want.reason)
    if want.allowed:
        assert got["first"][1] == "pod/default/bulk-0" and got["client"] == want.seen_source, got
        assert got["reply"] == ("delivered", resolve_endpoint(PLAN, source).key, dst), got
        assert got["later"] == got["first"], got
    today = connection(CtNetwork(PLAN, offloaded=lambda h: False), source, dst, port)
    assert {k: v for k, v in got.items() if k != "hops"} == {k: v for k, v in today.items() if k != "hops"}
    assert today["hops"] == []


@pytest.mark.parametrize("source, dst, port, hops", [
    # pod to the ClusterIP, its endpoint on another node: the first packet and every later one, on
    # the client's node, before the DNAT
    ("pod/default/client-1", "bulk", 8080, ["n0", "n0"]),
    # a pod to its own node's NodePort (Cluster), the endpoint elsewhere: DNAT and SNAT there
    ("pod/default/client-1", N1, 30280, ["n0", "n0"]),
    # a pod to the endpoint's node's NodePorts, through the tunnel un-NATed: the endpoint's reply,
    # un-SNATed and un-DNATed (Cluster) or un-DNATed (Local) there, takes the hop on its way back
    ("pod/default/client-1", N2, 30280, ["n1"]),
    ("pod/default/client-1", N2, 30282, ["n1"]),
    # a connection NetworkPolicy denies at the endpoint's node: the client's node cannot know
    ("pod/default/denied-1", "bulk", 8080, ["n0", "n0"]),
    # never: pod to pod across nodes and on one node, a ClusterIP whose endpoint is on the client's
    # node, the instance's NodePort connections (full checksums), and what is dropped before the
    # NAT (a Local NodePort without an endpoint here)
    ("pod/default/client-1", BULK0, 8080, []),
    ("pod/default/client-2", BULK0, 8080, []),
    ("pod/default/client-2", "bulk", 8080, []),
    ("ecs/ecs-client", N1, 30280, []),
    ("ecs/ecs-client", N2, 30282, []),
    ("pod/default/client-1", N1, 30282, []),
    ("ecs/node-1", "bulk", 8080, []),
])
def test_exactly_what_is_nated_and_then_tunnelled_takes_the_hop(source, dst, port, hops):
    dst = HOP.service(dst).cluster_ip if dst == "bulk" else dst
    net = CtNetwork(HOP, offloaded=pods_offloaded)
    assert connection(net, source, dst, port)["hops"] == hops
    for bridge, packet in net.into_hop:         # before any NAT: the addresses the pod sent with
        assert packet["csum"] == "partial" and (packet["ipv4_src"], packet["ipv4_dst"]) in (
            (HOP.host(source).ip, dst), (BULK0, HOP.host(source).ip), (BULK0, N2)), packet   # N2: masqueraded


def test_a_udp_flow_takes_the_hop_with_every_datagram_so_none_overtakes():
    """UDP is +new until its first reply: the first datagram is diverted before table 27's DNAT,
    the later ones (committed, marked) by table 19, so they all take the same way, in order."""
    net = CtNetwork(HOP, offloaded=pods_offloaded)
    src, ip = HOP.host("pod/default/client-1"), HOP.service("bulk").cluster_ip
    ends = [net.open(src, ip, 53, "udp") for _ in range(3)]
    assert [(e[0].kind, e[0].host, e[0].packet["udp_dst"]) for e in ends] == [("delivered", "pod/default/bulk-0",
                                                                                5353)] * 3
    assert [b for b, _ in net.into_hop] == [f"{RUN}-n0"] * 3


@pytest.mark.parametrize("source, dst, port, proto", [
    ("pod/default/client-1", "bulk", 8080, "tcp"), ("pod/default/client-1", "bulk", 53, "udp"),
    ("pod/default/client-1", N1, 30280, "tcp"), ("pod/default/client-1", N2, 30280, "tcp"),
    ("pod/default/client-1", N2, 30282, "tcp")])
def test_without_the_hop_offloaded_pods_lose_these_connections(source, dst, port, proto):
    """The twin: the same connections with the pods' offloads on and no hop (KUBEVPC_FULL_CHECKSUMS=0,
    measured failing) die of a bad checksum at the VXLAN device, the first packet or the reply."""
    dst = PLAN.service(dst).cluster_ip if dst == "bulk" else dst
    net = CtNetwork(PLAN, offloaded=pods_offloaded)
    first = net.open(PLAN.host(source), dst, port, proto)
    lost = [e.kind for e in first] + ([e.kind for e in net.answer(first[0])] if first[0].kind == "delivered" else [])
    assert "bad checksum" in lost, lost


# ====================================================================================== the offloads
def test_offloads_with_the_hop_keep_the_pods_tso_and_size_the_uplinks_for_the_instances():
    o = offloads_for(PLAN, NETDEV_TSO, csum_hop=True)
    assert (o.csum_hop, o.full_checksums, o.link_mtu) == (True, True, 1500)
    assert "with the checksum hop" in o.note and "pods' offloads stay on" in o.note
    assert not checksums_off(o, HOP.host("pod/default/client-1")), "the pods keep TSO"
    assert checksums_off(o, HOP.host("ecs/node-1")) and checksums_off(o, HOP.host("ecs/ecs-client"))
    off = offloads_for(PLAN, NETDEV_TSO)
    assert (off.csum_hop, off.full_checksums, off.link_mtu) == (False, True, LINK_MTU)
    assert checksums_off(off, HOP.host("pod/default/client-1")), "KUBEVPC_VXLAN_CSUM_HOP=0: full checksums"


def test_the_kernel_datapath_takes_no_hop_and_says_nothing_of_it():
    dp = Datapath("system", False, "")
    assert offloads_for(PLAN, dp, csum_hop=True) == offloads_for(PLAN, dp)
    assert "checksum hop" not in offloads_for(PLAN, dp, csum_hop=True).note


@pytest.mark.parametrize("dp, force, why", [
    (NETDEV_TSO, True, "KUBEVPC_FULL_CHECKSUMS is set"),
    (NETDEV_TSO, False, "KUBEVPC_FULL_CHECKSUMS is set"),
    (Datapath("netdev", False, ""), None, "no userspace TSO"),
])
def test_the_hop_is_not_used_where_it_has_nothing_to_do_and_the_note_says_why(dp, force, why):
    o, base = offloads_for(PLAN, dp, force, csum_hop=True), offloads_for(PLAN, dp, force)
    assert (o.full_checksums, o.link_mtu, o.csum_hop) == (base.full_checksums, base.link_mtu, False)
    assert o.note == f"{base.note} (checksum hop not in force: {why})"


def test_the_hop_is_not_used_with_a_jumbo_underlay_beside_plain_instances(tmp_path):
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["cluster"]["underlayMTU"] = 9000         # nodes 9000, pods 8950, ecs-client 1500
    path = tmp_path / "jumbo.yaml"
    path.write_text(yaml.safe_dump(raw))
    o = offloads_for(make_plan(load(str(path), mode="vxlan"), RUN), NETDEV_TSO, csum_hop=True)
    assert not o.csum_hop and o.full_checksums and "have different MTUs" in o.note
    for mode in ("vpc-route", "eni"):            # the other modes: the switch changes nothing
        plan = plan_of(False, mode)
        assert offloads_for(plan, NETDEV_TSO, csum_hop=True) == offloads_for(plan, NETDEV_TSO), mode


@pytest.mark.parametrize("value, on", [(None, True), ("", True), ("0", False), (" 0 ", False), ("1", True),
                                       (" 1 ", True)])
def test_the_switch_reads_the_environment(value, on):
    assert csum_hop_setting({} if value is None else {"KUBEVPC_VXLAN_CSUM_HOP": value}) is on


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_the_switch_refuses_anything_else_by_name_and_value(value):
    with pytest.raises(BuildError, match=rf"environment variable KUBEVPC_VXLAN_CSUM_HOP='{value}': expected 1 or "
                                         r"unset \(the default: in vxlan mode on the userspace datapath, .*\) or 0 "
                                         r"\(full checksums in vxlan mode, no hop\)"):
        csum_hop_setting({"KUBEVPC_VXLAN_CSUM_HOP": value})


def test_the_builder_gives_the_plan_its_hops_where_the_switch_and_the_datapath_say(monkeypatch):
    from topologies import build
    monkeypatch.setattr(build, "check_controller_settings", lambda: None)
    monkeypatch.setattr(build, "detect_datapath", lambda prefer=None: NETDEV_TSO)
    ledger = SimpleNamespace(dir="/nonexistent")
    monkeypatch.delenv("KUBEVPC_VXLAN_CSUM_HOP", raising=False)
    b = build.Builder(PLAN, ledger)
    assert b.plan == HOP and b.net.plan == HOP and b.offloads.csum_hop, "the default"
    monkeypatch.setenv("KUBEVPC_VXLAN_CSUM_HOP", "1")
    assert build.Builder(PLAN, ledger).plan == HOP
    monkeypatch.setenv("KUBEVPC_VXLAN_CSUM_HOP", "0")
    b = build.Builder(PLAN, ledger)
    assert b.plan is PLAN and not b.offloads.csum_hop
    monkeypatch.setattr(build, "detect_datapath", lambda prefer=None: Datapath("system", False, ""))
    monkeypatch.setenv("KUBEVPC_VXLAN_CSUM_HOP", "1")
    assert build.Builder(PLAN, ledger).plan is PLAN, "the kernel datapath: no hop"
    monkeypatch.setenv("KUBEVPC_VXLAN_CSUM_HOP", "maybe")
    with pytest.raises(BuildError, match="KUBEVPC_VXLAN_CSUM_HOP='maybe'"):
        build.Builder(PLAN, ledger)


# ================================================================== every vxlan scenario, first packets
def _vxlan_scenarios() -> list[Path]:
    out = []
    for path in sorted((REPO / "tests" / "e2e" / "data").glob("*.yaml")) + [REPO / "scenarios" / "default.yaml"]:
        try:
            plan = make_plan(load(str(path), mode="vxlan"), RUN)
        except Exception:                   # noqa: BLE001 - a scenario of another mode, or one meant to fail
            continue
        if plan.services and plan.cluster and plan.cluster.mode == "vxlan":
            out.append(path)
    return out


def _service_targets(plan: Plan) -> list[tuple[str, int, str]]:
    """Every address and port a node balances in the plan: ClusterIP ports, NodePorts at every node,
    external IPs."""
    out = []
    for svc in plan.services:
        for p in svc.ports:
            if p.protocol not in ("TCP", "UDP"):
                continue
            proto = p.protocol.lower()
            out += [(ip, p.port, proto) for ip in ([svc.cluster_ip] if svc.cluster_ip else []) + list(svc.external_ips)]
            out += [(n.ip, p.node_port, proto) for n in plan.nodes if p.node_port]
    return out


@pytest.mark.parametrize("path", _vxlan_scenarios(), ids=lambda p: p.stem)
def test_the_first_packet_of_every_service_connection_ends_as_it_does_without_the_hop(path):
    """Every pod, node and instance to every Service address and port of every vxlan scenario: with
    the hop, the first packet ends where, and as what, it ends without it. (The walk follows every
    bucket of a select group, and again after the hop, where the datapath's hash of the same packet
    picks the same bucket; so the ends are compared as sets.)"""
    from .netsim import Network
    plan, hop = make_plan(load(str(path), mode="vxlan"), RUN), make_plan(load(str(path), mode="vxlan"), RUN,
                                                                       csum_hop=True)
    before, after = Network(plan), Network(hop)
    sources = [h for h in plan.hosts if h.kind in ("pod", "ecs") and not h.host_network][:12]

    def ends(net, src, ip, port, proto):
        return {(e.kind, e.host, e.packet.get("ipv4_src"), e.packet.get("ipv4_dst"))
                for e in net.send(src, ip, port, proto)}
    for src in sources:
        for ip, port, proto in _service_targets(plan):
            assert ends(after, hop.host(src.key), ip, port, proto) == ends(before, src, ip, port, proto), \
                (path.stem, src.key, ip, port, proto)


# ======================================================================================= the builder
def test_the_hops_are_recorded_then_made_at_the_pods_mtu_with_the_sending_ends_offloads_off(monkeypatch):
    from topologies import hops
    done: list = []
    monkeypatch.setattr(hops, "sh", lambda cmd, stdin="", **kw: done.append(("sh", " ".join(cmd), stdin)))
    monkeypatch.setattr(hops, "no_ipv6", lambda names: done.append(("no_ipv6", tuple(names))))
    monkeypatch.setattr(hops, "ethtool_set", lambda name, cmd, value: done.append(("ethtool", name, cmd, value)))
    ledger = SimpleNamespace(record=lambda kind, *names, **kw: done.append(("record", kind, names)))
    assert hops.make_hops(ledger, PLAN) == 0 and done == [], "a plan without hops: nothing"
    assert hops.make_hops(ledger, HOP, [HOP.node("node-2")]) == 1
    assert done[0] == ("record", "link", (f"{RUN}ck1o", f"{RUN}ck1i")), "in the ledger before it exists"
    assert done[1] == ("sh", "ip -batch -", f"link add {RUN}ck1o mtu 1450 type veth peer name {RUN}ck1i mtu 1450\n")
    assert ("ethtool", f"{RUN}ck1o", hops.ETHTOOL_STXCSUM, 0) in done and \
        ("ethtool", f"{RUN}ck1o", hops.ETHTOOL_STSO, 0) in done and ("ethtool", f"{RUN}ck1i", hops.ETHTOOL_SGRO, 0) in done
    assert not any(d[0] == "ethtool" and d[1] == f"{RUN}ck1i" and d[2] != hops.ETHTOOL_SGRO for d in done)
    assert done[-1] == ("sh", "ip -batch -", f"link set {RUN}ck1o up\nlink set {RUN}ck1i up\n")
    assert hops.hop_pairs(HOP) == [(f"{RUN}ck{k}o", f"{RUN}ck{k}i") for k in range(3)]


def test_a_hop_that_cannot_be_made_right_stops_the_build(monkeypatch):
    from topologies import hops
    monkeypatch.setattr(hops, "sh", lambda *a, **kw: "")
    monkeypatch.setattr(hops, "no_ipv6", lambda names: None)

    def refuse(name, cmd, value):
        raise OSError(95, "Operation not supported")
    monkeypatch.setattr(hops, "ethtool_set", refuse)
    with pytest.raises(BuildError, match="could not turn the checksum hop's offloads off .*unset KUBEVPC_VXLAN_CSUM_HOP"):
        hops.make_hops(SimpleNamespace(record=lambda *a, **kw: None), HOP)
