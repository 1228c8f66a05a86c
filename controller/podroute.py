"""A node bridge's route table (30) and snat_out (35), by pod network mode: in vxlan and vpc-route
the node bridge is its pods' router; in eni the pods are peers of the node on their vSwitches and
the node bridge switches by MAC."""
from __future__ import annotations

from kubevpc.planning import SNAT_PORTS, NodePlan, Plan

from .flows import CT_RPL, ETH_IP, V4, Ct, DecTtl, Family, Flow, Goto, Nat, Output, SetField, ct_state, flow, \
    ipv4_net
from .pipeline import CTM_SERVICE, NODE, REG_OUT, REG_SRC, SRC_HOST, SRC_POD, SRC_TUNNEL, SRC_UPLINK
from .services import snat_zone

_IP = {"eth_type": ETH_IP}
_SERVICE = {"ct_mark": (CTM_SERVICE, CTM_SERVICE)}


def route_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    if plan.cluster.mode == "eni":
        return eni_route_flows(plan, node)
    return pod_cidr_route_flows(plan, node)


def _to_uplink(u) -> list:
    """Out to the vSwitch of uplink u: the uplink table chooses the veth pair or the patch port."""
    return [SetField(REG_OUT, u.ofport), Goto(NODE.table("uplink"))]


def _deliver(p, gw_mac: str, dec: bool) -> list:
    return ([DecTtl()] if dec else []) + [SetField("eth_src", gw_mac), SetField("eth_dst", p.mac), Output(p.ofport)]


# ------------------------------------------------------------------------------ vxlan, vpc-route
def pod_cidr_route_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    """vxlan and vpc-route: the node bridge is the pods' router."""
    vsw = plan.vswitch(node.vswitch)
    node_ips = {n.ip for n in plan.nodes} if plan.cluster.mode == "vxlan" else {node.ip}   # vxlan: nodes go by tunnel
    neighbours = [a for a in plan.attachments if a.vswitch == vsw.name and "/" not in a.ip and a.ip not in node_ips]
    out = _local_routes(plan, node)
    if plan.cluster.mode == "vxlan":
        out += _tunnel_routes(plan, node)
    else:
        out += _vpc_routes(plan, node, neighbours)
    return out + _snat_routes(plan, node, neighbours)


def _local_routes(plan: Plan, node: NodePlan) -> list[Flow]:
    """The node's pods, the node itself, and Service traffic from the vSwitch back to it."""
    t_route = NODE.table("route")
    vsw, host = plan.vswitch(node.vswitch), plan.host(node.ecs)
    out = []
    for p in (h for h in plan.own_pods if h.node == node.name):
        out += [flow(t_route, 300, {**_IP, "ipv4_dst": p.ip, "eth_dst": p.mac, REG_SRC: SRC_POD}, [Output(p.ofport)],
                     "pod", note=f"{p.key}: from a pod on the same node, switched"),
                flow(t_route, 295, {**_IP, "ipv4_dst": p.ip, "in_port": p.ofport},
                     _deliver(p, node.gateway_mac, True)[:-1] + [Output("in_port")], "pod",
                     note=f"{p.key}: to itself through a Service (hairpin, masqueraded)"),
                flow(t_route, 290, {**_IP, "ipv4_dst": p.ip}, _deliver(p, node.gateway_mac, True), "pod",
                     note=f"{p.key}: routed to it")]
    # to the node itself
    to_host = [SetField("eth_src", vsw.gateway_mac), SetField("eth_dst", host.mac)]
    via_router = [SetField("eth_src", node.mac), SetField("eth_dst", vsw.gateway_mac)]
    if any(p.host_network and p.node == node.name for p in plan.pods):
        # the node's own connection DNATed to a host-network pod on it, SNATed to the Service
        # address (controller/services.py self_masquerade_flows), and its reply: back where it came from
        out.append(flow(t_route, 275, {**_IP, "ipv4_dst": node.ip, "in_port": host.ofport},
                        to_host + [Output("in_port")], "host",
                        note="to the node from itself: a Service connection to a host-network pod on it"))
    return out + [
        flow(t_route, 280, {**_IP, "ipv4_dst": node.ip, REG_SRC: SRC_UPLINK}, [Output(host.ofport)], "host",
             note="to the node from its vSwitch"),
        flow(t_route, 270, {**_IP, "ipv4_dst": node.ip}, to_host + [Output(host.ofport)], "host",
             note="to the node from its pods or a tunnel"),
        # Service traffic that entered from the VPC or a tunnel and leaves for the VPC (replies of
        # NodePort connections, masqueraded connections to endpoints elsewhere): through the vRouter
        flow(t_route, 120, {**_IP, **_SERVICE, REG_SRC: SRC_UPLINK}, [DecTtl()] + via_router + [Output("in_port")],
             "service", note="Service traffic from the vSwitch back to it, through the vRouter")]


def _tunnel_routes(plan: Plan, node: NodePlan) -> list[Flow]:
    """vxlan: other nodes' pod CIDRs and the nodes themselves through the tunnels."""
    t_route = NODE.table("route")
    via_router = [SetField("eth_src", node.mac), SetField("eth_dst", plan.vswitch(node.vswitch).gateway_mac)]
    out = [flow(t_route, 120, {**_IP, **_SERVICE, REG_SRC: SRC_TUNNEL},
                [DecTtl()] + via_router + _to_uplink(node.uplinks[0]), "service",
                note="Service traffic from a tunnel to the VPC (a NodePort reply), through the vRouter")]
    for t in node.tunnels:
        rewrite = [SetField("eth_src", node.gateway_mac), SetField("eth_dst", plan.node(t.peer).gateway_mac)]
        out += [flow(t_route, 250, {**_IP, REG_SRC: src, "ipv4_dst": ipv4_net(t.peer_pod_cidr)},
                     ([DecTtl()] if dec else []) + rewrite + [Output(port)], "tunnel",
                     note=f"pod CIDR of {t.peer}: VXLAN to {t.remote_ip}")
                for src, dec, port in ((SRC_POD, True, t.ofport), (SRC_HOST, False, t.ofport),
                                       (SRC_UPLINK, True, t.ofport), (SRC_TUNNEL, True, "in_port"))]
        out.append(flow(t_route, 250, {**_IP, REG_SRC: SRC_POD, "ipv4_dst": t.remote_ip},
                        [DecTtl()] + rewrite + [Output(t.ofport)], "tunnel",
                        note=f"node {t.peer} from a pod: through the tunnel, not SNATed"))
    return out


def _vpc_routes(plan: Plan, node: NodePlan, neighbours: list) -> list[Flow]:
    """vpc-route: no encapsulation, no SNAT inside the VPC; the vRouter's pod routes bring replies back."""
    t_route, uplink = NODE.table("route"), node.uplinks[0]
    via_router = [SetField("eth_src", node.mac), SetField("eth_dst", plan.vswitch(node.vswitch).gateway_mac)]
    out = [flow(t_route, 110, {**_IP, REG_SRC: SRC_POD, "ipv4_dst": a.ip},
                [DecTtl(), SetField("eth_src", node.mac), SetField("eth_dst", a.mac), *_to_uplink(uplink)], "route",
                note=f"{a.owner} is on the node's vSwitch") for a in neighbours]
    vpc_cidr = next(v.cidr for v in plan.vpcs if v.name == plan.cluster.vpc)
    out += [flow(t_route, 105, {**_IP, REG_SRC: SRC_POD, "ipv4_dst": ipv4_net(dst)},
                 [DecTtl()] + via_router + _to_uplink(uplink), "route",
                 note=f"pods to {what} ({dst}): routed out of the ECS's ENI, not SNATed")
            for dst, what in ((vpc_cidr, "the VPC"), *((c, "other nodes' pods") for c in plan.cluster.pod_cidrs))]
    return out


def _snat_routes(plan: Plan, node: NodePlan, neighbours: list) -> list[Flow]:
    """vxlan: pods to the VPC and beyond; vpc-route: pods to beyond the VPC (the internet). SNAT to
    the node's address, as flannel's ip-masq does. TTL is decremented before SNAT, so an expiry is
    answered to the pod, not to the node (-rpl, not +trk-rpl: after the commit table's ct(commit),
    OVS shows the packet as untracked). Then snat_out, the node's own traffic, and the drop."""
    t_route, t_snat, uplink = NODE.table("route"), NODE.table("snat_out"), node.uplinks[0]
    zone = plan.bridge(node.bridge).zone
    via_router = [SetField("eth_src", node.mac), SetField("eth_dst", plan.vswitch(node.vswitch).gateway_mac)]
    beyond = "the VPC" if plan.cluster.mode == "vxlan" else "outside the VPC"
    out = [flow(t_route, 100, {**_IP, REG_SRC: SRC_POD, "ct_state": ct_state(0, CT_RPL)},
                [DecTtl(), Ct(snat_zone(zone), commit=True, table=t_snat, nat=Nat("src", node.ip, *SNAT_PORTS))],
                "snat", note=f"pod to {beyond}: SNAT to the node address (in the SNAT zone)"),
           flow(t_route, 90, {**_IP, REG_SRC: SRC_POD}, [DecTtl(), Goto(t_snat)], "snat",
                note=f"pod replying to a connection from {beyond}: not SNATed")]
    out += [flow(t_snat, 100, {**_IP, "ipv4_dst": a.ip},
                 [SetField("eth_src", node.mac), SetField("eth_dst", a.mac), *_to_uplink(uplink)],
                 "snat", note=f"{a.owner} is on the node's vSwitch: straight to it") for a in neighbours]
    return out + [
        flow(t_snat, 0, _IP, via_router + _to_uplink(uplink), "snat", note="elsewhere: to the vRouter"),
        # the node's own traffic that is not for its pods or the tunnels goes to its vSwitch unchanged
        flow(t_route, 50, {**_IP, REG_SRC: SRC_HOST}, _to_uplink(uplink), "host", note="the node's own traffic to the VPC"),
        flow(t_route, 0, None, [], "route", note="nothing else: dropped")]


# ------------------------------------------------------------------------------------------ eni
def eni_route_flows(plan: Plan, node: NodePlan) -> list[Flow]:
    """eni: pods are peers of the node on their vSwitch; the node bridge switches by MAC."""
    t_route = NODE.table("route")
    pods, host = [h for h in plan.own_pods if h.node == node.name], plan.host(node.ecs)
    # Service connections were DNATed (or their replies un-DNATed) after the sender chose the
    # destination MAC: route them by address
    gw_of = {v.name: v.gateway_mac for v in plan.vswitches}
    out = []
    for p in pods + [host]:
        rewrite = [SetField("eth_src", gw_of[p.vswitch]), SetField("eth_dst", p.mac)]
        out += [flow(t_route, 210, {**_IP, **_SERVICE, "ipv4_dst": p.ip, "in_port": p.ofport},
                     rewrite + [Output("in_port")], "service", note=f"{p.key}: Service traffic back to where it came from"),
                flow(t_route, 205, {**_IP, **_SERVICE, "ipv4_dst": p.ip}, rewrite + [Output(p.ofport)], "service",
                     note=f"{p.key}: Service traffic to it")]
    # below the deliveries: a Service connection DNATed to a local pod or the node stays here,
    # whichever port it came from (two matching flows of one priority would leave it to chance)
    out += [flow(t_route, 204, {**_IP, **_SERVICE, "in_port": u.ofport},
                 [SetField("eth_src", node.mac), SetField("eth_dst", gw_of[u.vswitch]), Output("in_port")], "service",
                 note=f"Service traffic from {u.vswitch} back to it, through the vRouter") for u in node.uplinks]
    uplink_of = {p.key: next(u for u in node.uplinks if u.vswitch == p.vswitch) for p in pods}
    out += [flow(t_route, 204, {**_IP, **_SERVICE, "in_port": p.ofport},
                 [SetField("eth_dst", gw_of[uplink_of[p.key].vswitch]), *_to_uplink(uplink_of[p.key])], "service",
                 note=f"{p.key}: Service traffic to the VPC, out of its ENI through the vRouter") for p in pods]
    out.append(flow(t_route, 204, {**_IP, **_SERVICE, "in_port": host.ofport},
                    [SetField("eth_dst", gw_of[node.uplinks[0].vswitch]), *_to_uplink(node.uplinks[0])], "service",
                    note="the node's Service traffic to the VPC, through the vRouter"))
    out += exclusive_eni_flows(plan, node) + local_route_flows(plan, node)
    out += [flow(t_route, 200, {**_IP, "eth_dst": p.mac}, [Output(p.ofport)], "pod", note=f"{p.key}: local")
            for p in pods + [host]]
    out += [flow(t_route, 100, {**_IP, REG_SRC: SRC_POD, "in_port": p.ofport}, _to_uplink(uplink_of[p.key]), "route",
                 note=f"{p.key}: out of its ENI on {uplink_of[p.key].vswitch}") for p in pods]
    out += [flow(t_route, 100, {**_IP, REG_SRC: SRC_HOST}, _to_uplink(node.uplinks[0]), "host",
                 note="the node's own traffic to its vSwitch"),
            flow(t_route, 0, None, [], "route", note="nothing else: dropped")]
    return out


def exclusive_eni_flows(plan: Plan, node: NodePlan, fam: Family = V4) -> list[Flow]:
    """eni: a pod on an exclusive ENI (PodNetworking eniType ENI) holds that ENI in its own
    namespace, with its default route through the vSwitch gateway (Terway's ExclusiveENI datapath;
    only the node and Services go through its veth1). So its packets to another pod of its node,
    and that pod's to it (whose own ENI routes them out to the VPC), leave through the uplink to
    their vSwitch, meet both pods' security groups there and come back down the same uplink (the
    vSwitch's hairpin, controller/vswitch.py). Below the Service flows (204-210): a Service's
    connection stays on the node, as kube-proxy's does. Pods of different vSwitches send to their
    gateway, so their packets go through the vRouter as they do already. Nothing for a node
    without such a pod, so the flows of other scenarios do not change."""
    t_route = NODE.table("route")
    pods = [p for p in plan.own_pods if p.node == node.name and (fam is V4 or p.ipv6)]
    if not any(p.exclusive_eni for p in pods):
        return []
    uplink_of = {p.key: next(u for u in node.uplinks if u.vswitch == p.vswitch) for p in pods}
    out = []
    for a in pods:
        for b in pods:
            if a.key == b.key or a.vswitch != b.vswitch or not (a.exclusive_eni or b.exclusive_eni):
                continue
            which = a.key if a.exclusive_eni else b.key
            out.append(flow(t_route, 202, {"eth_type": fam.eth_type, "in_port": a.ofport, "eth_dst": b.mac},
                            _to_uplink(uplink_of[a.key]), "route",
                            note=f"{a.key} to {b.key}: {which} has an exclusive ENI, so out to {a.vswitch}, "
                                 "its security groups, and back"))
    return out


def local_route_flows(plan: Plan, node: NodePlan, fam: Family = V4) -> list[Flow]:
    """eni: a pod (or the node) sends a packet for a pod of its node on another vSwitch to its
    gateway, as it would any address off its subnet; the node routes it to that pod itself. Terway's
    shared-ENI and trunk datapaths give each pod a host route `<pod IP> dev <its veth>` and the rule
    `to <pod IP> lookup main` (priority 512), ahead of the pod's own rule `from <pod IP> lookup <its
    ENI's table>` (2048: plugin/datapath/policy_router_linux.go, consts_linux.go), so the packet
    never reaches the vSwitch and no security group applies, as between pods of one vSwitch (ACK
    applies none between pods of one node). It has been through conntrack and NetworkPolicy (tables
    20-29) like any other; here it is routed: TTL decremented, from the destination's gateway MAC
    to the destination's MAC. Replies come back the same way. Not between two pods when either has
    an exclusive ENI (eniType ENI): their packets leave through it to the vSwitch and the vRouter,
    where the security groups apply (kubevpc/evaluator/samenode.py); the node reaches such a pod,
    and it the node, through its veth. Nothing for a node whose pods and itself share one vSwitch,
    so the flows of other scenarios do not change."""
    t_route, host = NODE.table("route"), plan.host(node.ecs)
    addr = (lambda h: h.ip) if fam is V4 else (lambda h: h.ipv6)
    pods = [p for p in plan.own_pods if p.node == node.name and addr(p)]
    ends = pods + ([host] if addr(host) else [])
    gw_of = {v.name: v.gateway_mac for v in plan.vswitches}
    out = []
    for d in ends:
        for vsw in sorted({h.vswitch for h in ends} - {d.vswitch}):
            senders = [(SRC_HOST, "the node")] if host.vswitch == vsw else []
            if not (d.kind == "pod" and d.exclusive_eni) and any(p.vswitch == vsw for p in pods):
                senders.append((SRC_POD, "pods"))
            out += [flow(t_route, 201, {"eth_type": fam.eth_type, REG_SRC: src, fam.dst: addr(d),
                                        "eth_dst": gw_of[vsw]}, _deliver(d, gw_of[d.vswitch], True), "route",
                         note=f"{d.key} on {d.vswitch}, from {who} on {vsw}: routed on the node (Terway's host route)")
                    for src, who in senders]
    uplink_of = {u.vswitch: u for u in node.uplinks}
    out += [flow(t_route, 202, {"eth_type": fam.eth_type, "in_port": a.ofport, fam.dst: addr(d)},
                 _to_uplink(uplink_of[a.vswitch]), "route",
                 note=f"{a.key} to {d.key}: {a.key} has an exclusive ENI, so out to {a.vswitch} and the vRouter")
            for a in pods if a.exclusive_eni for d in pods
            if d.vswitch != a.vswitch and not d.exclusive_eni]
    return out
