"""Pods with spec.hostNetwork: the plan (the node's namespace and address, nothing of their own
to wire), the planner's refusals of ports their node holds, Services with an endpoint at a node's
address, NetworkPolicy that selects no host-network pod, the evaluator, and what the builder does
for them.

The flows are held to the evaluator end to end as tests/unit/test_external_ips.py does: the first
packet of a connection is sent through every compiled bridge (tests/unit/netsim.py) and where it
lands, with which source address, is compared with `kubevpc explain`, in all three modes, on
tests/e2e/data/hostnet.yaml. Expected addresses are written out by hand.
"""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from controller.compile import compile_plan, node_policy_flows
from controller.flows import Ct, Output
from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.evaluator.checks import default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.matrix import expect
from kubevpc.evaluator.netpol import evaluate, is_pod
from kubevpc.lab.changes import pods_changed
from kubevpc.planning import Plan, make_plan
from kubevpc.scenario.load import load

from .fakeoftable import FakeOFTable
from .netsim import Network
from .problems import check, line_of
from .test_services import write

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "e2e" / "data" / "hostnet.yaml"
MODES = ("vxlan", "vpc-route", "eni")
NODE_IP = {"node-1": "192.168.1.1", "node-2": "192.168.1.2", "node-3": "192.168.2.1"}
ECS_CLIENT = "192.168.2.2"
HOSTWEB, HOSTWEB_NP, HOSTWEB_LOCAL, WEB, WEB_ITP = (f"172.21.0.{k}" for k in (11, 12, 13, 14, 15))
HOSTWEB_POD = "pod/default/hostweb-0"
# manifests of hostnet.yaml by index
M_HOSTWEB, M_CLIENT1, M_HOSTCLIENT2, M_HOSTCLIENT3 = 1, 2, 4, 5

_plans: dict[str, Plan] = {}


def plan_for(mode: str) -> Plan:
    if mode not in _plans:
        _plans[mode] = make_plan(load(str(SCENARIO), mode=mode), "t")
    return _plans[mode]


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def plan_of(tmp_path: Path, d: dict, mode: str | None = None) -> Plan:
    return make_plan(load(str(write(tmp_path, d)), mode=mode), "t")


def refused(tmp_path: Path, d: dict, mode: str | None = None):
    path = write(tmp_path, d)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), "t")
    return info.value.problems, path, path.read_text()


def pod_spec(d: dict, index: int) -> dict:
    obj = d["manifests"][index]
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]


# ======================================================================================= the plan
@pytest.mark.parametrize("mode", MODES)
def test_a_host_network_pod_is_its_nodes_namespace_and_address_with_nothing_of_its_own(mode):
    plan = plan_for(mode)
    node2, home = plan.node("node-2"), plan.host("ecs/node-2")
    h = plan.host(HOSTWEB_POD)
    assert h.host_network and h.kind == "pod" and h.node == "node-2" and h.labels["app"] == "hostweb"
    assert (h.ip, h.netns, h.mac, h.gateway, h.gateway_mac, h.prefixlen) == \
        (home.ip, home.netns, home.mac, home.gateway, home.gateway_mac, home.prefixlen)
    assert (h.veth, h.ofport, h.bridge, h.vswitch, h.security_groups) == ("", 0, node2.bridge, "", ())
    assert h.ready_name != home.ready_name and h.ready_name.startswith(home.netns)
    assert not any(a.owner == h.key for a in plan.attachments), "no ENI, no vSwitch address"
    assert not any(p.peer == h.key for b in plan.bridges for p in b.ports), "no port on any bridge"
    assert plan.network_host(h) == home and plan.network_host(plan.host("pod/default/web-1")).key == "pod/default/web-1"
    # the twin: an ordinary pod on the same node has all of its own
    web1 = plan.host("pod/default/web-1")
    assert not web1.host_network and web1.veth and web1.ofport and web1.ip != home.ip
    assert any(p.peer == web1.key for p in plan.bridge(node2.bridge).ports)
    assert HOSTWEB_POD not in {p.key for p in plan.own_pods} and web1.key in {p.key for p in plan.own_pods}
    assert {h.key for h in plan.pods} - {h.key for h in plan.own_pods} == {
        HOSTWEB_POD, "pod/default/hostclient-2", "pod/default/hostclient-3"}


def test_eni_a_host_network_pod_takes_no_vswitch_address(tmp_path):
    """The ordinary pods get the same addresses whether the host-network pods are there or not."""
    with_them = plan_for("eni")
    d = data()
    d["manifests"] = [m for i, m in enumerate(d["manifests"]) if i not in (M_HOSTWEB, M_HOSTCLIENT2, M_HOSTCLIENT3)]
    d["expect"] = [e for e in d["expect"] if "host" not in e["from"] + e["to"]]
    without = plan_of(tmp_path, d, "eni")
    assert {h.key: h.ip for h in without.own_pods} == {h.key: h.ip for h in with_them.own_pods}
    # the twin: the same pods without hostNetwork take addresses of their own
    d = data()
    for i in (M_HOSTCLIENT2, M_HOSTCLIENT3):
        del pod_spec(d, i)["hostNetwork"]
    ordinary = plan_of(tmp_path, d, "eni")
    taken = {h.ip for h in ordinary.pods} - {h.ip for h in with_them.pods}
    assert len(taken) == 2 and not taken & set(NODE_IP.values())


def test_the_field_is_strict_and_endpoints_are_at_the_nodes_address(tmp_path):
    d = data()
    pod_spec(d, M_HOSTCLIENT2)["hostNetwork"] = "yes"
    problems, path, text = refused(tmp_path, d)
    assert any(p.path.endswith("spec.hostNetwork") for p in problems), problems
    plan = plan_for("vxlan")
    ep = plan.service("hostweb").endpoints[0]
    assert (ep.pod, ep.ip, ep.node, ep.ports) == (HOSTWEB_POD, NODE_IP["node-2"], "node-2", (9090,))
    assert [(e.name, e.ip) for e in plan.service("web").endpoints] == [("web-0", "10.244.0.2"), ("web-1", "10.244.1.2")]


def test_what_reads_endpoints_sees_the_nodes_address(tmp_path):
    """DNS (headless and pod records, as CoreDNS has hostNetwork pods: their PodIP is the node's),
    kube-proxy's health check counts, an eni SLB's backends (the node's address and the container
    port) and a non-eni SLB's (NodePorts, weighted by local endpoints)."""
    from kubevpc.render.dns import zone
    from kubevpc.render.nodehealth import health_ports
    d = data()
    d["manifests"] += [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hostweb-headless"},
         "spec": {"clusterIP": "None", "selector": {"app": "hostweb"}, "ports": [{"port": 9090}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hostweb-lb", "annotations": {
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet",
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler": "wrr"}},
         "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "hostweb"},
                  "ports": [{"port": 80, "targetPort": 9090}]}}]
    for mode in ("eni", "vxlan"):
        plan = plan_of(tmp_path, d, mode)
        records = {(r["name"], r["value"]) for r in zone(plan.services, plan.pods, "cluster.local")["records"]
                   if r["type"] == "A"}
        assert ("hostweb-headless.default.svc.cluster.local.", NODE_IP["node-2"]) in records
        assert ("192-168-1-2.default.pod.cluster.local.", NODE_IP["node-2"]) in records
        svc = plan.service("hostweb-lb")
        local = {n: health_ports(plan, n)["ports"][str(svc.health_check_node_port)]["local_endpoints"]
                 for n in NODE_IP}
        assert local == {"node-1": 0, "node-2": 1, "node-3": 0}
        (listener,) = next(s for s in plan.slbs if s.service == "default/hostweb-lb").listeners
        backends = {(b.id, b.ip, b.port, b.weight) for b in listener.backends}
        if mode == "eni":       # Terway: the SLB sends to the pods themselves, this one at its node's address
            assert backends == {(HOSTWEB_POD, NODE_IP["node-2"], 9090, 1)}
        else:
            port = svc.ports[0].node_port
            assert backends == {(n, NODE_IP[n], port, 1 if n == "node-2" else 0) for n in NODE_IP}


# ====================================================================================== refusals
def _port(d: dict, index: int, port: int, protocol: str = "TCP", node: str | None = None) -> None:
    spec = pod_spec(d, index)
    spec["containers"][0]["ports"] = [{"containerPort": port, "protocol": protocol}]
    if node:
        spec["nodeName"] = node


def _refused_at(tmp_path, d: dict, index: int, value: int, *words: str, mode: str | None = None) -> None:
    problems, path, text = refused(tmp_path, d, mode)
    where = "spec.template.spec" if d["manifests"][index]["kind"] == "Deployment" else "spec"
    want = f"manifests[{index}].{where}.containers[0].ports[0].containerPort"
    hits = [p for p in problems if p.path == want]
    assert len(hits) == 1, "\n".join(map(str, problems))
    name = d["manifests"][index]["metadata"]["name"]
    check(hits[0], path, value, line_of(text, f"containerPort: {value}", after=f"name: {name}"), "hostNetwork", *words)


def test_two_host_network_pods_on_one_node_may_not_take_one_port(tmp_path):
    d = data()
    _port(d, M_HOSTCLIENT3, 7001, node="node-2")          # hostclient-2 has 7001/TCP on node-2
    _refused_at(tmp_path, d, M_HOSTCLIENT3, 7001, "node(s) didn't have free ports for the requested pod ports",
                "host-network pod default/hostclient-2", "another node")
    # twins: another protocol on that node, or the same port on another node
    d = data()
    _port(d, M_HOSTCLIENT3, 7001, "UDP", node="node-2")
    assert plan_of(tmp_path, d).host("pod/default/hostclient-3").node == "node-2"
    d = data()
    _port(d, M_HOSTCLIENT3, 7001)
    assert plan_of(tmp_path, d).host("pod/default/hostclient-3").node == "node-3"


def test_a_host_network_pod_may_not_take_a_nodeport_or_a_health_check_port(tmp_path):
    d = data()
    _port(d, M_HOSTCLIENT2, 30090)                         # hostweb-np's NodePort, TCP
    _refused_at(tmp_path, d, M_HOSTCLIENT2, 30090, "NodePort of Service default/hostweb-np", "every node")
    d = data()
    _port(d, M_HOSTCLIENT2, 30090, "UDP")                  # the twin: that number in the other protocol
    plan_of(tmp_path, d)
    for protocol, ok in (("TCP", False), ("UDP", True)):
        d = data()
        d["manifests"].append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "annotations": {
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                     "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        _port(d, M_HOSTCLIENT2, 32000, protocol)
        if ok:
            plan_of(tmp_path, d)
        else:
            _refused_at(tmp_path, d, M_HOSTCLIENT2, 32000, "healthCheckNodePort of Service default/lb")


def test_a_host_network_pod_may_not_take_a_port_its_node_serves(tmp_path):
    d = data()
    d["cloud"]["instances"][1]["ports"] = [{"port": 2222, "protocol": "TCP"}]      # node-2's own server
    _port(d, M_HOSTCLIENT2, 2222)
    _refused_at(tmp_path, d, M_HOSTCLIENT2, 2222, "served on node node-2 by the node itself")
    _port(d, M_HOSTCLIENT2, 7001)
    _port(d, M_HOSTCLIENT3, 2222)                          # the twin: node-3 does not serve it
    assert plan_of(tmp_path, d).host("pod/default/hostclient-3").servers[0].port == 2222
    d = data()
    _port(d, M_HOSTCLIENT2, 1)
    _refused_at(tmp_path, d, M_HOSTCLIENT2, 1, "refuses")


@pytest.mark.parametrize("mode, protocol, ok", [("vxlan", "UDP", False), ("vxlan", "TCP", True),
                                                ("vpc-route", "UDP", True), ("eni", "UDP", True)])
def test_the_vxlan_port_is_the_nodes_in_vxlan_mode(tmp_path, mode, protocol, ok):
    d = data()
    _port(d, M_HOSTCLIENT2, 4789, protocol)
    if ok:
        assert plan_of(tmp_path, d, mode).host("pod/default/hostclient-2").servers[0].port == 4789
    else:
        _refused_at(tmp_path, d, M_HOSTCLIENT2, 4789, "VXLAN port", mode=mode)


def test_the_ingress_controller_and_ordinary_pods_keep_a_namespace_of_their_own(tmp_path):
    d = data()
    d["manifests"][M_HOSTCLIENT2]["metadata"]["annotations"] = {"kubevpc.io/app": "ingress-nginx"}
    problems, path, text = refused(tmp_path, d)
    p = next(p for p in problems if p.path == f"manifests[{M_HOSTCLIENT2}].spec.hostNetwork")
    check(p, path, True, line_of(text, "hostNetwork: true", after="name: hostclient-2"), "namespace of its own")
    d = data()                                             # the twin: a plain server with hostNetwork
    assert plan_of(tmp_path, d).host("pod/default/hostclient-2").app == "server"


def test_a_running_pod_cannot_change_its_host_network_and_one_comes_and_goes_without_a_port(tmp_path):
    before = plan_for("vxlan")
    d = data()
    del pod_spec(d, M_HOSTCLIENT3)["hostNetwork"]
    after = make_plan(load(str(write(tmp_path, d))), "t", previous=before)
    with pytest.raises(KubevpcError, match="hostclient-3 would change its hostNetwork"):
        pods_changed(before, after)
    d = data()
    d["manifests"].append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostclient-1"},
                           "spec": {"nodeName": "node-1", "hostNetwork": True,
                                    "containers": [{"name": "c", "ports": [{"containerPort": 7001}]}]}})
    grown = make_plan(load(str(write(tmp_path, d))), "t", previous=before)
    added, removed = pods_changed(before, grown)
    assert [h.key for h in added] == ["pod/default/hostclient-1"] and removed == []
    assert [h.key for h in pods_changed(grown, before)[1]] == ["pod/default/hostclient-1"]
    assert {h.key: (h.ip, h.ofport) for h in grown.own_pods} == {h.key: (h.ip, h.ofport) for h in before.own_pods}


# ======================================================================= the flows, end to end
def landed(plan: Plan, net: Network, src: str, ip: str, port: int) -> tuple[dict[str, str], list]:
    """Where the flows take the first packet from `src` (a host-network pod sends from its node):
    {who listens there: the source it arrives with}. In a node's namespace that is the node or one
    of its host-network pods, by port."""
    ends = net.send(plan.network_host(plan.host(src)), ip, port)
    got = {}
    for e in ends:
        h = plan.host(e.host) if e.kind == "delivered" else None
        if h is None or e.packet["ipv4_dst"] != h.ip:
            continue
        there = [h] + [p for p in plan.pods if p.host_network and h.kind == "ecs" and p.node == h.node]
        for x in there:
            if any(s.port == e.packet["tcp_dst"] for s in x.servers):
                got[x.key] = e.packet["ipv4_src"]
    return got, ends


def agree(plan: Plan, net: Network, src: str, ip: str, port: int):
    """The flows and `kubevpc explain` agree on who is reached, and with which source address."""
    got, ends = landed(plan, net, src, ip, port)
    e = explain(plan, src, ip, port)
    if e.branches or not e.allowed:
        want = {b.target.split()[0]: b.explanation.seen_source for b in e.branches if b.explanation.allowed}
    else:
        dst = next((h for h in plan.hosts if h.ip == ip and h.kind != "pod"), None) or \
            next(h for h in plan.hosts if h.ip == ip)
        listening = [dst] + [p for p in plan.pods if p.host_network and dst.kind == "ecs" and p.node == dst.node]
        want = {x.key: e.seen_source for x in listening if any(s.port == port for s in x.servers)} if e.allowed else {}
    assert got == want, f"{src} -> {ip}:{port}: flows {got}, evaluator {want} ({e.reason}); " + \
        "; ".join(map(str, ends))
    return e


SOURCES = ("ecs/ecs-client", "pod/default/client-1", "pod/default/client-3", "pod/default/hostclient-2",
           "pod/default/hostclient-3", "ecs/node-1", "ecs/node-2", HOSTWEB_POD)
DESTS = ((HOSTWEB, 80), (WEB, 80), (WEB_ITP, 80), (NODE_IP["node-2"], 9090), (NODE_IP["node-1"], 9090),
         ("10.244.0.2", 8080))
NODEPORTS = tuple((NODE_IP[n], p) for n in NODE_IP for p in (30090, 30091))


@pytest.mark.parametrize("mode", MODES)
def test_the_flows_agree_with_the_evaluator(mode):
    plan, net = plan_for(mode), Network(plan_for(mode))
    web0 = plan.host("pod/default/web-0").ip
    verdicts = {}
    for src in SOURCES:
        # pods to a NodePort in vxlan mode are left out: the evaluator judges their security groups
        # where the flows send them through the tunnel (as before host-network pods)
        dests = DESTS + (NODEPORTS if not (mode == "vxlan" and src.startswith("pod/default/client")) else ())
        for ip, port in dests:
            ip = web0 if (ip, port) == ("10.244.0.2", 8080) else ip
            verdicts[(src, ip, port)] = agree(plan, net, src, ip, port).allowed
    # not trivial: both answers occur, from host-network clients too
    assert verdicts[("pod/default/hostclient-2", WEB_ITP, 80)] is True
    assert verdicts[("pod/default/hostclient-3", WEB_ITP, 80)] is False
    assert verdicts[("pod/default/hostclient-3", web0, 8080)] is False
    assert verdicts[("pod/default/client-1", web0, 8080)] is True


@pytest.mark.parametrize("mode", MODES)
def test_a_service_endpoint_at_a_nodes_address_is_reached_from_everywhere(mode):
    plan, net = plan_for(mode), Network(plan_for(mode))
    client1, client3 = plan.host("pod/default/client-1").ip, plan.host("pod/default/client-3").ip
    # pods keep their address, on the endpoint's node and on others
    assert landed(plan, net, "pod/default/client-1", HOSTWEB, 80)[0] == {HOSTWEB_POD: client1}
    assert landed(plan, net, "pod/default/client-3", HOSTWEB, 80)[0] == {HOSTWEB_POD: client3}
    # another node (or a host-network pod on it): its own address
    assert landed(plan, net, "ecs/node-1", HOSTWEB, 80)[0] == {HOSTWEB_POD: NODE_IP["node-1"]}
    assert landed(plan, net, "pod/default/hostclient-3", HOSTWEB, 80)[0] == {HOSTWEB_POD: NODE_IP["node-3"]}
    # NodePort, policy Cluster: masqueraded when balanced on another node; on the endpoint's own
    # node, delivered to the node itself and not masqueraded, as kube-proxy's POSTROUTING never sees it
    assert landed(plan, net, "ecs/ecs-client", NODE_IP["node-1"], 30090)[0] == {HOSTWEB_POD: NODE_IP["node-1"]}
    assert landed(plan, net, "ecs/ecs-client", NODE_IP["node-2"], 30090)[0] == {HOSTWEB_POD: ECS_CLIENT}
    # NodePort, policy Local: the endpoint's node only, the client's address kept; elsewhere dropped
    assert landed(plan, net, "ecs/ecs-client", NODE_IP["node-2"], 30091)[0] == {HOSTWEB_POD: ECS_CLIENT}
    got, ends = landed(plan, net, "ecs/ecs-client", NODE_IP["node-3"], 30091)
    assert got == {} and [(e.kind, e.path[-1][0], e.path[-1][1].priority) for e in ends] == [
        ("dropped", plan.node("node-3").bridge, 200)]


@pytest.mark.parametrize("mode", MODES)
def test_the_node_to_a_host_network_pod_on_itself_through_a_service_is_snated_to_the_service(mode):
    """It comes back into the node, which would drop a packet from its own address: table 28 SNATs
    it to the ClusterIP, and the route table sends it back out of the port it came in."""
    plan, net = plan_for(mode), Network(plan_for(mode))
    node2 = plan.node("node-2")
    for src in ("ecs/node-2", "pod/default/hostclient-2", HOSTWEB_POD):
        got, ends = landed(plan, net, src, HOSTWEB, 80)
        assert got == {HOSTWEB_POD: HOSTWEB}, [str(e) for e in ends]
        (end,) = ends
        assert end.host == "ecs/node-2" and end.packet["tcp_dst"] == 9090 and end.packet["tcp_src"] >= 61000
        snat = [f for b, f in end.path if f.table == 28]
        assert [(f.priority, [a.nat.ip for a in f.actions if isinstance(a, Ct)]) for f in snat] == [(110, [HOSTWEB])]
        assert end.path[-1][0] == node2.bridge and Output("in_port") in end.path[-1][1].actions
    # the twin: from node-1, no SNAT, and table 28 is not met
    got, ends = landed(plan, net, "ecs/node-1", HOSTWEB, 80)
    assert got == {HOSTWEB_POD: NODE_IP["node-1"]} and not any(f.table == 28 for _, f in ends[0].path)


@pytest.mark.parametrize("mode", MODES)
def test_the_reply_to_the_service_address_is_unsnated_first(mode):
    """Table 15 sends what the node sends to the ClusterIP at a SNAT port (hostweb's reply) to the
    SNAT zone; the node's own new connection to it (port 80) goes on to conntrack."""
    plan = plan_for(mode)
    node2 = plan.node("node-2")
    table = FakeOFTable.of(compile_plan(plan)[node2.bridge])
    reply = {"eth_type": 0x0800, "reg0": 2, "ipv4_src": NODE_IP["node-2"], "ipv4_dst": HOSTWEB, "ip_proto": 6,
             "tcp_src": 9090, "tcp_dst": 61234}
    f = table.lookup(15, reply)
    assert f.priority == 100 and isinstance(f.actions[0], Ct) and f.actions[0].zone != plan.bridge(node2.bridge).zone
    assert table.lookup(15, {**reply, "tcp_dst": 80}).priority == 0
    assert table.lookup(15, {**reply, "reg0": 1}).priority == 0, "only the node's own packets"
    # node-1 has no host-network endpoint: nothing of this
    other = FakeOFTable.of(compile_plan(plan)[plan.node("node-1").bridge])
    assert other.lookup(15, reply).priority == 0


@pytest.mark.parametrize("mode", MODES)
def test_host_network_pods_add_no_flow_of_a_pod(mode):
    """No classify, ARP or route flow of their own, and no NetworkPolicy isolation: every flow the
    node bridges hold for a pod is for an ordinary pod."""
    plan = plan_for(mode)
    compiled = compile_plan(plan)
    own = {h.key for h in plan.own_pods}
    for node in plan.nodes:
        for f in compiled[node.bridge].flows:
            assert dict(f.match).get("in_port") != 0
            named = [k for k in (h.key for h in plan.pods) if f.note.startswith(k + ":") or f.note.startswith(k + " ")]
            assert set(named) <= own, f.to_ofctl() + " " + f.note


# ================================================================================ NetworkPolicy
def test_a_policy_selects_no_host_network_pod_as_target_or_peer(tmp_path):
    plan = plan_for("vxlan")
    hostweb, client1 = plan.host(HOSTWEB_POD), plan.host("pod/default/client-1")
    assert not is_pod(hostweb) and is_pod(client1)
    flows = node_policy_flows(plan, "node-2")
    drops = [f for f in flows if f.priority == 100 and f.table == 26]
    assert [dict(f.match).get("reg2") for f in drops] == [int.from_bytes(bytes(map(int, "10.244.1.2".split("."))), "big")], \
        "web-1 is isolated, hostweb-0 (app: hostweb) is not"
    peers = {dict(f.match).get("ipv4_src") for f in node_policy_flows(plan, "node-1")
             if f.table == 26 and 200 <= f.priority < 60000}           # the rules, not the exemptions
    assert client1.ip in peers and not peers & set(NODE_IP.values()), "role: hostclient picks client-1, no node"
    # the evaluator: the same, and an ipBlock holding the node's address matches it
    pols, ns = plan.network_policies, plan.namespaces
    web0 = plan.host("pod/default/web-0")
    assert not evaluate(pols, ns, plan.host("pod/default/hostclient-3"), web0, 8080, "tcp").allowed
    assert evaluate(pols, ns, client1, web0, 8080, "tcp").allowed
    assert evaluate(pols, ns, plan.host("pod/default/hostclient-2"), plan.host("pod/default/web-1"), 8080,
                    "tcp").allowed, "a pod and its own node"
    d = data()
    d["manifests"][-1]["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "192.168.2.0/24"}})
    opened = plan_of(tmp_path, d)
    net = Network(opened)
    assert evaluate(opened.network_policies, opened.namespaces, opened.host("pod/default/hostclient-3"),
                    opened.host("pod/default/web-0"), 8080, "tcp").allowed
    assert landed(opened, net, "pod/default/hostclient-3", opened.host("pod/default/web-0").ip, 8080)[0] == {
        "pod/default/web-0": NODE_IP["node-3"]}
    assert landed(plan, Network(plan), "pod/default/hostclient-3", web0.ip, 8080)[0] == {}


# ================================================================================== the evaluator
def test_explain_and_the_matrix_treat_a_host_network_pod_as_its_node_with_its_own_servers():
    plan = plan_for("vxlan")
    e = explain(plan, "pod/default/hostclient-3", "svc/default/hostweb", 80)
    assert "hostNetwork" in e.steps[0].text and e.allowed and e.seen_source == NODE_IP["node-3"]
    # what listens at node-2's address: its host-network pods' ports
    assert explain(plan, "ecs/ecs-client", "node/node-2", 9090).allowed
    assert not explain(plan, "ecs/ecs-client", "node/node-1", 9090).allowed
    assert {s.port for s in plan.servers_at(plan.host("ecs/node-2"))} == {9090, 7001}
    assert {s.port for s in plan.servers_at(plan.host("ecs/node-1"))} == set()
    assert expect(plan, "pod/default/client-1", HOSTWEB_POD, 9090, "tcp")[0] is True
    assert expect(plan, "pod/default/client-1", HOSTWEB_POD, 9091, "tcp")[0] is False
    allowed, reason = expect(plan, "ecs/node-2", "svc/default/hostweb", 80, "tcp")
    assert allowed and "SNATed to the Service address 172.21.0.11" in reason
    # default checks are pod to pod: host-network pods are not among them
    assert not any("host" in c.source + c.dest for c in default_checks(plan))


# ===================================================================================== the builder
class _Fork:
    def __init__(self):
        self.spawned = []

    def spawn(self, children, timeout):
        self.spawned += children
        return [SimpleNamespace(pid=100 + i) for i in range(len(children))]


def _builder(tmp_path, plan: Plan):
    from topologies import build
    b = build.Builder.__new__(build.Builder)
    b.plan, b.say = plan, lambda s: None
    ledger = SimpleNamespace(dir=str(tmp_path), record=lambda *a, **k: None)
    b.net = build.Network(plan, ledger, None)
    b.net.hosts = {h.key: SimpleNamespace(pid=1000 + i) for i, h in enumerate(build.own(plan.hosts))}
    b.net.forkserver = _Fork()
    b.ledger = ledger
    return b


def test_the_builder_starts_a_host_network_pods_server_in_its_nodes_namespace_on_its_address(tmp_path, monkeypatch):
    """KUBEVPC_SERVERS=pod: each pod's server forked into its namespace (the node's, for hostNetwork)."""
    from topologies import build
    monkeypatch.setenv("KUBEVPC_SERVERS", "pod")
    plan = plan_for("vxlan")
    b = _builder(tmp_path, plan)
    assert HOSTWEB_POD not in b.net.hosts and "ecs/node-2" in b.net.hosts
    assert b.net.host_pid(HOSTWEB_POD) == b.net.host_pid("ecs/node-2") != b.net.host_pid("pod/default/web-1")
    hosts = [plan.host(k) for k in (HOSTWEB_POD, "pod/default/web-1")]
    b.start_servers(hosts, str(tmp_path), str(REPO))
    (hw, w1) = b.net.forkserver.spawned
    assert hw["netns"] == f"/proc/{b.net.host_pid('ecs/node-2')}/ns/net"
    assert hw["argv"][hw["argv"].index("--bind") + 1] == NODE_IP["node-2"]
    assert hw["argv"][hw["argv"].index("--ready-file") + 1] == str(tmp_path / plan.host(HOSTWEB_POD).ready_name)
    assert "--bind" not in w1["argv"] and w1["netns"] == f"/proc/{b.net.host_pid('pod/default/web-1')}/ns/net"
    assert b.net.servers[HOSTWEB_POD].pid == 100
    # nothing else is made for it: no namespace, veth, address, resolv.conf
    assert [h.key for h in build.own(plan.pods)] == [h.key for h in plan.own_pods]


class _NodeServer:
    def __init__(self, node):
        self.node, self.requests = node, []

    def open(self, requests):
        self.requests += requests
        return [SimpleNamespace(pid=200, key=r["open"]) for r in requests]


def test_node_servers_serve_a_host_network_pod_in_its_nodes_namespace_on_its_address(tmp_path, monkeypatch):
    """KUBEVPC_SERVERS=node (the default): the pods of a node, host-network ones too, go to that node's
    server, each with the namespace its sockets are made in; an instance that is not a node keeps a
    forked process of its own."""
    from topologies import servers
    monkeypatch.delenv("KUBEVPC_SERVERS", raising=False)
    plan = plan_for("vxlan")
    b = _builder(tmp_path, plan)
    made = {}
    monkeypatch.setattr(servers, "node_server", lambda builder, node, root: made.setdefault(node, _NodeServer(node)))
    solo = plan.host("pod/default/web-0").model_copy(update={"key": "ecs/solo", "kind": "ecs", "name": "solo",
                                                              "node": "", "namespace": "", "netns": "kv-solo"})
    b.net.hosts[solo.key] = SimpleNamespace(pid=999)
    others = [solo]
    hosts = [plan.host(k) for k in (HOSTWEB_POD, "pod/default/web-1")] + others
    b.start_servers(hosts, str(tmp_path), str(REPO))
    node2 = plan.host(HOSTWEB_POD).node
    (hw,) = [r for r in made[node2].requests if r["open"] == HOSTWEB_POD]
    assert hw["netns"] == f"/proc/{b.net.host_pid('ecs/node-2')}/ns/net"
    assert (hw["bind"], hw["bind6"]) == (NODE_IP["node-2"], "")
    assert hw["ready"] == str(tmp_path / plan.host(HOSTWEB_POD).ready_name)
    w1 = plan.host("pod/default/web-1")
    (r1,) = made[w1.node].requests if w1.node != node2 else [r for r in made[node2].requests if r["open"] == w1.key]
    assert r1["netns"] == f"/proc/{b.net.host_pid(w1.key)}/ns/net" and r1["bind"] == "0.0.0.0"
    assert r1["listen"] == [f"{'HTTP' if s.name.startswith('http') else s.protocol}:{s.port}" for s in w1.servers]
    assert b.net.servers[HOSTWEB_POD].pid == 200 and b.net.servers[HOSTWEB_POD].key == HOSTWEB_POD
    # twin: an instance that is no node is forked, as in pod mode
    assert [c["name"] for c in b.net.forkserver.spawned] == [h.name for h in others]
    assert b.net.forkserver.spawned[0]["netns"] == "/proc/999/ns/net"
    assert solo.key not in {r["open"] for n in made.values() for r in n.requests}


def test_removing_a_host_network_pod_stops_its_server_and_leaves_the_nodes_namespace(tmp_path, monkeypatch):
    from topologies import build
    plan = plan_for("vxlan")
    b = _builder(tmp_path, plan)
    stopped, commands, removed = [], [], []

    class Proc:
        pid = 5

        def terminate(self):
            stopped.append("term")

        def wait(self, timeout=None):
            return 0
    b.net.servers = {HOSTWEB_POD: Proc(), "ecs/node-2": Proc()}
    monkeypatch.setattr(build, "sh", lambda cmd, *a, **k: commands.append(cmd))
    monkeypatch.setattr(build, "remove", lambda entries: removed.extend(entries))
    b.remove_pods([plan.host(HOSTWEB_POD)])
    assert stopped == ["term"] and list(b.net.servers) == ["ecs/node-2"], "the node's own server runs on"
    assert "ecs/node-2" in b.net.hosts and commands == [], "no port to delete, no namespace to leave"
    assert [(e.kind, e.name) for e in removed] == [("file", str(tmp_path / "ready" / plan.host(HOSTWEB_POD).ready_name))]


def test_adding_a_host_network_pod_to_a_running_network_starts_its_server_only(tmp_path, monkeypatch):
    from topologies import build
    plan = plan_for("vxlan")
    b = _builder(tmp_path, plan)
    commands, started = [], []
    monkeypatch.setattr(build, "sh", lambda cmd, *a, **k: commands.append(cmd))
    monkeypatch.setattr(b, "_servers", lambda hosts: started.extend(h.key for h in hosts))
    monkeypatch.setattr(b, "_slb", lambda hosts: None)
    before = dict(b.net.hosts)
    b.add_pods(plan, [plan.host(HOSTWEB_POD)])
    assert commands == [] and b.net.hosts == before, "no namespace, veth, port or address"
    assert started == [HOSTWEB_POD]


HOSTNET_PROBES = (("pod/hostclient-2", "svc/web", 80), ("node/node-2", "pod/web-0", 8080),
                  (HOSTWEB_POD, "10.244.0.3", 7000), ("pod/client-1", "pod/hostweb-0", 9090))


def _probing_lab():
    from kubevpc.lab.lab import Lab
    from kubevpc.probe import PortBlocks
    lab = Lab.__new__(Lab)
    lab.plan, lab.source_ports = plan_for("vxlan"), PortBlocks()
    lab.net = SimpleNamespace(host_pid=lambda key: {"ecs/node-2": 2, "pod/default/client-1": 1}[key])
    return lab


def _answered(key: str) -> dict:
    return {"key": key, "host": "", "port": 0, "proto": "tcp", "ok": True, "outcome": "answered", "answer": None,
            "elapsed_ms": 1.0, "detail": ""}


def test_probes_from_a_host_network_pod_run_in_its_nodes_namespace_beside_the_nodes(monkeypatch):
    """In the one probe process (kubevpc.probeloop): a host-network pod's probes and its node's are
    made in the node's namespace and are one group, whose source ports are handed out from one
    range, so they cannot collide; an ordinary pod's in its own. Spread by the destination's node."""
    import json

    from kubevpc.lab import probing
    from kubevpc.lab.lab import Probe
    lab = _probing_lab()
    requests = []

    def run(cmd, input, **kw):
        requests.append((cmd, json.loads(input)))
        return SimpleNamespace(returncode=0, stderr="", stdout=json.dumps(
            [_answered(p["key"]) for p in reversed(requests[-1][1]["probes"])]))
    monkeypatch.delenv(probing.PROBE_ENV, raising=False)
    monkeypatch.setattr(probing.subprocess, "run", run)
    got = lab.probe([Probe(*p) for p in HOSTNET_PROBES])
    assert [r.key for r in got] == ["0", "1", "2", "3"], "in input order, whatever order they come in"
    (cmd, req), = requests
    assert cmd[1:] == ["-S", "-m", "kubevpc.probeloop"]
    assert [(p["netns"], p["group"]) for p in req["probes"]] == [("/proc/2/ns/net", "ecs/node-2")] * 3 + [
        ("/proc/1/ns/net", "pod/default/client-1")]
    assert req["probes"][3]["target"] == f"tcp:{NODE_IP['node-2']}:9090", "a host-network pod's address is its node's"
    assert req["ports"][1] - req["ports"][0] + 1 == 3 + 16, "a block for the largest group, as before"
    assert [p["spread"] for p in req["probes"]] == ["svc/web", f"node/{lab.plan.host('pod/default/web-0').node}",
                                                   "10.244.0.3", "node/node-2"]


def test_per_source_probes_run_one_process_a_namespace(monkeypatch):
    """KUBEVPC_PROBE=per-source: one probe process a namespace, as before issue 21."""
    import json

    from kubevpc.lab import probing
    from kubevpc.lab.lab import Probe
    lab = _probing_lab()
    calls = []

    class Proc:
        returncode = 0

        def __init__(self, cmd, **kw):
            calls.append(cmd)
            self.targets = [a for a in cmd if "=" in a and a.split("=")[0].isdigit()]

        def communicate(self, timeout=None):
            return json.dumps([_answered(t.split("=")[0]) for t in self.targets]), ""
    monkeypatch.setenv(probing.PROBE_ENV, "per-source")
    monkeypatch.setattr(probing.subprocess, "Popen", Proc)
    got = lab.probe([Probe(*p) for p in HOSTNET_PROBES])
    assert [r.key for r in got] == ["0", "1", "2", "3"]
    by_pid = {c[2]: [a.split("=")[0] for a in c if "=" in a and a.split("=")[0].isdigit()] for c in calls}
    assert by_pid == {"2": ["0", "1", "2"], "1": ["3"]}
    assert f"3=tcp:{NODE_IP['node-2']}:9090" in calls[1], "a host-network pod's address is its node's"
