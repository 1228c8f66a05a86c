"""Address planning: a validated scenario becomes a Plan, the complete description of what to build.

Pure: no side effects. The Plan names every namespace, bridge, port and interface the run will
create, gives every address and MAC, and is what the controller compiles its flows from. Any
problem found while planning (dangling references, overlaps, exhausted pools, quotas, names too
long) is reported with the scenario file, line, path and value, and nothing is built.
"""
from __future__ import annotations

import ipaddress
import zlib
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import k8s
from .errors import Problem, ScenarioError
from .k8s import ingress
from .ledger import MAX_TAG, RUN_NAME
from .load import Loaded, Source
from .model import DOCUMENTATION_RANGES

IFNAMSIZ = 15            # the kernel's limit on interface names (16 with the NUL)
RESERVED_TAIL = 3        # Alibaba reserves the first and the last three addresses of a vSwitch
SNAT_PORTS = (61000, 65535)
REJECT_PORT = 1          # nothing listens here on a node: Services without endpoints are DNATed to it to be refused
READY_ANNOTATION = "kubevpc.io/ready"
APP_ANNOTATION = "kubevpc.io/app"     # "ingress-nginx": the pod runs the NGINX ingress controller
APPS = {"server": "server", "ingress-nginx": "ingress"}
DNS_POD = "kube-dns-0"
ANNOTATION = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
ADDRESS_TYPE, VSWITCH_ID = ANNOTATION + "address-type", ANNOTATION + "vswitch-id"
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")   # above the kernel's default ephemeral range (32768-60999)

# Fixed OpenFlow port numbers, so flows can be compiled from the plan alone.
OFPORT_VROUTER_ON_VSWITCH = 1
OFPORT_FIRST_ATTACHMENT = 10
OFPORT_NODE_HOST = 1
OFPORT_NODE_UPLINK0 = 2
OFPORT_NODE_UPLINK_PATCH0 = 50   # the patch port beside each uplink
OFPORT_NODE_TUNNEL0 = 100
OFPORT_VSWITCH_UPLINK_PATCH0 = 20000   # + the uplink's port on the vSwitch: its patch port there
OFPORT_NODE_POD0 = 1000
OFPORT_VROUTER_EDGE = 100        # the vRouter's link to its VPC's edge
OFPORT_EDGE_VPC = 1              # the edge's link to the vRouter ...
OFPORT_EDGE_INTERNET = 2         # ... and its patch to the internet router
OFPORT_INTERNET_HOST0 = 10       # internet router: hosts from here; edges from 1
NAT_PORTS = (1024, 65535)        # source ports a NAT gateway or EIP translation may choose


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def mac_for(ip: str) -> str:
    """0a:58 followed by the IPv4 address, as Kubernetes CNIs do: readable in any dump."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


class ServerPort(Frozen):
    port: int
    protocol: Literal["TCP", "UDP"]
    name: str = ""


class OvsPort(Frozen):
    name: str
    ofport: int
    kind: Literal["veth", "patch", "link", "vxlan"]
    peer: str = ""                  # patch, link: the peer port; veth: the namespace host key
    # link: a veth pair whose two ends are ports of two bridges (a node's uplink to its vSwitch).
    # Unlike a patch port it ends the datapath pass, which the userspace datapath needs: it
    # allows a packet only a few conntrack recirculations per pass (MAX_RECIRC_DEPTH), and a
    # NodePort connection to a pod on another node takes more than that from end to end.


class BridgePlan(Frozen):
    name: str
    role: Literal["vrouter", "vswitch", "node", "edge", "internet"]
    owner: str                      # the VPC, vSwitch or node it implements (edge: the VPC; internet: "internet")
    dpid: int
    zone: int                       # conntrack zone used on this bridge
    ports: tuple[OvsPort, ...]


class HostPlan(Frozen):
    """A network namespace with one NIC: an ECS instance or a pod."""

    key: str                        # ecs/<name> or pod/<namespace>/<name>
    kind: Literal["ecs", "pod", "slb", "internet"]   # slb: an SLB instance's namespace, holding its VIP
                                    # (health checks); internet: a host of the emulated internet
    name: str                       # ECS name, or pod name
    namespace: str = ""             # Kubernetes namespace (pods)
    netns: str                      # the ip-netns name we give it
    ifname: str = "eth0"
    veth: str                       # root-side end, an OVS port
    bridge: str
    ofport: int
    ip: str
    prefixlen: int
    mac: str
    gateway: str
    gateway_mac: str
    mtu: int
    servers: tuple[ServerPort, ...] = ()
    labels: dict[str, str] = {}
    node: str = ""                  # pods: the node it runs on; ECS: itself if a node
    vswitch: str = ""               # ECS, eni pods: the vSwitch whose address it holds
    security_groups: tuple[str, ...] = ()
    ready: bool = True              # pods: counted as a Service endpoint only when ready
    app: Literal["server", "dns", "slb", "ingress"] = "server"   # the pod server, the cluster DNS, an SLB's
                                    # checker, the NGINX ingress controller


class VSwitchPlan(Frozen):
    name: str
    vpc: str
    zone: str
    cidr: str
    gateway: str
    gateway_mac: str
    bridge: str
    vrouter_port: int               # ofport of this vSwitch on the vRouter


class Route(Frozen):
    destination: str
    kind: Literal["system", "custom", "pod", "natgw"]
    next_hop: str = ""              # ECS instance name for custom and pod routes, NAT gateway name for natgw
    description: str = ""


class VpcPlan(Frozen):
    name: str
    cidr: str
    bridge: str
    routes: tuple[Route, ...]
    quota: int


class Tunnel(Frozen):
    """A peer reached through the node's VXLAN device (one device per node, one entry per peer)."""

    peer: str                       # peer node name
    ifname: str
    ofport: int
    local_ip: str
    remote_ip: str
    peer_pod_cidr: str


class Uplink(Frozen):
    """A node's uplink to a vSwitch: a veth pair ("link"), which ends the datapath pass, and beside
    it a patch pair, which does not. The vSwitch always sends to the node through the veth pair;
    the node sends through the patch pair unless a Service committed the connection on it in this
    pass or the packet is new (docs/design.md, "Why node uplinks are veth pairs, with patch ports
    beside them")."""

    vswitch: str
    port: str                       # the node bridge's end of the link (a veth pair)
    peer: str                       # the vSwitch bridge's end
    ofport: int                     # on the node bridge
    vswitch_ofport: int             # on the vSwitch bridge
    patch: str                      # the node bridge's patch port ...
    patch_peer: str                 # ... and its peer on the vSwitch
    patch_ofport: int               # on the node bridge
    vswitch_patch_ofport: int       # on the vSwitch bridge


class NodePlan(Frozen):
    name: str
    ecs: str                        # host key of its ECS namespace
    ip: str
    mac: str
    vswitch: str
    bridge: str
    pod_cidr: str = ""              # empty in eni mode
    gateway: str = ""               # pods' gateway (vxlan, vpc-route)
    gateway_mac: str = ""
    uplinks: tuple[Uplink, ...]
    tunnels: tuple[Tunnel, ...] = ()


class Attachment(Frozen):
    """Who sits behind a vSwitch port, for L2 and security groups."""

    vswitch: str
    ofport: int
    port: str
    mac: str
    ip: str                         # an address or a CIDR behind this port
    owner: str                      # host key (or node/<name> for a pod CIDR)
    security_groups: tuple[str, ...]


class RulePlan(Frozen):
    direction: Literal["ingress", "egress"]
    protocol: Literal["tcp", "udp", "icmp", "all"]
    port_min: int = 0               # 0: every port
    port_max: int = 0
    cidr: str = ""
    group: str = ""
    policy: Literal["accept", "drop"]
    priority: int
    description: str = ""

    def text(self, group: str, number: int) -> str:
        """The rule in the console's words: `sg-db rule 1 (accept tcp/5432 from sg-nodes, priority 1:
        "postgres from nodes")`; `number` counts from 1 in the group."""
        ports = f"/{self.port_min}" if self.port_min == self.port_max and self.port_min else \
            f"/{self.port_min}-{self.port_max}" if self.port_min else ""
        way = "from" if self.direction == "ingress" else "to"
        note = f': "{self.description}"' if self.description else ""
        return (f"{group} rule {number} ({self.policy} {self.protocol}{ports} {way} {self.cidr or self.group}, "
                f"priority {self.priority}{note})")


class GroupPlan(Frozen):
    name: str
    vpc: str
    rules: tuple[RulePlan, ...]
    members: tuple[str, ...]        # addresses/CIDRs whose traffic counts as from a member


class ClusterPlan(Frozen):
    name: str
    mode: Literal["vxlan", "vpc-route", "eni"]
    vpc: str
    pod_cidr: str
    service_cidr: str
    vni: int
    vxlan_port: int
    pod_mtu: int
    underlay_mtu: int
    allow_snippet_annotations: bool = False    # cluster.ingress.allowSnippetAnnotations


class ServicePortPlan(Frozen):
    name: str
    protocol: Literal["TCP", "UDP", "SCTP"]
    port: int
    target_port: int | str          # as declared (a number or a container port name)
    node_port: int = 0              # 0: none


class EndpointPlan(Frozen):
    """A pod selected by a Service, with its target port resolved per Service port."""

    pod: str                        # host key
    name: str
    ip: str
    node: str
    ready: bool
    hostname: str = ""
    ports: tuple[int, ...]          # per Service port, in order; 0: the pod has no such named port


class ServicePlan(Frozen):
    name: str
    namespace: str
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
    cluster_ip: str = ""            # "" when headless or ExternalName
    headless: bool = False
    external_name: str = ""
    ports: tuple[ServicePortPlan, ...] = ()
    selector: dict[str, str] = {}
    endpoints: tuple[EndpointPlan, ...] = ()
    session_affinity: bool = False
    affinity_timeout: int = 10800
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    internal_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    health_check_node_port: int = 0
    annotations: dict[str, str] = {}

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def ready_endpoints(self, index: int) -> list[EndpointPlan]:
        """Endpoints that serve port `index`: ready, and with the target port resolved."""
        return [e for e in self.endpoints if e.ready and e.ports[index]]


class SlbBackend(Frozen):
    id: str                         # node name, or pod key in eni mode
    ip: str
    port: int                       # where the listener sends: a NodePort, or the pod's port (eni)
    check_port: int                 # where the health check goes (healthCheckNodePort with policy Local)
    weight: int


class SlbListener(Frozen):
    name: str                       # "<ns>/<svc>:<port>/<protocol>", as the health checker logs it
    port: int
    protocol: Literal["TCP", "UDP"]
    backends: tuple[SlbBackend, ...]


class SlbPlan(Frozen):
    """An intranet SLB instance for a LoadBalancer Service: a VIP on a vSwitch, one listener per port."""

    service: str                    # "<namespace>/<name>"
    host: str                       # host key of its namespace (the VIP's owner, where the checker runs)
    vip: str
    vswitch: str
    scheduler: Literal["rr", "wrr", "wlc"]
    check: dict                     # kubevpc.render.slb.CheckSpec as JSON
    listeners: tuple[SlbListener, ...]
    public_ip: str = ""             # internet-facing: the EIP bound to it at the VPC's edge


class InternetPlan(Frozen):
    """The emulated internet: a router bridge with the zone's hosts, and one edge per VPC."""

    cidr: str                       # the hosts' subnet
    public_cidr: str                # EIPs, NAT gateway addresses, internet SLBs
    gateway: str                    # the router's address in `cidr`
    gateway_mac: str
    bridge: str


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
    bound: Literal["instance", "natgw", "slb", ""] = ""
    target: str = ""                # the instance, NAT gateway or Service (<ns>/<name>) it is bound to
    private_ip: str = ""            # instance: its address; slb: the SLB's VIP


class SnatPlan(Frozen):
    source: str                     # a CIDR (a /32 for an instance)
    public_ip: str
    what: str                       # "vSwitch vsw-h", "instance ecs-db", "CIDR 192.168.1.0/28"


class NatGatewayPlan(Frozen):
    name: str
    vpc: str
    public_ips: tuple[str, ...]     # its EIPs, in scenario order
    snat: tuple[SnatPlan, ...]      # most specific source first


class DnsPlan(Frozen):
    domain: str
    ip: str                         # the kube-dns Service's ClusterIP
    pods: tuple[str, ...]           # host keys of the DNS pods


class Plan(Frozen):
    run: str                        # the run's name: a prefix of everything we create
    scenario: str
    file: str
    cluster: ClusterPlan | None
    vpcs: tuple[VpcPlan, ...]
    vswitches: tuple[VSwitchPlan, ...]
    bridges: tuple[BridgePlan, ...]
    hosts: tuple[HostPlan, ...]
    nodes: tuple[NodePlan, ...]
    attachments: tuple[Attachment, ...]
    groups: tuple[GroupPlan, ...]
    services: tuple[ServicePlan, ...] = ()
    slbs: tuple[SlbPlan, ...] = ()
    dns: DnsPlan | None = None
    internet: InternetPlan | None = None
    edges: tuple[EdgePlan, ...] = ()
    eips: tuple[EipPlan, ...] = ()
    nat_gateways: tuple[NatGatewayPlan, ...] = ()
    # NetworkPolicies in manifest order (the compiler's identifiers follow it), and every
    # namespace's labels (kubernetes.io/metadata.name is added where they are used)
    network_policies: tuple[k8s.NetworkPolicy, ...] = ()
    namespaces: dict[str, dict[str, str]] = {}
    # Ingresses (manifest order) and TLS Secrets, for the ingress controllers
    ingresses: tuple[ingress.Ingress, ...] = ()
    secrets: tuple[ingress.Secret, ...] = ()
    expect: tuple[dict, ...] = ()
    flow_log_window: int = 0        # seconds of idleness that close a flow log record; 0: flow logs off

    def host(self, key: str) -> HostPlan:
        return _find(self.hosts, "key", key)

    def bridge(self, name: str) -> BridgePlan:
        return _find(self.bridges, "name", name)

    def node(self, name: str) -> NodePlan:
        return _find(self.nodes, "name", name)

    def vswitch(self, name: str) -> VSwitchPlan:
        return _find(self.vswitches, "name", name)

    def service(self, key: str) -> ServicePlan:
        """`<namespace>/<name>`, or `<name>` in namespace default."""
        ns, _, name = key.rpartition("/")
        for svc in self.services:
            if svc.name == name and svc.namespace == (ns or "default"):
                return svc
        raise KeyError(key)

    @property
    def pods(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.kind == "pod")

    @property
    def instances(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.kind == "ecs")

    @property
    def internet_hosts(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.kind == "internet")

    def edge(self, vpc: str) -> EdgePlan | None:
        return next((e for e in self.edges if e.vpc == vpc), None)


def _find(items, attr: str, value: str):
    """The item whose `attr` is `value`; KeyError(value) when there is none."""
    for item in items:
        if getattr(item, attr) == value:
            return item
    raise KeyError(value)


def resolve_endpoint(plan: Plan, ref: str) -> HostPlan:
    """`pod/<ns>/<name>`, `pod/<name>` (namespace default), `ecs/<name>` or `node/<name>`."""
    parts = ref.split("/")
    if parts[0] == "pod" and len(parts) == 2:
        parts = ["pod", "default", parts[1]]
    if parts[0] == "node" and len(parts) == 2:
        parts = ["ecs", parts[1]]
    return plan.host("/".join(parts))


def usable(net: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Addresses an instance may hold on a vSwitch: not the first, not the last three."""
    return list(net)[1:-RESERVED_TAIL] if net.num_addresses > 4 else []


class Planner:
    """Builds the Plan while collecting every problem, so the user sees them all at once."""

    def __init__(self, loaded: Loaded, run: str):
        self.loaded = loaded
        self.src: Source = loaded.source
        self.sc = loaded.scenario
        self.run = run
        self.problems: list[Problem] = []
        self.ready_overrides: dict[str, bool] = {}
        self.label_overrides: dict[str, dict[str, str | None]] = {}   # by pod key; None removes the label
        self.natgw_vpc: dict[str, str] = {}    # NAT gateway name -> its VPC (route next hops)
        self.internet_slbs: set[str] = set()   # Services whose SLB is internet-facing
        # the running scenario's plan, when planning a change to it: hosts that stay keep their
        # node, address, interface and port, and what it held is not handed to newcomers
        self.previous: dict[str, HostPlan] = {}

    def bad(self, path: tuple, value: object, expected: str, src: Source | None = None) -> None:
        self.problems.append((src or self.src).problem(path, value, expected))

    # ------------------------------------------------------------------------------ the cloud
    def plan(self) -> Plan:
        sc = self.sc
        self._check_run_name()
        vpcs = {v.name: v for v in sc.cloud.vpcs}
        self._unique([("cloud", "vpcs", i, "name") for i in range(len(sc.cloud.vpcs))],
                     [v.name for v in sc.cloud.vpcs], "VPC")
        vswitch_of: dict[str, tuple[int, int]] = {}
        for i, vpc in enumerate(sc.cloud.vpcs):
            if not any(vpc.cidr.subnet_of(ipaddress.IPv4Network(r)) for r in RFC1918):
                self.bad(("cloud", "vpcs", i, "cidr"), str(vpc.cidr), "expected a private range "
                         "(10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 and their subnets)")
            if not 8 <= vpc.cidr.prefixlen <= 24:
                self.bad(("cloud", "vpcs", i, "cidr"), str(vpc.cidr), "expected a VPC mask between /8 and /24")
            for j, vsw in enumerate(vpc.vswitches):
                path = ("cloud", "vpcs", i, "vswitches", j)
                if vsw.name in vswitch_of:
                    self.bad(path + ("name",), vsw.name, "duplicate vSwitch name; expected unique names")
                vswitch_of[vsw.name] = (i, j)
                if not vsw.cidr.subnet_of(vpc.cidr):
                    self.bad(path + ("cidr",), str(vsw.cidr), f"expected a subnet of the VPC CIDR {vpc.cidr}")
                if not 16 <= vsw.cidr.prefixlen <= 29:
                    self.bad(path + ("cidr",), str(vsw.cidr), "expected a vSwitch mask between /16 and /29")
                for k in range(j):
                    other = vpc.vswitches[k]
                    if vsw.cidr.overlaps(other.cidr):
                        self.bad(path + ("cidr",), str(vsw.cidr),
                                 f"overlaps vSwitch {other.name!r} ({other.cidr}); expected disjoint vSwitch CIDRs")
        if self.problems:
            raise ScenarioError(self.problems)

        vswitches: list[VSwitchPlan] = []
        bridges: list[BridgePlan] = []
        zone_base = zlib.crc32(self.run.encode()) % 50000 + 1
        vsw_index: dict[str, int] = {}
        for vpc in sc.cloud.vpcs:
            for vsw in vpc.vswitches:
                idx = len(vswitches)
                vsw_index[vsw.name] = idx
                gw = str(list(vsw.cidr)[-RESERVED_TAIL])
                vswitches.append(VSwitchPlan(
                    name=vsw.name, vpc=vpc.name, zone=vsw.zone, cidr=str(vsw.cidr), gateway=gw,
                    gateway_mac=mac_for(gw), bridge=f"{self.run}-vs{idx}",
                    vrouter_port=sum(1 for v in vswitches if v.vpc == vpc.name) + 1))
        self.zone_base = zone_base

        # ---- security groups
        groups_by_name = {}
        for i, sg in enumerate(sc.cloud.securityGroups):
            if sg.name in groups_by_name:
                self.bad(("cloud", "securityGroups", i, "name"), sg.name, "duplicate security group name")
            groups_by_name[sg.name] = sg
            if sg.vpc not in vpcs:
                self.bad(("cloud", "securityGroups", i, "vpc"), sg.vpc,
                         f"no such VPC; expected one of {sorted(vpcs)}")
        for i, sg in enumerate(sc.cloud.securityGroups):
            for j, rule in enumerate(sg.rules):
                path = ("cloud", "securityGroups", i, "rules", j)
                if (rule.cidr is None) == (rule.group is None):
                    self.bad(path, rule.model_dump(exclude_defaults=True),
                             "expected exactly one peer: cidr (an IPv4 CIDR) or group (a security group name)")
                if rule.group is not None:
                    peer = groups_by_name.get(rule.group)
                    if peer is None:
                        self.bad(path + ("group",), rule.group,
                                 f"no such security group; expected one of {sorted(groups_by_name)}")
                    elif peer.vpc != sg.vpc:
                        self.bad(path + ("group",), rule.group, f"expected a group in the same VPC ({sg.vpc})")
                if rule.port_range is not None and rule.protocol not in ("tcp", "udp"):
                    self.bad(path + ("ports",), rule.ports, "ports apply only to tcp and udp rules")

        # ---- instances and their addresses
        instances = sc.cloud.instances
        self._unique([("cloud", "instances", i, "name") for i in range(len(instances))],
                     [e.name for e in instances], "instance")
        taken: dict[str, set[str]] = defaultdict(set)
        ips: dict[str, str] = {}
        for i, ecs in enumerate(instances):
            path = ("cloud", "instances", i)
            if ecs.vswitch not in vswitch_of:
                self.bad(path + ("vswitch",), ecs.vswitch, f"no such vSwitch; expected one of {sorted(vswitch_of)}")
                continue
            vsw_vpc = vswitches[vsw_index[ecs.vswitch]].vpc
            for k, g in enumerate(ecs.securityGroups):
                if g not in groups_by_name:
                    self.bad(path + ("securityGroups", k), g,
                             f"no such security group; expected one of {sorted(groups_by_name)}")
                elif groups_by_name[g].vpc != vsw_vpc:
                    self.bad(path + ("securityGroups", k), g,
                             f"security group is in VPC {groups_by_name[g].vpc!r}, the instance in {vsw_vpc!r}")
            if ecs.ip is not None:
                net = ipaddress.IPv4Network(vswitches[vsw_index[ecs.vswitch]].cidr)
                if ecs.ip not in net:
                    self.bad(path + ("ip",), str(ecs.ip), f"outside its vSwitch {ecs.vswitch} ({net})")
                elif ecs.ip not in usable(net):
                    self.bad(path + ("ip",), str(ecs.ip), f"reserved address of {net}: the first and "
                             "the last three addresses of a vSwitch belong to the cloud")
                elif str(ecs.ip) in taken[ecs.vswitch]:
                    self.bad(path + ("ip",), str(ecs.ip), "address already taken by another instance")
                else:
                    taken[ecs.vswitch].add(str(ecs.ip))
                    ips[ecs.name] = str(ecs.ip)
        pools = {v.name: [a for a in usable(ipaddress.IPv4Network(v.cidr))] for v in vswitches}
        cursor = {v: 0 for v in pools}
        for h in self.previous.values():
            if h.kind in ("pod", "slb") and h.vswitch in pools:
                taken[h.vswitch].add(h.ip)

        def allocate(vswitch: str, path: tuple, what: str, src: Source | None = None, key: str = "") -> str | None:
            old = self.previous.get(key)
            if old is not None and old.vswitch == vswitch:
                return old.ip
            pool = pools[vswitch]
            while cursor[vswitch] < len(pool) and str(pool[cursor[vswitch]]) in taken[vswitch]:
                cursor[vswitch] += 1
            if cursor[vswitch] >= len(pool):
                self.bad(path, vswitch, f"vSwitch {vswitch} ({vswitches[vsw_index[vswitch]].cidr}) has no "
                         f"free address left for {what}; expected a larger vSwitch CIDR", src)
                return None
            ip = str(pool[cursor[vswitch]])
            taken[vswitch].add(ip)
            return ip

        for i, ecs in enumerate(instances):
            if ecs.name not in ips and ecs.vswitch in vswitch_of:
                ip = allocate(ecs.vswitch, ("cloud", "instances", i, "vswitch"), f"instance {ecs.name}")
                if ip:
                    ips[ecs.name] = ip
        if self.problems:
            raise ScenarioError(self.problems)

        # ---- the cluster
        cl = sc.cluster
        ecs_by_name = {e.name: e for e in instances}
        node_names = list(cl.nodes) if cl else []
        cluster_plan = None
        cluster_vpc = ""
        pod_mtu = 1500
        if cl:
            for k, n in enumerate(cl.nodes):
                if n not in ecs_by_name:
                    self.bad(("cluster", "nodes", k), n, f"no such ECS instance; expected one of {sorted(ecs_by_name)}")
                elif cl.nodes.index(n) != k:
                    self.bad(("cluster", "nodes", k), n, "node listed twice")
            node_vpcs = {vswitches[vsw_index[ecs_by_name[n].vswitch]].vpc for n in cl.nodes if n in ecs_by_name}
            if len(node_vpcs) > 1:
                self.bad(("cluster", "nodes"), sorted(node_vpcs), "expected every node in the same VPC")
            cluster_vpc = next(iter(node_vpcs), "")
            vpc_net = vpcs[cluster_vpc].cidr if cluster_vpc else None
            if vpc_net is not None and cl.serviceCIDR.overlaps(vpc_net):
                self.bad(("cluster", "serviceCIDR"), str(cl.serviceCIDR), f"overlaps the VPC CIDR {vpc_net}")
            if cl.mode != "eni":
                if vpc_net is not None and cl.podCIDR.overlaps(vpc_net):
                    self.bad(("cluster", "podCIDR"), str(cl.podCIDR),
                             f"overlaps the VPC CIDR {vpc_net}; expected a pod CIDR outside the VPC")
                if cl.podCIDR.overlaps(cl.serviceCIDR):
                    self.bad(("cluster", "podCIDR"), str(cl.podCIDR), f"overlaps serviceCIDR {cl.serviceCIDR}")
                if cl.nodeCIDRMaskSize < cl.podCIDR.prefixlen:
                    self.bad(("cluster", "nodeCIDRMaskSize"), cl.nodeCIDRMaskSize,
                             f"expected a mask at least as long as the pod CIDR's /{cl.podCIDR.prefixlen}")
                elif 2 ** (cl.nodeCIDRMaskSize - cl.podCIDR.prefixlen) < len(cl.nodes):
                    self.bad(("cluster", "podCIDR"), str(cl.podCIDR),
                             f"holds only {2 ** (cl.nodeCIDRMaskSize - cl.podCIDR.prefixlen)} node CIDRs of "
                             f"/{cl.nodeCIDRMaskSize}, the cluster has {len(cl.nodes)} nodes")
            for k, v in enumerate(cl.eni.vswitches):
                if v not in vswitch_of:
                    self.bad(("cluster", "eni", "vswitches", k), v, f"no such vSwitch; expected one of {sorted(vswitch_of)}")
                elif vswitches[vsw_index[v]].vpc != cluster_vpc:
                    self.bad(("cluster", "eni", "vswitches", k), v, f"expected a vSwitch of the cluster's VPC {cluster_vpc}")
            for k, g in enumerate(cl.eni.securityGroups or ()):
                if g not in groups_by_name:
                    self.bad(("cluster", "eni", "securityGroups", k), g,
                             f"no such security group; expected one of {sorted(groups_by_name)}")
            pod_mtu = cl.underlayMTU - 50 if cl.mode == "vxlan" else cl.underlayMTU
        if self.problems:
            raise ScenarioError(self.problems)

        # ---- Kubernetes objects: namespaces, pods, placement
        pods = self._pods(node_names)
        self._check_policy_limits()
        pod_networking = self._pod_networking(cl, pods, vswitches, vsw_index, groups_by_name, cluster_vpc,
                                              ecs_by_name) if cl else {}
        if self.problems:
            raise ScenarioError(self.problems)

        hosts: list[HostPlan] = []
        nodes: list[NodePlan] = []
        attachments: list[Attachment] = []
        vswitch_ports: dict[str, list[OvsPort]] = defaultdict(list)
        next_ofport: dict[str, int] = defaultdict(lambda: OFPORT_FIRST_ATTACHMENT)
        node_index = {n: k for k, n in enumerate(node_names)}
        node_pod_cidrs: dict[str, ipaddress.IPv4Network] = {}
        if cl and cl.mode != "eni":
            subnets = cl.podCIDR.subnets(new_prefix=cl.nodeCIDRMaskSize)
            for n in node_names:
                node_pod_cidrs[n] = next(subnets)

        def eni_sgs(node_ecs) -> tuple[str, ...]:
            return tuple(cl.eni.securityGroups) if cl.eni.securityGroups is not None else tuple(node_ecs.securityGroups)

        for i, ecs in enumerate(instances):
            vsw = vswitches[vsw_index[ecs.vswitch]]
            ip = ips[ecs.name]
            is_node = ecs.name in node_index
            veth = f"{self.run}e{i}"
            key = f"ecs/{ecs.name}"
            if is_node:
                bridge, ofport = f"{self.run}-n{node_index[ecs.name]}", OFPORT_NODE_HOST
            else:
                bridge, ofport = vsw.bridge, next_ofport[vsw.name]
                next_ofport[vsw.name] += 1
                vswitch_ports[vsw.name].append(OvsPort(name=veth, ofport=ofport, kind="veth", peer=key))
                attachments.append(Attachment(vswitch=vsw.name, ofport=ofport, port=veth, mac=mac_for(ip),
                                              ip=ip, owner=key, security_groups=tuple(ecs.securityGroups)))
            hosts.append(HostPlan(
                key=key, kind="ecs", name=ecs.name, netns=f"{self.run}-ecs-{ecs.name}", veth=veth,
                bridge=bridge, ofport=ofport, ip=ip, prefixlen=ipaddress.IPv4Network(vsw.cidr).prefixlen,
                mac=mac_for(ip), gateway=vsw.gateway, gateway_mac=vsw.gateway_mac,
                mtu=cl.underlayMTU if (cl and is_node) else 1500,
                servers=tuple(ServerPort(port=p.port, protocol=p.protocol) for p in ecs.ports),
                node=ecs.name if is_node else "", vswitch=vsw.name,
                security_groups=tuple(ecs.securityGroups)))

        # nodes: bridges, uplinks, tunnels
        for k, n in enumerate(node_names):
            ecs = ecs_by_name[n]
            vsw = vswitches[vsw_index[ecs.vswitch]]
            ip = ips[n]
            uplink_vsws = [vsw.name]
            if cl.mode == "eni":
                chosen = [pod_networking.get(_pod_key(p), (None, None))[1] for p, _ in pods if p["node"] == n]
                wanted = self._eni_vswitches(cl, vswitches, vsw_index, vsw) + [v for v in chosen if v]
                for v in wanted:
                    if v not in uplink_vsws:
                        uplink_vsws.append(v)
            uplinks = []
            for u, vname in enumerate(uplink_vsws):
                vofport = next_ofport[vname]
                next_ofport[vname] += 1
                up = Uplink(vswitch=vname, port=f"{self.run}nu{k}.{u}", peer=f"{self.run}un{k}.{u}",
                            ofport=OFPORT_NODE_UPLINK0 + u, vswitch_ofport=vofport,
                            patch=f"{self.run}np{k}.{u}", patch_peer=f"{self.run}pn{k}.{u}",
                            patch_ofport=OFPORT_NODE_UPLINK_PATCH0 + u,
                            vswitch_patch_ofport=OFPORT_VSWITCH_UPLINK_PATCH0 + vofport)
                uplinks.append(up)
                vswitch_ports[vname] += [OvsPort(name=up.peer, ofport=vofport, kind="link", peer=up.port),
                                         OvsPort(name=up.patch_peer, ofport=up.vswitch_patch_ofport, kind="patch",
                                                 peer=up.patch)]
            # what sits behind the node's (first) uplink on its vSwitch
            attachments.append(Attachment(vswitch=vsw.name, ofport=uplinks[0].vswitch_ofport, port=uplinks[0].peer,
                                          mac=mac_for(ip), ip=ip, owner=f"ecs/{n}",
                                          security_groups=tuple(ecs.securityGroups)))
            pod_cidr = node_pod_cidrs.get(n)
            gw = str(pod_cidr[1]) if pod_cidr else ""
            tunnels = []
            if cl.mode == "vxlan":
                for p, peer in enumerate(node_names):
                    if peer == n:
                        continue
                    # one VXLAN device per node, as flannel.1: the peer is chosen by the inner
                    # destination MAC (the peer's gateway MAC), which the device's FDB maps to the peer
                    tunnels.append(Tunnel(peer=peer, ifname=f"{self.run}x{k}", ofport=OFPORT_NODE_TUNNEL0,
                                          local_ip=ip, remote_ip=ips[peer], peer_pod_cidr=str(node_pod_cidrs[peer])))
            nodes.append(NodePlan(name=n, ecs=f"ecs/{n}", ip=ip, mac=mac_for(ip), vswitch=vsw.name,
                                  bridge=f"{self.run}-n{k}", pod_cidr=str(pod_cidr) if pod_cidr else "",
                                  gateway=gw, gateway_mac=mac_for(gw) if gw else "",
                                  uplinks=tuple(uplinks), tunnels=tuple(tunnels)))

        # pods: addresses and ports on their node bridge. A pod of the running scenario keeps its
        # own; a new one takes the lowest free, never one a pod of the running scenario holds
        held_ips: dict[str, set[str]] = defaultdict(set)        # by node bridge
        held_ofports: dict[str, set[int]] = defaultdict(set)
        held_veths = set()
        for h in self.previous.values():
            if h.kind == "pod":
                held_ips[h.bridge].add(h.ip)
                held_ofports[h.bridge].add(h.ofport)
                held_veths.add(h.veth)
        pod_seq = 0

        def lowest_free(start: int, held: set[int]) -> int:
            n = start
            while n in held:
                n += 1
            held.add(n)
            return n
        for (pod, (path, msrc)) in pods:
            node = nodes[node_index[pod["node"]]]
            ecs = ecs_by_name[node.name]
            key = _pod_key(pod)
            old = self.previous.get(key)
            if old is not None and old.bridge == node.bridge:
                ofport, veth = old.ofport, old.veth
            else:
                old = None
                ofport = lowest_free(OFPORT_NODE_POD0, held_ofports[node.bridge])
                while f"{self.run}p{pod_seq}" in held_veths:
                    pod_seq += 1
                veth = f"{self.run}p{pod_seq}"
                pod_seq += 1
            if cl.mode == "eni":
                pn_sgs, pn_vsw = pod_networking.get(key) or (None, None)
                vname = pn_vsw or self._eni_vswitches(cl, vswitches, vsw_index, vswitches[vsw_index[node.vswitch]])[0]
                vsw = vswitches[vsw_index[vname]]
                ip = allocate(vname, path, f"pod {pod['namespace']}/{pod['name']}", msrc, key)
                if ip is None:
                    continue
                prefixlen, gateway, gateway_mac = ipaddress.IPv4Network(vsw.cidr).prefixlen, vsw.gateway, vsw.gateway_mac
                sgs = pn_sgs if pn_sgs is not None else eni_sgs(ecs)
                uplink = next(u for u in node.uplinks if u.vswitch == vname)
                attachments.append(Attachment(vswitch=vname, ofport=uplink.vswitch_ofport, port=uplink.peer,
                                              mac=mac_for(ip), ip=ip,
                                              owner=f"pod/{pod['namespace']}/{pod['name']}", security_groups=sgs))
            else:
                net = node_pod_cidrs[node.name]
                if old is not None:
                    ip = old.ip
                else:
                    idx = 2
                    while idx < net.num_addresses - 1 and str(net[idx]) in held_ips[node.bridge]:
                        idx += 1
                    if idx >= net.num_addresses - 1:
                        self.bad(path, f"{pod['namespace']}/{pod['name']}",
                                 f"node {node.name}'s pod CIDR {net} is exhausted ({net.num_addresses - 3} pods); "
                                 "expected a smaller cluster.nodeCIDRMaskSize or fewer pods on the node", msrc)
                        continue
                    ip = str(net[idx])
                    held_ips[node.bridge].add(ip)
                prefixlen, gateway, gateway_mac, vname, sgs = net.prefixlen, node.gateway, node.gateway_mac, "", ()
            hosts.append(HostPlan(
                key=key, kind="pod", name=pod["name"], namespace=pod["namespace"],
                netns=f"{self.run}-pod-{pod['namespace']}_{pod['name']}", veth=veth,
                bridge=node.bridge, ofport=ofport, ip=ip, prefixlen=prefixlen, mac=mac_for(ip),
                gateway=gateway, gateway_mac=gateway_mac, mtu=pod_mtu, servers=pod["servers"],
                labels=_relabel(pod["labels"], self.label_overrides.get(key, {})), node=node.name, vswitch=vname,
                security_groups=sgs,
                ready=self.ready_overrides.get(key, pod["ready"]), app=pod.get("app", "server")))
        if self.problems:
            raise ScenarioError(self.problems)

        # ---- Services, and an SLB instance per LoadBalancer Service: its VIP is an address of a
        # vSwitch, held by a namespace of its own where the health checker runs
        services, dns = self._services(cl, hosts) if cl else ((), None)
        slbs: list[SlbPlan] = []
        if self.problems:
            raise ScenarioError(self.problems)
        lb_items = {(m.obj.metadata.namespace, m.obj.metadata.name): m for m in self.loaded.manifests
                    if getattr(m.obj, "kind", "") == "Service"}
        for svc in services:
            if svc.type != "LoadBalancer":
                continue
            m = lb_items[(svc.namespace, svc.name)]
            slb = self._slb(svc, m, cl, nodes, hosts, vswitches, vsw_index, allocate, len(slbs))
            if slb is None:
                continue
            vsw = vswitches[vsw_index[slb.vswitch]]
            ofport = next_ofport[vsw.name]
            next_ofport[vsw.name] += 1
            key = slb.host
            veth = f"{self.run}l{len(slbs)}"
            hosts.append(HostPlan(
                key=key, kind="slb", name=svc.name, namespace=svc.namespace,
                netns=f"{self.run}-slb-{svc.namespace}_{svc.name}", veth=veth, bridge=vsw.bridge, ofport=ofport,
                ip=slb.vip, prefixlen=ipaddress.IPv4Network(vsw.cidr).prefixlen, mac=mac_for(slb.vip),
                gateway=vsw.gateway, gateway_mac=vsw.gateway_mac, mtu=1500, vswitch=vsw.name, app="slb"))
            vswitch_ports[vsw.name].append(OvsPort(name=veth, ofport=ofport, kind="veth", peer=key))
            attachments.append(Attachment(vswitch=vsw.name, ofport=ofport, port=veth, mac=mac_for(slb.vip),
                                          ip=slb.vip, owner=key, security_groups=()))
            slbs.append(slb)
        if self.problems:
            raise ScenarioError(self.problems)

        # ---- the internet zone, the VPCs' edges, EIPs and NAT gateways
        internet, edges, eips, nat_gateways, slbs = self._internet(cl, vswitches, ecs_by_name, ips, slbs, hosts)
        if self.problems:
            raise ScenarioError(self.problems)

        # ---- bridges
        vr_index = 0
        vpc_plans = []
        for vpc in sc.cloud.vpcs:
            name = f"{self.run}-vr{vr_index}"
            vr_index += 1
            ports = []
            for v in vswitches:
                if v.vpc == vpc.name:
                    ports.append(OvsPort(name=f"{self.run}rv{vsw_index[v.name]}", ofport=v.vrouter_port,
                                         kind="patch", peer=f"{self.run}vr{vsw_index[v.name]}"))
            if any(e.vpc == vpc.name for e in edges):
                ports.append(OvsPort(name=f"{self.run}ve{vr_index - 1}", ofport=OFPORT_VROUTER_EDGE, kind="link",
                                     peer=f"{self.run}ev{vr_index - 1}"))
            bridges.append(BridgePlan(name=name, role="vrouter", owner=vpc.name, dpid=0,
                                      zone=0, ports=tuple(ports)))
            vpc_plans.append(VpcPlan(name=vpc.name, cidr=str(vpc.cidr), bridge=name,
                                     routes=self._routes(vpc, vswitches, ecs_by_name, vsw_index, nodes, cl,
                                                         cluster_vpc), quota=vpc.routeTable.quota))
        for v in vswitches:
            ports = [OvsPort(name=f"{self.run}vr{vsw_index[v.name]}", ofport=OFPORT_VROUTER_ON_VSWITCH,
                             kind="patch", peer=f"{self.run}rv{vsw_index[v.name]}")]
            bridges.append(BridgePlan(name=v.bridge, role="vswitch", owner=v.name, dpid=0, zone=0,
                                      ports=tuple(ports + vswitch_ports[v.name])))
        for node in nodes:
            host = next(h for h in hosts if h.key == node.ecs)
            ports = [OvsPort(name=host.veth, ofport=OFPORT_NODE_HOST, kind="veth", peer=host.key)]
            ports += [OvsPort(name=u.port, ofport=u.ofport, kind="link", peer=u.peer) for u in node.uplinks]
            ports += [OvsPort(name=u.patch, ofport=u.patch_ofport, kind="patch", peer=u.patch_peer)
                      for u in node.uplinks]
            ports += [OvsPort(name=t.ifname, ofport=t.ofport, kind="vxlan") for t in node.tunnels[:1]]
            ports += [OvsPort(name=h.veth, ofport=h.ofport, kind="veth", peer=h.key)
                      for h in hosts if h.kind == "pod" and h.node == node.name]
            bridges.append(BridgePlan(name=node.bridge, role="node", owner=node.name, dpid=0, zone=0,
                                      ports=tuple(ports)))
        vpc_index = {v.name: i for i, v in enumerate(sc.cloud.vpcs)}
        for e in edges:
            i = vpc_index[e.vpc]
            bridges.append(BridgePlan(name=e.bridge, role="edge", owner=e.vpc, dpid=0, zone=0, ports=(
                OvsPort(name=f"{self.run}ev{i}", ofport=OFPORT_EDGE_VPC, kind="link", peer=f"{self.run}ve{i}"),
                OvsPort(name=f"{self.run}ei{i}", ofport=OFPORT_EDGE_INTERNET, kind="patch", peer=f"{self.run}ie{i}"))))
        if internet:
            ports = [OvsPort(name=f"{self.run}ie{vpc_index[e.vpc]}", ofport=e.internet_port, kind="patch",
                             peer=f"{self.run}ei{vpc_index[e.vpc]}") for e in edges]
            ports += [OvsPort(name=h.veth, ofport=h.ofport, kind="veth", peer=h.key) for h in hosts
                      if h.kind == "internet"]
            bridges.append(BridgePlan(name=internet.bridge, role="internet", owner="internet", dpid=0, zone=0,
                                      ports=tuple(ports)))
        bridges = [b.model_copy(update={"dpid": 0x6B76_0000_0000_0000 + i + 1, "zone": (zone_base + i) % 65535 + 1})
                   for i, b in enumerate(bridges)]

        # a route's destination sits behind its next hop's port: that instance's security groups
        # apply to it (for vpc-route mode: pod traffic leaves and enters through the ECS's ENI)
        att_of = {a.owner: a for a in attachments}
        for vpc in vpc_plans:
            for r in vpc.routes:
                if r.kind in ("custom", "pod"):
                    hop = att_of[f"ecs/{r.next_hop}"]
                    attachments.append(hop.model_copy(update={"ip": r.destination, "owner": f"route/{r.destination}"}))

        groups = []
        for sg in sc.cloud.securityGroups:
            members = [a.ip for a in attachments if sg.name in a.security_groups]
            rules = tuple(RulePlan(direction=r.direction, protocol=r.protocol,
                                   port_min=r.port_range.first if r.port_range else 0,
                                   port_max=r.port_range.last if r.port_range else 0,
                                   cidr=str(r.cidr) if r.cidr else "", group=r.group or "",
                                   policy=r.policy, priority=r.priority, description=r.description) for r in sg.rules)
            groups.append(GroupPlan(name=sg.name, vpc=sg.vpc, rules=rules, members=tuple(sorted(set(members)))))

        if cl:
            cluster_plan = ClusterPlan(name=cl.name, mode=cl.mode, vpc=cluster_vpc, pod_cidr=str(cl.podCIDR),
                                       service_cidr=str(cl.serviceCIDR), vni=cl.vxlan.vni, vxlan_port=cl.vxlan.port,
                                       pod_mtu=pod_mtu, underlay_mtu=cl.underlayMTU,
                                       allow_snippet_annotations=cl.ingress.allowSnippetAnnotations)
        plan = Plan(run=self.run, scenario=sc.name, file=self.loaded.file, cluster=cluster_plan,
                    vpcs=tuple(vpc_plans), vswitches=tuple(vswitches), bridges=tuple(bridges), hosts=tuple(hosts),
                    nodes=tuple(nodes), attachments=tuple(attachments), groups=tuple(groups),
                    services=services, slbs=tuple(slbs), dns=dns, internet=internet, edges=edges, eips=eips,
                    nat_gateways=nat_gateways,
                    network_policies=tuple(m.obj for m in self.loaded.manifests if isinstance(m.obj, k8s.NetworkPolicy)),
                    namespaces=self._namespace_labels(),
                    ingresses=tuple(m.obj for m in self.loaded.manifests if isinstance(m.obj, ingress.Ingress)),
                    secrets=tuple(m.obj for m in self.loaded.manifests if isinstance(m.obj, ingress.Secret)),
                    expect=tuple(e.model_dump(by_alias=True) for e in sc.expect),
                    flow_log_window=sc.cloud.flowLogs.window if sc.cloud.flowLogs.enabled else 0)
        self._check_expectations(plan)
        self._check_names(plan)
        if self.problems:
            raise ScenarioError(self.problems)
        return plan

    # ------------------------------------------------------------------------------ helpers
    def _check_policy_limits(self) -> None:
        """What the flows can hold (kubevpc.k8s.MAX_*): beyond it, an error, not a controller failure."""
        found = [m for m in self.loaded.manifests if isinstance(m.obj, k8s.NetworkPolicy)]
        if len(found) > k8s.MAX_NETWORK_POLICIES:
            self.bad(found[k8s.MAX_NETWORK_POLICIES].prefix, len(found),
                     f"at most {k8s.MAX_NETWORK_POLICIES} NetworkPolicies", found[k8s.MAX_NETWORK_POLICIES].source)
        for direction, field in (("Ingress", "ingress"), ("Egress", "egress")):
            total = 0
            for m in found:
                rules = m.obj.spec.rules(direction)
                total += len(rules)
                if len(rules) > k8s.MAX_RULES_PER_POLICY:
                    self.bad(m.prefix + ("spec", field), len(rules),
                             f"at most {k8s.MAX_RULES_PER_POLICY} {field} rules in one NetworkPolicy", m.source)
                if total > k8s.MAX_RULES_PER_DIRECTION:
                    self.bad(m.prefix + ("spec", field), total, f"at most {k8s.MAX_RULES_PER_DIRECTION} "
                             f"{field} rules in all NetworkPolicies together (two flow priorities each)", m.source)
                    break

    def _namespace_labels(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"default": {}, "kube-system": {}}
        for m in self.loaded.manifests:
            if isinstance(m.obj, k8s.Namespace):
                out[m.obj.metadata.name] = dict(m.obj.metadata.labels)
        return out

    def _check_run_name(self) -> None:
        if not RUN_NAME.match(self.run):
            self.problems.append(Problem(self.loaded.file, "<run name>", self.run,
                                         f"expected 1 to {MAX_TAG} lowercase letters and digits starting with a "
                                         f"letter: every interface name starts with it and must fit in {IFNAMSIZ} characters"))
            raise ScenarioError(self.problems)

    def _check_names(self, plan: Plan) -> None:
        names = [h.veth for h in plan.hosts] + [b.name for b in plan.bridges]
        names += [t.ifname for n in plan.nodes for t in n.tunnels[:1]]
        names += [p.name for b in plan.bridges for p in b.ports if p.kind in ("patch", "link")]
        for name in names:
            if len(name) > IFNAMSIZ:
                self.problems.append(Problem(self.loaded.file, "<run name>", self.run,
                                             f"interface name {name!r} would exceed {IFNAMSIZ} characters; "
                                             "expected a shorter run name or fewer objects"))
                return
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise AssertionError(f"planner produced duplicate interface names {dup}")

    def _unique(self, paths: list[tuple], names: list[str], what: str) -> None:
        seen = set()
        for path, name in zip(paths, names):
            if name in seen:
                self.bad(path, name, f"duplicate {what} name; expected unique names")
            seen.add(name)

    def _pod_networking(self, cl, pods, vswitches, vsw_index, groups_by_name, cluster_vpc, ecs_by_name
                        ) -> dict[str, tuple[tuple[str, ...] | None, str | None]]:
        """Terway's PodNetworking: for each pod it selects (by the pod's annotation naming it, else
        the first in manifest order whose selectors match), its security groups (None: the
        default) and the vSwitch it takes its address from (None: the default)."""
        found = [m for m in self.loaded.manifests if isinstance(m.obj, k8s.PodNetworking)]
        if not found:
            return {}
        if cl.mode != "eni":
            for m in found:
                self.bad(m.prefix + ("kind",), "PodNetworking", f"PodNetworking (Terway) applies in eni mode only; "
                         f"expected cluster.mode eni, not {cl.mode}", m.source)
            return {}
        self._unique([m.prefix + ("metadata", "name") for m in found], [m.obj.metadata.name for m in found],
                     "PodNetworking")
        for m in found:
            for k, g in enumerate(m.obj.spec.securityGroupIDs):
                if g not in groups_by_name:
                    self.bad(m.prefix + ("spec", "securityGroupIDs", k), g,
                             f"no such security group; expected one of {sorted(groups_by_name)}", m.source)
                elif groups_by_name[g].vpc != cluster_vpc:
                    self.bad(m.prefix + ("spec", "securityGroupIDs", k), g,
                             f"expected a security group of the cluster's VPC {cluster_vpc}", m.source)
            for k, v in enumerate(m.obj.spec.vSwitchOptions):
                if v not in vsw_index or vswitches[vsw_index[v]].vpc != cluster_vpc:
                    self.bad(m.prefix + ("spec", "vSwitchOptions", k), v,
                             f"expected a vSwitch of the cluster's VPC {cluster_vpc}", m.source)
        if self.problems:
            return {}
        by_name = {m.obj.metadata.name: m.obj for m in found}
        namespaces = self._namespace_labels()
        out = {}
        for pod, (path, src) in pods:
            if pod.get("app") == "dns":
                continue
            wanted = pod["annotations"].get(k8s.POD_NETWORKING_ANNOTATION)
            if wanted is not None and wanted not in by_name:
                self.bad(path + ("metadata", "annotations", k8s.POD_NETWORKING_ANNOTATION), wanted,
                         f"no such PodNetworking; expected one of {sorted(by_name)}", src)
                continue
            ns_labels = {**namespaces.get(pod["namespace"], {}), k8s.NAMESPACE_NAME_LABEL: pod["namespace"]}
            pn = by_name[wanted] if wanted else next(
                (m.obj for m in found if m.obj.selects(pod["labels"], ns_labels)), None)
            if pn is None:
                continue
            vsw = None
            if pn.spec.vSwitchOptions:
                zone = vswitches[vsw_index[ecs_by_name[pod["node"]].vswitch]].zone
                vsw = next((v for v in pn.spec.vSwitchOptions if vswitches[vsw_index[v]].zone == zone), None)
                if vsw is None:
                    self.bad(path, f"{pod['namespace']}/{pod['name']}",
                             f"PodNetworking {pn.metadata.name} has no vSwitch in zone {zone} of node {pod['node']}; "
                             f"expected one of its vSwitchOptions there", src)
                    continue
            out[_pod_key(pod)] = (tuple(pn.spec.securityGroupIDs) or None, vsw)
        return out

    def _eni_vswitches(self, cl, vswitches, vsw_index, node_vsw: VSwitchPlan) -> list[str]:
        """Pods of a node take addresses from the first eni vSwitch in the node's zone, else the node's."""
        for v in cl.eni.vswitches:
            if v in vsw_index and vswitches[vsw_index[v]].zone == node_vsw.zone:
                return [v]
        return [node_vsw.name]

    def _routes(self, vpc, vswitches, ecs_by_name, vsw_index, nodes, cl, cluster_vpc) -> tuple[Route, ...]:
        i = next(k for k, v in enumerate(self.sc.cloud.vpcs) if v.name == vpc.name)
        routes = [Route(destination=v.cidr, kind="system", description=f"vSwitch {v.name}")
                  for v in vswitches if v.vpc == vpc.name]
        for j, entry in enumerate(vpc.routeTable.routes):
            path = ("cloud", "vpcs", i, "routeTable", "routes", j)
            hop = ecs_by_name.get(entry.nextHop)
            natgw = self.natgw_vpc.get(entry.nextHop)
            if natgw is not None and hop is None:
                if natgw != vpc.name:
                    self.bad(path + ("nextHop",), entry.nextHop, f"NAT gateway of VPC {natgw}; expected an ECS "
                             f"instance or a NAT gateway of VPC {vpc.name}")
                    continue
            elif hop is None or vswitches[vsw_index[hop.vswitch]].vpc != vpc.name:
                self.bad(path + ("nextHop",), entry.nextHop,
                         f"expected an ECS instance or a NAT gateway of VPC {vpc.name}")
                continue
            for v in vswitches:
                if v.vpc == vpc.name and entry.destination.subnet_of(ipaddress.IPv4Network(v.cidr)):
                    self.bad(path + ("destination",), str(entry.destination),
                             f"within vSwitch {v.name} ({v.cidr}); expected a destination that is not the same as "
                             "or inside a vSwitch CIDR (a broader one, like 0.0.0.0/0, is fine: the vSwitch's "
                             "system route is more specific and wins)")
            if any(r.destination == str(entry.destination) for r in routes):
                self.bad(path + ("destination",), str(entry.destination), "duplicate route destination")
            routes.append(Route(destination=str(entry.destination), kind="natgw" if hop is None else "custom",
                                next_hop=entry.nextHop, description=entry.description))
        if cl and cl.mode == "vpc-route" and vpc.name == cluster_vpc:
            for node in nodes:
                clash = next((j for j, e in enumerate(vpc.routeTable.routes)
                              if str(e.destination) == node.pod_cidr), None)
                if clash is not None:
                    self.bad(("cloud", "vpcs", i, "routeTable", "routes", clash, "destination"), node.pod_cidr,
                             f"is the pod CIDR of node {node.name}, which vpc-route mode routes to that node "
                             "itself; expected another destination")
                    continue
                routes.append(Route(destination=node.pod_cidr, kind="pod", next_hop=node.name,
                                    description=f"pod CIDR of node {node.name} (cloud controller manager)"))
        entries = [r for r in routes if r.kind != "system"]
        if len(entries) > vpc.routeTable.quota:
            n_pod = sum(1 for r in entries if r.kind == "pod")
            self.bad(("cloud", "vpcs", i, "routeTable", "quota"), vpc.routeTable.quota,
                     f"route table quota exceeded: {len(entries)} custom entries needed "
                     f"({n_pod} pod CIDR routes for vpc-route mode + {len(entries) - n_pod} declared); "
                     "expected a larger quota, fewer nodes, or another network mode")
        return tuple(routes)

    def _pods(self, node_names: list[str]) -> list[tuple[dict, tuple]]:
        """Expand Pods and Deployments into pods placed on nodes, deterministically."""
        from .k8s import Deployment, Namespace, Pod, Service
        namespaces = {"default", "kube-system"}
        out: list[tuple[dict, tuple]] = []
        seen: dict[tuple[str, str, str], str] = {}
        manifests = self.loaded.manifests
        for m in manifests:
            if isinstance(m.obj, Namespace):
                namespaces.add(m.obj.metadata.name)

        for m in manifests:
            obj = m.obj
            path, msrc = m.prefix, m.source
            key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
            if key in seen:
                self.bad(path + ("metadata", "name"), obj.metadata.name, f"duplicate {obj.kind} in namespace "
                         f"{obj.metadata.namespace}", msrc)
            seen[key] = m.path
            if isinstance(obj, (Namespace, k8s.PodNetworking)):      # cluster-scoped
                continue
            if obj.metadata.namespace not in namespaces:
                self.bad(path + ("metadata", "namespace"), obj.metadata.namespace,
                         "namespace not declared; expected a Namespace object in the manifests", msrc)
                continue
            if not node_names:
                self.bad(path, obj.kind, f"a {obj.kind} needs a cluster section with nodes", msrc)
                continue
            if isinstance(obj, ingress.Ingress) and not (self.sc.cluster and self.sc.cluster.ingress.allowSnippetAnnotations):
                for key in ingress.snippet_annotations(obj):
                    self.bad(path + ("metadata", "annotations", key), obj.metadata.annotations[key],
                             ingress.snippet_refusal(key), msrc)
            if isinstance(obj, (Service, k8s.NetworkPolicy, ingress.Ingress, ingress.Secret)):
                continue
            if isinstance(obj, Pod):
                spec, labels, annotations = obj.spec, obj.metadata.labels, obj.metadata.annotations
                names = [obj.metadata.name]
            else:
                spec, labels = obj.spec.template.spec, obj.spec.template.metadata.labels
                annotations = obj.spec.template.metadata.annotations
                names = [f"{obj.metadata.name}-{r}" for r in range(obj.spec.replicas)]
            ready = annotations.get(READY_ANNOTATION, "true")
            if ready not in ("true", "false"):
                meta = ("metadata",) if isinstance(obj, Pod) else ("spec", "template", "metadata")
                self.bad(path + meta + ("annotations", READY_ANNOTATION), ready, 'expected "true" or "false"', msrc)
            app = annotations.get(APP_ANNOTATION, "server")
            if app not in APPS:
                meta = ("metadata",) if isinstance(obj, Pod) else ("spec", "template", "metadata")
                self.bad(path + meta + ("annotations", APP_ANNOTATION), app,
                         f"expected one of {', '.join(APPS)}", msrc)
            ports, port_names = [], set()
            for c in spec.containers:
                for p in c.ports:
                    if p.name and p.name in port_names:
                        self.bad(path, p.name, "duplicate container port name in the pod", msrc)
                    port_names.add(p.name)
                    if p.protocol == "SCTP":
                        continue        # accepted by the model; this kernel cannot carry SCTP
                    ports.append(ServerPort(port=p.containerPort, protocol=p.protocol, name=p.name or ""))
            if spec.nodeName is not None and spec.nodeName not in node_names:
                at = ("spec", "nodeName") if isinstance(obj, Pod) else ("spec", "template", "spec", "nodeName")
                self.bad(path + at, spec.nodeName, f"no such node; expected one of {node_names}", msrc)
                continue
            for r, name in enumerate(names):
                before = self.previous.get(f"pod/{obj.metadata.namespace}/{name}")
                node = spec.nodeName or (before.node if before else node_names[r % len(node_names)])
                pkey = ("Pod", obj.metadata.namespace, name)
                if pkey in seen and isinstance(obj, Deployment):
                    self.bad(path + ("metadata", "name"), name, "a pod of this Deployment has the name of another pod", msrc)
                seen[pkey] = m.path
                out.append(({"namespace": obj.metadata.namespace, "name": name, "node": node,
                             "labels": dict(labels) | {"pod-template-hash": "kubevpc"} if isinstance(obj, Deployment)
                             else dict(labels), "servers": tuple(ports), "ready": ready != "false",
                             "annotations": dict(annotations), "app": APPS.get(app, "server")},
                            (path, msrc)))
        cl = self.sc.cluster
        if cl is not None and cl.dns.enabled and node_names:
            if ("Pod", "kube-system", DNS_POD) in seen:
                self.bad(("cluster", "dns", "enabled"), True, f"pod kube-system/{DNS_POD} is the cluster DNS; "
                         "expected no pod of that name, or cluster.dns.enabled: false")
            out.append(({"namespace": "kube-system", "name": DNS_POD, "node": node_names[0],
                         "labels": {"k8s-app": "kube-dns"}, "ready": True, "app": "dns",
                         "servers": (ServerPort(port=53, protocol="UDP", name="dns"),
                                     ServerPort(port=53, protocol="TCP", name="dns-tcp"))},
                        (("cluster", "dns"), None)))
        return out

    def _services(self, cl, hosts: list[HostPlan]) -> tuple[tuple[ServicePlan, ...], DnsPlan | None]:
        """ClusterIPs, NodePorts and endpoints, with the API server's allocation rules and errors."""
        from .k8s import Service
        net = cl.serviceCIDR
        pool = list(net)[1:-1]
        first, last = (int(x) for x in cl.nodePortRange.split("-"))
        if not (1 <= first <= last <= 65535) or first <= SNAT_PORTS[1] and last >= SNAT_PORTS[0]:
            self.bad(("cluster", "nodePortRange"), cl.nodePortRange,
                     f"expected a range within 1-65535 that avoids the SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}")
            return (), None
        items: list[tuple[Service, tuple, Source | None]] = [
            (m.obj, m.prefix, m.source) for m in self.loaded.manifests if isinstance(m.obj, Service)]
        dns_ip = ""
        if cl.dns.enabled and cl.dns.ip is None and net.num_addresses < 16:
            self.bad(("cluster", "serviceCIDR"), str(net), "expected a /28 or larger: the cluster DNS takes its "
                     "10th address (or set cluster.dns.ip, or cluster.dns.enabled: false)")
            return (), None
        if cl.dns.enabled:
            dns_ip = str(cl.dns.ip) if cl.dns.ip is not None else str(net[10])
            if ipaddress.IPv4Address(dns_ip) not in pool:
                self.bad(("cluster", "dns", "ip"), dns_ip, f"expected an address inside serviceCIDR {net}")
            for svc, prefix, src in items:
                if (svc.metadata.namespace, svc.metadata.name) == ("kube-system", "kube-dns"):
                    self.bad(prefix + ("metadata", "name"), "kube-dns", "kube-system/kube-dns is the cluster DNS "
                             "Service kubevpc makes; expected another name, or cluster.dns.enabled: false", src)
            items.append((Service.model_validate({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIP": dns_ip, "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}), ("cluster", "dns"), None))

        # ClusterIPs: the declared ones first, then the rest in order from the 11th address
        cluster_ips: dict[int, str] = {}
        taken: dict[str, int] = {}
        if dns_ip:                  # the cluster DNS Service (the last item) was checked with cluster.dns.ip
            taken[dns_ip] = len(items) - 1
            cluster_ips[len(items) - 1] = dns_ip
        for k, (svc, prefix, src) in enumerate(items):
            want = svc.spec.clusterIP
            if svc.spec.type == "ExternalName" or svc.spec.headless or not want or k in cluster_ips:
                continue
            try:
                addr = ipaddress.IPv4Address(want)
            except ValueError:
                self.bad(prefix + ("spec", "clusterIP"), want, 'expected an IPv4 address or "None" (headless)', src)
                continue
            if addr not in pool:
                self.bad(prefix + ("spec", "clusterIP"), want, f"expected an address inside serviceCIDR {net} "
                         "(not its first or last)", src)
            elif want in taken:
                self.bad(prefix + ("spec", "clusterIP"), want, "already allocated to Service "
                         f"{items[taken[want]][0].metadata.namespace}/{items[taken[want]][0].metadata.name}", src)
            else:
                taken[want], cluster_ips[k] = k, want
        cursor = 10
        for k, (svc, prefix, src) in enumerate(items):
            if svc.spec.type == "ExternalName" or svc.spec.headless or k in cluster_ips:
                continue
            while cursor < len(pool) and (str(pool[cursor]) in taken or str(pool[cursor]) == dns_ip):
                cursor += 1
            if cursor >= len(pool):
                self.bad(prefix + ("metadata", "name"), svc.metadata.name,
                         f"serviceCIDR {net} has no free ClusterIP left; expected a larger cluster.serviceCIDR", src)
                continue
            cluster_ips[k] = str(pool[cursor])
            taken[cluster_ips[k]] = k

        # NodePorts: declared ones first (range, taken), then allocated in order from the start of the range;
        # ports of one Service with the same number and different protocols share one NodePort, as upstream
        # node port -> (service index, service port number (0: health check), protocols using it)
        used: dict[int, tuple[int, int, set[str]]] = {}
        node_ports: dict[tuple[int, int], int] = {}
        health_ports: dict[int, int] = {}

        def claim(k: int, at: tuple, value: int, port: int, proto: str, src) -> None:
            """Only TCP and UDP of one Service port may share a NodePort, as upstream allows."""
            if not first <= value <= last:
                self.bad(at, value, f"expected a NodePort in the range {first}-{last} (cluster.nodePortRange)", src)
            elif value in used and not (used[value][:2] == (k, port) and port and proto not in used[value][2]):
                other = items[used[value][0]][0].metadata
                self.bad(at, value, f"NodePort already allocated to Service {other.namespace}/{other.name}", src)
            else:
                used.setdefault(value, (k, port, set()))[2].add(proto)

        for k, (svc, prefix, src) in enumerate(items):
            for i, p in enumerate(svc.spec.ports):
                if p.nodePort is not None:
                    claim(k, prefix + ("spec", "ports", i, "nodePort"), p.nodePort, p.port, p.protocol, src)
                    node_ports[(k, i)] = p.nodePort
            if svc.spec.healthCheckNodePort is not None:
                claim(k, prefix + ("spec", "healthCheckNodePort"), svc.spec.healthCheckNodePort, 0, "TCP", src)
                health_ports[k] = svc.spec.healthCheckNodePort
        next_port = first

        def allocate(k: int, prefix: tuple, src) -> int:
            nonlocal next_port
            while next_port <= last and next_port in used:
                next_port += 1
            if next_port > last:
                self.bad(prefix + ("spec", "type"), items[k][0].spec.type,
                         f"no free NodePort left in {first}-{last}; expected a larger cluster.nodePortRange", src)
                return 0
            used[next_port] = (k, -1, set())
            return next_port

        for k, (svc, prefix, src) in enumerate(items):
            if svc.spec.type not in ("NodePort", "LoadBalancer"):
                continue
            for i, p in enumerate(svc.spec.ports):
                if (k, i) in node_ports:
                    continue
                twin = next((node_ports[(k, j)] for j, q in enumerate(svc.spec.ports)
                             if (k, j) in node_ports and q.port == p.port and q.protocol != p.protocol), None)
                node_ports[(k, i)] = twin or allocate(k, prefix, src)
            if svc.spec.type == "LoadBalancer" and svc.spec.externalTrafficPolicy == "Local" and k not in health_ports:
                health_ports[k] = allocate(k, prefix, src)

        # endpoints: pods of the Service's namespace that match its selector, target ports resolved per pod
        pods = [h for h in hosts if h.kind == "pod"]
        plans = []
        for k, (svc, prefix, src) in enumerate(items):
            spec = svc.spec
            endpoints = []
            if spec.selector and spec.type != "ExternalName":
                for pod in pods:
                    if pod.namespace != svc.metadata.namespace or any(pod.labels.get(a) != b
                                                                      for a, b in spec.selector.items()):
                        continue
                    resolved = []
                    for p in spec.ports:
                        t = p.target
                        if isinstance(t, str):
                            t = next((sp.port for sp in pod.servers if sp.name == t and sp.protocol == p.protocol), 0)
                        resolved.append(t)
                    endpoints.append(EndpointPlan(pod=pod.key, name=pod.name, ip=pod.ip, node=pod.node,
                                                  ready=pod.ready or spec.publishNotReadyAddresses,
                                                  ports=tuple(resolved)))
            plans.append(ServicePlan(
                name=svc.metadata.name, namespace=svc.metadata.namespace, type=spec.type,
                cluster_ip=cluster_ips.get(k, ""), headless=spec.headless, external_name=spec.externalName or "",
                ports=tuple(ServicePortPlan(name=p.name or "", protocol=p.protocol, port=p.port, target_port=p.target,
                                            node_port=node_ports.get((k, i), 0)) for i, p in enumerate(spec.ports)),
                selector=dict(spec.selector or {}), endpoints=tuple(endpoints),
                session_affinity=spec.sessionAffinity == "ClientIP",
                affinity_timeout=spec.sessionAffinityConfig.clientIP.timeoutSeconds,
                external_traffic_policy=spec.externalTrafficPolicy or "Cluster",
                internal_traffic_policy=spec.internalTrafficPolicy,
                health_check_node_port=health_ports.get(k, 0), annotations=dict(svc.metadata.annotations)))
        dns = None
        if cl.dns.enabled:
            dns = DnsPlan(domain=cl.dns.clusterDomain, ip=dns_ip,
                          pods=tuple(h.key for h in pods if h.app == "dns"))
        return tuple(plans), dns

    def _slb(self, svc: ServicePlan, m, cl, nodes: list[NodePlan], hosts: list[HostPlan], vswitches, vsw_index,
             allocate, index: int) -> SlbPlan | None:
        """The SLB of a LoadBalancer Service, configured by its ACK annotations (Alibaba's defaults)."""
        from .render.slb import SlbAnnotationError, slb_config
        at = m.prefix + ("metadata", "annotations")
        try:
            cfg = slb_config(svc.annotations)
        except SlbAnnotationError as exc:
            for p in exc.problems:
                self.bad(at + (p.key,), p.value, p.expected, m.source)
            return None
        if cfg.address_type == "internet" and self.sc.cloud.internet is None:
            self.bad(at + (ADDRESS_TYPE,), svc.annotations.get(ADDRESS_TYPE, "internet (the default)"),
                     f'"intranet", or an emulated internet: an internet-facing SLB needs a cloud.internet section '
                     f"(or set {ADDRESS_TYPE}: intranet)", m.source)
            return None
        vname = svc.annotations.get(VSWITCH_ID, nodes[0].vswitch)
        vpc = vswitches[vsw_index[nodes[0].vswitch]].vpc
        if vname not in vsw_index or vswitches[vsw_index[vname]].vpc != vpc:
            self.bad(at + (VSWITCH_ID,), vname, "expected a vSwitch of the cluster's VPC "
                     f"({', '.join(sorted(v.name for v in vswitches if v.vpc == vpc))})", m.source)
            return None
        vip = allocate(vname, m.prefix, f"the SLB of Service {svc.key}", m.source, f"slb/{svc.namespace}/{svc.name}")
        if vip is None:
            return None
        if cfg.address_type == "internet":      # its EIP comes with the internet zone's addresses
            self.internet_slbs.add(svc.key)
        check = cfg.health_check()
        local = svc.external_traffic_policy == "Local"
        if local:       # kube-proxy's health check server answers 200 or 503 over HTTP; a TCP check would pass
            check = check.model_copy(update={"type": "http", "uri": "/"})
        listeners = []
        for i, p in enumerate(svc.ports):
            if p.protocol not in ("TCP", "UDP"):
                continue
            ready = svc.ready_endpoints(i)
            if cl.mode == "eni":      # Terway: the SLB sends to the pods themselves
                backends = [SlbBackend(id=e.pod, ip=e.ip, port=e.ports[i], check_port=cfg.connect_port or e.ports[i],
                                       weight=1) for e in ready]
            else:
                backends = []
                for n in nodes:
                    local_eps = sum(1 for e in ready if e.node == n.name)
                    weight = (local_eps if local else 1) if cfg.scheduler in ("wrr", "wlc") else 1
                    backends.append(SlbBackend(id=n.name, ip=n.ip, port=p.node_port, weight=weight,
                                               check_port=svc.health_check_node_port if local
                                               else cfg.connect_port or p.node_port))
            listeners.append(SlbListener(name=f"{svc.key}:{p.port}/{p.protocol}", port=p.port, protocol=p.protocol,
                                         backends=tuple(backends)))
        return SlbPlan(service=svc.key, host=f"slb/{svc.namespace}/{svc.name}", vip=vip, vswitch=vname,
                       scheduler=cfg.scheduler, check=check.model_dump(mode="json"), listeners=tuple(listeners))

    def _internet(self, cl, vswitches, ecs_by_name, ips, slbs, hosts):
        """The internet zone's hosts, one edge per VPC, EIPs, NAT gateways, and the public addresses
        of internet-facing SLBs. Appends the zone's hosts to `hosts`; returns the new SLB list."""
        cloud = self.sc.cloud
        inet = cloud.internet
        for what, items in (("natGateways", cloud.natGateways), ("eips", cloud.eips)):
            if items and inet is None:
                self.bad(("cloud", what), [x.name for x in items], "needs the emulated internet: add a "
                         "cloud.internet section (an empty mapping takes the defaults)")
        if inet is None:
            return None, (), (), (), slbs
        reserved = [ipaddress.IPv4Network(r) for r in DOCUMENTATION_RANGES]
        private = [(f"VPC {v.name}", v.cidr) for v in cloud.vpcs]
        if cl:
            private += [("cluster.serviceCIDR", cl.serviceCIDR)]
            if cl.mode != "eni":
                private += [("cluster.podCIDR", cl.podCIDR)]
        for field, net in (("cidr", inet.cidr), ("publicCIDR", inet.publicCIDR)):
            if not any(net.subnet_of(r) for r in reserved):
                self.bad(("cloud", "internet", field), str(net), "expected a subnet of a range reserved for "
                         "benchmarking or documentation (" + ", ".join(DOCUMENTATION_RANGES) + "), so that no "
                         "emulated address is a real one")
            for what, other in private:
                if net.overlaps(other):
                    self.bad(("cloud", "internet", field), str(net), f"overlaps {what} ({other})")
            if not 16 <= net.prefixlen <= 29:
                self.bad(("cloud", "internet", field), str(net), "expected a mask between /16 and /29")
        if inet.cidr.overlaps(inet.publicCIDR):
            self.bad(("cloud", "internet", "publicCIDR"), str(inet.publicCIDR), f"overlaps internet.cidr ({inet.cidr})")
        if self.problems:
            return None, (), (), (), slbs

        # the zone's hosts: the router takes the first address
        gateway = str(inet.cidr[1])
        taken = {gateway}
        self._unique([("cloud", "internet", "hosts", i, "name") for i in range(len(inet.hosts))],
                     [h.name for h in inet.hosts], "internet host")
        for i, h in enumerate(inet.hosts):
            if h.ip is None:
                continue
            if h.ip not in inet.cidr or h.ip in (inet.cidr.network_address, inet.cidr.broadcast_address):
                self.bad(("cloud", "internet", "hosts", i, "ip"), str(h.ip), f"expected a host address of {inet.cidr}")
            elif str(h.ip) in taken:
                self.bad(("cloud", "internet", "hosts", i, "ip"), str(h.ip),
                         "already taken (the router has the first address)")
            taken.add(str(h.ip))
        free = (str(a) for a in inet.cidr.hosts() if str(a) not in taken)
        bridge = f"{self.run}-inet"
        for i, h in enumerate(inet.hosts):
            ip = str(h.ip) if h.ip is not None else next(free, None)
            if ip is None:
                self.bad(("cloud", "internet", "hosts", i), h.name, f"no free address left in {inet.cidr}")
                continue
            hosts.append(HostPlan(
                key=f"inet/{h.name}", kind="internet", name=h.name, netns=f"{self.run}-inet-{h.name}",
                veth=f"{self.run}i{i}", bridge=bridge, ofport=OFPORT_INTERNET_HOST0 + i, ip=ip,
                prefixlen=inet.cidr.prefixlen, mac=mac_for(ip), gateway=gateway, gateway_mac=mac_for(gateway),
                mtu=1500, servers=tuple(ServerPort(port=p.port, protocol=p.protocol) for p in h.ports)))
        internet = InternetPlan(cidr=str(inet.cidr), public_cidr=str(inet.publicCIDR), gateway=gateway,
                                gateway_mac=mac_for(gateway), bridge=bridge)

        # public addresses: declared ones first, then the lowest free ones in scenario order
        vsw_by_name = {v.name: v for v in vswitches}
        vpc_of_ecs = {n: vsw_by_name[e.vswitch].vpc for n, e in ecs_by_name.items()}
        vpc_names = [v.name for v in cloud.vpcs]
        natgws = {}
        for i, g in enumerate(cloud.natGateways):
            path = ("cloud", "natGateways", i)
            if g.name in natgws:
                self.bad(path + ("name",), g.name, "duplicate NAT gateway name")
            elif g.name in ecs_by_name:
                self.bad(path + ("name",), g.name, "also the name of an ECS instance; route next hops name "
                         "either, so expected a distinct name")
            if g.vpc not in vpc_names:
                self.bad(path + ("vpc",), g.vpc, f"no such VPC; expected one of {vpc_names}")
            natgws[g.name] = g
        self.natgw_vpc = {n: g.vpc for n, g in natgws.items()}
        public_taken: set[str] = set()
        public = [a for a in inet.publicCIDR.hosts()]
        self._unique([("cloud", "eips", i, "name") for i in range(len(cloud.eips))], [e.name for e in cloud.eips], "EIP")
        bound_instances: dict[str, int] = {}
        for i, e in enumerate(cloud.eips):
            path = ("cloud", "eips", i)
            if e.ip is not None:
                if e.ip not in public:
                    self.bad(path + ("ip",), str(e.ip), f"expected a host address of internet.publicCIDR {inet.publicCIDR}")
                elif str(e.ip) in public_taken:
                    self.bad(path + ("ip",), str(e.ip), "address already taken by another EIP")
                public_taken.add(str(e.ip))
            if e.instance is not None and e.natGateway is not None:
                self.bad(path, e.name, "expected at most one of instance and natGateway")
            if e.instance is not None:
                if e.instance not in ecs_by_name:
                    self.bad(path + ("instance",), e.instance, f"no such ECS instance; expected one of {sorted(ecs_by_name)}")
                elif e.instance in bound_instances:
                    self.bad(path + ("instance",), e.instance, f"already has EIP {cloud.eips[bound_instances[e.instance]].name}; "
                             "expected one EIP per instance")
                else:
                    bound_instances[e.instance] = i
            if e.natGateway is not None and e.natGateway not in natgws:
                self.bad(path + ("natGateway",), e.natGateway, f"no such NAT gateway; expected one of {sorted(natgws)}")
        if self.problems:
            return None, (), (), (), slbs
        cursor = iter(a for a in public)

        def next_public(path, what, src=None) -> str | None:
            for a in cursor:
                if str(a) not in public_taken:
                    public_taken.add(str(a))
                    return str(a)
            self.bad(path, what, f"internet.publicCIDR {inet.publicCIDR} has no free address left; expected a "
                     "larger publicCIDR", src)
            return None

        eips = []
        for i, e in enumerate(cloud.eips):
            ip = str(e.ip) if e.ip is not None else next_public(("cloud", "eips", i), e.name)
            if ip is None:
                continue
            if e.instance is not None:
                eips.append(EipPlan(name=e.name, ip=ip, vpc=vpc_of_ecs[e.instance], bound="instance",
                                    target=e.instance, private_ip=ips[e.instance]))
            elif e.natGateway is not None:
                eips.append(EipPlan(name=e.name, ip=ip, vpc=natgws[e.natGateway].vpc, bound="natgw",
                                    target=e.natGateway))
            else:
                eips.append(EipPlan(name=e.name, ip=ip))
        out_slbs = []
        for slb in slbs:
            if slb.service in self.internet_slbs:
                m = self._lb_manifest(slb.service)
                ip = next_public(m.prefix, slb.service, m.source)
                if ip is None:
                    continue
                vpc = vsw_by_name[slb.vswitch].vpc
                eips.append(EipPlan(name=f"slb-{slb.service.replace('/', '-')}", ip=ip, vpc=vpc, bound="slb",
                                    target=slb.service, private_ip=slb.vip))
                slb = slb.model_copy(update={"public_ip": ip})
            out_slbs.append(slb)

        nat_gateways = []
        for i, g in enumerate(cloud.natGateways):
            path = ("cloud", "natGateways", i)
            mine = {e.name: e.ip for e in eips if e.bound == "natgw" and e.target == g.name}
            if not mine:
                self.bad(path, g.name, "has no EIP; expected an entry in cloud.eips with natGateway: " + g.name)
                continue
            entries, seen = [], {}
            vpc_cidr = next(v.cidr for v in cloud.vpcs if v.name == g.vpc)
            for j, entry in enumerate(g.snat):
                at = path + ("snat", j)
                given = [k for k in ("vswitch", "instance", "cidr") if getattr(entry, k) is not None]
                if len(given) != 1:
                    self.bad(at, entry.model_dump(exclude_none=True), "expected exactly one of vswitch, instance, cidr")
                    continue
                if entry.vswitch is not None:
                    v = vsw_by_name.get(entry.vswitch)
                    if v is None or v.vpc != g.vpc:
                        self.bad(at + ("vswitch",), entry.vswitch, f"expected a vSwitch of VPC {g.vpc}")
                        continue
                    source, what = v.cidr, f"vSwitch {v.name}"
                elif entry.instance is not None:
                    if vpc_of_ecs.get(entry.instance) != g.vpc:
                        self.bad(at + ("instance",), entry.instance, f"expected an ECS instance of VPC {g.vpc}")
                        continue
                    source, what = f"{ips[entry.instance]}/32", f"instance {entry.instance}"
                else:
                    if not entry.cidr.subnet_of(vpc_cidr):
                        self.bad(at + ("cidr",), str(entry.cidr), f"expected a subnet of the VPC CIDR {vpc_cidr}")
                        continue
                    source, what = str(entry.cidr), f"CIDR {entry.cidr}"
                if source in seen:
                    self.bad(at, what, f"the same source as snat entry {seen[source]}; expected one entry per source")
                    continue
                seen[source] = j
                if entry.eip is not None and entry.eip not in mine:
                    self.bad(at + ("eip",), entry.eip, f"expected an EIP bound to NAT gateway {g.name} "
                             f"({', '.join(mine)})")
                    continue
                entries.append(SnatPlan(source=source, what=what,
                                        public_ip=mine[entry.eip] if entry.eip else next(iter(mine.values()))))
            entries.sort(key=lambda e: -ipaddress.IPv4Network(e.source).prefixlen)
            nat_gateways.append(NatGatewayPlan(name=g.name, vpc=g.vpc, public_ips=tuple(mine.values()),
                                               snat=tuple(entries)))
        edges = tuple(EdgePlan(vpc=v.name, bridge=f"{self.run}-ed{i}", mac=mac_for(str(inet.publicCIDR[-2 - i])),
                               internet_port=1 + i) for i, v in enumerate(cloud.vpcs))
        return internet, edges, tuple(eips), tuple(nat_gateways), out_slbs

    def _lb_manifest(self, key: str):
        ns, name = key.split("/", 1)
        return next(m for m in self.loaded.manifests if getattr(m.obj, "kind", "") == "Service"
                    and m.obj.metadata.namespace == ns and m.obj.metadata.name == name)

    def _check_expectations(self, plan: Plan) -> None:
        for i, e in enumerate(self.sc.expect):
            for field, ref in (("from", e.source), ("to", e.to)):
                try:
                    if field == "to" and ref.startswith("svc/"):
                        plan.service(ref.removeprefix("svc/"))
                    else:
                        resolve_endpoint(plan, ref)
                except KeyError:
                    self.bad(("expect", i, field), ref, "no such endpoint; expected pod/<namespace>/<name>, "
                             "ecs/<name> or node/<name>" + (", or svc/<namespace>/<name>" if field == "to" else "")
                             + " of this scenario")


def _pod_key(pod: dict) -> str:
    return f"pod/{pod['namespace']}/{pod['name']}"


def _relabel(labels: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    out = dict(labels)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def make_plan(loaded: Loaded, run: str, ready: dict[str, bool] | None = None,
              labels: dict[str, dict[str, str | None]] | None = None, previous: Plan | None = None) -> Plan:
    """Changes made while the scenario runs, by pod key, override the manifests: `ready`, the
    pod's readiness; `labels`, labels set (a value) or removed (None), as `kubectl label` does.
    `previous`, the running scenario's plan: its pods stay on their nodes with their addresses,
    interfaces and ports, and new pods get none of those (kubevpc.lab.Lab._update)."""
    planner = Planner(loaded, run)
    planner.previous = {h.key: h for h in previous.hosts} if previous is not None else {}
    planner.ready_overrides = dict(ready or {})
    planner.label_overrides = {k: dict(v) for k, v in (labels or {}).items()}
    return planner.plan()
