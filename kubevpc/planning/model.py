"""The Plan: the complete description of what a run builds, made by kubevpc.planning.make_plan.

Pure data (frozen pydantic models). It names every namespace, bridge, port and interface the run
will create and gives every address and MAC; the controller compiles its flows from it alone, so
the OpenFlow port numbers the builder gives are fixed here too.
"""
from __future__ import annotations

import ipaddress
from typing import Literal


from .. import k8s
from .base import Frozen, mac_for
from .edgeplan import DnatPlan, EdgePlan, EipPlan, InternetPlan, NatGatewayPlan, SnatPlan
from .ports import (
    OFPORT_VROUTER_ON_VSWITCH, OFPORT_FIRST_ATTACHMENT, OFPORT_NODE_HOST, OFPORT_NODE_UPLINK0,
    OFPORT_NODE_UPLINK_PATCH0, OFPORT_NODE_TUNNEL0, OFPORT_NODE_HOP_OUT, OFPORT_NODE_HOP_IN, OFPORT_VSWITCH_UPLINK_PATCH0, OFPORT_NODE_POD0, OFPORT_VROUTER_EDGE, OFPORT_VROUTER_PEER0,
    OFPORT_EDGE_VPC, OFPORT_EDGE_INTERNET, OFPORT_INTERNET_HOST0, OFPORT_VROUTER_RESOLVER, NAT_PORTS,
    VPC_DNS, VPC_DNS_NET, VPC_DNS_GATEWAY)

__all__ = [
    "RESERVED_TAIL", "SNAT_PORTS", "TERMINAL_PHASES", "PROXY_OFF_LABELS", "REJECT_PORT", "READY_ANNOTATION",
    "APP_ANNOTATION", "APPS", "DNS_POD",
    "ANNOTATION", "ADDRESS_TYPE", "VSWITCH_ID", "RFC1918", "OFPORT_VROUTER_ON_VSWITCH",
    "OFPORT_FIRST_ATTACHMENT", "OFPORT_NODE_HOST", "OFPORT_NODE_UPLINK0", "OFPORT_NODE_UPLINK_PATCH0",
    "OFPORT_NODE_TUNNEL0", "OFPORT_NODE_HOP_OUT", "OFPORT_NODE_HOP_IN", "OFPORT_VSWITCH_UPLINK_PATCH0", "OFPORT_NODE_POD0", "OFPORT_VROUTER_EDGE",
    "OFPORT_EDGE_VPC", "OFPORT_EDGE_INTERNET", "OFPORT_VROUTER_PEER0", "OFPORT_INTERNET_HOST0",
    "OFPORT_VROUTER_RESOLVER", "VPC_DNS", "VPC_DNS_NET", "VPC_DNS_GATEWAY", "NAT_PORTS",
    "Frozen", "mac_for", "ServerPort", "OvsPort", "BridgePlan", "HostPlan", "VSwitchPlan", "Route", "RouteTablePlan",
    "VpcPlan", "PeeringPlan", "Tunnel", "Uplink", "NodePlan", "Attachment", "mirror6", "RulePlan", "GroupPlan",
    "ClusterPlan", "ServicePortPlan", "EndpointPlan", "ServicePlan", "SlbBackend", "SlbListener", "SlbPlan",
    "InternetPlan", "EdgePlan", "EipPlan", "SnatPlan", "DnatPlan", "NatGatewayPlan", "DnsPlan", "FixedIP", "Plan",
    "resolve_endpoint", "usable"]

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



class ServerPort(Frozen):
    port: int
    protocol: Literal["TCP", "UDP"]
    name: str = ""


class OvsPort(Frozen):
    name: str
    ofport: int
    kind: Literal["veth", "patch", "link", "vxlan", "hop"]
    peer: str = ""                  # patch, link, hop: the peer port; veth: the namespace host key
    # link: a veth pair whose two ends are ports of two bridges (a node's uplink to its vSwitch).
    # Unlike a patch port it ends the datapath pass, which the userspace datapath needs: it
    # allows a packet only a few conntrack recirculations per pass (MAX_RECIRC_DEPTH), and a
    # NodePort connection to a pod on another node takes more than that from end to end.
    # hop: the checksum hop of a vxlan node bridge (KUBEVPC_VXLAN_CSUM_HOP): a veth pair with both
    # ends on the same bridge; the kernel completes the checksums of what Open vSwitch sends into
    # one end (OFPORT_NODE_HOP_OUT, TX checksum offload off), and it comes back in by the other.


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
    kind: Literal["ecs", "pod", "slb", "internet", "resolver"]   # slb: an SLB instance's namespace, holding its
                                    # VIP (health checks); internet: a host of the emulated internet;
                                    # resolver: a VPC's DNS servers (VPC_DNS), on its vRouter
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
    app: Literal["server", "dns", "slb", "ingress", "resolver"] = "server"   # the pod server, the cluster DNS,
                                    # an SLB's checker, the NGINX ingress controller, the VPC's DNS resolver
    host_network: bool = False      # pods: spec.hostNetwork. It runs in its node's namespace (netns, ip, mac,
                                    # gateway are the node's) and has no interface of its own (veth "",
                                    # ofport 0, bridge the node's bridge, no attachment or vSwitch address)
    ingress_bandwidth: int = 0      # pods: bit/s reaching it (kubernetes.io/ingress-bandwidth); 0: unlimited
    egress_bandwidth: int = 0       # pods: bit/s it sends (kubernetes.io/egress-bandwidth); 0: unlimited
    hostname: str = ""              # pods: spec.hostname and spec.subdomain (a StatefulSet's pod: its name and
    subdomain: str = ""             # serviceName), so a headless Service of that name has <hostname>.<svc> records
    ipv6: str = ""                  # dual stack: its IPv6 address in its vSwitch's /64 ("": IPv4 only)
    gateway6: str = ""              # ... and the vSwitch gateway's IPv6 address (the same MAC as in IPv4)
    eni_type: Literal["Default", "ENI", "Trunk"] = "Default"   # eni pods: the eniType of the PodNetworking that
                                    # selects it. ENI (exclusive): its packets to a pod of its node leave
                                    # through the vSwitch; Default (shared) and Trunk: the node switches them
                                    # (routes them, from a pod or the node on another vSwitch)

    @property
    def exclusive_eni(self) -> bool:
        """An eni pod on an exclusive ENI (PodNetworking eniType ENI)."""
        return self.eni_type == "ENI"

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
    kind: Literal["system", "custom", "pod", "natgw", "peering"]
    next_hop: str = ""              # ECS instance name for custom and pod routes, NAT gateway name for natgw,
                                    # the peering connection's name for peering
    description: str = ""


class RouteTablePlan(Frozen):
    """A custom route table: the vSwitches associated with it route by its entries, which hold the
    system route of every vSwitch of the VPC as well (Alibaba: system routes are in every table)."""

    name: str
    vswitches: tuple[str, ...]
    routes: tuple[Route, ...]
    quota: int
    number: int                     # 1, 2, ... in scenario order: the vRouter's REG_ROUTE_TABLE value for it


class VpcPlan(Frozen):
    name: str
    cidr: str
    bridge: str
    routes: tuple[Route, ...]       # the system route table
    quota: int
    route_tables: tuple[RouteTablePlan, ...] = ()    # custom route tables, in scenario order
    ipv6_cidr: str = ""             # its IPv6 /56 ("": IPv4 only)
    routes6: tuple[Route, ...] = () # the IPv6 route table: a system route per vSwitch /64

    def table_of(self, vswitch: str) -> RouteTablePlan | None:
        """The custom route table `vswitch` is associated with; None: the system table (or a
        vSwitch of another VPC, whose packets come in through a peering)."""
        return next((t for t in self.route_tables if vswitch in t.vswitches), None)


class PeeringPlan(Frozen):
    """A VPC peering connection: a patch port pair between the two VPCs' vRouters, both at `ofport`."""

    name: str
    vpcs: tuple[str, str]
    ports: tuple[str, str]          # its patch port on each VPC's vRouter, in the order of `vpcs`
    ofport: int

    def other(self, vpc: str) -> str:
        return self.vpcs[1] if vpc == self.vpcs[0] else self.vpcs[0]


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
    additional_pod_cidrs: tuple[str, ...] = ()  # vpc-route: pod CIDR blocks beyond pod_cidr (cluster.additionalPodCIDRs)
    dual_stack: bool = False        # cluster.dualStack: eni pods get an IPv6 address too
    service_cidr6: str = ""         # cluster.serviceCIDRv6: Services may have an IPv6 ClusterIP ("": IPv4 only)

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        """Every pod CIDR block, pod_cidr first (vxlan and vpc-route)."""
        return (self.pod_cidr, *self.additional_pod_cidrs)


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
    ipv6: str = ""                  # dual stack: its pod's IPv6 address ("": none, or a host-network pod)

    def address(self, family: int) -> str:
        """Its address in `family` (4 or 6); "" when it has none there."""
        return self.ipv6 if family == 6 else self.ip

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
    cluster_ips: tuple[str, ...] = ()    # spec.clusterIPs: one per family, primary first (cluster_ip)
    ip_families: tuple[str, ...] = ()    # spec.ipFamilies as the API server completes them
    ip_family_policy: str = ""           # spec.ipFamilyPolicy as defaulted ("" for ExternalName)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def cluster_ip_of(self, family: int) -> str:
        """Its ClusterIP in `family` (4 or 6); "" when it has none there."""
        ips = self.cluster_ips or ((self.cluster_ip,) if self.cluster_ip else ())
        return next((ip for ip in ips if (":" in ip) == (family == 6)), "")

    def has_family(self, family: int) -> bool:
        """Is it a Service of `family` (a headless one too: its endpoints' addresses of the family)?"""
        return f"IPv{family}" in (self.ip_families or ("IPv4",))

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


class DnsPlan(Frozen):
    domain: str
    ip: str                         # the kube-dns Service's ClusterIP
    pods: tuple[str, ...]           # host keys of the DNS pods


class FixedIP(Frozen):
    """The address a Fixed PodNetworking keeps for a StatefulSet's pod across its re-creation (eni
    mode; Terway's PodENI): the pod's while it runs; once it is gone (`gone_since`, a wall-clock
    time the Lab gave the planner), nobody else's until `release_after` seconds later (TTL) or for
    the rest of the run (Never)."""

    pod: str                        # the pod's key
    vswitch: str
    ip: str
    node: str                       # where it ran
    pod_networking: str
    release_strategy: Literal["TTL", "Never"]
    release_after: float = 0        # seconds (TTL)
    gone_since: float = 0           # 0 while the pod exists

    def expired(self, now: float) -> bool:
        return bool(self.gone_since) and self.release_strategy == "TTL" and now >= self.gone_since + self.release_after


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
    peerings: tuple[PeeringPlan, ...] = ()
    # NetworkPolicies in manifest order (the compiler's identifiers follow it), and every
    # namespace's labels (kubernetes.io/metadata.name is added where they are used)
    network_policies: tuple[k8s.NetworkPolicy, ...] = ()
    namespaces: dict[str, dict[str, str]] = {}
    # Ingresses (manifest order) and TLS Secrets, for the ingress controllers
    ingresses: tuple[k8s.Ingress, ...] = ()
    secrets: tuple[k8s.Secret, ...] = ()
    expect: tuple[dict, ...] = ()
    flow_log_window: int = 0        # seconds of idleness that close a flow log record; 0: flow logs off
    fixed_ips: tuple[FixedIP, ...] = ()   # eni: addresses kept for StatefulSet pods (Fixed PodNetworking)

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

    def peering(self, a: str, b: str) -> PeeringPlan | None:
        """The peering connection between VPCs a and b, if they are peered."""
        return next((p for p in self.peerings if set(p.vpcs) == {a, b}), None)

    @property
    def resolvers(self) -> tuple[HostPlan, ...]:
        """The VPCs' DNS resolvers (with `cloud.internet`: one per VPC, on its vRouter)."""
        return tuple(h for h in self.hosts if h.kind == "resolver")

    def resolver(self, vpc: str) -> HostPlan | None:
        """VPC `vpc`'s DNS resolver, or None when it has none."""
        return next((h for h in self.resolvers if h.name == vpc), None)


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
