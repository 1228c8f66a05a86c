"""Address planning: who gets which address, MAC, interface, port and route.

Expected values are written out by hand (or computed from first principles with ipaddress),
never taken from kubevpc.planning helpers, so a planner regression cannot agree with itself.
"""
from __future__ import annotations

import copy
import ipaddress
from collections import Counter
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan, resolve_endpoint

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.yaml"
MODES = ("vxlan", "vpc-route", "eni")
IFNAMSIZ = 15


# ------------------------------------------------------------------------------------- helpers
def base() -> dict:
    return copy.deepcopy(yaml.safe_load((DATA / "small.yaml").read_text()))


def plan_of(tmp_path: Path, data: dict, mode: str | None = None, run: str = "t") -> Plan:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path), mode=mode), run)


def default_plan(mode: str, run: str = "kv") -> Plan:
    return make_plan(load(str(DEFAULT), mode=mode), run)


def deployment(name: str, replicas: int, node: str | None = None, namespace: str = "default") -> dict:
    spec: dict = {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def pod(name: str, node: str | None = None, namespace: str = "default") -> dict:
    spec: dict = {"containers": [{"name": "c"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def ip_of(plan: Plan, key: str) -> str:
    return plan.host(key).ip


def expected_mac(ip: str) -> str:
    return "0a:58:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def interface_names(plan: Plan) -> list[str]:
    """Every kernel interface the run creates in the root namespace: bridges and their ports
    (veths of ECS instances and pods, patch ports, VXLAN devices)."""
    ports = [p.name for b in plan.bridges for p in b.ports]
    assert {h.veth for h in plan.hosts} <= set(ports), "a host's veth is on no bridge"
    assert {t.ifname for n in plan.nodes for t in n.tunnels} <= set(ports), "a VXLAN device is on no bridge"
    return [b.name for b in plan.bridges] + ports


# ---------------------------------------------------------------------------------- ECS addresses
def test_instances_take_the_first_usable_addresses_skipping_fixed_ones(tmp_path):
    data = base()
    data["cloud"]["instances"][2]["ip"] = "10.0.1.1"          # ecs-1 holds the first usable address
    data["cloud"]["instances"] += [{"name": "ecs-2", "vswitch": "vsw-a"},
                                   {"name": "ecs-3", "vswitch": "vsw-a", "ip": "10.0.1.3"},
                                   {"name": "ecs-4", "vswitch": "vsw-a"}]
    plan = plan_of(tmp_path, data)
    assert {k: ip_of(plan, f"ecs/{k}") for k in ("node-1", "ecs-1", "ecs-2", "ecs-3", "ecs-4", "node-2")} == {
        "node-1": "10.0.1.2", "ecs-1": "10.0.1.1", "ecs-2": "10.0.1.4", "ecs-3": "10.0.1.3", "ecs-4": "10.0.1.5",
        "node-2": "10.0.2.1"}


def test_default_scenario_instance_addresses():
    plan = default_plan("vxlan")
    assert [(h.name, h.ip, h.prefixlen) for h in plan.instances] == [
        ("node-1", "192.168.1.1", 24), ("node-2", "192.168.1.2", 24), ("node-3", "192.168.2.1", 24),
        ("ecs-db", "192.168.2.50", 24), ("ecs-other", "172.16.1.1", 24)]


def test_a_29_vswitch_holds_exactly_four_instances(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"].append({"name": "vsw-s", "cidr": "10.0.3.0/29"})
    data["cloud"]["instances"] += [{"name": f"vm-{k}", "vswitch": "vsw-s"} for k in range(4)]
    plan = plan_of(tmp_path, data)
    assert [ip_of(plan, f"ecs/vm-{k}") for k in range(4)] == ["10.0.3.1", "10.0.3.2", "10.0.3.3", "10.0.3.4"]


@pytest.mark.parametrize("cidr, gateway", [("10.0.2.0/24", "10.0.2.253"), ("10.0.2.0/29", "10.0.2.5"),
                                           ("10.0.0.0/22", "10.0.3.253"), ("10.0.2.128/25", "10.0.2.253")])
def test_vswitch_gateway_is_the_third_from_last_address(tmp_path, cidr, gateway):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"][1]["cidr"] = cidr
    if cidr == "10.0.0.0/22":   # would hold vsw-a's 10.0.1.0/24: move vsw-a away
        data["cloud"]["vpcs"][0]["vswitches"][0]["cidr"] = "10.0.8.0/24"
    plan = plan_of(tmp_path, data)
    v = plan.vswitch("vsw-b")
    assert (v.cidr, v.gateway, v.gateway_mac) == (cidr, gateway, expected_mac(gateway))
    # ECS on it use that gateway
    assert plan.host("ecs/node-2").gateway == gateway
    assert plan.host("ecs/node-2").gateway_mac == expected_mac(gateway)


# --------------------------------------------------------------------------------- pod addresses
@pytest.mark.parametrize("mask, cidrs", [(24, ["172.20.0.0/24", "172.20.1.0/24", "172.20.2.0/24"]),
                                         (26, ["172.20.0.0/26", "172.20.0.64/26", "172.20.0.128/26"])])
@pytest.mark.parametrize("mode", ["vxlan", "vpc-route"])
def test_node_pod_cidrs_are_handed_out_in_cluster_node_order(tmp_path, mode, mask, cidrs):
    data = base()
    data["cluster"].update(nodes=["node-2", "ecs-1", "node-1"], nodeCIDRMaskSize=mask)
    plan = plan_of(tmp_path, data, mode=mode)
    assert [(n.name, n.pod_cidr) for n in plan.nodes] == list(zip(["node-2", "ecs-1", "node-1"], cidrs))
    for n in plan.nodes:
        gw = str(ipaddress.IPv4Network(n.pod_cidr).network_address + 1)
        assert (n.gateway, n.gateway_mac) == (gw, expected_mac(gw))


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route"])
def test_pod_addresses_start_at_two_with_gateway_one(tmp_path, mode):
    data = base()
    data["manifests"] = [deployment("web", 4)]
    plan = plan_of(tmp_path, data, mode=mode)
    got = {(p.name, p.node): (p.ip, p.prefixlen, p.gateway, p.gateway_mac) for p in plan.pods}
    assert got == {
        ("web-0", "node-1"): ("172.20.0.2", 24, "172.20.0.1", expected_mac("172.20.0.1")),
        ("web-1", "node-2"): ("172.20.1.2", 24, "172.20.1.1", expected_mac("172.20.1.1")),
        ("web-2", "node-1"): ("172.20.0.3", 24, "172.20.0.1", expected_mac("172.20.0.1")),
        ("web-3", "node-2"): ("172.20.1.3", 24, "172.20.1.1", expected_mac("172.20.1.1")),
    }
    assert all(p.vswitch == "" and p.security_groups == () for p in plan.pods)


def test_default_scenario_pods_in_vxlan():
    plan = default_plan("vxlan")
    assert [(p.key, p.node, p.ip) for p in plan.pods] == [
        ("pod/default/web-0", "node-1", "10.244.0.2"), ("pod/default/web-1", "node-2", "10.244.1.2"),
        ("pod/default/web-2", "node-3", "10.244.2.2"), ("pod/shop/client", "node-1", "10.244.0.3"),
        ("pod/kube-system/kube-dns-0", "node-1", "10.244.0.4")]      # the cluster DNS comes last


def test_eni_pods_take_addresses_of_their_nodes_vswitch(tmp_path):
    data = base()
    data["manifests"] = [deployment("web", 3)]
    plan = plan_of(tmp_path, data, mode="eni")
    # instances first (node-1 .1, ecs-1 .2 on vsw-a; node-2 .1 on vsw-b), then pods in order
    got = {p.name: (p.node, p.ip, p.prefixlen, p.gateway, p.vswitch, p.security_groups) for p in plan.pods}
    assert got == {"web-0": ("node-1", "10.0.1.3", 24, "10.0.1.253", "vsw-a", ("sg-a",)),
                   "web-1": ("node-2", "10.0.2.2", 24, "10.0.2.253", "vsw-b", ("sg-a",)),
                   "web-2": ("node-1", "10.0.1.4", 24, "10.0.1.253", "vsw-a", ("sg-a",))}
    assert all(n.pod_cidr == "" and n.gateway == "" and n.tunnels == () for n in plan.nodes)
    # eni pods are attachments of their vSwitch, behind their node's uplink
    att = {a.owner: a for a in plan.attachments}
    assert att["pod/default/web-0"].ofport == plan.node("node-1").uplinks[0].vswitch_ofport
    assert att["pod/default/web-1"].vswitch == "vsw-b"


def test_eni_pods_use_the_eni_vswitch_of_their_zone(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["vswitches"].append({"name": "vsw-pods", "zone": "z1", "cidr": "10.0.8.0/24"})
    data["cluster"]["eni"] = {"vswitches": ["vsw-pods"], "securityGroups": []}
    data["manifests"] = [deployment("web", 2)]
    plan = plan_of(tmp_path, data, mode="eni")
    web0, web1 = plan.host("pod/default/web-0"), plan.host("pod/default/web-1")
    assert (web0.node, web0.vswitch, web0.ip, web0.gateway) == ("node-1", "vsw-pods", "10.0.8.1", "10.0.8.253")
    assert (web1.node, web1.vswitch, web1.ip) == ("node-2", "vsw-b", "10.0.2.2")     # zone z2: its own vSwitch
    assert web0.security_groups == () and web1.security_groups == ()
    assert [u.vswitch for u in plan.node("node-1").uplinks] == ["vsw-a", "vsw-pods"]
    assert [u.vswitch for u in plan.node("node-2").uplinks] == ["vsw-b"]


@pytest.mark.parametrize("mode, underlay, pod_mtu", [("vxlan", 1500, 1450), ("vxlan", 9000, 8950),
                                                     ("vpc-route", 9000, 9000), ("eni", 9000, 9000)])
def test_pod_mtu(tmp_path, mode, underlay, pod_mtu):
    data = base()
    data["cluster"]["underlayMTU"] = underlay
    plan = plan_of(tmp_path, data, mode=mode)
    assert plan.cluster.pod_mtu == pod_mtu and plan.cluster.underlay_mtu == underlay
    assert [p.mtu for p in plan.pods] == [pod_mtu]
    assert plan.host("ecs/node-1").mtu == underlay


# ---------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("run", ["k", "kv", "abcdef"])
def test_interface_names_fit_and_are_unique(mode, run):
    plan = default_plan(mode, run)
    names = interface_names(plan)
    assert names, "no interfaces?"
    too_long = [n for n in names if len(n) > IFNAMSIZ]
    assert not too_long
    dup = [n for n, c in Counter(names).items() if c > 1]
    assert not dup
    assert all(n.startswith(run) for n in names)
    assert all(h.veth in names for h in plan.hosts)


def test_interface_names_fit_with_many_objects(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["cidr"] = "10.0.0.0/8"
    data["cloud"]["vpcs"][0]["vswitches"] += [{"name": f"vsw-{k}", "cidr": f"10.{k + 10}.0.0/16"} for k in range(12)]
    data["cloud"]["instances"] += [{"name": f"vm-{k}", "vswitch": f"vsw-{k % 12}"} for k in range(120)]
    data["cluster"]["nodes"] = ["node-1", "node-2"] + [f"vm-{k}" for k in range(12)]
    data["manifests"] = [deployment("web", 150)]
    plan = plan_of(tmp_path, data, run="abcdef")
    names = interface_names(plan)
    assert max(map(len, names)) <= IFNAMSIZ
    assert len(set(names)) == len(names)


def test_netns_names_are_unique(tmp_path):
    data = base()
    data["manifests"] = [namespace("a-b"), namespace("a"), pod("c", namespace="a-b"), pod("b-c", namespace="a")]
    try:
        plan = plan_of(tmp_path, data)
    except ScenarioError as exc:      # refusing the pair with a clear problem is a fix too
        assert any("b-c" in str(p.value) or "netns" in p.expected for p in exc.problems)
        return
    netns = [h.netns for h in plan.hosts]
    assert len(set(netns)) == len(netns), netns


@pytest.mark.parametrize("mode", MODES)
def test_openflow_ports_unique_per_bridge(mode):
    plan = default_plan(mode)
    for b in plan.bridges:
        numbers = [p.ofport for p in b.ports]
        assert len(set(numbers)) == len(numbers), (b.name, numbers)
        assert all(n > 0 for n in numbers)
        names = [p.name for p in b.ports]
        assert len(set(names)) == len(names), (b.name, names)
    # each host sits on its bridge at the port the plan gives it
    for h in plan.hosts:
        port = next(p for p in plan.bridge(h.bridge).ports if p.name == h.veth)
        assert (port.ofport, port.kind, port.peer) == (h.ofport, "veth", h.key)


@pytest.mark.parametrize("mode", MODES)
def test_bridges_and_patch_ports_pair_up(mode):
    plan = default_plan(mode)
    assert Counter(b.role for b in plan.bridges) == {"vrouter": 2, "vswitch": 3, "node": 3}
    assert len({b.dpid for b in plan.bridges}) == len(plan.bridges)
    assert len({b.zone for b in plan.bridges}) == len(plan.bridges)
    for kind in ("patch", "link"):          # patch: vSwitch-vRouter, node uplinks; link: node uplinks (veth pairs)
        pairs = {p.name: p.peer for b in plan.bridges for p in b.ports if p.kind == kind}
        assert pairs and all(pairs[peer] == name for name, peer in pairs.items())
    assert {p.kind for b in plan.bridges if b.role == "node" for p in b.ports} - {"veth", "vxlan"} == {"link", "patch"}
    # every uplink has a patch pair beside its veth pair, between the same two bridges
    bridge_of = {p.name: b.name for b in plan.bridges for p in b.ports}
    for n in plan.nodes:
        for u in n.uplinks:
            assert bridge_of[u.port] == bridge_of[u.patch] == n.bridge
            assert bridge_of[u.peer] == bridge_of[u.patch_peer] == plan.vswitch(u.vswitch).bridge
            assert u.patch_ofport != u.ofport and u.vswitch_patch_ofport != u.vswitch_ofport
    tunnels = [p for b in plan.bridges for p in b.ports if p.kind == "vxlan"]
    assert len(tunnels) == (3 if mode == "vxlan" else 0)
    assert all(p.ofport == 100 for p in tunnels)


# --------------------------------------------------------------------------------------- routes
def test_vpc_route_adds_one_pod_route_per_node():
    plan = default_plan("vpc-route")
    prod = next(v for v in plan.vpcs if v.name == "vpc-prod")
    pod_routes = [(r.destination, r.next_hop) for r in prod.routes if r.kind == "pod"]
    assert pod_routes == [("10.244.0.0/24", "node-1"), ("10.244.1.0/24", "node-2"), ("10.244.2.0/24", "node-3")]
    assert [(r.destination, r.kind) for r in prod.routes if r.kind == "system"] == [
        ("192.168.1.0/24", "system"), ("192.168.2.0/24", "system")]
    other = next(v for v in plan.vpcs if v.name == "vpc-other")
    assert [r.kind for r in other.routes] == ["system"]


@pytest.mark.parametrize("mode", ["vxlan", "eni"])
def test_no_pod_routes_outside_vpc_route_mode(mode):
    plan = default_plan(mode)
    assert all(r.kind == "system" for v in plan.vpcs for r in v.routes)


def test_custom_routes_are_kept_in_order(tmp_path):
    data = base()
    data["cloud"]["vpcs"][0]["routeTable"] = {"routes": [
        {"destination": "172.20.0.0/24", "nextHop": "node-1", "description": "pods of node-1"},
        {"destination": "192.168.0.0/16", "nextHop": "ecs-1"}]}
    plan = plan_of(tmp_path, data)
    assert [(r.destination, r.kind, r.next_hop) for r in plan.vpcs[0].routes] == [
        ("10.0.1.0/24", "system", ""), ("10.0.2.0/24", "system", ""),
        ("172.20.0.0/24", "custom", "node-1"), ("192.168.0.0/16", "custom", "ecs-1")]
    # the destination sits behind its next hop's port, under that instance's security groups
    att = {a.owner: a for a in plan.attachments}
    assert att["route/172.20.0.0/24"].ofport == att["ecs/node-1"].ofport
    assert att["route/172.20.0.0/24"].security_groups == ("sg-a",)


# ------------------------------------------------------------------------------------ placement
def test_deployment_replicas_round_robin_over_nodes(tmp_path):
    data = base()
    data["cluster"]["nodes"] = ["node-1", "node-2", "ecs-1"]
    data["manifests"] = [deployment("web", 5), deployment("api", 2)]
    plan = plan_of(tmp_path, data)
    assert [(p.name, p.node) for p in plan.pods] == [
        ("web-0", "node-1"), ("web-1", "node-2"), ("web-2", "ecs-1"), ("web-3", "node-1"), ("web-4", "node-2"),
        ("api-0", "node-1"), ("api-1", "node-2")]
    assert plan.host("pod/default/web-3").labels == {"app": "web", "pod-template-hash": "kubevpc"}
    # ofports on a node bridge count that node's pods
    assert [plan.host(f"pod/default/web-{k}").ofport for k in (0, 3)] == [1000, 1001]
    assert plan.host("pod/default/api-0").ofport == 1002


def test_node_name_is_honoured(tmp_path):
    data = base()
    data["manifests"] = [deployment("web", 3, node="node-2"), pod("solo", node="node-2")]
    plan = plan_of(tmp_path, data)
    assert {p.name: p.node for p in plan.pods} == {"web-0": "node-2", "web-1": "node-2", "web-2": "node-2",
                                                  "solo": "node-2"}
    assert [p.ip for p in plan.pods] == ["172.20.1.2", "172.20.1.3", "172.20.1.4", "172.20.1.5"]


@pytest.mark.parametrize("mode", MODES)
def test_planning_is_deterministic(mode):
    assert default_plan(mode) == default_plan(mode)
    assert default_plan(mode).model_dump_json() == default_plan(mode).model_dump_json()


def test_zero_replicas_makes_no_pods(tmp_path):
    data = base()
    data["manifests"] = [deployment("web", 0)]
    assert plan_of(tmp_path, data).pods == ()


def test_container_ports_become_servers():
    plan = default_plan("vxlan")
    web = plan.host("pod/default/web-1")
    assert [(s.port, s.protocol, s.name) for s in web.servers] == [(8080, "TCP", "http"), (53, "UDP", "dns")]
    assert [(s.port, s.protocol) for s in plan.host("ecs/ecs-db").servers] == [(5432, "TCP"), (6379, "TCP")]


# ----------------------------------------------------------------------------------------- MACs
@pytest.mark.parametrize("mode", MODES)
def test_macs_are_0a58_and_the_address(mode):
    plan = default_plan(mode)
    for h in plan.hosts:
        assert h.mac == expected_mac(h.ip), h.key
        assert h.gateway_mac == expected_mac(h.gateway), h.key
    for v in plan.vswitches:
        assert v.gateway_mac == expected_mac(v.gateway)
    for a in plan.attachments:
        if "/" not in a.ip and not a.owner.startswith("route/"):
            assert a.mac == expected_mac(a.ip)
    assert plan.host("ecs/ecs-db").mac == "0a:58:c0:a8:02:32"
    # unique within each vSwitch's L2
    for v in plan.vswitches:
        macs = [a.mac for a in plan.attachments if a.vswitch == v.name and not a.owner.startswith("route/")]
        assert len(set(macs)) == len(macs)


# ----------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("mode", MODES)
def test_plan_round_trips_through_json(mode):
    plan = default_plan(mode)
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert again.host("pod/shop/client").labels == {"app": "client"}
    assert again.expect == plan.expect and again.expect


# ------------------------------------------------------------------------------------ endpoints
def test_resolve_endpoint_forms():
    plan = default_plan("vxlan")
    assert resolve_endpoint(plan, "pod/web-0").key == "pod/default/web-0"
    assert resolve_endpoint(plan, "pod/shop/client").key == "pod/shop/client"
    assert resolve_endpoint(plan, "node/node-2").key == "ecs/node-2"
    assert resolve_endpoint(plan, "ecs/ecs-db").ip == "192.168.2.50"
    with pytest.raises(KeyError):
        resolve_endpoint(plan, "pod/client")        # not in namespace default
