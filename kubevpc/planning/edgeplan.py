"""The Plan's parts for the internet: the zone, each VPC's edge, EIPs, and NAT gateways with their
SNAT and DNAT entries (kubevpc.planning.model re-exports them)."""
from __future__ import annotations

from typing import Literal

from .base import Frozen
from .ports import VPC_DNS


class InternetPlan(Frozen):
    """The emulated internet: a router bridge with the zone's hosts, and one edge per VPC."""

    cidr: str                       # the hosts' subnet
    public_cidr: str                # EIPs, NAT gateway addresses, internet SLBs
    gateway: str                    # the router's address in `cidr`
    gateway_mac: str
    bridge: str
    domain: str = "example.com"     # the hosts' names are <name>.<domain> at the VPCs' resolvers
    resolvers: tuple[str, ...] = VPC_DNS   # the addresses of every VPC's DNS resolver


class EdgePlan(Frozen):
    """Where a VPC meets the internet: EIPs (1:1 NAT) and NAT gateways (SNAT), stateful."""

    vpc: str
    bridge: str
    mac: str                        # the edge's MAC on both of its sides
    internet_port: int              # ofport of this edge's patch on the internet router


class EipPlan(Frozen):
    name: str
    ip: str
    vpc: str = ""                   # "" when unbound
    bound: Literal["instance", "natgw", "slb", "pod", ""] = ""
    target: str = ""                # the instance, NAT gateway, Service (<ns>/<name>) or pod (its key) it is bound to
    private_ip: str = ""            # instance, pod: its address; slb: the SLB's VIP

    @property
    def one_to_one(self) -> bool:
        """Bound to one host's address (an instance, or an eni pod): 1:1 NAT both ways."""
        return self.bound in ("instance", "pod")


class SnatPlan(Frozen):
    source: str                     # a CIDR (a /32 for an instance)
    public_ip: str
    what: str                       # "vSwitch vsw-h", "instance ecs-db", "CIDR 192.168.1.0/28"


class DnatPlan(Frozen):
    """A DNAT entry (Alibaba's ForwardEntry): new connections from the internet to
    public_ip:external_port over `protocol` go to internal_ip:internal_port; "any" is IP mapping
    (every protocol and port, and the target leaves as public_ip)."""

    name: str
    eip: str                        # the EIP's name
    public_ip: str
    protocol: Literal["tcp", "udp", "any"]
    external_port: int = 0          # 0 with protocol "any"
    target: str = ""                # the host key named (ecs/..., pod/...); "" when nothing holds internal_ip now
    internal_ip: str = ""           # "" when the pod it names is gone (deleted while running): no flows
    internal_port: int = 0          # 0 with protocol "any"

    @property
    def what(self) -> str:
        """The entry in words: "DNAT entry web 198.19.0.2:80/tcp"."""
        port = "" if self.protocol == "any" else f":{self.external_port}/{self.protocol}"
        return f"DNAT entry {self.name} {self.public_ip}{port}" + (" (IP mapping)" if self.protocol == "any" else "")


class NatGatewayPlan(Frozen):
    name: str
    vpc: str
    public_ips: tuple[str, ...]     # its EIPs, in scenario order
    snat: tuple[SnatPlan, ...]      # most specific source first
    dnat: tuple[DnatPlan, ...] = () # in scenario order
