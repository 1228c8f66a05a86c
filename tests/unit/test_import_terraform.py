"""`kubevpc import terraform`: each alicloud resource type mapped to the scenario, what it cannot
map listed with the reason, what it invents said, and the scenario always valid. Documents are
written as `terraform show -json` writes them (tests/unit/tfdocs.py); expected values by hand."""
from __future__ import annotations

from kubevpc.importers.terraform import validate

from .tfdocs import (
    NET,
    VPC,
    VSW_A,
    group,
    imported,
    instance,
    invented,
    plan,
    r,
    ref,
    rule,
    skipped,
)


def cloud(imp) -> dict:
    return imp.data["cloud"]


def groups(imp) -> dict:
    return {g["name"]: g for g in cloud(imp).get("securityGroups", [])}


def instances(imp) -> dict:
    return {i["name"]: i for i in cloud(imp).get("instances", [])}


def test_every_scenario_written_validates(tmp_path):
    imp = imported(tmp_path, plan(*NET, group("web"), instance("web")))
    assert validate("x", imp.data) == []


# ------------------------------------------------------------------------------ VPC, vSwitch
def test_vpc_and_vswitches(tmp_path):
    imp = imported(tmp_path, plan(*NET))
    (vpc,) = cloud(imp)["vpcs"]
    assert vpc == {"name": "vpc", "cidr": "192.168.0.0/16", "vswitches": [
        {"name": "vsw-a", "zone": "zone-i", "cidr": "192.168.1.0/24"},
        {"name": "vsw-b", "zone": "zone-j", "cidr": "192.168.2.0/24"}]}
    assert "vswitches:\n        - {name: vsw-a, zone: zone-i, cidr: 192.168.1.0/24}  # alicloud_vswitch.a\n" in imp.text


def test_vpc_ipv6_is_a_documentation_block_and_vswitches_take_their_64(tmp_path):
    vpc = r("alicloud_vpc", "main", {"cidr_block": "10.0.0.0/16", "enable_ipv6": True, "ipv6_cidr_block": "2408:4002:1::/56"})
    vsw = r("alicloud_vswitch", "a", {"cidr_block": "10.0.1.0/24", "zone_id": "z", "enable_ipv6": True,
                                      "ipv6_cidr_block_mask": 3}, vpc_id=ref("alicloud_vpc.main"))
    imp = imported(tmp_path, plan(vpc, vsw))
    (got,) = cloud(imp)["vpcs"]
    assert (got["name"], got["ipv6Cidr"], got["vswitches"][0]["ipv6Cidr"]) == ("main", "2001:db8:1::/56", "2001:db8:1:3::/64")
    assert "2408:4002:1::/56" not in imp.text
    assert "a real one" in invented(imp)["alicloud_vpc.main"]


def test_a_vpc_without_vswitch_is_left_out_and_what_is_in_it(tmp_path):
    other = r("alicloud_vpc", "empty", {"cidr_block": "10.9.0.0/16"})
    sg = r("alicloud_security_group", "lost", {"name": "lost"}, vpc_id=ref("alicloud_vpc.empty"))
    imp = imported(tmp_path, plan(*NET, other, sg))
    why = skipped(imp)
    assert why["alicloud_vpc.empty"] == "no vSwitch of it is imported; a kubevpc VPC needs at least one"
    assert why["alicloud_security_group.lost"] == "vpc_id names alicloud_vpc.empty, which is not imported"


def test_a_vswitch_without_zone_gets_one_and_says_so(tmp_path):
    vsw = r("alicloud_vswitch", "a", {"cidr_block": "192.168.1.0/24"}, vpc_id=ref("alicloud_vpc.main"))
    imp = imported(tmp_path, plan(VPC, vsw))
    assert cloud(imp)["vpcs"][0]["vswitches"][0]["zone"] == "zone-a"
    assert invented(imp)["alicloud_vswitch.a"] == "zone zone-a: no zone_id"


# ---------------------------------------------------------------------------- security groups
def test_security_group_rules(tmp_path):
    rules = [
        rule("http", "web", {"description": "HTTP"}),
        rule("range", "web", {"port_range": "8000/8080", "policy": "drop", "priority": 10}),
        rule("every_port", "web", {"ip_protocol": "udp", "port_range": "1/65535", "cidr_ip": "10.0.0.0/8"}),
        rule("icmp", "web", {"ip_protocol": "icmp", "port_range": "-1/-1", "cidr_ip": "0.0.0.0/0"}),
        rule("all_out", "web", {"type": "egress", "ip_protocol": "all", "port_range": "-1/-1", "cidr_ip": "10.1.0.0/16",
                                "nic_type": "internet"}),
        rule("from_ops", "web", {"port_range": "22/22"}, source_security_group_id=ref("alicloud_security_group.ops")),
        rule("v6", "web", {"ip_protocol": "icmpv6", "port_range": "-1/-1", "ipv6_cidr_ip": "2001:db8::/32"}),
    ]
    rules[0]["values"]["cidr_ip"] = "192.168.0.0/16"
    rules[1]["values"]["cidr_ip"] = "192.168.9.9"
    imp = imported(tmp_path, plan(*NET, group("web"), group("ops"), *rules))
    assert groups(imp)["web"]["rules"] == [
        {"direction": "ingress", "protocol": "tcp", "ports": 80, "cidr": "192.168.0.0/16", "policy": "accept",
         "priority": 1, "description": "HTTP"},
        {"direction": "ingress", "protocol": "tcp", "ports": "8000-8080", "cidr": "192.168.9.9/32", "policy": "drop",
         "priority": 10},
        {"direction": "ingress", "protocol": "udp", "cidr": "10.0.0.0/8", "policy": "accept", "priority": 1},
        {"direction": "ingress", "protocol": "icmp", "cidr": "0.0.0.0/0", "policy": "accept", "priority": 1},
        {"direction": "egress", "protocol": "all", "cidr": "10.1.0.0/16", "policy": "accept", "priority": 1},
        {"direction": "ingress", "protocol": "tcp", "ports": 22, "group": "ops", "policy": "accept", "priority": 1},
        {"direction": "ingress", "protocol": "icmp", "ipv6Cidr": "2001:db8::/32", "policy": "accept", "priority": 1}]
    assert skipped(imp) == {}


def test_a_cidr_wins_over_a_group_and_host_bits_are_said(tmp_path):
    both = rule("both", "web", {"cidr_ip": "10.1.2.3/16"}, source_security_group_id=ref("alicloud_security_group.ops"))
    imp = imported(tmp_path, plan(*NET, group("web"), group("ops"), both))
    assert groups(imp)["web"]["rules"][0]["cidr"] == "10.1.0.0/16"
    assert invented(imp)["alicloud_security_group_rule.both"] == "cidr 10.1.0.0/16: cidr_ip 10.1.2.3/16 has host bits set"


def test_rules_it_cannot_express_are_listed(tmp_path):
    bad = [rule("gre", "web", {"ip_protocol": "gre", "port_range": "-1/-1", "cidr_ip": "0.0.0.0/0"}),
           rule("ports", "web", {"port_range": "90/80", "cidr_ip": "0.0.0.0/0"}),
           rule("prio", "web", {"priority": 0, "cidr_ip": "0.0.0.0/0"}),
           rule("policy", "web", {"policy": "reject", "cidr_ip": "0.0.0.0/0"}),
           rule("prefix", "web", {"prefix_list_id": "pl-1"}),
           rule("real6", "web", {"ipv6_cidr_ip": "::/0"}),
           rule("nopeer", "web", {}),
           rule("v6peer", "web", {"ip_protocol": "icmpv6", "cidr_ip": "0.0.0.0/0"}),
           rule("dir", "web", {"type": "both", "cidr_ip": "0.0.0.0/0"}),
           rule("other_vpc", "web", {}, source_security_group_id=ref("alicloud_security_group.far"))]
    far_vpc = r("alicloud_vpc", "far", {"cidr_block": "10.8.0.0/16"})
    far_vsw = r("alicloud_vswitch", "far", {"cidr_block": "10.8.1.0/24", "zone_id": "z"}, vpc_id=ref("alicloud_vpc.far"))
    far = r("alicloud_security_group", "far", {"name": "far"}, vpc_id=ref("alicloud_vpc.far"))
    imp = imported(tmp_path, plan(*NET, far_vpc, far_vsw, group("web"), far, *bad))
    why = {k.removeprefix("alicloud_security_group_rule."): v for k, v in skipped(imp).items()}
    assert why == {
        "gre": "ip_protocol 'gre': not emulated; kubevpc's rules are for tcp, udp, icmp, icmpv6 and all",
        "ports": "port_range '90/80': expected FIRST/LAST, 1 <= FIRST <= LAST <= 65535",
        "prio": "policy 'accept' and priority 0: expected accept or drop, and a priority from 1 to 100",
        "policy": "policy 'reject' and priority 1: expected accept or drop, and a priority from 1 to 100",
        "prefix": "prefix_list_id: prefix lists are not emulated; write the CIDR blocks as rules",
        "real6": "ipv6_cidr_ip '::/0': kubevpc's IPv6 peers are inside 2001:db8::/32 or fd00::/8, the only IPv6 it emulates",
        "nopeer": "no peer: expected cidr_ip, ipv6_cidr_ip or source_security_group_id",
        "v6peer": "ip_protocol icmpv6 without ipv6_cidr_ip: expected an IPv6 peer",
        "dir": "type 'both': expected ingress or egress",
        "other_vpc": "source_security_group_id names alicloud_security_group.far, a group of another VPC; kubevpc's "
                     "rules name groups of their own VPC"}
    assert groups(imp)["web"].get("rules", []) == []


def test_group_settings_it_cannot_express_are_listed(tmp_path):
    imp = imported(tmp_path, plan(*NET, group("closed", inner_access_policy="Drop", security_group_type="enterprise")))
    why = skipped(imp)["alicloud_security_group.closed"]
    assert why.startswith("inner_access_policy Drop is not mapped: members of a kubevpc group always reach each other")
    assert "security_group_type enterprise is not mapped" in why
    assert "closed" in groups(imp), "the group itself is imported"


# ------------------------------------------------------------------------------------ instances
def test_instances(tmp_path):
    web = instance("web", {"private_ip": "192.168.1.10", "description": "the web server"})
    app = instance("app", {"instance_name": "App_Server 1", "internet_max_bandwidth_out": 5}, vsw="b", groups=("web", "db"))
    imp = imported(tmp_path, plan(*NET, group("web"), group("db"), rule("http", "web", {"cidr_ip": "0.0.0.0/0"}),
                                  rule("udp", "db", {"ip_protocol": "udp", "port_range": "53/53", "cidr_ip": "0.0.0.0/0"}),
                                  web, app))
    assert instances(imp) == {
        "web": {"name": "web", "vswitch": "vsw-a", "ip": "192.168.1.10", "securityGroups": ["web"], "ports": [80],
                "description": "the web server"},
        "app-server-1": {"name": "app-server-1", "vswitch": "vsw-b", "securityGroups": ["web", "db"], "ports": [80, "53/UDP"]}}
    said = invented(imp)
    assert said["alicloud_instance.app"].startswith("its address, left out: the scenario gives it the lowest free "
                                                    "address of vsw-b | ports [80, '53/UDP']")
    assert said["alicloud_instance.web"] == "ports [80]: servers on the ports its security groups open"
    assert skipped(imp)["alicloud_instance.app"].startswith("internet_max_bandwidth_out > 0 is not mapped")


def test_an_instance_address_outside_its_vswitch_is_left_out(tmp_path):
    imp = imported(tmp_path, plan(*NET, group("web"), instance("web", {"private_ip": "10.0.0.1"})))
    assert "ip" not in instances(imp)["web"]
    assert "(private_ip 10.0.0.1 is not one of it)" in invented(imp)["alicloud_instance.web"]


# ----------------------------------------------------------------------------------- routes
def test_route_entries_to_an_instance_a_nat_gateway_and_a_peering(tmp_path):
    vpc_b = r("alicloud_vpc", "b", {"vpc_name": "vpc-b", "cidr_block": "172.16.0.0/16"})
    vsw_c = r("alicloud_vswitch", "c", {"cidr_block": "172.16.1.0/24", "zone_id": "z"}, vpc_id=ref("alicloud_vpc.b"))
    pcx = r("alicloud_vpc_peer_connection", "ab", {"peer_connection_name": "pcx-ab"},
            vpc_id=ref("alicloud_vpc.main"), accepting_vpc_id=ref("alicloud_vpc.b"))
    table = ref("alicloud_vpc.main", attr="route_table_id")
    routes = [r("alicloud_route_entry", "onprem", {"destination_cidrblock": "10.10.0.0/16", "nexthop_type": "Instance",
                                                   "name": "on-premises"},
                route_table_id=table, nexthop_id=ref("alicloud_instance.vpn")),
              r("alicloud_route_entry", "peer", {"destination_cidrblock": "172.16.0.0/16", "nexthop_type": "VpcPeer"},
                route_table_id=table, nexthop_id=ref("alicloud_vpc_peer_connection.ab")),
              r("alicloud_route_entry", "havip", {"destination_cidrblock": "10.20.0.0/16", "nexthop_type": "HaVip"},
                route_table_id=table),
              r("alicloud_route_entry", "v6", {"destination_cidrblock": "::/0", "nexthop_type": "IPv6Gateway"},
                route_table_id=table)]
    imp = imported(tmp_path, plan(*NET, vpc_b, vsw_c, pcx, group("web"), instance("vpn"), *routes))
    vpc = cloud(imp)["vpcs"][0]
    assert vpc["routeTable"] == {"routes": [
        {"destination": "10.10.0.0/16", "nextHop": "vpn", "description": "on-premises"},
        {"destination": "172.16.0.0/16", "nextHop": "pcx-ab"}]}
    assert cloud(imp)["peerings"] == [{"name": "pcx-ab", "vpcs": ["vpc", "vpc-b"]}]
    why = skipped(imp)
    assert why["alicloud_route_entry.havip"] == ("nexthop_type HaVip: not emulated; kubevpc routes to an ECS instance "
                                                  "(Instance), a NAT gateway (NatGateway) or a VPC peering connection (VpcPeer)")
    assert why["alicloud_route_entry.v6"].startswith("destination_cidrblock '::/0': expected an IPv4 CIDR")


def test_custom_route_tables_and_their_vswitches(tmp_path):
    table = r("alicloud_route_table", "app", {"route_table_name": "rt-app", "associate_type": "VSwitch"},
              vpc_id=ref("alicloud_vpc.main"))
    gateway = r("alicloud_route_table", "gw", {"associate_type": "Gateway"}, vpc_id=ref("alicloud_vpc.main"))
    attach = r("alicloud_route_table_attachment", "b", {}, vswitch_id=ref("alicloud_vswitch.b"),
               route_table_id=ref("alicloud_route_table.app"))
    entry = r("alicloud_route_entry", "fw", {"destination_cidrblock": "10.0.0.0/8", "nexthop_type": "Instance"},
              route_table_id=ref("alicloud_route_table.app"), nexthop_id=ref("alicloud_instance.fw"))
    imp = imported(tmp_path, plan(*NET, group("web"), instance("fw"), table, gateway, attach, entry))
    assert cloud(imp)["vpcs"][0]["routeTables"] == [
        {"name": "rt-app", "vswitches": ["vsw-b"], "routes": [{"destination": "10.0.0.0/8", "nextHop": "fw"}]}]
    assert skipped(imp)["alicloud_route_table.gw"].startswith("associate_type Gateway: a gateway route table is not emulated")


# ------------------------------------------------------------------------------ the VPC's edge
def _edge():
    nat = r("alicloud_nat_gateway", "main", {"nat_gateway_name": "ngw", "nat_type": "Enhanced", "network_type": "internet"},
            vpc_id=ref("alicloud_vpc.main"))
    eip = r("alicloud_eip_address", "nat", {"address_name": "eip-ngw"})
    assoc = r("alicloud_eip_association", "nat", {"instance_type": "Nat"}, allocation_id=ref("alicloud_eip_address.nat"),
              instance_id=ref("alicloud_nat_gateway.main"))
    snat = r("alicloud_snat_entry", "a", {"snat_entry_name": "a"}, source_vswitch_id=ref("alicloud_vswitch.a"),
             snat_table_id=ref("alicloud_nat_gateway.main", attr="snat_table_ids"),
             snat_ip=ref("alicloud_eip_address.nat", attr="ip_address"))
    snat_cidr = r("alicloud_snat_entry", "cidr", {"source_cidr": "192.168.2.0/25"},
                  snat_table_id=ref("alicloud_nat_gateway.main", attr="snat_table_ids"))
    return [nat, eip, assoc, snat, snat_cidr]


def test_nat_gateway_eip_and_snat_entries(tmp_path):
    imp = imported(tmp_path, plan(*NET, *_edge()))
    c = cloud(imp)
    assert c["eips"] == [{"name": "eip-ngw", "natGateway": "ngw"}]
    assert c["natGateways"] == [{"name": "ngw", "vpc": "vpc", "snat": [{"vswitch": "vsw-a", "eip": "eip-ngw"},
                                                                         {"cidr": "192.168.2.0/25"}]}]
    assert c["internet"] == {}
    assert c["vpcs"][0]["routeTable"]["routes"] == [
        {"destination": "0.0.0.0/0", "nextHop": "ngw", "description": "added by Alibaba Cloud with the NAT gateway"}]
    said = invented(imp)
    assert "which Alibaba Cloud adds when it creates an enhanced Internet NAT gateway" in said["alicloud_nat_gateway.main"]
    assert said["alicloud_eip_address.nat"] == ("its address, left out: the scenario gives it the lowest free address of "
                                                "cloud.internet.publicCIDR")
    assert "cloud.internet" in said


def test_an_explicit_default_route_is_kept_and_none_is_added(tmp_path):
    default = r("alicloud_route_entry", "default", {"destination_cidrblock": "0.0.0.0/0", "nexthop_type": "NatGateway"},
                route_table_id=ref("alicloud_vpc.main", attr="route_table_id"), nexthop_id=ref("alicloud_nat_gateway.main"))
    imp = imported(tmp_path, plan(*NET, *_edge(), default))
    assert cloud(imp)["vpcs"][0]["routeTable"]["routes"] == [{"destination": "0.0.0.0/0", "nextHop": "ngw"}]


def test_a_nat_gateway_without_eip_is_left_out_with_its_entries(tmp_path):
    nat, _, _, snat, _ = _edge()
    imp = imported(tmp_path, plan(*NET, nat, snat))
    why = skipped(imp)
    assert why["alicloud_nat_gateway.main"].startswith("no EIP is associated with it")
    assert why["alicloud_snat_entry.a"] == "snat_table_id names alicloud_nat_gateway.main, which is not imported"
    assert "natGateways" not in cloud(imp) and "internet" not in cloud(imp)


def test_eip_associations_and_dnat_entries(tmp_path):
    eip = r("alicloud_eip_address", "web", {"address_name": "eip-web", "ip_address": "47.96.1.2"})
    assoc = r("alicloud_eip_association", "web", {}, allocation_id=ref("alicloud_eip_address.web"),
              instance_id=ref("alicloud_instance.web"))
    slb_eip = r("alicloud_eip_address", "slb", {})
    slb_assoc = r("alicloud_eip_association", "slb", {"instance_type": "SlbInstance"},
                  allocation_id=ref("alicloud_eip_address.slb"))
    eip_dnat = r("alicloud_eip_address", "dnat", {"address_name": "eip-dnat"})
    assoc_dnat = r("alicloud_eip_association", "dnat", {"instance_type": "Nat"},
                   allocation_id=ref("alicloud_eip_address.dnat"), instance_id=ref("alicloud_nat_gateway.main"))
    fwd = r("alicloud_forward_entry", "app", {"forward_entry_name": "app", "ip_protocol": "tcp", "external_port": "8080",
                                              "internal_port": "80"},
            forward_table_id=ref("alicloud_nat_gateway.main", attr="forward_table_ids"),
            external_ip=ref("alicloud_eip_address.dnat", attr="ip_address"),
            internal_ip=ref("alicloud_instance.app", attr="private_ip"))
    imp = imported(tmp_path, plan(*NET, group("web"), instance("web"), instance("app"), *_edge()[:3], eip, assoc,
                                  slb_eip, slb_assoc, eip_dnat, assoc_dnat, fwd))
    eips = {e["name"]: e for e in cloud(imp)["eips"]}
    assert eips["eip-web"] == {"name": "eip-web", "instance": "web"}
    assert "ip" not in eips["eip-web"] and "47.96.1.2 is a real one" in invented(imp)["alicloud_eip_address.web"]
    assert cloud(imp)["natGateways"][0]["dnat"] == [{"name": "app", "eip": "eip-dnat", "ipProtocol": "tcp",
                                                      "externalPort": 8080, "internalPort": 80, "instance": "app"}]
    assert skipped(imp)["alicloud_eip_association.slb"].startswith("instance_type SlbInstance: kubevpc binds an EIP to "
                                                                   "an ECS instance (EcsInstance) or a NAT gateway (Nat)")


def test_slb_instances_are_refused_with_the_service_that_makes_one(tmp_path):
    slb = r("alicloud_slb_load_balancer", "ingress", {"address_type": "intranet"}, vswitch_id=ref("alicloud_vswitch.a"))
    listener = r("alicloud_slb_listener", "http", {}, load_balancer_id=ref("alicloud_slb_load_balancer.ingress"))
    imp = imported(tmp_path, plan(*NET, slb, listener))
    why = skipped(imp)
    assert why["alicloud_slb_load_balancer.ingress"].endswith(
        "a Service annotated service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: intranet, "
        "vswitch-id: vsw-a gets one like it")
    assert why["alicloud_slb_listener.http"].startswith("part of an SLB instance")


# -------------------------------------------------------------------------------------- cluster
def _cluster(values: dict, **exprs) -> dict:
    return r("alicloud_cs_managed_kubernetes", "ack", {"name": "ack-prod", **values}, **exprs)


def _pool(name: str = "default", values: dict | None = None, **exprs) -> dict:
    base = {"node_pool_name": f"{name}-pool", "desired_size": 3}
    exprs.setdefault("vswitch_ids", ref("alicloud_vswitch.a", "alicloud_vswitch.b"))
    return r("alicloud_cs_kubernetes_node_pool", name, {**base, **(values or {})},
             cluster_id=ref("alicloud_cs_managed_kubernetes.ack"), **exprs)


def test_terway_cluster_with_a_node_pool(tmp_path):
    pods = r("alicloud_vswitch", "pods", {"cidr_block": "192.168.16.0/20", "zone_id": "zone-i"},
             vpc_id=ref("alicloud_vpc.main"))
    ack = _cluster({"addons": [{"name": "terway-eniip"}, {"name": "flannel", "disabled": True}],
                    "service_cidr": "172.22.0.0/20", "pod_vswitch_ids": [None]},
                   pod_vswitch_ids=ref("alicloud_vswitch.pods"), security_group_id=ref("alicloud_security_group.nodes"))
    pool = _pool(values={"labels": [{"key": "pool", "value": "default"}, {"key": "bad key!", "value": "x"}]},
                 security_group_ids=ref("alicloud_security_group.nodes"))
    imp = imported(tmp_path, plan(*NET, pods, group("nodes"), ack, pool))
    assert imp.data["cluster"] == {
        "name": "ack-prod", "mode": "eni", "nodes": ["default-pool-1", "default-pool-2", "default-pool-3"],
        "serviceCIDR": "172.22.0.0/20", "eni": {"vswitches": ["pods"], "securityGroups": ["nodes"]},
        "nodeLabels": {f"default-pool-{i}": {"pool": "default"} for i in (1, 2, 3)}}
    assert [(i["name"], i["vswitch"], i["securityGroups"]) for i in cloud(imp)["instances"]] == [
        ("default-pool-1", "vsw-a", ["nodes"]), ("default-pool-2", "vsw-b", ["nodes"]), ("default-pool-3", "vsw-a", ["nodes"])]
    assert "label key 'bad key!' is not a valid Kubernetes label key" in skipped(imp)["alicloud_cs_kubernetes_node_pool.default"]
    assert invented(imp)["alicloud_cs_kubernetes_node_pool.default"].startswith(
        "3 nodes, default-pool-1 to default-pool-3, on vsw-a, vsw-b in turn")


def test_flannel_cluster_is_vpc_route_with_acks_default_group(tmp_path):
    ack = _cluster({"addons": [{"name": "flannel"}], "pod_cidr": "10.100.0.0/16", "node_cidr_mask": 25,
                    "new_nat_gateway": True, "cluster_domain": "cluster.test"})
    imp = imported(tmp_path, plan(*NET, ack, _pool(values={"desired_size": 2})))
    spec = imp.data["cluster"]
    assert (spec["mode"], spec["podCIDR"], spec["nodeCIDRMaskSize"], spec["dns"]) == (
        "vpc-route", "10.100.0.0/16", 25, {"clusterDomain": "cluster.test"})
    assert groups(imp)["ack-prod-nodes"]["rules"] == [
        {"direction": "ingress", "protocol": "icmp", "cidr": "0.0.0.0/0", "description": "ICMP (ACK's default)"},
        {"direction": "ingress", "protocol": "all", "cidr": "10.100.0.0/16",
         "description": "the pod CIDR (ACK's default with Flannel)"}]
    assert "security group ack-prod-nodes: ACK's default group" in invented(imp)["alicloud_cs_managed_kubernetes.ack"]
    assert skipped(imp)["alicloud_cs_managed_kubernetes.ack"].startswith("new_nat_gateway is not mapped")


def test_a_cluster_without_nodes_is_left_out(tmp_path):
    imp = imported(tmp_path, plan(*NET, _cluster({"pod_cidr": "10.100.0.0/16"}), _pool(values={"desired_size": 0})))
    assert imp.data.get("cluster") is None
    assert skipped(imp)["alicloud_cs_managed_kubernetes.ack"].startswith("no nodes: expected a node pool")


def test_node_counts_other_pools_and_clusters(tmp_path):
    other = r("alicloud_cs_managed_kubernetes", "other", {"name": "other"})
    pools = [_pool("big", {"desired_size": 1000}),
             _pool("auto", {"desired_size": None, "scaling_config": [{"enable": True, "min_size": 1, "max_size": 5}]}),
             r("alicloud_cs_kubernetes_node_pool", "elsewhere", {"desired_size": 1},
               cluster_id=ref("alicloud_cs_managed_kubernetes.other"), vswitch_ids=ref("alicloud_vswitch.a"))]
    ack = _cluster({"worker_number": 2}, worker_vswitch_ids=ref("alicloud_vswitch.b"),
                   pod_vswitch_ids=ref("alicloud_vswitch.a"))
    imp = imported(tmp_path, plan(*NET, ack, other, *pools))
    nodes = imp.data["cluster"]["nodes"]
    assert len(nodes) == 100 + 1 + 2 and nodes[100:] == ["auto-pool-1", "ack-prod-worker-1", "ack-prod-worker-2"]
    why = skipped(imp)
    assert why["alicloud_cs_kubernetes_node_pool.big"] == ("desired_size 1000 is mapped to 100 nodes: kubevpc makes at "
                                                            "most 100 of one pool, 500 in all")
    assert why["alicloud_cs_managed_kubernetes.other"] == ("a scenario has one cluster: alicloud_cs_managed_kubernetes.ack "
                                                           "is the one imported")
    assert why["alicloud_cs_kubernetes_node_pool.elsewhere"] == ("cluster_id names alicloud_cs_managed_kubernetes.other, "
                                                                 "which is not imported")
    assert invented(imp)["alicloud_cs_kubernetes_node_pool.auto"].startswith("1 nodes: no desired_size; the auto scaling")


def test_a_cluster_without_a_network_plugin_is_flannel(tmp_path):
    imp = imported(tmp_path, plan(*NET, _cluster({}), _pool(values={"desired_size": 1})))
    assert imp.data["cluster"]["mode"] == "vpc-route"
    assert invented(imp)["alicloud_cs_managed_kubernetes.ack"].startswith("mode vpc-route: no network plugin found")


# ------------------------------------------------------------------------------- not mapped
def test_other_types_are_listed_and_data_sources_ignored(tmp_path):
    doc = plan(*NET, r("alicloud_ram_role", "nodes", {}), r("aws_vpc", "x", {"cidr_block": "10.0.0.0/16"}))
    doc["planned_values"]["root_module"]["resources"].append(
        {"address": "data.alicloud_zones.z", "mode": "data", "type": "alicloud_zones", "name": "z", "values": {}})
    imp = imported(tmp_path, doc)
    assert skipped(imp) == {"alicloud_ram_role.nodes": "alicloud_ram_role is not emulated (docs/scenario.md, Importing "
                                                       "Terraform, lists what is)",
                            "aws_vpc.x": "not an Alibaba Cloud (alicloud) resource"}
    assert "# not imported: aws_vpc.x: not an Alibaba Cloud (alicloud) resource\n" in imp.text


def test_names_are_made_valid_and_unique_per_kind(tmp_path):
    vsws = [r("alicloud_vswitch", n, {"vswitch_name": v, "cidr_block": f"192.168.{i}.0/24", "zone_id": "z"},
              vpc_id=ref("alicloud_vpc.main")) for i, (n, v) in enumerate(
                  [("a", "My_VSwitch!"), ("b", "my-vswitch"), ("c", "x" * 60), ("d", "---"), ("web", None)], 1)]
    imp = imported(tmp_path, plan(VPC, *vsws, group("web"), instance("web", vsw="web")))
    assert [v["name"] for v in cloud(imp)["vpcs"][0]["vswitches"]] == ["my-vswitch", "my-vswitch-2", "x" * 40, "d", "web"]
    assert set(instances(imp)) == {"web"} and set(groups(imp)) == {"web"}, "an instance and a group may share a name"


def test_what_the_validator_refuses_is_left_out_with_its_reason(tmp_path):
    overlap = r("alicloud_vswitch", "c", {"cidr_block": "192.168.1.128/25", "zone_id": "z"}, vpc_id=ref("alicloud_vpc.main"))
    twin = instance("twin", {"private_ip": "192.168.1.10"})
    imp = imported(tmp_path, plan(*NET, overlap, group("web"), instance("web", {"private_ip": "192.168.1.10"}), twin))
    why = skipped(imp)
    assert why["alicloud_vswitch.c"] == ("cloud.vpcs[0].vswitches[2].cidr: '192.168.1.128/25': overlaps vSwitch 'vsw-a' "
                                          "(192.168.1.0/24); expected disjoint vSwitch CIDRs")
    assert why["alicloud_instance.twin"] == ("cloud.instances[1].ip: '192.168.1.10': address already taken by another "
                                              "instance")
    assert [v["name"] for v in cloud(imp)["vpcs"][0]["vswitches"]] == ["vsw-a", "vsw-b"]
    assert validate("x", imp.data) == []


def test_descriptions_and_names_from_the_document_are_quoted_and_kept_on_one_line(tmp_path):
    text = "yes: #1\nnext line [0] {x}"
    imp = imported(tmp_path, plan(VPC, VSW_A, group("web", description=text),
                                  r("alicloud_vswitch", "zone", {"cidr_block": "192.168.3.0/24", "zone_id": "on"},
                                    vpc_id=ref("alicloud_vpc.main"))))
    assert groups(imp)["web"]["description"] == "yes: #1?next line [0] {x}"
    assert cloud(imp)["vpcs"][0]["vswitches"][1]["zone"] == "on"
    assert "description: 'yes: #1?next line [0] {x}'" in imp.text
