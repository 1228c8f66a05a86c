"""Alibaba Cloud's edge of a VPC in a Terraform document, as the scenario's `cloud:` section has it:
EIPs and what they are associated with, Internet NAT gateways with their SNAT and DNAT entries and
the route Alibaba adds for them, and the emulated internet they need. SLB instances are refused with
the reason: kubevpc makes an SLB for each LoadBalancer Service, as ACK's cloud controller manager does.
"""
from __future__ import annotations

from .build import HOP, ORIGIN, Build, address, network, printable
from .tfcloud import VSWITCH
from .tfplan import Resource

EIP = ("alicloud_eip_address", "alicloud_eip")
NAT = ("alicloud_nat_gateway",)
SLB = ("alicloud_slb_load_balancer", "alicloud_slb")
SLB_PARTS = ("alicloud_slb_listener", "alicloud_slb_backend_server", "alicloud_slb_server_group",
             "alicloud_slb_server_group_server_attachment", "alicloud_slb_rule", "alicloud_slb_acl")
# what an association may bind an EIP to, and what kubevpc makes of it
ASSOCIATION = {"EcsInstance": ("alicloud_instance",), "Nat": NAT}


def eips(b: Build) -> None:
    """alicloud_eip_address (alicloud_eip, its old name): a name; its address comes from the emulated
    internet's public range (a real address is never emulated)."""
    for res in b.of_type(*EIP):
        name = b.name(res, "eip", "address_name", "name")
        obj = {"name": name, **b.description(res, "description")}
        b.cloud["eips"].append(b.record(res, name, obj))
        ip = res.values.get("ip_address")
        b.invent(res.address, "its address, left out: the scenario gives it the lowest free address of "
                 "cloud.internet.publicCIDR" + (f" ({printable(ip, 40)} is a real one)" if ip else ""))


def nat_gateways(b: Build) -> None:
    """alicloud_nat_gateway: an Internet NAT gateway of a VPC (a VPC NAT gateway, network_type
    intranet, translates to private addresses, which is not emulated)."""
    for res in b.of_type(*NAT):
        if (res.text("network_type") or "internet") != "internet":
            b.skip(res, f"network_type {printable(res.text('network_type'), 30)}: a VPC NAT gateway is not emulated; "
                   "kubevpc's NAT gateways are Internet NAT gateways")
            continue
        vpc = b.one(res, "vpc_id", ("alicloud_vpc",), "a VPC")
        if vpc is None:
            continue
        name = b.name(res, HOP, "nat_gateway_name", "name")
        obj = {"name": name, "vpc": b.name_of(vpc), "snat": [], "dnat": [], **b.description(res, "description")}
        b.cloud["natGateways"].append(b.record(res, name, obj))
        b.vpc_of[HOP, name] = b.name_of(vpc)


def associations(b: Build) -> None:
    """alicloud_eip_association: allocation_id (the EIP), instance_id and instance_type (EcsInstance or
    Nat; one read from what instance_id names when it is not set)."""
    bound: set[str] = set()
    for res in b.of_type("alicloud_eip_association"):
        eip = b.one(res, "allocation_id", EIP, "an EIP")
        if eip is None:
            continue
        kind = res.text("instance_type")
        types = ASSOCIATION.get(kind, ()) if kind else tuple(t for ts in ASSOCIATION.values() for t in ts)
        if not types:
            b.skip(res, f"instance_type {printable(kind, 30)}: kubevpc binds an EIP to an ECS instance (EcsInstance) "
                   "or a NAT gateway (Nat); an SLB's comes with a LoadBalancer Service (address-type internet)")
            continue
        target = b.one(res, "instance_id", types, "an ECS instance or a NAT gateway")
        if target is None:
            continue
        obj = b.object_of(eip)
        if obj["name"] in bound:
            b.skip(res, f"{eip.address} is associated already; an EIP is bound to one thing")
            continue
        key = "instance" if target.type == "alicloud_instance" else "natGateway"
        if key == "instance" and any(e.get("instance") == b.name_of(target) for e in b.cloud["eips"]):
            b.skip(res, f"{target.address} has an EIP already; kubevpc binds one EIP to an instance")
            continue
        obj[key] = b.name_of(target)
        obj[ORIGIN] = f"{obj[ORIGIN]}, {res.address}"
        bound.add(obj["name"])
        b.done.add(id(res))


def drop_gateways_without_eip(b: Build) -> None:
    """A NAT gateway with no EIP translates nothing, and the scenario wants one: it is left out."""
    for res in b.of_type(*NAT):
        obj = b.object_of(res)
        if obj is not None and not any(e.get("natGateway") == obj["name"] for e in b.cloud["eips"]):
            b.cloud["natGateways"].remove(obj)
            del b.objects[id(res)]
            b.skip(res, "no EIP is associated with it (alicloud_eip_association, instance_type Nat): it translates "
                   "nothing, and a kubevpc NAT gateway needs one")


def snat_entries(b: Build) -> None:
    """alicloud_snat_entry: snat_table_id (the gateway's snat_table_ids), source_vswitch_id or source_cidr,
    snat_ip (an EIP of the gateway; several are not emulated: the first is used)."""
    for res in b.of_type("alicloud_snat_entry"):
        gw = b.one(res, "snat_table_id", NAT, "a NAT gateway's SNAT table")
        if gw is None:
            continue
        entry = _snat_source(b, res)
        if entry is None:
            continue
        gw_obj = b.object_of(gw)
        eips_found, missing = b.many(res, "snat_ip", EIP)
        names = [b.name_of(e) for e in eips_found if b.object_of(e).get("natGateway") == gw_obj["name"]]
        if names:
            entry["eip"] = names[0]
        if len(names) > 1 or missing or len(names) < len(eips_found):
            b.skipped.append((res.address, "snat_ip is mapped only in part: kubevpc's SNAT entry translates to one EIP "
                              f"bound to the gateway ({names[0] if names else 'its first'})"))
        gw_obj["snat"].append(b.record(res, "", entry))


def _snat_source(b: Build, res: Resource) -> dict | None:
    if res.values.get("source_vswitch_id") is not None or "source_vswitch_id" in res.exprs:
        vsw = b.one(res, "source_vswitch_id", VSWITCH, "a vSwitch")
        return vsw and {"vswitch": b.name_of(vsw)}
    cidr = network(res.values.get("source_cidr"))
    if cidr is None:
        return b.skip(res, f"source_cidr {printable(res.values.get('source_cidr'), 60)!r}: expected a vSwitch "
                      "(source_vswitch_id) or an IPv4 CIDR")
    return {"cidr": str(cidr)}


def dnat_entries(b: Build) -> None:
    """alicloud_forward_entry: forward_table_id, external_ip (an EIP of the gateway), ip_protocol,
    external_port, internal_port, internal_ip (an instance's private_ip, or an address), port_break."""
    for res in b.of_type("alicloud_forward_entry"):
        gw = b.one(res, "forward_table_id", NAT, "a NAT gateway's forward table")
        eip = gw and b.one(res, "external_ip", EIP, "an EIP")
        if eip is None:
            continue
        protocol = (res.text("ip_protocol") or "").lower()
        ports = [_dnat_port(res.values.get(k)) for k in ("external_port", "internal_port")]
        if protocol not in ("tcp", "udp", "any") or None in ports:
            b.skip(res, "ip_protocol, external_port and internal_port: expected tcp, udp or any, and ports 1-65535 "
                   "(any with ip_protocol any); port ranges are not emulated")
            continue
        entry = {"name": b.name(res, f"dnat {b.name_of(gw)}", "forward_entry_name", "name"), "eip": b.name_of(eip),
                 "ipProtocol": protocol}
        if protocol != "any":
            entry.update(externalPort=ports[0], internalPort=ports[1])
        targets = b.doc.targets(res, "internal_ip", ("alicloud_instance",))
        instance = next((t for t in targets.found if b.name_of(t)), None)
        ip = address(res.values.get("internal_ip"))
        if instance is not None:
            entry["instance"] = b.name_of(instance)
        elif ip is not None:
            entry["internalIp"] = str(ip)
        else:
            b.skip(res, "internal_ip: expected an instance's private_ip or an address")
            continue
        if res.flag("port_break"):
            entry["portBreak"] = True
        b.object_of(gw)["dnat"].append(b.record(res, "", entry))


def _dnat_port(value) -> int | str | None:
    if isinstance(value, str) and value.lower() == "any":
        return "any"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 5 and 1 <= int(value) <= 65535:
        return int(value)
    return None


def nat_routes(b: Build) -> None:
    """The route 0.0.0.0/0 to an enhanced Internet NAT gateway, which Alibaba Cloud adds to the VPC's
    route table when it creates one ("a route entry is automatically added to the route table of
    the VPC. The destination CIDR block of the route entry is 0.0.0.0/0 and the next hop is the NAT
    gateway", CreateNatGateway), unless the table has a default route already."""
    for res in b.of_type(*NAT):
        gw = b.object_of(res)
        if gw is None or (res.text("nat_type") or "Enhanced") != "Enhanced":
            continue
        vpc = next(v for v in b.cloud["vpcs"] if v["name"] == gw["vpc"])
        routes = vpc["routeTable"]["routes"]
        if not any(r["destination"] == "0.0.0.0/0" for r in routes):
            routes.append({"destination": "0.0.0.0/0", "nextHop": gw["name"], ORIGIN: res.address,
                           "description": "added by Alibaba Cloud with the NAT gateway"})
            b.invent(res.address, f"the route 0.0.0.0/0 -> {gw['name']} in {vpc['name']}'s route table, which Alibaba "
                     "Cloud adds when it creates an enhanced Internet NAT gateway")


def slbs(b: Build) -> None:
    """An SLB instance of Terraform is not emulated: kubevpc makes one for each LoadBalancer Service."""
    for res in b.of_type(*SLB):
        kind = res.text("address_type") or "internet"
        vsw = b.doc.targets(res, "vswitch_id", VSWITCH).found
        where = f", vswitch-id: {b.name_of(vsw[0])}" if vsw and b.name_of(vsw[0]) else ""
        b.skip(res, "an SLB instance is not emulated on its own: kubevpc makes one for each LoadBalancer Service, as "
               "ACK's cloud controller manager does; a Service annotated service.beta.kubernetes.io/alibaba-cloud-"
               f"loadbalancer-address-type: {printable(kind, 20)}{where} gets one like it")
    for res in b.of_type(*SLB_PARTS):
        b.skip(res, "part of an SLB instance, which is not emulated on its own (a LoadBalancer Service's SLB is)")


def internet(b: Build) -> None:
    """EIPs and NAT gateways need the emulated internet: its defaults, when there are any."""
    if b.cloud["eips"] or b.cloud["natGateways"]:
        b.cloud["internet"] = {}
        b.invent("cloud.internet", "the emulated internet, with its defaults (198.18.0.0/24, public addresses from "
                 "198.19.0.0/24), which EIPs and NAT gateways need")
