"""The scenario file's schema: what a user may write, with types and defaults.

Pydantic does the shape checks (unknown keys, types, ranges); `kubevpc.planning` does the checks
that need the whole scenario (references, overlaps, pools, quotas). Field names follow the
cloud consoles and Kubernetes (camelCase) so that a scenario reads like the real thing.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40


class Strict(BaseModel):
    """Every scenario object rejects keys it does not know, and values of another type: `true` is
    not 1, 3.0 is not 3, and "no" is not false."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


def _name(value: Any) -> Any:
    if isinstance(value, str) and not NAME_RE.match(value):
        raise ValueError("expected a lowercase name of letters, digits and '-' (RFC 1123 label)")
    if isinstance(value, str) and len(value) > MAX_NAME:
        raise ValueError(f"expected at most {MAX_NAME} characters")
    return value


def _network(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network):    # a default, or a model built in code
        return value
    if not isinstance(value, str):                  # 12345 would be 0.0.48.57/32, true 0.0.0.1/32
        raise ValueError("expected an IPv4 CIDR as a string, like 10.0.0.0/16")
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"expected an IPv4 CIDR with no host bits set, like 10.0.0.0/16 ({exc})") from None


def _address(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an IPv4 address as a string, like 10.0.1.10")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("expected an IPv4 address like 10.0.1.10") from None


# Emulated IPv6 addresses are never real ones: documentation (RFC 3849) or unique local (RFC 4193)
IPV6_RANGES = (ipaddress.IPv6Network("2001:db8::/32"), ipaddress.IPv6Network("fd00::/8"))
_IPV6_RANGES_TEXT = "2001:db8::/32 (documentation, RFC 3849) or fd00::/8 (unique local, RFC 4193)"


def _network6(value: Any) -> Any:
    """An IPv6 CIDR inside IPV6_RANGES, so that no emulated address is ever a real one."""
    if not isinstance(value, (str, ipaddress.IPv6Network)):
        raise ValueError("expected an IPv6 CIDR as a string, like 2001:db8:0:100::/56")
    try:
        net = ipaddress.IPv6Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"expected an IPv6 CIDR with no host bits set, like 2001:db8:0:100::/56 ({exc})") from None
    if not any(net.subnet_of(r) for r in IPV6_RANGES):
        raise ValueError(f"expected a CIDR inside {_IPV6_RANGES_TEXT}: emulated addresses must never be real ones")
    return net


def _address6(value: Any) -> Any:
    if not isinstance(value, (str, ipaddress.IPv6Address)):
        raise ValueError("expected an IPv6 address as a string, like 2001:db8:0:101::10")
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError("expected an IPv6 address like 2001:db8:0:101::10") from None
    if not any(addr in r for r in IPV6_RANGES):
        raise ValueError(f"expected an address inside {_IPV6_RANGES_TEXT}: emulated addresses must never be real ones")
    return addr


# What the JSON Schema (kubevpc.scenario.schema) says a value may be where a validator takes more
# than the type it returns: editors check as the loader does, neither stricter nor looser
NAME_SCHEMA = {"type": "string", "pattern": NAME_RE.pattern, "maxLength": MAX_NAME,
               "description": "a lowercase name of letters, digits and '-' (RFC 1123 label)"}
PORT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 65535}
Name = Annotated[str, BeforeValidator(_name), WithJsonSchema(NAME_SCHEMA)]
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_network)]
Address = Annotated[ipaddress.IPv4Address, BeforeValidator(_address)]
Cidr6 = Annotated[ipaddress.IPv6Network, BeforeValidator(_network6)]
Address6 = Annotated[ipaddress.IPv6Address, BeforeValidator(_address6)]
Port = Annotated[int, Field(ge=1, le=65535)]


class PortRange(Strict):
    first: int
    last: int

    @classmethod
    def parse(cls, value: Any) -> "PortRange | None":
        """Accept 80, "80", "8000-8080" or Alibaba's "8000/8080"; -1/-1 or "all" means any port."""
        if value is None or value in ("all", "-1/-1", "1/65535", "1-65535"):
            return None
        if isinstance(value, int):
            first = last = value
        else:
            parts = re.split(r"[-/]", str(value).strip())
            if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
                raise ValueError("expected a port (80) or a range (8000-8080)")
            first, last = int(parts[0]), int(parts[-1])
        if not (1 <= first <= last <= 65535):
            raise ValueError("expected ports between 1 and 65535, first <= last")
        return cls(first=first, last=last)


# ---------------------------------------------------------------------------------------- cloud
class VSwitch(Strict):
    name: Name
    zone: str = "zone-a"
    cidr: Cidr
    ipv6Cidr: Cidr6 | None = None  # a /64 of its VPC's ipv6Cidr (Alibaba: the vSwitch's IPv6 CIDR block)


class RouteEntry(Strict):
    """A custom route table entry; the next hop is an ECS instance, a NAT gateway or a VPC peering
    connection, by name."""

    destination: Cidr
    nextHop: Name
    description: str = ""


class RouteTable(Strict):
    """The VPC's system route table: every vSwitch not associated with a custom table uses it."""

    quota: int = Field(default=50, ge=1, le=1000)
    routes: list[RouteEntry] = []


class CustomRouteTable(Strict):
    """A custom route table (Alibaba VPC): its own entries and quota, used by the vSwitches
    associated with it (a vSwitch with at most one); the system routes of every vSwitch are in it too."""

    name: Name
    vswitches: list[Name] = []
    quota: int = Field(default=50, ge=1, le=1000)
    routes: list[RouteEntry] = []
    description: str = ""


class VPC(Strict):
    name: Name
    cidr: Cidr
    ipv6Cidr: Cidr6 | None = None  # the VPC's IPv6 /56 (Alibaba gives one when IPv6 is enabled)
    vswitches: list[VSwitch] = Field(min_length=1)
    routeTable: RouteTable = RouteTable()
    routeTables: list[CustomRouteTable] = []


PORTS_SCHEMA = {"anyOf": [PORT_SCHEMA, {"type": "string", "pattern": r"^\s*(all|-1/-1|[0-9]+([-/][0-9]+)?)\s*$"},
                         {"type": "null"}]}


class SecurityGroupRule(Strict):
    direction: Literal["ingress", "egress"]
    protocol: Literal["tcp", "udp", "icmp", "all"] = "all"
    ports: Annotated[Any, WithJsonSchema(PORTS_SCHEMA)] = None   # 80, 8000-8080 or 8000/8080; all, -1/-1 or none: every port
    cidr: Cidr | None = None   # the peer: source for ingress, destination for egress
    ipv6Cidr: Cidr6 | None = None   # or an IPv6 peer (Alibaba: Ipv6SourceCidrIp / Ipv6DestCidrIp)
    group: Name | None = None  # or a peer security group (its members, in both families)
    policy: Literal["accept", "drop"] = "accept"
    priority: int = Field(default=1, ge=1, le=100)
    description: str = ""

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        PortRange.parse(value)
        return value

    @property
    def port_range(self) -> PortRange | None:
        return PortRange.parse(self.ports)


class SecurityGroup(Strict):
    name: Name
    vpc: Name
    rules: list[SecurityGroupRule] = []
    description: str = ""


class ServerPort(Strict):
    port: Port
    protocol: Literal["TCP", "UDP"] = "TCP"


def _server_port(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"port": value}
    if isinstance(value, str) and "/" in value:          # "53/UDP"
        port, proto = value.split("/", 1)
        if port.isdigit():
            return {"port": int(port), "protocol": proto.upper()}
    if not isinstance(value, (dict, ServerPort)):
        raise ValueError('expected a port: a number (80), "53/UDP", or {port: 53, protocol: UDP}')
    return value


# what _server_port takes: a port, "53/UDP", or the mapping
ServerPortText = Annotated[str, Field(pattern="^[0-9]+/([tT][cC][pP]|[uU][dD][pP])$")]
ServerPortIn = Annotated[ServerPort, BeforeValidator(_server_port, json_schema_input_type=Union[Port, ServerPortText,
                                                                                              ServerPort])]


class Instance(Strict):
    """An ECS instance. Nodes of the cluster are ECS instances named in cluster.nodes."""

    name: Name
    vswitch: Name
    ip: Address | None = None
    ipv6: Address6 | None = None   # on a vSwitch with an ipv6Cidr; default: its v4 host number in the /64
    securityGroups: list[Name] = []
    ports: list[ServerPortIn] = []
    description: str = ""


# ------------------------------------------------------------------------------------- internet
DOCUMENTATION_RANGES = ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
# names reserved for documentation and testing (RFC 2606, RFC 6761, RFC 8375): an emulated name is never a real one
RESERVED_DOMAINS = ("example", "example.com", "example.net", "example.org", "test", "invalid", "home.arpa")
DOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class InternetHost(Strict):
    """A machine on the emulated internet: a namespace behind the internet router."""

    name: Name
    ip: Address | None = None
    ports: list[ServerPortIn] = [ServerPort(port=80)]
    description: str = ""


class Internet(Strict):
    """The emulated internet zone. Both ranges must be reserved for benchmarking (RFC 2544) or
    documentation (RFC 5737), so no emulated address is ever a real one."""

    cidr: Cidr = ipaddress.IPv4Network("198.18.0.0/24")         # the zone's own hosts
    publicCIDR: Cidr = ipaddress.IPv4Network("198.19.0.0/24")   # what the cloud gives out: EIPs
    hosts: list[InternetHost] = []
    # the zone's DNS domain: the VPC's resolver answers <host>.<domain> with each host's address
    domain: str = Field(default="example.com", max_length=190, pattern=DOMAIN_PATTERN)


class Eip(Strict):
    """An elastic IP address, bound to at most one of: an ECS instance, a NAT gateway. One bound to
    neither may be bound to a pod (eni mode) by the pod's Terway annotation
    `k8s.aliyun.com/pod-eip-instanceid: <this name>` (kubevpc.planning.podeip)."""

    name: Name
    ip: Address | None = None     # default: the lowest free address of internet.publicCIDR
    instance: Name | None = None
    natGateway: Name | None = None
    description: str = ""


class SnatEntry(Strict):
    """Who a NAT gateway translates: exactly one of a vSwitch, an instance or a CIDR of its VPC."""

    vswitch: Name | None = None
    instance: Name | None = None
    cidr: Cidr | None = None
    eip: Name | None = None       # one of the gateway's EIPs; default: its first


def _lower(value: Any) -> Any:
    """Alibaba's API spells these TCP, UDP, Any; the scenario takes either case."""
    return value.lower() if isinstance(value, str) else value


def _dnat_port(value: Any) -> Any:
    """A DNAT entry's port: a number, or any (Any) for IP mapping."""
    if isinstance(value, str) and value.lower() == "any":
        return "any"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise ValueError("expected a port, 1 to 65535 (a number), or any with ipProtocol any")


# tcp, udp or any in any case; a DNAT port: a number, or any
DNAT_PROTOCOL_SCHEMA = {"anyOf": [{"enum": ["tcp", "udp", "any"]},
                                  {"type": "string", "pattern": "^([tT][cC][pP]|[uU][dD][pP]|[aA][nN][yY])$"}]}
DNAT_PORT_SCHEMA = {"anyOf": [PORT_SCHEMA, {"type": "string", "pattern": "^[aA][nN][yY]$"}]}
DnatPort = Annotated[Any, BeforeValidator(_dnat_port), WithJsonSchema(DNAT_PORT_SCHEMA)]


class DnatEntry(Strict):
    """A DNAT entry of a NAT gateway, as Alibaba's ForwardEntry (CreateForwardEntry): a new
    connection from the internet to ExternalIp:ExternalPort over IpProtocol is forwarded to
    InternalIp:InternalPort, and its replies go back the same way. `ipProtocol: any` is IP mapping:
    every protocol and port of the EIP, and the target leaves to the internet as that EIP. The
    target is exactly one of an ECS instance, a pod (eni mode only: `<namespace>/<name>` or
    `<name>` in default) or an address (InternalIp) that one of them holds."""

    name: Name | None = None       # ForwardEntryName; default dnat-<index in the gateway's list>
    eip: Name                      # ExternalIp: one of the gateway's EIPs, by name
    ipProtocol: Annotated[Literal["tcp", "udp", "any"], BeforeValidator(_lower), WithJsonSchema(DNAT_PROTOCOL_SCHEMA)]
    externalPort: DnatPort = None
    internalPort: DnatPort = None    # default: externalPort
    instance: Name | None = None
    pod: str | None = None
    internalIp: Address | None = None
    portBreak: bool = False        # PortBreak: ports above 1024 on an EIP that SNAT entries use too
    description: str = ""


class NatGateway(Strict):
    name: Name
    vpc: Name
    snat: list[SnatEntry] = []
    dnat: list[DnatEntry] = []
    description: str = ""


class FlowLogOptions(Strict):
    """Flow logs of every ENI, kept by the vSwitches (kubevpc.observe.flowlog)."""

    enabled: bool = True
    window: int = Field(default=10, ge=1, le=600)     # seconds a connection is idle before its record is closed


class Peering(Strict):
    """A VPC peering connection between two VPCs: it carries what routes on both sides send to it
    (route entries whose nextHop is its name)."""

    name: Name
    vpcs: list[Name] = Field(min_length=2, max_length=2)
    description: str = ""


class Cloud(Strict):
    vpcs: list[VPC] = Field(min_length=1)
    peerings: list[Peering] = []
    flowLogs: FlowLogOptions = FlowLogOptions()
    securityGroups: list[SecurityGroup] = []
    instances: list[Instance] = []
    internet: Internet | None = None
    natGateways: list[NatGateway] = []
    eips: list[Eip] = []


# -------------------------------------------------------------------------------------- cluster
class VxlanOptions(Strict):
    vni: int = Field(default=1, ge=1, le=16777215)
    port: Port = 4789


class EniOptions(Strict):
    """Terway-style addressing: pods take addresses from these vSwitches, those of the node's zone
    in order (default: the node's own). The eni-config ConfigMap, when there is one, says it instead."""

    vswitches: list[Name] = []
    securityGroups: list[Name] | None = None   # default: the node's security groups


class DnsOptions(Strict):
    """The cluster DNS (kube-dns Service in kube-system, one pod on the first node)."""

    enabled: bool = True
    clusterDomain: str = Field(default="cluster.local", pattern=DOMAIN_PATTERN)
    ip: Address | None = None        # default: the 10th address of the service CIDR, as kubeadm and ACK use


class IngressOptions(Strict):
    """The NGINX ingress controllers' settings, as ingress-nginx's ConfigMap has them."""

    allowSnippetAnnotations: bool = False     # allow-snippet-annotations: refused by default since ingress-nginx 1.9


class Cluster(Strict):
    name: Name = "cluster"
    mode: Literal["vxlan", "vpc-route", "eni"] = "vxlan"
    nodes: list[Name] = Field(min_length=1)
    nodeLabels: dict[Name, dict[str, str]] = {}   # labels of nodes (Terway's terway-config selects a node's own config)
    podCIDR: Cidr = ipaddress.IPv4Network("10.244.0.0/16")
    additionalPodCIDRs: list[Cidr] = []        # vpc-route: more blocks, for nodes beyond podCIDR's capacity
    nodeCIDRMaskSize: int = Field(default=24, ge=16, le=28)
    serviceCIDR: Cidr = ipaddress.IPv4Network("172.21.0.0/20")
    underlayMTU: int = Field(default=1500, ge=1280, le=9000)
    vxlan: VxlanOptions = VxlanOptions()
    eni: EniOptions = EniOptions()
    nodePortRange: str = Field(default="30000-32767", pattern=r"^\d{1,5}-\d{1,5}$")
    dns: DnsOptions = DnsOptions()
    ingress: IngressOptions = IngressOptions()
    dualStack: bool = False   # ACK's "IPv6 dual-stack": Terway (eni) only, in a VPC with IPv6
    serviceCIDRv6: Cidr6 | None = None   # ACK's "IPv6 Service CIDR" (dual stack): Services' IPv6 ClusterIPs


# --------------------------------------------------------------------------------------- expect
class Expectation(Strict):
    """A connectivity assertion: from an endpoint to an endpoint and port, allowed or denied."""

    source: str = Field(alias="from")
    to: str
    port: Port
    protocol: Literal["TCP", "UDP"] = "TCP"
    result: Literal["allow", "deny"]
    modes: list[Literal["vxlan", "vpc-route", "eni"]] = []   # only in these modes (default: all)
    family: Literal[4, 6] = 4      # 6: to the destination's IPv6 address (dual stack)


class ManifestFile(Strict):
    file: str


class Scenario(Strict):
    name: Name = "scenario"
    description: str = ""
    cloud: Cloud
    cluster: Cluster | None = None
    manifests: list[Union[ManifestFile, dict[str, Any]]] = []
    expect: list[Expectation] = []
