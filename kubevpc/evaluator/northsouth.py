"""North-south reachability: between the VPC and the emulated internet, through EIPs, NAT
gateways and internet-facing SLBs. Written from the cloud's documented behaviour (SPEC.md and
Alibaba Cloud's VPC, EIP and NAT gateway documentation), independently of the edge's flows in
controller/compile.py, like the rest of kubevpc.evaluator, whose Verdict and Step it returns.

What it holds to:
- Traffic from the VPC to an address outside it follows the route table: a route to a NAT
  gateway, or no route at all, takes it to the VPC's edge; a route to an instance sends it there,
  and no instance forwards it further.
- At the edge, an EIP bound to the source's address (an instance, or an eni pod) translates it
  1:1, and so does a NAT gateway's DNAT entry that maps every port of an EIP to it (IP mapping):
  either wins over any SNAT entry; else the most specific SNAT entry of a NAT gateway that a
  route sends the destination to; else it is dropped. Pods in vxlan and vpc-route mode leave
  their node masqueraded to the node's address; eni pods keep theirs.
- From the internet, only an EIP answers: bound to an instance or a pod, it is that host (the
  client keeps its address, the host's security groups apply, and a pod's NetworkPolicy);
  bound to an SLB, its listeners are; bound to a NAT gateway, its DNAT entries are, each for its
  port and protocol (Alibaba's ForwardEntry), and nothing else; private addresses answer nothing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..planning import DnatPlan, EipPlan, HostPlan, NatGatewayPlan, Plan, SlbPlan
from .verdict import Step, Verdict, Wire
from .vpc import (attachment_of, best_route, egress, in_cidr, route_step, security_groups, table_label,
                  table_routes, vpc_of)


def reach_internet(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    """A connection with a host of the emulated internet at one end or both."""
    if src.kind == "internet" and dst.kind == "internet":
        return Verdict(True, "both on the emulated internet: its router carries it", src.ip,
                       (Step("internet", f"{src.key} and {dst.key} are both on the internet zone "
                                         f"{plan.internet.cidr}: the internet router carries it", True),))
    if dst.kind == "internet":
        return outbound(plan, src, dst, port, proto)
    reason = (f"{dst.ip} is a private address: the internet does not route it (reach an instance through "
              "its EIP, eip/<name>, or a Service through an internet-facing SLB)")
    return Verdict(False, reason, steps=(Step("internet", reason, False),))


def leaving_address(plan: Plan, src: HostPlan) -> tuple[str, list[Step]]:
    """The source address a packet has when it leaves its host's node for the VPC."""
    mode = plan.cluster.mode if plan.cluster else ""
    if src.kind == "pod" and mode in ("vxlan", "vpc-route"):
        node = plan.node(src.node)
        return node.ip, [Step("NAT", f"SNAT to node {node.name} ({node.ip}): pods leave the VPC masqueraded "
                                     f"to their node in {mode} mode")]
    return src.ip, []


def leaving(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str
            ) -> tuple[str, list[Step], Verdict | None]:
    """The address `src`'s packet to `dst` leaves its node with, the steps so far, and the refusal
    of the source's egress security groups (None when they let it out)."""
    ip, steps = leaving_address(plan, src)
    att = attachment_of(plan, ip)
    if att is not None:
        out = egress(plan, Wire(ip, dst.ip, proto, port), att)
        steps += out.steps
        if not out.allowed:
            return ip, steps, Verdict(False, out.reason, steps=tuple(steps))
    return ip, steps, None


def outbound(plan: Plan, src: HostPlan, dst: HostPlan, port: int, proto: str) -> Verdict:
    vpc_name = vpc_of(plan, src)
    vpc = next(v for v in plan.vpcs if v.name == vpc_name)
    edge = plan.edge(vpc_name)
    ip, steps, refused = leaving(plan, src, dst, port, proto)
    if refused is not None:
        return refused
    table, routes = table_routes(plan, vpc, ip)        # the route table of the vSwitch it leaves from
    label = table_label(vpc, table)
    route = best_route(vpc, dst.ip, routes)
    if route is not None and route.kind != "natgw":
        reason = f"route {route.destination} of {label if table else vpc_name} sends it to " \
                 f"{route.next_hop or route.description}, which does not forward to the internet"
        return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    if edge is None:
        reason = f"VPC {vpc_name} has no edge to the internet"
        return Verdict(False, reason, steps=(*steps, Step("route", reason, False)))
    steps.append(Step("route", f"{label}: route {route.destination} to NAT gateway "
                               f"{route.next_hop}: to the edge" if route else
                               f"{label}: no entry for {dst.ip}: outside the VPC, to the edge"))
    one_to_one = public_of(plan, vpc_name, ip)
    if one_to_one is not None:
        public, text = one_to_one
        steps.append(Step("NAT", text, True))
    else:
        entry = snat_entry(plan, vpc_name, ip, dst.ip, routes)
        if entry is None:
            reason = (f"no EIP is bound to {ip}, and no SNAT entry of a NAT gateway with a route to {dst.ip} covers "
                      "it: the edge drops it")
            return Verdict(False, reason, steps=(*steps, Step("NAT", reason, False)))
        gw, snat = entry
        steps.append(Step("NAT", f"NAT gateway {gw}: SNAT entry for {snat.what} ({snat.source}) translates {ip} to "
                                 f"{snat.public_ip}", True))
        public = snat.public_ip
    steps.append(Step("internet", f"the internet router delivers it to {dst.key} ({dst.ip}); replies come back "
                                  "through the edge's connection table", True))
    return Verdict(True, f"out through the edge as {public}", public, tuple(steps))


def public_of(plan: Plan, vpc: str, ip: str) -> tuple[str, str] | None:
    """The public address a host of `vpc` at `ip` leaves as whatever SNAT entries say, with the
    step's words: an EIP bound to it, or a DNAT entry that maps an EIP to it (IP mapping; Alibaba:
    "SNAT entries do not take effect on ECS instances that are ... configured with DNAT IP
    mapping"). None when it has neither."""
    eip = next((e for e in plan.eips if e.one_to_one and e.vpc == vpc and e.private_ip == ip), None)
    if eip is not None:
        return eip.ip, (f"EIP {eip.name}: {eip.target} ({ip}) goes out as {eip.ip} (SNAT at the edge; an EIP wins "
                        "over a NAT gateway)")
    for g in plan.nat_gateways:
        for d in g.dnat:
            if g.vpc == vpc and d.protocol == "any" and d.internal_ip == ip:
                return d.public_ip, (f"NAT gateway {g.name}: {d.what} maps {d.target} ({ip}), which goes out as "
                                     f"{d.public_ip} (an IP mapping wins over SNAT entries)")
    return None


def snat_entry(plan: Plan, vpc: str, src_ip: str, dst_ip: str, table=None):
    """(gateway name, SnatPlan) for the most specific SNAT entry that covers src_ip, of a gateway
    that a route of the VPC (of `table`, the routes of src_ip's route table; by default the system
    table) sends dst_ip to; None when there is none."""
    if table is None:
        table = next(v.routes for v in plan.vpcs if v.name == vpc)
    routes = [r for r in table if r.kind == "natgw" and in_cidr(dst_ip, r.destination)]
    best = None
    for g in plan.nat_gateways:
        if g.vpc != vpc or not any(r.next_hop == g.name for r in routes):
            continue
        for entry in g.snat:
            if in_cidr(src_ip, entry.source):
                size = ipaddress.IPv4Network(entry.source).prefixlen
                if best is None or size > best[0]:
                    best = (size, g.name, entry)
    return None if best is None else best[1:]


def public_owner(plan: Plan, ip: str) -> EipPlan | None:
    return next((e for e in plan.eips if e.ip == ip), None) or next(
        (EipPlan(name=f"slb-{s.service.replace('/', '-')}", ip=ip, bound="slb", target=s.service,
                 private_ip=s.vip) for s in plan.slbs if s.public_ip == ip), None)


@dataclass(frozen=True)
class Landing:
    """Where the edge hands a connection from the internet: a host of the VPC, and the port."""

    host: HostPlan
    port: int


def inbound(plan: Plan, client: HostPlan, public_ip: str, port: int, proto: str
            ) -> tuple[list[Step], Verdict | None, Landing | SlbPlan | None]:
    """A connection from the internet to a public address: the steps up to the VPC, and either a
    final verdict or what the edge hands it to (the host of an EIP or a DNAT entry, or an SLB)."""
    eip = public_owner(plan, public_ip)
    if eip is None or not eip.bound:
        reason = f"{public_ip} is held by nobody: the internet router drops it"
        return [], Verdict(False, reason, steps=(Step("internet", reason, False),)), None
    if eip.bound == "natgw":
        return _through_dnat(plan, client, next(g for g in plan.nat_gateways if g.name == eip.target), public_ip,
                             port, proto)
    steps = [Step("internet", f"the internet router sends {public_ip} to the edge of VPC {eip.vpc}")]
    if eip.one_to_one:
        host = plan.host(eip.target) if eip.bound == "pod" else next(h for h in plan.instances if h.name == eip.target)
        steps.append(Step("NAT", f"EIP {eip.name}: DNAT {public_ip} to {host.key} ({eip.private_ip}); the client "
                                 f"keeps its address {client.ip}", True))
        return steps, None, Landing(host, port)
    slb = next(s for s in plan.slbs if s.service == eip.target)
    listener = next((li for li in slb.listeners if li.port == port and li.protocol.lower() == proto), None)
    if listener is None:
        reason = f"internet-facing SLB {slb.service} has no listener {port}/{proto} at {public_ip}: the edge drops it"
        return steps, Verdict(False, reason, steps=(*steps, Step("SLB", reason, False))), None
    steps.append(Step("NAT", f"internet-facing SLB {slb.service}: DNAT {public_ip} to its VIP {slb.vip} for "
                             f"listener {port}/{proto}", True))
    return steps, None, slb


def dnat_entry(gw: NatGatewayPlan, public_ip: str, port: int, proto: str) -> DnatPlan | None:
    """The DNAT entry of `gw` that forwards public_ip:port/proto, if any."""
    return next((d for d in gw.dnat if d.public_ip == public_ip and
                 (d.protocol == "any" or (d.protocol == proto and d.external_port == port))), None)


def _through_dnat(plan: Plan, client: HostPlan, gw: NatGatewayPlan, public_ip: str, port: int, proto: str
                  ) -> tuple[list[Step], Verdict | None, Landing | None]:
    """To a NAT gateway's EIP: its DNAT entry for the port and protocol, or nothing gets in."""
    d = dnat_entry(gw, public_ip, port, proto)
    if d is None:
        there = [x.what.removeprefix("DNAT entry ") for x in gw.dnat if x.public_ip == public_ip]
        reason = (f"{public_ip} is NAT gateway {gw.name}'s address and no DNAT entry forwards {port}/{proto} there: it "
                  "answers only connections from inside (nothing unsolicited gets in)" +
                  (f"; its DNAT entries there: {', '.join(there)}" if there else ""))
        return [], Verdict(False, reason, steps=(Step("NAT", reason, False),)), None
    steps = [Step("internet", f"the internet router sends {public_ip} to the edge of VPC {gw.vpc}")]
    if not (d.target and d.internal_ip):
        reason = (f"NAT gateway {gw.name}: {d.what} forwards to {d.target or d.internal_ip}, which is gone: nothing "
                  "holds that address now, and the connection times out")
        return steps, Verdict(False, reason, steps=(*steps, Step("NAT", reason, False))), None
    host, to_port = plan.host(d.target), d.internal_port or port
    steps.append(Step("NAT", f"NAT gateway {gw.name}: {d.what} forwards it to {host.key} ({d.internal_ip}:{to_port}); "
                             f"the client keeps its address {client.ip}", True))
    return steps, None, Landing(host, to_port)


def to_host(plan: Plan, client: HostPlan, host: HostPlan, port: int, proto: str) -> Verdict:
    """After the edge's DNAT (an EIP's or a DNAT entry's): the client's packet to the instance or
    eni pod, through the VPC to its vSwitch, where its security groups apply (NetworkPolicy, for a
    pod, is the caller's: kubevpc.evaluator.reach.with_policy)."""
    wire = Wire(client.ip, host.ip, proto, port)
    steps = [route_step(plan, vpc_of(plan, host), client.ip, host.ip)]
    v = security_groups(plan, wire, None, attachment_of(plan, host.ip))
    return Verdict(v.allowed, v.reason, client.ip if v.allowed else "", (*steps, *v.steps))
