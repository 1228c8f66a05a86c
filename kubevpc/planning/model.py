"""The Plan: the complete description of what a run builds, made by kubevpc.planning.make_plan.

Pure data (frozen pydantic models). It names every namespace, bridge, port and interface the run
will create and gives every address and MAC; the controller compiles its flows from it alone, so
the OpenFlow port numbers the builder gives are fixed here too.
"""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .. import k8s

__all__ = [
    "RESERVED_TAIL", "SNAT_PORTS", "TERMINAL_PHASES", "PROXY_OFF_LABELS", "REJECT_PORT", "READY_ANNOTATION",
    "APP_ANNOTATION", "APPS", "DNS_POD",
    "ANNOTATION", "ADDRESS_TYPE", "VSWITCH_ID", "RFC1918", "OFPORT_VROUTER_ON_VSWITCH",
    "OFPORT_FIRST_ATTACHMENT", "OFPORT_NODE_HOST", "OFPORT_NODE_UPLINK0", "OFPORT_NODE_UPLINK_PATCH0",
    "OFPORT_NODE_TUNNEL0", "OFPORT_VSWITCH_UPLINK_PATCH0", "OFPORT_NODE_POD0", "OFPORT_VROUTER_EDGE",
    "OFPORT_EDGE_VPC", "OFPORT_EDGE_INTERNET", "OFPORT_INTERNET_HOST0", "NAT_PORTS", "Frozen", "mac_for",
    "ServerPort", "OvsPort", "BridgePlan", "HostPlan", "VSwitchPlan", "Route", "VpcPlan", "Tunnel", "Uplink",
    "NodePlan", "Attachment", "mirror6", "RulePlan", "GroupPlan", "ClusterPlan", "ServicePortPlan", "EndpointPlan",
    "ServicePlan", "SlbBackend", "SlbListener", "SlbPlan", "InternetPlan", "EdgePlan", "EipPlan", "SnatPlan",
    "DnatPlan", "NatGatewayPlan", "DnsPlan", "Plan", "resolve_endpoint", "usable"]

RESERVED_TAIL = 3        # Alibaba reserves the first and the last three addresses of a vSwitch
SNAT_PORTS = (61000, 65535)
REJECT_PORT = 1          # nothing listens here on a node: Services without endpoints are DNATed to it to be refused
READY_ANNOTATION = "kubevpc.io/ready"
TERMINAL_PHASES = ("Succeeded", "Failed")   # a pod in these has stopped for good
# kube-proxy watches only Services without these labels, whatever their values (cmd/kube-proxy/app/
# server.go: DoesNotExist requirements on pkg/proxy/apis LabelServiceProxyName and v1.IsHeadlessService)
PROXY_OFF_LABELS = ("service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless")
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
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] = "Running"   # pods: status.phase;
                                    # Succeeded and Failed (terminal): no server runs, never an endpoint
    terminating: bool = False       # pods: deleted, running out their grace period (still serving)
    grace_period: int = 30          # pods: spec.terminationGracePeriodSeconds
    app: Literal["server", "dns", "slb", "ingress"] = "server"   # the pod server, the cluster DNS, an SLB's
                                    # checker, the NGINX ingress controller
    host_network: bool = False      # pods: spec.hostNetwork. It runs in its node's namespace (netns, ip, mac,
                                    # gateway are the node's) and has no interface of its own (veth "",
                                    # ofport 0, bridge the node's bridge, no attachment or vSwitch address)
    ingress_bandwidth: int = 0      # pods: bit/s reaching it (kubernetes.io/ingress-bandwidth); 0: unlimited
    egress_bandwidth: int = 0       # pods: bit/s it sends (kubernetes.io/egress-bandwidth); 0: unlimited
    ipv6: str = ""                  # dual stack: its IPv6 address in its vSwitch's /64 ("": IPv4 only)
    gateway6: str = ""              # ... and the vSwitch gateway's IPv6 address (the same MAC as in IPv4)

    @property
    def ready_name(self) -> str:
        """The name of its server's ready file: its namespace's, or for a host-network pod, which
        shares its node's namespace, that name with the pod's after it."""
        return f"{self.netns}-pod-{self.namespace}_{self.name}" if self.host_network else self.netns


class VSwitchPlan(Frozen):
    name: str
    vpc: str
    zone: str
    cidr: str
    gateway: str
    gateway_mac: str
    bridge: str
    vrouter_port: int               # ofport of this vSwitch on the vRouter
    ipv6_cidr: str = ""             # its IPv6 /64 ("": IPv4 only)
    gateway6: str = ""              # the gateway's IPv6 address: the v4 gateway's host number in the /64


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
    ipv6_cidr: str = ""             # its IPv6 /56 ("": IPv4 only)
    routes6: tuple[Route, ...] = () # the IPv6 route table: a system route per vSwitch /64


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
    ipv6: str = ""                  # dual stack: the IPv6 address behind this port too


class RulePlan(Frozen):
    direction: Literal["ingress", "egress"]
    protocol: Literal["tcp", "udp", "icmp", "all"]
    port_min: int = 0               # 0: every port
    port_max: int = 0
    cidr: str = ""
    ipv6_cidr: str = ""             # an IPv6 peer instead (Ipv6SourceCidrIp / Ipv6DestCidrIp)
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
        peer = self.cidr or self.ipv6_cidr or self.group
        return (f"{group} rule {number} ({self.policy} {self.protocol}{ports} {way} {peer}, "
                f"priority {self.priority}{note})")


class GroupPlan(Frozen):
    name: str
    vpc: str
    rules: tuple[RulePlan, ...]
    members: tuple[str, ...]        # addresses/CIDRs whose traffic counts as from a member
    members6: tuple[str, ...] = ()  # ... and their IPv6 addresses (dual stack)


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
    dual_stack: bool = False        # cluster.dualStack: eni pods get an IPv6 address too


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
    ready: bool                     # the EndpointSlice's ready condition: the pod is ready and not
                                    # terminating, or the Service publishes not-ready addresses
    serving: bool = True            # the pod is ready, terminating or not (KEP-1669)
    terminating: bool = False       # the pod is being deleted
    hostname: str = ""
    ports: tuple[int, ...]          # per Service port, in order; 0: the pod has no such named port

    @property
    def condition(self) -> str:
        """Its conditions in words, for status and graphs: "" when ready; "terminating" for a pod
        being deleted that still serves, "terminating, not ready" for one that does not; else
        "not ready"."""
        if self.terminating:
            return "terminating" if self.serving else "terminating, not ready"
        return "" if self.ready else "not ready"


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
    labels: dict[str, str] = {}     # metadata.labels
    proxied: bool = True            # False: labelled service.kubernetes.io/service-proxy-name or
                                    # service.kubernetes.io/headless, so kube-proxy leaves it alone
    external_ips: tuple[str, ...] = ()   # spec.externalIPs

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def proxy_off_label(self) -> str:
        """Why kube-proxy leaves this Service alone: the label that says so, as `key=value` (the key
        alone when its value is empty); "" when kube-proxy programs it."""
        if self.proxied:
            return ""
        key = next((k for k in PROXY_OFF_LABELS if k in self.labels), "")
        if not key:
            return "to switch kube-proxy off"
        return f"{key}={self.labels[key]}" if self.labels[key] else key

    def ready_endpoints(self, index: int) -> list[EndpointPlan]:
        """Endpoints that are ready for port `index` (the target port resolved on their pod)."""
        return [e for e in self.endpoints if e.ready and e.ports[index]]

    def cluster_endpoints(self, index: int) -> list[EndpointPlan]:
        """What kube-proxy balances port `index` over with a Cluster traffic policy: the ready
        endpoints, or, when there is none, those serving while terminating (KEP-1669;
        pkg/proxy/topology.go CategorizeEndpoints)."""
        ready = self.ready_endpoints(index)
        return ready or [e for e in self.endpoints if e.serving and e.terminating and e.ports[index]]

    def local_endpoints(self, index: int, node: str) -> list[EndpointPlan]:
        """With a Local traffic policy, on `node`: its ready endpoints, or, when it has none, its
        endpoints serving while terminating."""
        here = [e for e in self.endpoints if e.node == node and e.ports[index]]
        return [e for e in here if e.ready] or [e for e in here if e.serving and e.terminating]


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
    ingresses: tuple[k8s.Ingress, ...] = ()
    secrets: tuple[k8s.Secret, ...] = ()
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
    def own_pods(self) -> tuple[HostPlan, ...]:
        """The pods with a network namespace, an interface and an address of their own: every pod
        but those with hostNetwork, which run in their node's. Whatever is made or wired per pod
        (namespaces, veths, bridge ports, flows matching a pod's port or address) is for these."""
        return tuple(h for h in self.hosts if h.kind == "pod" and not h.host_network)

    def network_host(self, h: HostPlan) -> HostPlan:
        """The host whose network namespace `h` runs in: its node's instance for a host-network
        pod (whose connections are the node's), `h` itself for anything else."""
        return self.host(self.node(h.node).ecs) if h.host_network else h

    def servers_at(self, h: HostPlan) -> tuple[ServerPort, ...]:
        """What listens at h's address: in a node's namespace, the node's own servers and those of
        its host-network pods, which share it; elsewhere, h's own."""
        if not (h.host_network or (h.kind == "ecs" and h.node)):
            return h.servers
        home = self.network_host(h)
        return home.servers + tuple(s for p in self.pods if p.host_network and p.node == home.node for s in p.servers)

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


def mirror6(ipv6_cidr: str, v4_cidr: str, ip: str) -> str:
    """The IPv6 address of `ip`'s host number (its offset in v4_cidr) in the /64 ipv6_cidr: 10.0.1.10
    in 10.0.1.0/24 is 2001:db8:0:101::a in 2001:db8:0:101::/64, readable beside its IPv4 twin."""
    host = int(ipaddress.IPv4Address(ip)) - int(ipaddress.IPv4Network(v4_cidr).network_address)
    return str(ipaddress.IPv6Network(ipv6_cidr).network_address + host)


def usable(net: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Addresses an instance may hold on a vSwitch: not the first, not the last three."""
    return list(net)[1:-RESERVED_TAIL] if net.num_addresses > 4 else []
