"""Services' spec.externalIPs: the API server's checks and kubevpc's refusals, what a node bridge
makes of each external IP and port, and the flows against the evaluator end to end.

The end-to-end tests send a connection's first packet through every compiled bridge with
tests/unit/netsim.py and compare where it lands, and with which source address, with what
`kubevpc explain` (kubevpc.evaluator.externalip) says, for clients in the VPC, pods and nodes, in
all three modes, in tests/e2e/data/externalip.yaml and variants of it (security groups,
NetworkPolicy). Expected addresses and words are written out by hand.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from controller.flows import Ct, GroupAction, Nat, Output, SetField
from controller.services import entries
from kubevpc.errors import ScenarioError
from kubevpc.evaluator.explain import explain
from kubevpc.lab.changes import keep_allocations
from kubevpc.planning import Plan, make_plan
from kubevpc.scenario.load import load

from .fakeoftable import FakeOFTable
from .netsim import Network
from .problems import check, line_of
from .test_services import base, only, plan_of, refuse, service

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "e2e" / "data" / "externalip.yaml"
MODES = ("vxlan", "vpc-route", "eni")
CLUSTER, LOCAL, UNROUTED, LOCAL_NONE, EMPTY = (f"203.0.113.{k}" for k in (10, 11, 12, 13, 14))
NODE_IP = {"node-1": "192.168.1.1", "node-2": "192.168.1.2", "node-3": "192.168.2.1"}
FROM_POD, FROM_HOST, FROM_UPLINK, FROM_TUNNEL = 1, 2, 3, 4
T_SERVICE = 21


def scenario(tmp_path: Path, mode: str, change) -> Plan:
    """externalip.yaml with a change made to it."""
    data = yaml.safe_load(SCENARIO.read_text())
    change(data)
    return plan_of(tmp_path, data, mode)


_plans: dict[str, Plan] = {}


def plan_for(mode: str) -> Plan:
    if mode not in _plans:
        _plans[mode] = make_plan(load(str(SCENARIO), mode=mode), "t")
    return _plans[mode]


# ================================================================================= validation
@pytest.mark.parametrize("ip, words", [
    ("127.0.0.1", "may not be in the loopback range (127.0.0.0/8, ::1/128)"),
    ("0.0.0.0", "may not be unspecified (0.0.0.0)"),
    ("169.254.169.254", "may not be in the link-local range (169.254.0.0/16, fe80::/10)"),
    ("224.0.0.251", "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"),
    ("10.0.0.256", "must be a valid IP address"),
    ("web.example.com", "must be a valid IP address"),
    ("2001:db8::1", "kubevpc emulates IPv4 only"),
])
def test_the_api_servers_checks_of_external_ips(tmp_path, ip, words):
    data = base()
    data["manifests"].append(service("svc-a", {"externalIPs": ["203.0.113.1", ip], "ports": [{"port": 80}]}))
    problems, f, text = refuse(tmp_path, data)
    problem = only(problems, "manifests[1].spec")
    check(problem, f, yaml.safe_load(text)["manifests"][1]["spec"], line_of(text, "spec:", after="name: svc-a"),
          f'spec.externalIPs[1]: Invalid value: "{ip}"', words)


def test_what_the_api_server_takes_kubevpc_takes(tmp_path):
    """The twins: a multicast address outside 224.0.0.0/24 is no special IP to the API server, and
    externalTrafficPolicy is allowed on a ClusterIP Service with external IPs (ExternallyAccessible)."""
    data = base()
    data["manifests"].append(service("svc-a", {"externalIPs": ["203.0.113.1", "224.0.1.1", "203.0.113.1"],
                                               "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}))
    svc = plan_of(tmp_path, data).service("default/svc-a")
    assert svc.external_ips == ("203.0.113.1", "224.0.1.1")      # a repeated address once
    assert svc.external_traffic_policy == "Local"
    data["manifests"][1]["spec"]["externalIPs"] = []
    problems, f, text = refuse(tmp_path, data)
    assert "may only be set for externally-accessible services" in only(problems, "manifests[1].spec").expected


def test_headless_and_external_name_services_ignore_external_ips(tmp_path):
    """The API server warns that it ignores them there; kube-proxy has no address to balance."""
    data = base()
    data["manifests"] += [service("h", {"clusterIP": "None", "externalIPs": ["203.0.113.1"], "ports": [{"port": 80}]}),
                          service("x", {"type": "ExternalName", "externalName": "db.example.com",
                                        "externalIPs": ["203.0.113.1"]})]
    plan = plan_of(tmp_path, data)
    assert (plan.service("default/h").external_ips, plan.service("default/x").external_ips) == ((), ())
    assert not any(e.kind == "external-ip" for n in plan.nodes for e in entries(plan, n))


@pytest.mark.parametrize("ip, words", [
    ("10.0.1.77", "inside vSwitch vsw-a (10.0.1.0/24)"),         # where instances, nodes and VIPs are
    ("10.0.2.1", "inside vSwitch vsw-b (10.0.2.0/24)"),          # a node's own address
    ("172.21.0.11", "inside serviceCIDR 172.21.0.0/20"),          # a ClusterIP
    ("172.20.3.3", "inside podCIDR 172.20.0.0/16"),
    ("198.19.0.9", "inside publicCIDR 198.19.0.0/24"),
])
def test_an_external_ip_the_scenario_holds_or_gives_out_is_refused(tmp_path, ip, words):
    data = base()
    data["cloud"]["internet"] = {}
    data["manifests"].append(service("svc-a", {"externalIPs": [ip], "ports": [{"port": 80}]}))
    problems, f, text = refuse(tmp_path, data)
    check(only(problems, "manifests[1].spec.externalIPs[0]"), f, ip, line_of(text, ip), words,
          "routed to a node by a custom route")


def test_an_address_outside_every_range_is_taken_and_eni_has_no_pod_cidr(tmp_path):
    data = base()
    data["manifests"].append(service("svc-a", {"externalIPs": ["172.20.3.3", "10.9.0.1"], "ports": [{"port": 80}]}))
    with pytest.raises(ScenarioError):
        plan_of(tmp_path, copy.deepcopy(data))
    assert plan_of(tmp_path, data, mode="eni").service("default/svc-a").external_ips == ("172.20.3.3", "10.9.0.1")


def test_one_address_port_and_protocol_belongs_to_one_service(tmp_path):
    data = base()
    data["manifests"] += [service("svc-a", {"externalIPs": ["203.0.113.1"], "ports": [{"port": 80}]}),
                          service("svc-b", {"externalIPs": ["203.0.113.1"], "ports": [{"port": 80}]})]
    problems, f, text = refuse(tmp_path, data)
    check(only(problems, "manifests[2].spec.externalIPs[0]"), f, "203.0.113.1",
          line_of(text, "203.0.113.1", after="name: svc-b"), "203.0.113.1:80/TCP is already an external IP port "
          "of Service default/svc-a")
    # the twins: another port, or the other protocol, of the same address
    data["manifests"][2]["spec"]["ports"] = [{"name": "a", "port": 81}, {"name": "b", "port": 80, "protocol": "UDP"}]
    plan = plan_of(tmp_path, data)
    assert plan.service("default/svc-b").external_ips == plan.service("default/svc-a").external_ips == ("203.0.113.1",)


def test_a_change_while_running_keeps_the_external_ips_and_their_policy():
    plan = plan_for("vxlan")
    loaded = load(str(SCENARIO), mode="vxlan")
    svc = next(m.obj for m in loaded.manifests if getattr(m.obj.metadata, "name", "") == "web-ext-local")
    kept = keep_allocations(svc, plan)
    assert kept.spec.externalIPs == [LOCAL, LOCAL_NONE] and kept.spec.externalTrafficPolicy == "Local"
    assert kept.spec.clusterIP == plan.service("default/web-ext-local").cluster_ip


# ====================================================================================== flows
def test_cluster_policy_one_entry_for_every_client_masqueraded():
    plan = plan_for("vxlan")
    for node in plan.nodes:
        es = [e for e in entries(plan, node) if e.service.name == "web-ext"]
        assert sorted((e.kind, e.ip, e.port) for e in es) == [("cluster-ip", plan.service("default/web-ext").cluster_ip,
                                                                80), ("external-ip", CLUSTER, 80),
                                                               ("external-ip", UNROUTED, 80)]
        for e in es:
            if e.kind == "external-ip":
                assert (e.sources, e.masquerade, e.refuse) == ((), True, False)
                assert sorted(ep.name for ep in e.endpoints) == ["web-0", "web-1"]
        [a, b] = [e.id for e in es if e.kind == "external-ip"]
        assert a != b, "each external IP is an entry of its own"


def test_local_policy_entries_by_client():
    """Pods: any endpoint, unmasqueraded; the node: any endpoint, masqueraded; from outside the node
    (the uplink, a tunnel): this node's endpoints only, else dropped."""
    plan = plan_for("vxlan")
    fs = compile_plan(plan)
    for node, local in (("node-1", ["web-0"]), ("node-3", [])):
        es = {e.clients: e for e in entries(plan, plan.node(node)) if e.kind == "external-ip" and e.ip == LOCAL}
        assert set(es) == {"pods", "the node", "outside the node"}
        assert [(es[c].sources, es[c].masquerade, sorted(ep.name for ep in es[c].endpoints)) for c in
                ("pods", "the node", "outside the node")] == [
            ((FROM_POD,), False, ["web-0", "web-1"]), ((FROM_HOST,), True, ["web-0", "web-1"]),
            ((FROM_UPLINK, FROM_TUNNEL), False, local)]
        table = FakeOFTable.of(fs[plan.node(node).bridge])
        for reg0 in (FROM_UPLINK, FROM_TUNNEL):
            f = table.lookup(T_SERVICE, packet(LOCAL, 80, reg0))
            assert f.obj == es["outside the node"].id
            assert (f.actions[-1] == GroupAction(f.obj)) if local else f.actions == (), f.to_ofctl()
        for reg0, who in ((FROM_POD, "pods"), (FROM_HOST, "the node")):
            assert table.lookup(T_SERVICE, packet(LOCAL, 80, reg0)).actions[-1] == GroupAction(es[who].id)


def test_a_port_the_service_does_not_expose_on_an_external_ip_is_dropped():
    plan = plan_for("vxlan")
    for node in plan.nodes:
        table = FakeOFTable.of(compile_plan(plan)[node.bridge])
        for ip in (CLUSTER, LOCAL, UNROUTED, LOCAL_NONE, EMPTY):
            for reg0 in (FROM_POD, FROM_HOST, FROM_UPLINK):
                f = table.lookup(T_SERVICE, packet(ip, 81, reg0))
                assert (f.priority, f.actions, dict(f.match)) == (
                    100, (), {"eth_type": 0x0800, "ct_state": (0x21, 0x21), "ipv4_dst": ip}), f.to_ofctl()
                assert table.lookup(T_SERVICE, packet(ip, 80, reg0)).priority >= 200       # the twin


def test_an_external_ip_without_endpoints_is_refused():
    plan = plan_for("vxlan")
    for node in plan.nodes:
        table = FakeOFTable.of(compile_plan(plan)[node.bridge])
        zone = plan.bridge(node.bridge).zone
        assert table.lookup(T_SERVICE, packet(EMPTY, 80, FROM_UPLINK)).actions == (
            SetField("reg4", 0x2), Ct(zone, commit=True, table=29, mark=0x1, nat=Nat("dst", NODE_IP[node.name], 1, 1)))
        assert table.lookup(T_SERVICE, packet(EMPTY, 80, FROM_HOST)).actions == (Output("controller"),)


def packet(dst: str, port: int, reg0: int) -> dict:
    return {"eth_type": 0x0800, "ct_state": 0x21, "ipv4_src": "10.9.9.9", "ipv4_dst": dst, "ip_proto": 6,
            "tcp_dst": port, "reg0": reg0}


# ========================================================================= against the evaluator
SOURCES = ("ecs/ecs-client", "pod/default/client-1", "pod/default/client-3", "ecs/node-1", "ecs/node-3",
           "pod/default/web-0")
DESTS = ((CLUSTER, 80), (CLUSTER, 81), (LOCAL, 80), (UNROUTED, 80), (LOCAL_NONE, 80), (EMPTY, 80))


def landed(plan: Plan, net: Network, src: str, ip: str, port: int) -> tuple[dict[str, str], list]:
    """Where the flows take the first packet: {pod key: the source it arrives with} for the pods
    that listen on the port it reaches, and every end of the walk."""
    ends = net.send(plan.host(src), ip, port)
    got = {}
    for e in ends:
        h = plan.host(e.host) if e.kind == "delivered" else None
        if h is not None and h.kind == "pod" and e.packet["ipv4_dst"] == h.ip and \
                any(s.port == e.packet["tcp_dst"] for s in h.servers):
            got[h.key] = e.packet["ipv4_src"]
    return got, ends


def refused(plan: Plan, ends: list) -> bool:
    """A refusal: DNATed to a node's closed port 1, or (the node itself asking) to the controller."""
    nodes = {n.ecs for n in plan.nodes}
    return bool(ends) and all(e.kind == "controller" or (e.host in nodes and e.packet["tcp_dst"] == 1) for e in ends)


def agree(plan: Plan, net: Network, src: str, ip: str, port: int) -> tuple:
    """The flows and the evaluator agree on who is reached, with which address, and on a refusal."""
    got, ends = landed(plan, net, src, ip, port)
    e = explain(plan, src, ip, port)
    want = {b.target.split()[0]: b.explanation.seen_source for b in e.branches if b.explanation.allowed}
    assert got == want, f"{src} -> {ip}:{port}: flows {got}, evaluator {want} ({e.reason}); " + \
        "; ".join(map(str, ends))
    assert refused(plan, ends) == ("refused" in e.reason and not e.branches), (e.reason, [str(x) for x in ends])
    return e, ends


@pytest.mark.parametrize("mode", MODES)
def test_the_flows_agree_with_the_evaluator(mode):
    plan = plan_for(mode)
    net = Network(plan)
    verdicts = {}
    for src in SOURCES:
        for ip, port in DESTS:
            e, _ = agree(plan, net, src, ip, port)
            verdicts[(src, ip, port)] = e.allowed
    # the comparison is not trivial: both answers occur, for clients in the VPC and in the cluster
    from_vpc = {verdicts[("ecs/ecs-client", ip, 80)] for ip in (CLUSTER, LOCAL, UNROUTED, LOCAL_NONE, EMPTY)}
    assert from_vpc == {True, False}
    assert verdicts[("pod/default/client-3", UNROUTED, 80)] is True
    assert verdicts[("pod/default/client-3", CLUSTER, 81)] is False


@pytest.mark.parametrize("mode", MODES)
def test_from_the_vpc_the_route_decides_and_the_policy_picks_the_endpoints(mode):
    plan, net = plan_for(mode), Network(plan_for(mode))
    client = "ecs/ecs-client"
    # Cluster, routed to node-3 (no endpoint there): masqueraded to node-3, either replica
    assert landed(plan, net, client, CLUSTER, 80)[0] == {"pod/default/web-0": NODE_IP["node-3"],
                                                         "pod/default/web-1": NODE_IP["node-3"]}
    # not routed: the vRouter drops it (the twin: a pod reaches the same address)
    got, ends = landed(plan, net, client, UNROUTED, 80)
    assert got == {} and [(e.kind, e.path[-1][0]) for e in ends] == [("dropped", plan.vpcs[0].bridge)]
    assert set(landed(plan, net, "pod/default/client-1", UNROUTED, 80)[0]) == {"pod/default/web-0", "pod/default/web-1"}
    # Local, routed to node-1: web-0 only, the client's own address kept
    assert landed(plan, net, client, LOCAL, 80)[0] == {"pod/default/web-0": plan.host(client).ip}
    # Local, routed to node-3, which has no endpoint: dropped there (a pod is short-circuited)
    got, ends = landed(plan, net, client, LOCAL_NONE, 80)
    assert got == {} and [(e.kind, e.path[-1][0], e.path[-1][1].priority) for e in ends] == [
        ("dropped", plan.node("node-3").bridge, 200)]
    assert set(landed(plan, net, "pod/default/client-3", LOCAL_NONE, 80)[0]) == {"pod/default/web-0",
                                                                                 "pod/default/web-1"}
    # a port web-ext does not expose: dropped at node-3's service table
    got, ends = landed(plan, net, client, CLUSTER, 81)
    assert got == {} and [(e.path[-1][0], e.path[-1][1].priority) for e in ends] == [(plan.node("node-3").bridge, 100)]


def _no_sg_rule(data: dict) -> None:
    data["cloud"]["securityGroups"][0]["rules"][0]["ports"] = "81"


def _web_takes_clients_only(data: dict) -> None:
    data["manifests"].append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "web-from-clients"},
                              "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                                  {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}})


def _clients_send_elsewhere(data: dict) -> None:
    data["manifests"].append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "clients-to-web-9999"},
                              "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                       "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                                   "ports": [{"port": 9999}]}]}})


def _internet(data: dict) -> None:
    data["cloud"]["internet"] = {"hosts": [{"name": "server"}]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", [_no_sg_rule, _web_takes_clients_only, _clients_send_elsewhere, _internet])
def test_the_flows_agree_with_the_evaluator_under_security_groups_and_network_policy(tmp_path, mode, change):
    """The node's security groups guard the address it is routed; NetworkPolicy judges the
    endpoint's ingress on the address the connection arrives with (masqueraded or not) and the
    client's egress on the endpoint."""
    plan = scenario(tmp_path, mode, change)
    net = Network(plan)
    verdicts = {}
    for src in SOURCES + tuple(h.key for h in plan.hosts if h.kind == "internet"):
        for ip, port in DESTS:
            verdicts[(src, ip, port)] = agree(plan, net, src, ip, port)[0].allowed
    if change is _no_sg_rule:
        assert verdicts[("ecs/ecs-client", CLUSTER, 80)] is False and verdicts[("ecs/ecs-client", LOCAL, 80)] is False
        assert verdicts[("pod/default/client-1", CLUSTER, 80)] is True
    if change is _web_takes_clients_only:
        # masqueraded to node-1: web-0 (judged on node-1, on the client) takes it, web-1 (on node-2) does not
        assert verdicts[("pod/default/client-1", CLUSTER, 80)] is None
        assert verdicts[("pod/default/client-1", LOCAL, 80)] is True        # not masqueraded: both
        assert verdicts[("ecs/ecs-client", LOCAL, 80)] is False
    if change is _clients_send_elsewhere:
        # the client's egress is judged on the endpoint, masqueraded or not; the node has none
        assert verdicts[("pod/default/client-3", CLUSTER, 80)] is False
        assert verdicts[("pod/default/client-3", LOCAL, 80)] is False
        assert verdicts[("ecs/node-3", CLUSTER, 80)] is True
    if change is _internet:
        # nothing on the internet routes an external IP to the VPC; the VPC still reaches it
        assert not any(verdicts[("inet/server", ip, port)] for ip, port in DESTS)
        assert verdicts[("ecs/ecs-client", CLUSTER, 80)] is True
