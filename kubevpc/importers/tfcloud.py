"""Alibaba Cloud's VPC resources of a Terraform document as the scenario's `cloud:` section: VPCs,
vSwitches, custom route tables, security groups and their rules, ECS instances, peering connections
and route entries. The argument names are the alicloud provider's (registry.terraform.io/aliyun/alicloud),
with the deprecated spellings it still accepts (`name` beside `vpc_name`, `availability_zone` beside
`zone_id`).
"""
from __future__ import annotations

import ipaddress

from ..scenario.model import IPV6_RANGES
from .build import HOP, ORIGIN, Build, address, network, printable
from .tfplan import Resource

VSWITCH = ("alicloud_vswitch", "alicloud_subnet")
GROUP = ("alicloud_security_group",)
DEFAULT_VPC_CIDR = "172.16.0.0/12"     # what Alibaba Cloud gives a VPC created without a CIDR block
MAX_PORTS = 8                          # servers given to an instance from its groups' rules


def vpcs(b: Build) -> None:
    """alicloud_vpc: cidr_block, and IPv6 when enable_ipv6 (a /56 of the documentation range when the
    VPC's own is a real one or not known yet: emulated addresses are never real ones)."""
    for res in b.of_type("alicloud_vpc"):
        raw = res.values.get("cidr_block")
        cidr = network(raw if raw is not None else DEFAULT_VPC_CIDR)
        if cidr is None:
            b.skip(res, f"cidr_block {printable(raw, 60)!r}: expected an IPv4 CIDR")
            continue
        name = b.name(res, "vpc", "vpc_name", "name")
        if raw is None:
            b.invent(res.address, f"cidr {cidr}: no cidr_block, and Alibaba Cloud gives such a VPC {DEFAULT_VPC_CIDR}")
        obj = {"name": name, "cidr": str(cidr), "vswitches": [],
               "routeTable": {"routes": []}, "routeTables": []}
        if res.flag("enable_ipv6"):
            obj["ipv6Cidr"] = _vpc_ipv6(b, res, len(b.cloud["vpcs"]))
        b.cloud["vpcs"].append(b.record(res, name, obj))


def _vpc_ipv6(b: Build, res: Resource, ordinal: int) -> str:
    raw = res.values.get("ipv6_cidr_block")
    try:
        net = ipaddress.IPv6Network(raw) if isinstance(raw, str) else None
    except ValueError:
        net = None
    if net is not None and net.prefixlen == 56 and any(net.subnet_of(r) for r in IPV6_RANGES):
        return str(net)
    made = f"2001:db8:{ordinal + 1:x}::/56"
    b.invent(res.address, f"ipv6Cidr {made}: the VPC's IPv6 block is {'a real one' if net else 'not known before apply'}; "
             "emulated addresses come from the documentation range 2001:db8::/32")
    return made


def vswitches(b: Build) -> None:
    """alicloud_vswitch: cidr_block, zone_id, vpc_id, and IPv6 (ipv6_cidr_block_mask: which /64 of the VPC's /56)."""
    for res in b.of_type(*VSWITCH):
        vpc = b.one(res, "vpc_id", ("alicloud_vpc",), "a VPC")
        if vpc is None:
            continue
        cidr = network(res.values.get("cidr_block"))
        if cidr is None:
            b.skip(res, f"cidr_block {printable(res.values.get('cidr_block'), 60)!r}: expected an IPv4 CIDR")
            continue
        zone = res.text("zone_id", "availability_zone")
        name = b.name(res, "vswitch", "vswitch_name", "name")
        if zone is None:
            zone = "zone-a"
            b.invent(res.address, "zone zone-a: no zone_id")
        vpc_obj = b.object_of(vpc)
        obj = {"name": name, "zone": printable(zone, 60), "cidr": str(cidr)}
        if res.flag("enable_ipv6") and "ipv6Cidr" in vpc_obj:
            mask = res.number("ipv6_cidr_block_mask")
            if mask is None or not 0 <= mask <= 255:
                mask = len(vpc_obj["vswitches"]) + 1
                b.invent(res.address, f"the /64 number {mask} of the VPC's IPv6 block: no ipv6_cidr_block_mask")
            base = ipaddress.IPv6Network(vpc_obj["ipv6Cidr"])
            obj["ipv6Cidr"] = str(ipaddress.IPv6Network((int(base.network_address) + (mask << 64), 64)))
        vpc_obj["vswitches"].append(b.record(res, name, obj))
        b.vpc_of["vswitch", name] = b.name_of(vpc)


def prune_vpcs(b: Build) -> None:
    """A VPC needs a vSwitch in the scenario: one without is left out, and what is in it after it."""
    for res in b.of_type("alicloud_vpc"):
        obj = b.object_of(res)
        if obj is not None and not obj["vswitches"]:
            b.cloud["vpcs"].remove(obj)
            del b.objects[id(res)]
            b.skip(res, "no vSwitch of it is imported; a kubevpc VPC needs at least one")


def route_tables(b: Build) -> None:
    """alicloud_route_table (custom, associated with vSwitches) and alicloud_route_table_attachment."""
    for res in b.of_type("alicloud_route_table"):
        kind = res.text("associate_type") or "VSwitch"
        if kind != "VSwitch":
            b.skip(res, f"associate_type {printable(kind, 40)}: a gateway route table is not emulated; kubevpc's "
                   "custom route tables serve vSwitches")
            continue
        vpc = b.one(res, "vpc_id", ("alicloud_vpc",), "a VPC")
        if vpc is None:
            continue
        name = b.name(res, "route table", "route_table_name", "name")
        obj = {"name": name, "vswitches": [], "routes": [], **b.description(res, "description")}
        b.object_of(vpc)["routeTables"].append(b.record(res, name, obj))
    for res in b.of_type("alicloud_route_table_attachment"):
        table = b.one(res, "route_table_id", ("alicloud_route_table",), "a custom route table")
        vsw = table and b.one(res, "vswitch_id", VSWITCH, "a vSwitch")
        if vsw is not None:
            b.object_of(table)["vswitches"].append(b.name_of(vsw))
            b.done.add(id(res))


def security_groups(b: Build) -> None:
    """alicloud_security_group (its members reach each other, as a basic group's do) and its rules."""
    for res in b.of_type(*GROUP):
        vpc = b.one(res, "vpc_id", ("alicloud_vpc",), "a VPC (a group of the classic network is not emulated)")
        if vpc is None:
            continue
        name = b.name(res, "group", "security_group_name", "name")
        obj = {"name": name, "vpc": b.name_of(vpc), **b.description(res, "description"), "rules": []}
        b.cloud["securityGroups"].append(b.record(res, name, obj))
        b.vpc_of["group", name] = b.name_of(vpc)
        if (res.text("inner_access_policy") or "Accept").lower() == "drop":
            b.skipped.append((res.address, "inner_access_policy Drop is not mapped: members of a kubevpc group always "
                              "reach each other (imported as Accept)"))
        if (res.text("security_group_type") or "normal").lower() == "enterprise":
            b.skipped.append((res.address, "security_group_type enterprise is not mapped: an advanced group keeps its "
                              "members apart unless a rule lets them through; imported as a basic group, whose members "
                              "reach each other"))
    for res in b.of_type("alicloud_security_group_rule"):
        group = b.one(res, "security_group_id", GROUP, "a security group")
        rule = group and _rule(b, res, b.name_of(group))
        if rule:
            b.object_of(group)["rules"].append(b.record(res, "", rule))


def _rule(b: Build, res: Resource, group: str) -> dict | None:
    """One rule: type, ip_protocol, port_range, the peer (cidr_ip, ipv6_cidr_ip or
    source_security_group_id; a CIDR wins over a group, as Alibaba's AuthorizeSecurityGroup says),
    policy, priority. nic_type does not matter in a VPC ("it does not distinguish between intranet
    and internet", the provider's documentation)."""
    direction = (res.text("type") or "").lower()
    protocol = (res.text("ip_protocol") or "").lower()
    if direction not in ("ingress", "egress"):
        return b.skip(res, f"type {printable(res.values.get('type'), 40)!r}: expected ingress or egress")
    if protocol not in ("tcp", "udp", "icmp", "icmpv6", "all"):
        return b.skip(res, f"ip_protocol {printable(res.values.get('ip_protocol'), 40)!r}: not emulated; "
                      "kubevpc's rules are for tcp, udp, icmp, icmpv6 and all")
    rule: dict = {"direction": direction, "protocol": "icmp" if protocol == "icmpv6" else protocol}
    if protocol in ("tcp", "udp"):
        ports = _ports(res.values.get("port_range"))
        if ports is False:
            return b.skip(res, f"port_range {printable(res.values.get('port_range'), 40)!r}: expected FIRST/LAST, "
                          "1 <= FIRST <= LAST <= 65535")
        if ports is not None:
            rule["ports"] = ports
    peer = _peer(b, res, group, protocol)
    if peer is None:
        return None
    rule.update(peer)
    policy = (res.text("policy") or "accept").lower()
    priority = res.number("priority") if res.values.get("priority") is not None else 1
    if policy not in ("accept", "drop") or priority is None or not 1 <= priority <= 100:
        return b.skip(res, f"policy {policy!r} and priority {printable(res.values.get('priority'), 20)}: expected "
                      "accept or drop, and a priority from 1 to 100")
    rule.update({"policy": policy, "priority": priority, **b.description(res, "description")})
    return rule


def _ports(value) -> int | str | None | bool:
    """A port_range as the scenario writes it: a port, "FIRST-LAST", None for every port, False if bad."""
    if value is None or value in ("-1/-1", "1/65535"):
        return None
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 5 for p in parts):
        return False
    first, last = int(parts[0]), int(parts[1])
    if not 1 <= first <= last <= 65535:
        return False
    return first if first == last else f"{first}-{last}"


def _peer(b: Build, res: Resource, group: str, protocol: str) -> dict | None:
    cidr, cidr6 = res.text("cidr_ip"), res.text("ipv6_cidr_ip")
    if cidr and protocol != "icmpv6":
        net = network(cidr)
        if net is None:
            return b.skip(res, f"cidr_ip {printable(cidr, 60)!r}: expected an IPv4 CIDR")
        if str(net) != cidr and net.prefixlen != 32:
            b.invent(res.address, f"cidr {net}: cidr_ip {printable(cidr, 60)} has host bits set")
        return {"cidr": str(net)}
    if cidr6:
        try:
            net6 = ipaddress.IPv6Network(cidr6, strict=False)
        except ValueError:
            net6 = None
        if net6 is None or not any(net6.subnet_of(r) for r in IPV6_RANGES):
            return b.skip(res, f"ipv6_cidr_ip {printable(cidr6, 60)!r}: kubevpc's IPv6 peers are inside 2001:db8::/32 "
                          "or fd00::/8, the only IPv6 it emulates")
        return {"ipv6Cidr": str(net6)}
    if protocol == "icmpv6":
        return b.skip(res, "ip_protocol icmpv6 without ipv6_cidr_ip: expected an IPv6 peer")
    if res.values.get("source_security_group_id") is not None or "source_security_group_id" in res.exprs:
        peer = b.one(res, "source_security_group_id", GROUP, "a security group")
        if peer is None:
            return None
        if b.vpc_of.get(("group", b.name_of(peer))) != b.vpc_of.get(("group", group)):
            return b.skip(res, f"source_security_group_id names {peer.address}, a group of another VPC; kubevpc's "
                          "rules name groups of their own VPC")
        return {"group": b.name_of(peer)}
    if res.text("prefix_list_id"):
        return b.skip(res, "prefix_list_id: prefix lists are not emulated; write the CIDR blocks as rules")
    return b.skip(res, "no peer: expected cidr_ip, ipv6_cidr_ip or source_security_group_id")


def instances(b: Build) -> None:
    """alicloud_instance: vswitch_id, security_groups, private_ip, instance_name."""
    for res in b.of_type("alicloud_instance"):
        vsw = b.one(res, "vswitch_id", VSWITCH, "a vSwitch (an instance of the classic network is not emulated)")
        if vsw is None:
            continue
        name = b.name(res, HOP, "instance_name")
        vsw_name = b.name_of(vsw)
        obj: dict = {"name": name, "vswitch": vsw_name}
        ip = address(res.values.get("private_ip"))
        if ip is not None and ip in ipaddress.IPv4Network(b.object_of(vsw)["cidr"]):
            obj["ip"] = str(ip)
        else:
            b.invent(res.address, f"its address, left out: the scenario gives it the lowest free address of {vsw_name}"
                     + (f" (private_ip {printable(res.values.get('private_ip'), 40)} is not one of it)"
                        if res.values.get("private_ip") is not None else ""))
        obj["securityGroups"] = member_groups(b, res, "security_groups", b.vpc_of["vswitch", vsw_name])
        if (res.number("internet_max_bandwidth_out") or 0) > 0:
            b.skipped.append((res.address, "internet_max_bandwidth_out > 0 is not mapped: a fixed public IP is not "
                              "emulated; an EIP (alicloud_eip_address and alicloud_eip_association) is"))
        obj.update(b.description(res, "description"))
        b.cloud["instances"].append(b.record(res, name, obj))
        b.vpc_of[HOP, name] = b.vpc_of["vswitch", vsw_name]


def member_groups(b: Build, res: Resource, key: str, vpc: str) -> list[str]:
    """The imported groups of the VPC that argument `key` names; the others are told about."""
    found, missing = b.many(res, key, GROUP)
    names = [b.name_of(g) for g in found if b.vpc_of.get(("group", b.name_of(g))) == vpc]
    missing += [g.address for g in found if b.vpc_of.get(("group", b.name_of(g))) != vpc]
    if missing:
        b.skipped.append((res.address, f"{key}: {', '.join(missing[:3])} not mapped: not a group of this document's "
                          f"VPC {vpc}"))
    return names


def peerings(b: Build) -> None:
    """alicloud_vpc_peer_connection: vpc_id and accepting_vpc_id."""
    for res in b.of_type("alicloud_vpc_peer_connection"):
        one = b.one(res, "vpc_id", ("alicloud_vpc",), "a VPC")
        other = one and b.one(res, "accepting_vpc_id", ("alicloud_vpc",), "a VPC")
        if other is None:
            continue
        name = b.name(res, HOP, "peer_connection_name", "name")
        obj = {"name": name, "vpcs": [b.name_of(one), b.name_of(other)], **b.description(res, "description")}
        b.cloud["peerings"].append(b.record(res, name, obj))


NEXT_HOPS = {"Instance": ("alicloud_instance",), "NatGateway": ("alicloud_nat_gateway",),
             "VpcPeer": ("alicloud_vpc_peer_connection",)}


def route_entries(b: Build) -> None:
    """alicloud_route_entry: route_table_id (a VPC's route_table_id is its system table), destination_cidrblock,
    nexthop_type (Instance, NatGateway, VpcPeer) and nexthop_id."""
    for res in b.of_type("alicloud_route_entry"):
        table = b.one(res, "route_table_id", ("alicloud_vpc", "alicloud_route_table"), "a route table")
        if table is None:
            continue
        dest = network(res.values.get("destination_cidrblock"))
        kind = res.text("nexthop_type") or "Instance"
        if dest is None or str(dest) != res.values.get("destination_cidrblock"):
            b.skip(res, f"destination_cidrblock {printable(res.values.get('destination_cidrblock'), 60)!r}: expected "
                   "an IPv4 CIDR with no host bits set (an IPv6 route is not emulated)")
            continue
        if kind not in NEXT_HOPS:
            b.skip(res, f"nexthop_type {printable(kind, 40)}: not emulated; kubevpc routes to an ECS instance "
                   "(Instance), a NAT gateway (NatGateway) or a VPC peering connection (VpcPeer)")
            continue
        hop = b.one(res, "nexthop_id", NEXT_HOPS[kind], f"{kind} of the route's type")
        if hop is None:
            continue
        route = {"destination": str(dest), "nextHop": b.name_of(hop), **b.description(res, "name", "description")}
        obj = b.object_of(table)
        routes = obj["routeTable"]["routes"] if table.type == "alicloud_vpc" else obj["routes"]
        routes.append(b.record(res, "", route))


def instance_ports(b: Build) -> None:
    """Every plain instance serves the single ports its groups' ingress rules accept (tcp and udp), so
    that a probe finds a server where the cloud would let it through: Terraform does not say what
    runs on an instance."""
    groups = {g["name"]: g for g in b.cloud["securityGroups"]}
    for obj in b.cloud["instances"]:
        if obj["name"] in b.nodes:
            continue
        ports: list = []
        for g in obj["securityGroups"]:
            for r in groups[g]["rules"]:
                if r["direction"] == "ingress" and r["policy"] == "accept" and isinstance(r.get("ports"), int):
                    port = r["ports"] if r["protocol"] == "tcp" else f"{r['ports']}/UDP" if r["protocol"] == "udp" else None
                    if port is not None and port not in ports:
                        ports.append(port)
        if ports:
            obj["ports"] = sorted(ports, key=lambda p: (isinstance(p, str), int(str(p).split("/")[0])))[:MAX_PORTS]
            b.invent(obj[ORIGIN], f"ports {obj['ports']}: servers on the ports its security groups open")
