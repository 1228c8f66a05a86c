"""Stage "internet": the emulated internet zone and its hosts, one edge per VPC, EIPs (bound to
instances, NAT gateways, or pods: kubevpc.planning.podeip), NAT gateways with their SNAT entries
and DNAT entries (kubevpc.planning.dnat), the public addresses of internet-facing SLBs, and each
VPC's DNS resolver (which answers the zone's names)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..scenario.model import DOCUMENTATION_RANGES, RESERVED_DOMAINS
from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .dnat import plan_dnat
from .model import (OFPORT_INTERNET_HOST0, OFPORT_VROUTER_RESOLVER, VPC_DNS, VPC_DNS_GATEWAY, VPC_DNS_NET, EdgePlan,
                    EipPlan, HostPlan, InternetPlan, NatGatewayPlan, ServerPort, SlbPlan, SnatPlan, mac_for)
from .podeip import bind_pod_eips
from .slbs import service_manifest
from .workloads import PodSpec


@dataclass
class Internet:
    plan: InternetPlan | None = None
    edges: tuple[EdgePlan, ...] = ()
    eips: tuple[EipPlan, ...] = ()
    nat_gateways: tuple[NatGatewayPlan, ...] = ()
    slbs: list[SlbPlan] = field(default_factory=list)      # the SLBs, internet-facing ones with their EIP
    natgw_vpc: dict[str, str] = field(default_factory=dict)   # NAT gateway name -> its VPC (route next hops)


def plan_internet(ctx: Context, cloud: Cloud, cluster: Cluster, ips: dict[str, str], slbs: list[SlbPlan],
                  internet_slbs: set[str], hosts: list[HostPlan], pods: list[PodSpec]) -> Internet:
    """Appends the zone's hosts to `hosts`. `pods`: for the EIPs their annotations bind them to."""
    spec = ctx.sc.cloud
    inet = spec.internet
    for what, items in (("natGateways", spec.natGateways), ("eips", spec.eips)):
        if items and inet is None:
            ctx.bad(("cloud", what), [x.name for x in items], "needs the emulated internet: add a "
                    "cloud.internet section (an empty mapping takes the defaults)")
    if inet is None:
        return Internet(slbs=slbs)
    _check_zone(ctx, cluster, inet)
    _check_domain(ctx, cluster, inet.domain)
    if ctx.problems:
        return Internet(slbs=slbs)
    zone = _zone(ctx, inet, hosts)
    hosts += _resolvers(ctx)
    natgws = _check_nat_gateways(ctx, cluster)
    out = Internet(plan=zone, slbs=slbs, natgw_vpc={n: g.vpc for n, g in natgws.items()})
    public = Public(ctx, inet)
    _check_eips(ctx, cluster, natgws, public)
    if ctx.problems:
        return out
    vpc_of_ecs = {n: cloud.vswitch(e.vswitch).vpc for n, e in cluster.instances.items()}
    eips = bind_pod_eips(ctx, cluster, pods, hosts, _eips(ctx, natgws, public, ips, vpc_of_ecs))
    out.slbs = []
    public.taken |= set(ctx.previous_public.values())     # a running SLB keeps its EIP; none is handed on
    for slb in slbs:
        if slb.service in internet_slbs:
            m = service_manifest(ctx, slb.service)
            ip = ctx.previous_public.get(slb.service) or public.take(m.prefix, slb.service, m.source)
            if ip is None:
                continue
            eips.append(EipPlan(name=f"slb-{slb.service.replace('/', '-')}", ip=ip, vpc=cloud.vswitch(slb.vswitch).vpc,
                                bound="slb", target=slb.service, private_ip=slb.vip))
            slb = slb.model_copy(update={"public_ip": ip})
        out.slbs.append(slb)
    out.eips = tuple(eips)
    out.nat_gateways = tuple(_nat_gateways(ctx, cloud, cluster, eips, ips, vpc_of_ecs, hosts))
    out.edges = tuple(EdgePlan(vpc=v.name, bridge=ctx.names.edge(i), mac=mac_for(str(inet.publicCIDR[-2 - i])),
                               internet_port=1 + i) for i, v in enumerate(spec.vpcs))
    return out


def _check_zone(ctx: Context, cluster: Cluster, inet) -> None:
    reserved = [ipaddress.IPv4Network(r) for r in DOCUMENTATION_RANGES]
    private = [(f"VPC {v.name}", v.cidr) for v in ctx.sc.cloud.vpcs]
    cl = cluster.spec
    if cl:
        private += [("cluster.serviceCIDR", cl.serviceCIDR)]
        if cl.mode != "eni":
            private += [("cluster.podCIDR", cl.podCIDR)] + [("cluster.additionalPodCIDRs", c) for c in cl.additionalPodCIDRs]
    for field_, net in (("cidr", inet.cidr), ("publicCIDR", inet.publicCIDR)):
        if not any(net.subnet_of(r) for r in reserved):
            ctx.bad(("cloud", "internet", field_), str(net), "expected a subnet of a range reserved for "
                    "benchmarking or documentation (" + ", ".join(DOCUMENTATION_RANGES) + "), so that no "
                    "emulated address is a real one")
        for what, other in private:
            if net.overlaps(other):
                ctx.bad(("cloud", "internet", field_), str(net), f"overlaps {what} ({other})")
        if not 16 <= net.prefixlen <= 29:
            ctx.bad(("cloud", "internet", field_), str(net), "expected a mask between /16 and /29")
    if inet.cidr.overlaps(inet.publicCIDR):
        ctx.bad(("cloud", "internet", "publicCIDR"), str(inet.publicCIDR), f"overlaps internet.cidr ({inet.cidr})")


def _zone(ctx: Context, inet, hosts: list[HostPlan]) -> InternetPlan:
    """The zone's hosts (the router takes the first address), declared addresses first."""
    gateway = str(inet.cidr[1])
    taken = {gateway}
    ctx.problems.unique([("cloud", "internet", "hosts", i, "name") for i in range(len(inet.hosts))],
                        [h.name for h in inet.hosts], "internet host")
    for i, h in enumerate(inet.hosts):
        if h.ip is None:
            continue
        if h.ip not in inet.cidr or h.ip in (inet.cidr.network_address, inet.cidr.broadcast_address):
            ctx.bad(("cloud", "internet", "hosts", i, "ip"), str(h.ip), f"expected a host address of {inet.cidr}")
        elif str(h.ip) in taken:
            ctx.bad(("cloud", "internet", "hosts", i, "ip"), str(h.ip), "already taken (the router has the first address)")
        taken.add(str(h.ip))
    free = (str(a) for a in inet.cidr.hosts() if str(a) not in taken)
    bridge = ctx.names.internet()
    for i, h in enumerate(inet.hosts):
        ip = str(h.ip) if h.ip is not None else next(free, None)
        if ip is None:
            ctx.bad(("cloud", "internet", "hosts", i), h.name, f"no free address left in {inet.cidr}")
            continue
        hosts.append(HostPlan(
            key=f"inet/{h.name}", kind="internet", name=h.name, netns=ctx.names.internet_netns(h.name),
            veth=ctx.names.internet_veth(i), bridge=bridge, ofport=OFPORT_INTERNET_HOST0 + i, ip=ip,
            prefixlen=inet.cidr.prefixlen, mac=mac_for(ip), gateway=gateway, gateway_mac=mac_for(gateway),
            mtu=1500, servers=tuple(ServerPort(port=p.port, protocol=p.protocol) for p in h.ports)))
    return InternetPlan(cidr=str(inet.cidr), public_cidr=str(inet.publicCIDR), gateway=gateway,
                        gateway_mac=mac_for(gateway), bridge=bridge, domain=inet.domain)


def _check_domain(ctx: Context, cluster: Cluster, domain: str) -> None:
    """The zone's domain is reserved (so no emulated name is a real one) and outside the cluster
    domain (whose names the cluster DNS answers itself, never asking the VPC's resolver); the
    cluster's ranges leave the VPC's DNS addresses alone."""
    path = ("cloud", "internet", "domain")
    if not any(domain == r or domain.endswith("." + r) for r in RESERVED_DOMAINS):
        ctx.bad(path, domain, "expected a domain reserved for documentation or testing (RFC 2606, 6761, 8375: "
                + ", ".join(RESERVED_DOMAINS) + ", or a subdomain of one), so that no emulated name is a real one")
    cl = cluster.spec
    if cl is None:
        return
    cd = cl.dns.clusterDomain
    if cl.dns.enabled and (domain == cd or domain.endswith("." + cd)):
        ctx.bad(path, domain, f"is inside the cluster domain {cd}, which the cluster DNS answers itself without "
                "asking the VPC's resolver; expected a domain outside it")
    dns = ipaddress.IPv4Network(VPC_DNS_NET)
    ranges = [("serviceCIDR", cl.serviceCIDR)] + ([("podCIDR", cl.podCIDR)] if cl.mode != "eni" else [])
    for key, net in ranges:
        if net.overlaps(dns):
            ctx.bad(("cluster", key), str(net), f"overlaps {VPC_DNS_NET}, where the VPC's DNS servers "
                    f"{' and '.join(VPC_DNS)} are (Alibaba Cloud reserves 100.64.0.0/10 for its services); "
                    "expected a range outside it")


def _resolvers(ctx: Context) -> list[HostPlan]:
    """Each VPC's DNS resolver: a namespace on its vRouter holding VPC_DNS (the first on the
    interface the plan names, the second beside it), serving DNS on both (ACK's nodes have both
    in /etc/resolv.conf, and CoreDNS forwards there)."""
    out = []
    for i, vpc in enumerate(ctx.sc.cloud.vpcs):
        out.append(HostPlan(
            key=f"resolver/{vpc.name}", kind="resolver", name=vpc.name, netns=ctx.names.resolver_netns(vpc.name),
            veth=ctx.names.resolver_veth(i), bridge=ctx.names.vrouter(i), ofport=OFPORT_VROUTER_RESOLVER,
            ip=VPC_DNS[0], prefixlen=ipaddress.IPv4Network(VPC_DNS_NET).prefixlen, mac=mac_for(VPC_DNS[0]),
            gateway=VPC_DNS_GATEWAY, gateway_mac=mac_for(VPC_DNS_GATEWAY), mtu=1500, app="resolver",
            servers=(ServerPort(port=53, protocol="UDP", name="dns"), ServerPort(port=53, protocol="TCP", name="dns-tcp"))))
    return out


def _check_nat_gateways(ctx: Context, cluster: Cluster) -> dict:
    vpc_names = [v.name for v in ctx.sc.cloud.vpcs]
    natgws = {}
    for i, g in enumerate(ctx.sc.cloud.natGateways):
        path = ("cloud", "natGateways", i)
        if g.name in natgws:
            ctx.bad(path + ("name",), g.name, "duplicate NAT gateway name")
        elif g.name in cluster.instances:
            ctx.bad(path + ("name",), g.name, "also the name of an ECS instance; route next hops name "
                    "either, so expected a distinct name")
        if g.vpc not in vpc_names:
            ctx.bad(path + ("vpc",), g.vpc, f"no such VPC; expected one of {vpc_names}")
        natgws[g.name] = g
    return natgws


class Public:
    """Public addresses: declared ones first, then the lowest free ones in scenario order."""

    def __init__(self, ctx: Context, inet):
        self.ctx, self.cidr = ctx, inet.publicCIDR
        self.addresses = list(inet.publicCIDR.hosts())
        self.taken: set[str] = set()
        self.cursor = iter(self.addresses)

    def take(self, path: tuple, what: str, src=None) -> str | None:
        for a in self.cursor:
            if str(a) not in self.taken:
                self.taken.add(str(a))
                return str(a)
        self.ctx.bad(path, what, f"internet.publicCIDR {self.cidr} has no free address left; expected a "
                     "larger publicCIDR", src)
        return None


def _check_eips(ctx: Context, cluster: Cluster, natgws: dict, public: Public) -> None:
    eips = ctx.sc.cloud.eips
    ctx.problems.unique([("cloud", "eips", i, "name") for i in range(len(eips))], [e.name for e in eips], "EIP")
    bound_instances: dict[str, int] = {}
    for i, e in enumerate(eips):
        path = ("cloud", "eips", i)
        if e.ip is not None:
            if e.ip not in public.addresses:
                ctx.bad(path + ("ip",), str(e.ip), f"expected a host address of internet.publicCIDR {public.cidr}")
            elif str(e.ip) in public.taken:
                ctx.bad(path + ("ip",), str(e.ip), "address already taken by another EIP")
            public.taken.add(str(e.ip))
        if e.instance is not None and e.natGateway is not None:
            ctx.bad(path, e.name, "expected at most one of instance and natGateway")
        if e.instance is not None:
            if e.instance not in cluster.instances:
                ctx.bad(path + ("instance",), e.instance,
                        f"no such ECS instance; expected one of {sorted(cluster.instances)}")
            elif e.instance in bound_instances:
                ctx.bad(path + ("instance",), e.instance, f"already has EIP {eips[bound_instances[e.instance]].name}; "
                        "expected one EIP per instance")
            else:
                bound_instances[e.instance] = i
        if e.natGateway is not None and e.natGateway not in natgws:
            ctx.bad(path + ("natGateway",), e.natGateway, f"no such NAT gateway; expected one of {sorted(natgws)}")


def _eips(ctx: Context, natgws: dict, public: Public, ips: dict[str, str], vpc_of_ecs: dict[str, str]) -> list[EipPlan]:
    eips = []
    for i, e in enumerate(ctx.sc.cloud.eips):
        ip = str(e.ip) if e.ip is not None else public.take(("cloud", "eips", i), e.name)
        if ip is None:
            continue
        if e.instance is not None:
            eips.append(EipPlan(name=e.name, ip=ip, vpc=vpc_of_ecs[e.instance], bound="instance",
                                target=e.instance, private_ip=ips[e.instance]))
        elif e.natGateway is not None:
            eips.append(EipPlan(name=e.name, ip=ip, vpc=natgws[e.natGateway].vpc, bound="natgw", target=e.natGateway))
        else:
            eips.append(EipPlan(name=e.name, ip=ip))
    return eips


def _nat_gateways(ctx: Context, cloud: Cloud, cluster: Cluster, eips: list[EipPlan], ips: dict[str, str],
                  vpc_of_ecs: dict[str, str], hosts: list[HostPlan]) -> list[NatGatewayPlan]:
    out = []
    for i, g in enumerate(ctx.sc.cloud.natGateways):
        path = ("cloud", "natGateways", i)
        mine = {e.name: e.ip for e in eips if e.bound == "natgw" and e.target == g.name}
        if not mine:
            ctx.bad(path, g.name, "has no EIP; expected an entry in cloud.eips with natGateway: " + g.name)
            continue
        entries, seen = [], {}
        vpc_cidr = next(v.cidr for v in ctx.sc.cloud.vpcs if v.name == g.vpc)
        for j, entry in enumerate(g.snat):
            snat = _snat(ctx, cloud, g, entry, path + ("snat", j), vpc_cidr, mine, seen, j, ips, vpc_of_ecs)
            if snat is not None:
                entries.append(snat)
        entries.sort(key=lambda e: -ipaddress.IPv4Network(e.source).prefixlen)
        out.append(NatGatewayPlan(name=g.name, vpc=g.vpc, public_ips=tuple(mine.values()), snat=tuple(entries),
                                  dnat=plan_dnat(ctx, cloud, cluster, g, path, mine, hosts, eips)))
    return out


def _snat(ctx: Context, cloud: Cloud, g, entry, at: tuple, vpc_cidr, mine: dict[str, str], seen: dict, j: int,
          ips: dict[str, str], vpc_of_ecs: dict[str, str]) -> SnatPlan | None:
    given = [k for k in ("vswitch", "instance", "cidr") if getattr(entry, k) is not None]
    if len(given) != 1:
        ctx.bad(at, entry.model_dump(exclude_none=True), "expected exactly one of vswitch, instance, cidr")
        return None
    if entry.vswitch is not None:
        v = cloud.vswitch(entry.vswitch) if entry.vswitch in cloud.index else None
        if v is None or v.vpc != g.vpc:
            ctx.bad(at + ("vswitch",), entry.vswitch, f"expected a vSwitch of VPC {g.vpc}")
            return None
        source, what = v.cidr, f"vSwitch {v.name}"
    elif entry.instance is not None:
        if vpc_of_ecs.get(entry.instance) != g.vpc:
            ctx.bad(at + ("instance",), entry.instance, f"expected an ECS instance of VPC {g.vpc}")
            return None
        source, what = f"{ips[entry.instance]}/32", f"instance {entry.instance}"
    else:
        if not entry.cidr.subnet_of(vpc_cidr):
            ctx.bad(at + ("cidr",), str(entry.cidr), f"expected a subnet of the VPC CIDR {vpc_cidr}")
            return None
        source, what = str(entry.cidr), f"CIDR {entry.cidr}"
    if source in seen:
        ctx.bad(at, what, f"the same source as snat entry {seen[source]}; expected one entry per source")
        return None
    seen[source] = j
    if entry.eip is not None and entry.eip not in mine:
        ctx.bad(at + ("eip",), entry.eip, f"expected an EIP bound to NAT gateway {g.name} ({', '.join(mine)})")
        return None
    return SnatPlan(source=source, what=what, public_ip=mine[entry.eip] if entry.eip else next(iter(mine.values())))
