"""Stage "SLBs": an SLB instance per LoadBalancer Service, configured by its ACK annotations
(Alibaba's defaults). Its VIP is an address of a vSwitch, held by a namespace of its own where the
health checker runs."""
from __future__ import annotations

import ipaddress

from ..render.slb import SlbAnnotationError, slb_config
from .cloud import Cloud
from .cluster import Cluster
from .context import AddressPool, Context
from .hosts import Wiring
from .model import (ADDRESS_TYPE, VSWITCH_ID, Attachment, HostPlan, NodePlan, OvsPort, ServicePlan, SlbBackend,
                    SlbListener, SlbPlan, mac_for)


def service_manifest(ctx: Context, key: str):
    """The manifest of Service `<namespace>/<name>` (KeyError naming it when there is none)."""
    ns, name = key.split("/", 1)
    found = next((m for m in ctx.loaded.manifests if getattr(m.obj, "kind", "") == "Service"
                  and m.obj.metadata.namespace == ns and m.obj.metadata.name == name), None)
    if found is None:
        raise KeyError(f"no manifest of Service {key}")
    return found


def plan_slbs(ctx: Context, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan], services, pool: AddressPool,
              wiring: Wiring) -> tuple[list[SlbPlan], set[str]]:
    """The SLBs, and the Services whose SLB is internet-facing (their EIPs come with the internet)."""
    slbs: list[SlbPlan] = []
    internet: set[str] = set()
    held = _HeldSlbs(ctx)
    for svc in services:
        if svc.type != "LoadBalancer":
            continue
        slb = _slb(ctx, svc, service_manifest(ctx, svc.key), cloud, cluster, nodes, pool, internet)
        if slb is None:
            continue
        vsw = cloud.vswitch(slb.vswitch)
        key = slb.host
        ofport, veth = held.port(ctx, key, vsw.name, wiring)
        wiring.hosts.append(HostPlan(
            key=key, kind="slb", name=svc.name, namespace=svc.namespace,
            netns=ctx.names.slb_netns(svc.namespace, svc.name), veth=veth, bridge=vsw.bridge, ofport=ofport,
            ip=slb.vip, prefixlen=ipaddress.IPv4Network(vsw.cidr).prefixlen, mac=mac_for(slb.vip),
            gateway=vsw.gateway, gateway_mac=vsw.gateway_mac, mtu=1500, vswitch=vsw.name, app="slb"))
        wiring.ports.add(vsw.name, OvsPort(name=veth, ofport=ofport, kind="veth", peer=key))
        wiring.attachments.append(Attachment(vswitch=vsw.name, ofport=ofport, port=veth, mac=mac_for(slb.vip),
                                             ip=slb.vip, owner=key, security_groups=()))
        slbs.append(slb)
    ctx.problems.checkpoint()
    return slbs, internet


class _HeldSlbs:
    """What the running scenario's SLBs hold: an SLB that stays keeps its vSwitch port and veth; a
    new one takes the next port and veth name that no running SLB holds (planned from scratch,
    they are numbered in order)."""

    def __init__(self, ctx: Context):
        self.old = {h.key: h for h in ctx.previous.values() if h.kind == "slb"}
        self.ofports = {(h.vswitch, h.ofport) for h in self.old.values()}
        self.veths = {h.veth for h in self.old.values()}
        self.seq = 0

    def port(self, ctx: Context, key: str, vswitch: str, wiring: Wiring) -> tuple[int, str]:
        old = self.old.get(key)
        if old is not None and old.vswitch == vswitch:
            return old.ofport, old.veth
        while ctx.names.slb_veth(self.seq) in self.veths:
            self.seq += 1
        self.seq += 1
        veth = ctx.names.slb_veth(self.seq - 1)
        ofport = wiring.ports.take(vswitch, veth)
        while (vswitch, ofport) in self.ofports:
            ofport = wiring.ports.take(vswitch, veth)
        return ofport, veth


def _slb(ctx: Context, svc: ServicePlan, m, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan],
         pool: AddressPool, internet: set[str]) -> SlbPlan | None:
    at = m.prefix + ("metadata", "annotations")
    try:
        cfg = slb_config(svc.annotations)
    except SlbAnnotationError as exc:
        for p in exc.problems:
            ctx.bad(at + (p.key,), p.value, p.expected, m.source)
        return None
    if cfg.address_type == "internet" and ctx.sc.cloud.internet is None:
        ctx.bad(at + (ADDRESS_TYPE,), svc.annotations.get(ADDRESS_TYPE, "internet (the default)"),
                f'"intranet", or an emulated internet: an internet-facing SLB needs a cloud.internet section '
                f"(or set {ADDRESS_TYPE}: intranet)", m.source)
        return None
    vname = svc.annotations.get(VSWITCH_ID, nodes[0].vswitch)
    vpc = cloud.vswitch(nodes[0].vswitch).vpc
    if vname not in cloud.index or cloud.vswitch(vname).vpc != vpc:
        ctx.bad(at + (VSWITCH_ID,), vname, "expected a vSwitch of the cluster's VPC "
                f"({', '.join(sorted(v.name for v in cloud.vswitches if v.vpc == vpc))})", m.source)
        return None
    vip = pool.allocate(vname, m.prefix, f"the SLB of Service {svc.key}", m.source, f"slb/{svc.namespace}/{svc.name}")
    if vip is None:
        return None
    if cfg.address_type == "internet":      # its EIP comes with the internet zone's addresses
        internet.add(svc.key)
    check = cfg.health_check()
    local = svc.external_traffic_policy == "Local"
    if local:       # kube-proxy's health check server answers 200 or 503 over HTTP; a TCP check would pass
        check = check.model_copy(update={"type": "http", "uri": "/"})
    listeners = []
    for i, p in enumerate(svc.ports):
        if p.protocol not in ("TCP", "UDP"):
            continue
        listeners.append(SlbListener(name=f"{svc.key}:{p.port}/{p.protocol}", port=p.port, protocol=p.protocol,
                                     backends=tuple(_backends(cluster, svc, i, cfg, nodes, local))))
    return SlbPlan(service=svc.key, host=f"slb/{svc.namespace}/{svc.name}", vip=vip, vswitch=vname,
                   scheduler=cfg.scheduler, check=check.model_dump(mode="json"), listeners=tuple(listeners))


def _backends(cluster: Cluster, svc: ServicePlan, i: int, cfg, nodes: list[NodePlan], local: bool) -> list[SlbBackend]:
    """Pods (eni mode) or nodes. Only ready endpoints count, never those serving while their pod
    terminates: the cloud controller manager gives the SLB the ready endpoints, and kube-proxy's
    fallback to terminating ones is its own, on the nodes. A Service labelled to switch kube-proxy
    off still gets its SLB (the cloud controller does not care): in eni mode its backends are the
    pods and it works; otherwise they are NodePorts nothing programs, and every health check fails."""
    p, ready = svc.ports[i], svc.ready_endpoints(i)
    if cluster.mode == "eni":      # Terway: the SLB sends to the pods themselves
        return [SlbBackend(id=e.pod, ip=e.ip, port=e.ports[i], check_port=cfg.connect_port or e.ports[i], weight=1)
                for e in ready]
    backends = []
    for n in nodes:
        local_eps = sum(1 for e in ready if e.node == n.name)
        weight = (local_eps if local else 1) if cfg.scheduler in ("wrr", "wlc") else 1
        backends.append(SlbBackend(id=n.name, ip=n.ip, port=p.node_port, weight=weight,
                                   check_port=svc.health_check_node_port if local else cfg.connect_port or p.node_port))
    return backends
