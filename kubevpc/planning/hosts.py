"""Stages "instances", "nodes" and "pods": the namespaces of ECS instances, the node bridges with
their uplinks and tunnels, and each pod's address and port on its node (a pod of the running
scenario keeps its own; a new one takes the lowest free, never one a running pod holds). A node of
the running scenario keeps its uplinks, and may gain one (an ENI attached) on a new pod vSwitch."""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field

from .cloud import Cloud
from .cluster import Cluster
from .context import Context, VSwitchPorts
from .eni import Eni, EniAddress
from .eniconfig import NodeEni
from .ipv6 import PodIPv6
from .model import (OFPORT_NODE_HOST, OFPORT_NODE_POD0, OFPORT_NODE_TUNNEL0, OFPORT_NODE_UPLINK0,
                    OFPORT_NODE_UPLINK_PATCH0, OFPORT_VSWITCH_UPLINK_PATCH0, Attachment, HostPlan, NodePlan,
                    OvsPort, ServerPort, Tunnel, Uplink, mac_for)
from .workloads import PodSpec, relabel


@dataclass
class Wiring:
    """What the host stages add up: namespaces, who sits behind each vSwitch port, vSwitch ports."""

    hosts: list[HostPlan] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    ports: VSwitchPorts = field(default_factory=VSwitchPorts)


def plan_instances(ctx: Context, cloud: Cloud, cluster: Cluster, ips: dict[str, str], wiring: Wiring) -> None:
    cl = cluster.spec
    for i, ecs in enumerate(ctx.sc.cloud.instances):
        vsw = cloud.vswitch(ecs.vswitch)
        ip = ips[ecs.name]
        ip6 = cloud.ipv6s.get(ecs.name, "")
        is_node = ecs.name in cluster.nodes
        veth = ctx.names.ecs_veth(i)
        key = f"ecs/{ecs.name}"
        if is_node:
            bridge, ofport = ctx.names.node(cluster.index(ecs.name)), OFPORT_NODE_HOST
        else:
            bridge, ofport = vsw.bridge, wiring.ports.take(vsw.name, veth)
            wiring.ports.add(vsw.name, OvsPort(name=veth, ofport=ofport, kind="veth", peer=key))
            wiring.attachments.append(Attachment(vswitch=vsw.name, ofport=ofport, port=veth, mac=mac_for(ip), ip=ip,
                                                 owner=key, security_groups=tuple(ecs.securityGroups), ipv6=ip6))
        wiring.hosts.append(HostPlan(
            key=key, kind="ecs", name=ecs.name, netns=ctx.names.ecs_netns(ecs.name), veth=veth,
            bridge=bridge, ofport=ofport, ip=ip, prefixlen=ipaddress.IPv4Network(vsw.cidr).prefixlen,
            mac=mac_for(ip), gateway=vsw.gateway, gateway_mac=vsw.gateway_mac,
            mtu=cl.underlayMTU if (cl and is_node) else 1500,
            servers=tuple(ServerPort(port=p.port, protocol=p.protocol) for p in ecs.ports),
            node=ecs.name if is_node else "", vswitch=vsw.name,
            security_groups=tuple(ecs.securityGroups), ipv6=ip6, gateway6=vsw.gateway6 if ip6 else ""))


def plan_nodes(ctx: Context, cloud: Cloud, cluster: Cluster, ips: dict[str, str], pods: list[PodSpec], eni: Eni,
               configs: dict[str, NodeEni], wiring: Wiring) -> list[NodePlan]:
    """Node bridges: one uplink to the node's vSwitch, and in eni mode one (an ENI) to its first pod
    vSwitch and to each other vSwitch its pods take addresses from; in vxlan mode one tunnel entry
    per peer node."""
    nodes = []
    for k, n in enumerate(cluster.nodes):
        ecs = cluster.instances[n]
        vsw = cloud.vswitch(ecs.vswitch)
        ip = ips[n]
        before = ctx.previous_nodes.get(n)      # a running node keeps every uplink (ENI) it has, in order
        uplink_vsws = [u.vswitch for u in before.uplinks] if before else [vsw.name]
        if cluster.mode == "eni":
            for v in _pod_vswitches(n, pods, eni, configs[n]):
                if v not in uplink_vsws:
                    uplink_vsws.append(v)
        uplinks = [_uplink(ctx, wiring, k, u, vname) for u, vname in enumerate(uplink_vsws)]
        # what sits behind the node's (first) uplink on its vSwitch
        wiring.attachments.append(Attachment(vswitch=vsw.name, ofport=uplinks[0].vswitch_ofport,
                                             port=uplinks[0].peer, mac=mac_for(ip), ip=ip, owner=f"ecs/{n}",
                                             security_groups=tuple(ecs.securityGroups), ipv6=cloud.ipv6s.get(n, "")))
        pod_cidr = cluster.pod_cidrs.get(n)
        gw = str(pod_cidr[1]) if pod_cidr else ""
        tunnels = []
        if cluster.mode == "vxlan":
            # one VXLAN device per node, as flannel.1: the peer is chosen by the inner
            # destination MAC (the peer's gateway MAC), which the device's FDB maps to the peer
            tunnels = [Tunnel(peer=peer, ifname=ctx.names.tunnel(k), ofport=OFPORT_NODE_TUNNEL0, local_ip=ip,
                              remote_ip=ips[peer], peer_pod_cidr=str(cluster.pod_cidrs[peer]))
                       for peer in cluster.nodes if peer != n]
        nodes.append(NodePlan(name=n, ecs=f"ecs/{n}", ip=ip, mac=mac_for(ip), vswitch=vsw.name,
                              bridge=ctx.names.node(k), pod_cidr=str(pod_cidr) if pod_cidr else "",
                              gateway=gw, gateway_mac=mac_for(gw) if gw else "",
                              uplinks=tuple(uplinks), tunnels=tuple(tunnels)))
    return nodes


def _pod_vswitches(node: str, pods: list[PodSpec], eni: Eni, conf: NodeEni) -> list[str]:
    """The vSwitches a node's eni pods need an ENI on: its first pod vSwitch, those its pods hold
    addresses of (in pod order), and those of the fixed addresses kept for pods that ran there."""
    return [conf.vswitches[0]] + [eni.addresses[p.key].vswitch for p in pods
                                  if p.node == node and p.key in eni.addresses] + \
        [f.vswitch for f in eni.fixed if f.node == node and f.gone_since]


def _uplink(ctx: Context, wiring: Wiring, k: int, u: int, vname: str) -> Uplink:
    port, peer, patch, patch_peer = ctx.names.uplink(k, u)
    vofport = wiring.ports.take(vname, peer)
    up = Uplink(vswitch=vname, port=port, peer=peer, ofport=OFPORT_NODE_UPLINK0 + u, vswitch_ofport=vofport,
                patch=patch, patch_peer=patch_peer, patch_ofport=OFPORT_NODE_UPLINK_PATCH0 + u,
                vswitch_patch_ofport=OFPORT_VSWITCH_UPLINK_PATCH0 + vofport)
    wiring.ports.add(vname, OvsPort(name=up.peer, ofport=vofport, kind="link", peer=up.port),
                     OvsPort(name=up.patch_peer, ofport=up.vswitch_patch_ofport, kind="patch", peer=up.patch))
    return up


class _Held:
    """What the running scenario's pods hold on each node bridge: addresses, ports, veth names."""

    def __init__(self, ctx: Context):
        self.ips: dict[str, set[str]] = defaultdict(set)
        self.ofports: dict[str, set[int]] = defaultdict(set)
        self.veths: set[str] = set()
        self.seq = 0
        for h in ctx.previous.values():
            if h.kind == "pod" and not h.host_network:
                self.ips[h.bridge].add(h.ip)
                self.ofports[h.bridge].add(h.ofport)
                self.veths.add(h.veth)

    def ofport(self, bridge: str) -> int:
        n, held = OFPORT_NODE_POD0, self.ofports[bridge]
        while n in held:
            n += 1
        held.add(n)
        return n

    def veth(self, ctx: Context) -> str:
        while ctx.names.pod_veth(self.seq) in self.veths:
            self.seq += 1
        name = ctx.names.pod_veth(self.seq)
        self.seq += 1
        return name


def plan_pods(ctx: Context, cloud: Cloud, cluster: Cluster, nodes: list[NodePlan], pods: list[PodSpec], eni: Eni,
              wiring: Wiring) -> None:
    held = _Held(ctx)
    by_name = {n.name: n for n in nodes}
    v6 = PodIPv6(ctx, bool(cluster.spec and cluster.spec.dualStack), cloud.ipv6s)
    for spec in pods:
        pod = spec
        node = by_name[pod.node]
        key = pod.key
        if pod.host_network:
            wiring.hosts.append(_host_network_pod(ctx, spec, node, wiring))
            continue
        old = ctx.previous.get(key)
        if old is not None and old.bridge == node.bridge and not old.host_network:
            ofport, veth = old.ofport, old.veth
        else:
            old = None
            ofport, veth = held.ofport(node.bridge), held.veth(ctx)
        if cluster.mode == "eni":
            address = _eni_address(cloud, node, spec, eni.addresses[key], wiring, v6)
        else:
            address = _pod_cidr_address(ctx, cluster, node, spec, old, held)
        if address is None:
            continue
        ip, prefixlen, gateway, gateway_mac, vname, sgs, ip6 = address
        eni_type = eni.addresses[key].eni_type if cluster.mode == "eni" else "Default"
        wiring.hosts.append(HostPlan(
            key=key, kind="pod", name=pod.name, namespace=pod.namespace,
            netns=ctx.names.pod_netns(pod.namespace, pod.name), veth=veth,
            bridge=node.bridge, ofport=ofport, ip=ip, prefixlen=prefixlen, mac=mac_for(ip),
            gateway=gateway, gateway_mac=gateway_mac, mtu=cluster.pod_mtu, servers=pod.servers,
            labels=relabel(pod.labels, ctx.labels.get(key, {})), node=node.name, vswitch=vname,
            security_groups=sgs, ready=ctx.ready.get(key, pod.ready), app=pod.app, phase=pod.phase,
            terminating=pod.terminating is not None, grace_period=pod.grace_period, hostname=pod.hostname,
            subdomain=pod.subdomain, ingress_bandwidth=pod.bandwidth[0], egress_bandwidth=pod.bandwidth[1],
            ipv6=ip6, gateway6=cloud.vswitch(vname).gateway6 if ip6 else "", eni_type=eni_type))
    ctx.problems.checkpoint()


def _host_network_pod(ctx: Context, pod: PodSpec, node: NodePlan, wiring: Wiring) -> HostPlan:
    """A pod with hostNetwork: its node's namespace, address, MAC and routes, and nothing of its
    own to wire: no veth (""), no bridge port (0), no pod CIDR or vSwitch address, no attachment;
    `bridge` names the bridge of its node, where its packets are the node's."""
    home = next(h for h in wiring.hosts if h.key == node.ecs)
    return HostPlan(
        key=pod.key, kind="pod", name=pod.name, namespace=pod.namespace, netns=home.netns, veth="",
        bridge=node.bridge, ofport=0, ip=home.ip, prefixlen=home.prefixlen, mac=home.mac, gateway=home.gateway,
        gateway_mac=home.gateway_mac, mtu=home.mtu, servers=pod.servers,
        labels=relabel(pod.labels, ctx.labels.get(pod.key, {})), node=node.name, ready=ctx.ready.get(pod.key, pod.ready),
        app=pod.app, phase=pod.phase, terminating=pod.terminating is not None, grace_period=pod.grace_period,
        host_network=True, hostname=pod.hostname, subdomain=pod.subdomain)


def _eni_address(cloud: Cloud, node: NodePlan, spec: PodSpec, address: EniAddress, wiring: Wiring, v6: PodIPv6):
    """An eni pod holds an address of a vSwitch (kubevpc/planning/eni.py), and in a dual-stack
    cluster its IPv6 twin, behind its node's uplink to that vSwitch, where the vSwitch applies its
    security groups."""
    vsw = cloud.vswitch(address.vswitch)
    ip6 = v6.address(vsw, address.ip, spec)
    if ip6 is None:
        return None
    uplink = next(u for u in node.uplinks if u.vswitch == vsw.name)
    wiring.attachments.append(Attachment(vswitch=vsw.name, ofport=uplink.vswitch_ofport, port=uplink.peer,
                                         mac=mac_for(address.ip), ip=address.ip, owner=spec.key,
                                         security_groups=address.security_groups, ipv6=ip6))
    return (address.ip, ipaddress.IPv4Network(vsw.cidr).prefixlen, vsw.gateway, vsw.gateway_mac, vsw.name,
            address.security_groups, ip6)


def _pod_cidr_address(ctx: Context, cluster: Cluster, node: NodePlan, spec: PodSpec, old: HostPlan | None,
                      held: _Held):
    """A vxlan or vpc-route pod holds an address of its node's pod CIDR (the first is the gateway)."""
    net = cluster.pod_cidrs[node.name]
    if old is not None:
        ip = old.ip
    else:
        idx = 2
        while idx < net.num_addresses - 1 and str(net[idx]) in held.ips[node.bridge]:
            idx += 1
        if idx >= net.num_addresses - 1:
            ctx.bad(spec.path, f"{spec.namespace}/{spec.name}",
                    f"node {node.name}'s pod CIDR {net} is exhausted ({net.num_addresses - 3} pods); "
                    "expected a smaller cluster.nodeCIDRMaskSize or fewer pods on the node", spec.source)
            return None
        ip = str(net[idx])
        held.ips[node.bridge].add(ip)
    return ip, net.prefixlen, node.gateway, node.gateway_mac, "", (), ""
