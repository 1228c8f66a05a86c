"""The internet zone, EIPs and NAT gateways: validation with file, line and value, the addresses
planned, and the flows compiled for the edge and the internet router (tests/e2e/data/internet.yaml)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from controller.flows import CT_NEW, Ct
from controller.pipeline import EDGE
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

from .problems import check, line_of, the
from .test_validation import refuse

SCENARIO = Path(__file__).parent.parent / "e2e" / "data" / "internet.yaml"


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def plan(mode: str = "vxlan"):
    return make_plan(load(str(SCENARIO), mode=mode), "kv")


# ------------------------------------------------------------------------------------ planning
@pytest.mark.parametrize("mode", ["vxlan", "vpc-route", "eni"])
def test_the_scenario_plans_its_public_addresses(mode):
    p = plan(mode)
    assert {e.name: (e.ip, e.bound, e.target) for e in p.eips} == {
        "eip-ngw": ("198.19.0.1", "natgw", "ngw"),                 # the lowest free address
        "eip-bastion": ("198.19.0.10", "instance", "bastion"),     # as declared
        "slb-default-web-inet": ("198.19.0.2", "slb", "default/web-inet")}
    assert p.slbs[0].public_ip == "198.19.0.2"
    (gw,) = p.nat_gateways
    assert [(s.what, s.public_ip) for s in gw.snat] == [("instance ecs-private", "198.19.0.1"),
                                                         ("vSwitch vsw-a", "198.19.0.1")]   # most specific first
    assert [h.ip for h in p.internet_hosts] == ["198.18.0.2", "198.18.0.3"]
    assert {b.role for b in p.bridges} >= {"edge", "internet"}
    assert next(r for r in p.vpcs[0].routes if r.kind == "natgw").next_hop == "ngw"


def test_public_ranges_must_be_reserved_for_documentation_or_benchmarks(tmp_path):
    d = data()
    d["cloud"]["internet"]["cidr"] = "8.8.8.0/24"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.internet.cidr"), f, "8.8.8.0/24", line_of(text, "8.8.8.0/24"),
          "198.18.0.0/15", "no emulated address is a real one")


def test_public_range_must_not_overlap_the_vpc_or_the_pods(tmp_path):
    d = data()
    d["cloud"]["internet"]["publicCIDR"] = "198.18.0.0/24"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.internet.publicCIDR"), f, "198.18.0.0/24", line_of(text, "publicCIDR"),
          "overlaps internet.cidr")


def test_eip_of_an_unknown_instance(tmp_path):
    d = data()
    d["cloud"]["eips"][1]["instance"] = "nobody"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.eips[1].instance"), f, "nobody", line_of(text, "nobody"), "no such ECS instance")


def test_eip_outside_the_public_range(tmp_path):
    d = data()
    d["cloud"]["eips"][1]["ip"] = "198.18.0.50"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.eips[1].ip"), f, "198.18.0.50", line_of(text, "198.18.0.50"), "publicCIDR")


def test_nat_gateway_without_eip(tmp_path):
    d = data()
    d["cloud"]["eips"] = d["cloud"]["eips"][1:]
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.natGateways[0]"), f, "ngw", line_of(text, "- name: ngw"), "has no EIP")


def test_snat_entry_needs_exactly_one_source(tmp_path):
    d = data()
    d["cloud"]["natGateways"][0]["snat"][0]["instance"] = "bastion"
    problems, f, text = refuse(tmp_path, d)
    assert "exactly one of vswitch, instance, cidr" in the(problems, "cloud.natGateways[0].snat[0]").expected


def test_nat_gateway_needs_the_internet(tmp_path):
    d = data()
    del d["cloud"]["internet"]
    d["manifests"] = d["manifests"][:2]          # no internet-facing SLB either
    problems, f, text = refuse(tmp_path, d)
    assert "cloud.internet" in the(problems, "cloud.natGateways").expected


def test_internet_facing_slb_needs_the_internet(tmp_path):
    d = data()
    for key in ("internet", "natGateways", "eips"):
        del d["cloud"][key]
    d["cloud"]["vpcs"][0]["routeTable"] = {"routes": []}
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, "manifests[2].metadata.annotations.service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type")
    assert "cloud.internet" in p.expected


def test_route_to_a_nat_gateway_of_another_vpc(tmp_path):
    d = data()
    d["cloud"]["vpcs"].append({"name": "vpc-2", "cidr": "10.1.0.0/16", "vswitches": [{"name": "vsw-z", "cidr": "10.1.0.0/24"}],
                               "routeTable": {"routes": [{"destination": "0.0.0.0/0", "nextHop": "ngw"}]}})
    problems, f, text = refuse(tmp_path, d)
    assert "NAT gateway of VPC vpc" in the(problems, "cloud.vpcs[1].routeTable.routes[0].nextHop").expected


def test_a_route_inside_a_vswitch_is_refused_a_broader_one_is_not(tmp_path):
    d = data()
    d["cloud"]["vpcs"][0]["routeTable"]["routes"].append({"destination": "192.168.1.0/25", "nextHop": "bastion"})
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.vpcs[0].routeTable.routes[1].destination"), f, "192.168.1.0/25",
          line_of(text, "192.168.1.0/25"), "inside a vSwitch CIDR")
    assert not [p for p in problems if p.path == "cloud.vpcs[0].routeTable.routes[0].destination"]


# --------------------------------------------------------------------------------------- flows
def edge(mode: str = "vxlan"):
    p = plan(mode)
    return p, compile_plan(p)[p.edge("vpc").bridge].flows


def nat_actions(flows, kind: str) -> dict[tuple, str]:
    out = {}
    for f in flows:
        for a in f.actions:
            if isinstance(a, Ct) and a.nat and a.nat.kind == kind:
                out[f.match] = a.nat.ip
    return out


def test_edge_maps_the_eip_both_ways_and_snats_only_its_entries():
    p, flows = edge()
    src = nat_actions(flows, "src")
    by_source = {dict(m).get("ipv4_src"): ip for m, ip in src.items()}
    assert by_source == {"192.168.2.1": "198.19.0.10",             # bastion's EIP
                         "192.168.2.2": "198.19.0.1",              # instance SNAT entry
                         ("192.168.1.0", "255.255.255.0"): "198.19.0.1"}   # vSwitch SNAT entry
    dst = {dict(m).get("ipv4_dst"): ip for m, ip in nat_actions(flows, "dst").items()}
    assert dst == {"198.19.0.10": "192.168.2.1", "198.19.0.2": p.slbs[0].vip,
                   "198.19.0.1": "192.168.2.2"}                # DNAT entry private-web: port 81 to ecs-private


def test_nothing_new_from_the_internet_passes_the_edge_untranslated():
    """From the internet (port 2), a flow that lets a packet on without a DNAT must require -new."""
    _, flows = edge()
    t = EDGE.table("translate")
    for f in flows:
        m = dict(f.match)
        if f.table != t or m.get("in_port") != 2 or not f.actions:
            continue
        dnat = any(isinstance(a, Ct) and a.nat and a.nat.kind == "dst" for a in f.actions)
        value, mask = m["ct_state"]
        assert dnat or (mask & CT_NEW and not value & CT_NEW), f.to_ofctl()
    lowest = min((f for f in flows if f.table == t), key=lambda f: f.priority)
    assert lowest.priority == 0 and lowest.actions == ()


def test_only_public_sources_leave_the_edge():
    p, flows = edge()
    out = [f for f in flows if f.table == EDGE.table("to_internet") and f.actions]
    assert sorted(dict(f.match)["ipv4_src"] for f in out) == ["198.19.0.1", "198.19.0.10", "198.19.0.2"]
