"""Stage "services": ClusterIPs, NodePorts and endpoints, with the API server's allocation rules
and errors, and the cluster DNS Service kubevpc adds."""
from __future__ import annotations

import ipaddress

from .. import k8s
from ..scenario.load import Source
from .context import Context
from .services6 import cluster_ips6_of, service_families
from .model import (PROXY_OFF_LABELS, SNAT_PORTS, TERMINAL_PHASES, DnsPlan, EndpointPlan, HostPlan, ServicePlan,
                    ServicePortPlan)

Item = tuple[k8s.Service, tuple, Source | None]     # a Service, its path and its source


def plan_services(ctx: Context, cl, hosts: list[HostPlan]) -> tuple[tuple[ServicePlan, ...], DnsPlan | None]:
    net = cl.serviceCIDR
    pool = list(net)[1:-1]
    first, last = (int(x) for x in cl.nodePortRange.split("-"))
    if not (1 <= first <= last <= 65535) or first <= SNAT_PORTS[1] and last >= SNAT_PORTS[0]:
        ctx.bad(("cluster", "nodePortRange"), cl.nodePortRange,
                f"expected a range within 1-65535 that avoids the SNAT ports {SNAT_PORTS[0]}-{SNAT_PORTS[1]}")
        return (), None
    items: list[Item] = [(m.obj, m.prefix, m.source) for m in ctx.loaded.manifests if isinstance(m.obj, k8s.Service)]
    if cl.dns.enabled and cl.dns.ip is None and net.num_addresses < 16:
        ctx.bad(("cluster", "serviceCIDR"), str(net), "expected a /28 or larger: the cluster DNS takes its "
                "10th address (or set cluster.dns.ip, or cluster.dns.enabled: false)")
        return (), None
    dns_ip = _add_dns_service(ctx, cl, pool, items) if cl.dns.enabled else ""
    families = [service_families(ctx, cl, svc, prefix, src) for svc, prefix, src in items]
    cluster_ips = _cluster_ips(ctx, net, pool, items, dns_ip, [f for f, _ in families])
    cluster_ips6 = cluster_ips6_of(ctx, cl, items, families)
    node_ports, health_ports = NodePorts(ctx, first, last, items).allocate()
    external_ips = _external_ips(ctx, cl, items)
    pods = [h for h in hosts if h.kind == "pod"]
    plans = []
    for k, (svc, prefix, src) in enumerate(items):
        spec = svc.spec
        plans.append(ServicePlan(
            name=svc.metadata.name, namespace=svc.metadata.namespace, type=spec.type,
            cluster_ip=cluster_ips.get(k, ""), headless=spec.headless, external_name=spec.externalName or "",
            ports=tuple(ServicePortPlan(name=p.name or "", protocol=p.protocol, port=p.port, target_port=p.target,
                                        node_port=node_ports.get((k, i), 0)) for i, p in enumerate(spec.ports)),
            selector=dict(spec.selector or {}), endpoints=tuple(_endpoints(svc, pods)),
            session_affinity=spec.sessionAffinity == "ClientIP",
            affinity_timeout=spec.sessionAffinityConfig.clientIP.timeoutSeconds,
            external_traffic_policy=spec.externalTrafficPolicy or "Cluster",
            internal_traffic_policy=spec.internalTrafficPolicy,
            health_check_node_port=health_ports.get(k, 0), annotations=dict(svc.metadata.annotations),
            labels=dict(svc.metadata.labels), proxied=not set(PROXY_OFF_LABELS) & svc.metadata.labels.keys(),
            external_ips=external_ips.get(k, ()), ip_families=families[k][0], ip_family_policy=families[k][1],
            cluster_ips=tuple(ip for ip in ((cluster_ips.get(k, "") if f == "IPv4" else cluster_ips6.get(k, ""))
                                            for f in families[k][0]) if ip)))
        if plans[-1].cluster_ips:
            plans[-1] = plans[-1].model_copy(update={"cluster_ip": plans[-1].cluster_ips[0]})
    dns = None
    if cl.dns.enabled:
        dns = DnsPlan(domain=cl.dns.clusterDomain, ip=dns_ip, pods=tuple(h.key for h in pods if h.app == "dns"))
    return tuple(plans), dns


def _add_dns_service(ctx: Context, cl, pool: list, items: list[Item]) -> str:
    """kube-system/kube-dns, appended last; its ClusterIP (cluster.dns.ip, else the 10th address)."""
    dns_ip = str(cl.dns.ip) if cl.dns.ip is not None else str(cl.serviceCIDR[10])
    if ipaddress.IPv4Address(dns_ip) not in pool:
        ctx.bad(("cluster", "dns", "ip"), dns_ip, f"expected an address inside serviceCIDR {cl.serviceCIDR}")
    for svc, prefix, src in items:
        if (svc.metadata.namespace, svc.metadata.name) == ("kube-system", "kube-dns"):
            ctx.bad(prefix + ("metadata", "name"), "kube-dns", "kube-system/kube-dns is the cluster DNS "
                    "Service kubevpc makes; expected another name, or cluster.dns.enabled: false", src)
    items.append((k8s.Service.model_validate({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIP": dns_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}), ("cluster", "dns"), None))
    return dns_ip


def _cluster_ips(ctx: Context, net, pool: list, items: list[Item], dns_ip: str,
                 families: list[tuple[str, ...]]) -> dict[int, str]:
    """IPv4 ClusterIPs by item (of the Services with IPv4 among their families): the declared ones
    first, then the rest in order from the 11th address."""
    cluster_ips: dict[int, str] = {}
    taken: dict[str, int] = {}
    if dns_ip:                  # the cluster DNS Service (the last item) was checked with cluster.dns.ip
        taken[dns_ip] = len(items) - 1
        cluster_ips[len(items) - 1] = dns_ip
    for k, (svc, prefix, src) in enumerate(items):
        want = next((ip for ip in svc.spec.clusterIPs or [svc.spec.clusterIP or ""] if ":" not in ip), "")
        if svc.spec.type == "ExternalName" or svc.spec.headless or not want or k in cluster_ips or \
                "IPv4" not in families[k]:
            continue
        try:
            addr = ipaddress.IPv4Address(want)
        except ValueError:
            ctx.bad(prefix + ("spec", "clusterIP"), want, 'expected an IPv4 address or "None" (headless)', src)
            continue
        if addr not in pool:
            ctx.bad(prefix + ("spec", "clusterIP"), want, f"expected an address inside serviceCIDR {net} "
                    "(not its first or last)", src)
        elif want in taken:
            ctx.bad(prefix + ("spec", "clusterIP"), want, "already allocated to Service "
                    f"{items[taken[want]][0].metadata.namespace}/{items[taken[want]][0].metadata.name}", src)
        else:
            taken[want], cluster_ips[k] = k, want
    cursor = 10
    for k, (svc, prefix, src) in enumerate(items):
        if svc.spec.type == "ExternalName" or svc.spec.headless or k in cluster_ips or \
                "IPv4" not in families[k]:
            continue
        while cursor < len(pool) and (str(pool[cursor]) in taken or str(pool[cursor]) == dns_ip):
            cursor += 1
        if cursor >= len(pool):
            ctx.bad(prefix + ("metadata", "name"), svc.metadata.name,
                    f"serviceCIDR {net} has no free ClusterIP left; expected a larger cluster.serviceCIDR", src)
            continue
        cluster_ips[k] = str(pool[cursor])
        taken[cluster_ips[k]] = k
    return cluster_ips


def _reserved(ctx: Context, cl) -> list[tuple[ipaddress.IPv4Network, str]]:
    """Ranges whose addresses the scenario holds or hands out: no external IP may be in one."""
    out = [(ipaddress.IPv4Network(v.cidr), f"vSwitch {v.name} ({v.cidr}), whose addresses go to instances, "
            "nodes, eni pods and SLB VIPs") for vpc in ctx.sc.cloud.vpcs for v in vpc.vswitches]
    out.append((cl.serviceCIDR, f"serviceCIDR {cl.serviceCIDR}, the ClusterIPs'"))
    if cl.mode != "eni":
        out.append((cl.podCIDR, f"podCIDR {cl.podCIDR}, the pods'"))
        out += [(c, f"additionalPodCIDRs block {c}, the pods'") for c in cl.additionalPodCIDRs]
    inet = ctx.sc.cloud.internet
    if inet is not None:
        out += [(inet.cidr, f"the internet zone {inet.cidr}"), (inet.publicCIDR, f"publicCIDR {inet.publicCIDR}, "
                                                                                   "the EIPs'")]
    return out


def _external_ips(ctx: Context, cl, items: list[Item]) -> dict[int, tuple[str, ...]]:
    """spec.externalIPs by item, in order without repeats; none for headless and ExternalName
    Services, which the API server warns it ignores them for. The API server takes any other
    address, and kube-proxy then takes the connections to it from the cluster (CVE-2020-8554):
    kubevpc refuses an address that something in the scenario holds or may be handed, and an
    address, port and protocol that two Services claim, which kube-proxy would balance for either."""
    reserved = _reserved(ctx, cl)
    claimed: dict[tuple[str, int, str], str] = {}
    out: dict[int, tuple[str, ...]] = {}
    for k, (svc, prefix, src) in enumerate(items):
        if svc.spec.type == "ExternalName" or svc.spec.headless:
            continue
        kept: list[str] = []
        for i, ip in enumerate(svc.spec.externalIPs):
            at, addr = prefix + ("spec", "externalIPs", i), ipaddress.IPv4Address(ip)
            inside = next((what for net, what in reserved if addr in net), None)
            if inside is not None:
                ctx.bad(at, ip, f"is inside {inside}; kubevpc refuses an external IP that the scenario holds or "
                        "may give out (kube-proxy would take its connections); expected an address outside "
                        "every vSwitch, serviceCIDR, podCIDR and the internet zone, routed to a node by a custom "
                        "route", src)
                continue
            for p in svc.spec.ports:
                other = claimed.setdefault((ip, p.port, p.protocol), svc.metadata.namespace + "/" + svc.metadata.name)
                if other != f"{svc.metadata.namespace}/{svc.metadata.name}":
                    ctx.bad(at, ip, f"{ip}:{p.port}/{p.protocol} is already an external IP port of Service {other}; "
                            "expected another address", src)
            if ip not in kept:
                kept.append(ip)
        out[k] = tuple(kept)
    return out


class NodePorts:
    """NodePorts: declared ones first (range, taken), then allocated in order from the start of the
    range; ports of one Service with the same number and different protocols share one NodePort,
    as upstream."""

    def __init__(self, ctx: Context, first: int, last: int, items: list[Item]):
        self.ctx, self.first, self.last, self.items = ctx, first, last, items
        # node port -> (service index, service port number (0: health check), protocols using it)
        self.used: dict[int, tuple[int, int, set[str]]] = {}
        self.next_port = first

    def claim(self, k: int, at: tuple, value: int, port: int, proto: str, src) -> None:
        """Only TCP and UDP of one Service port may share a NodePort, as upstream allows. The
        problems say what the API server says (pkg/registry/core/service/portallocator), which users
        and tools grep for."""
        used = self.used
        if not self.first <= value <= self.last:
            self.ctx.bad(at, value, "provided port is not in the valid range. The range of valid ports is "
                         f"{self.first}-{self.last} (cluster.nodePortRange)", src)
        elif value in used and not (used[value][:2] == (k, port) and port and proto not in used[value][2]):
            other = self.items[used[value][0]][0].metadata
            self.ctx.bad(at, value, f"provided port is already allocated (to Service {other.namespace}/{other.name})", src)
        else:
            used.setdefault(value, (k, port, set()))[2].add(proto)

    def take(self, k: int, prefix: tuple, src) -> int:
        while self.next_port <= self.last and self.next_port in self.used:
            self.next_port += 1
        if self.next_port > self.last:
            self.ctx.bad(prefix + ("spec", "type"), self.items[k][0].spec.type,
                         f"no free NodePort left in {self.first}-{self.last}; expected a larger "
                         "cluster.nodePortRange", src)
            return 0
        self.used[self.next_port] = (k, -1, set())
        return self.next_port

    def allocate(self) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
        """NodePorts by (item, port index), and health check node ports by item."""
        node_ports: dict[tuple[int, int], int] = {}
        health_ports: dict[int, int] = {}
        for k, (svc, prefix, src) in enumerate(self.items):
            for i, p in enumerate(svc.spec.ports):
                if p.nodePort is not None:
                    self.claim(k, prefix + ("spec", "ports", i, "nodePort"), p.nodePort, p.port, p.protocol, src)
                    node_ports[(k, i)] = p.nodePort
            if svc.spec.healthCheckNodePort is not None:
                self.claim(k, prefix + ("spec", "healthCheckNodePort"), svc.spec.healthCheckNodePort, 0, "TCP", src)
                health_ports[k] = svc.spec.healthCheckNodePort
        for k, (svc, prefix, src) in enumerate(self.items):
            if svc.spec.type not in ("NodePort", "LoadBalancer"):
                continue
            for i, p in enumerate(svc.spec.ports):
                if (k, i) in node_ports:
                    continue
                twin = next((node_ports[(k, j)] for j, q in enumerate(svc.spec.ports)
                             if (k, j) in node_ports and q.port == p.port and q.protocol != p.protocol), None)
                node_ports[(k, i)] = twin or self.take(k, prefix, src)
            if svc.spec.type == "LoadBalancer" and svc.spec.externalTrafficPolicy == "Local" and k not in health_ports:
                health_ports[k] = self.take(k, prefix, src)
        return node_ports, health_ports


def _endpoints(svc: k8s.Service, pods: list[HostPlan]) -> list[EndpointPlan]:
    """Pods of the Service's namespace that match its selector, target ports resolved per pod, with
    the conditions the EndpointSlice controller gives them (pkg/controller/endpointslice podToEndpoint):
    a pod in a terminal phase is never one; a terminating pod is not ready (unless the Service
    publishes not-ready addresses) but serving while its readiness holds. A pod whose subdomain
    names the Service (a StatefulSet's pod and its serviceName) carries its hostname."""
    spec = svc.spec
    endpoints = []
    if not spec.selector or spec.type == "ExternalName":
        return endpoints
    for pod in pods:
        if pod.namespace != svc.metadata.namespace or any(pod.labels.get(a) != b for a, b in spec.selector.items()):
            continue
        if pod.phase in TERMINAL_PHASES:
            continue
        resolved = []
        for p in spec.ports:
            t = p.target
            if isinstance(t, str):
                t = next((sp.port for sp in pod.servers if sp.name == t and sp.protocol == p.protocol), 0)
            resolved.append(t)
        endpoints.append(EndpointPlan(
            pod=pod.key, name=pod.name, ip=pod.ip, node=pod.node,
            ready=(pod.ready and not pod.terminating) or spec.publishNotReadyAddresses,
            serving=pod.ready, terminating=pod.terminating, ports=tuple(resolved),
            hostname=pod.hostname if pod.hostname and pod.subdomain == svc.metadata.name else "",
            ipv6="" if pod.host_network else pod.ipv6))
    return endpoints
