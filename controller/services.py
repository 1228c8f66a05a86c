"""Services as OpenFlow on the node bridges: kube-proxy's semantics without iptables.

Each node bridge balances the connections its own clients open (pods, the node itself, and
clients arriving from the VPC or a tunnel at one of its NodePorts or at an external IP a route
sends it), as kube-proxy does on each node. A new connection to a Service address meets, in order:

  service (21)     which Service entry (ClusterIP port, NodePort, SLB VIP, external IP) it is for
  affinity (22)    sessionAffinity ClientIP: the endpoint this client got last time (learned flows)
  affinity_lb (23) use it, or let the entry's select group pick an endpoint (into reg2, reg3)
  policy (25, 26)  NetworkPolicy egress and ingress, on the chosen endpoint (controller/policy.py)
  endpoint (27)    commit the connection with DNAT to the endpoint and mark it (ct_mark)
  masquerade (28)  SNAT to the node where kube-proxy masquerades (NodePort or external IP with policy
                   Cluster, the node itself to an external IP, hairpin)

An endpoint may be at a node's own address (a pod with hostNetwork). On its own node it is never
masqueraded: kube-proxy's masquerade is in nat POSTROUTING, which what the node takes itself never
crosses. The node's own connection to it comes back into the node, which would drop a packet from
its own address: table 28 SNATs it to the Service address instead, and table 15 undoes that on the
reply (self_masquerade_flows).

Nothing is committed before NetworkPolicy has allowed the connection, so a denied connection
leaves no conntrack entry that its next packet could pass as established.

Later packets of the connection never come here again: conntrack (table 20) applies the DNAT to
them and its reverse to replies, and table 15 undoes the SNAT of replies first.
"""
from __future__ import annotations

from dataclasses import dataclass

from kubevpc.planning import REJECT_PORT, SNAT_PORTS, EndpointPlan, NodePlan, Plan, ServicePlan

from .flows import (CT_DNAT, CT_INV, CT_NEW, CT_RPL, CT_TRK, ETH_IP, FEATURES, IPPROTO, PROTO, V4, V6, Bucket, Ct,
                    Family, Flow, Goto, Group, GroupAction, Learn, LearnLoad, LearnMatch, Move, Nat, Output, Resubmit,
                    SetField, addr_int, ct_state, flow, ip_int, port_masks, stable_ids)
from .pipeline import (CTM_MASQ, CTM_SERVICE, FLAG_AFFINITY_HIT, FLAG_NAT_COMMITTED, NODE, REG_EP_IP, REG_EP_IP6,
                       REG_EP_PORT, REG_FLAGS, REG_SRC, REG_SVC, SRC_HOST, SRC_POD, SRC_TUNNEL, SRC_UPLINK)


@dataclass(frozen=True)
class Entry:
    """One address and port a node balances: a Service port on its ClusterIP, a NodePort, an SLB's
    VIP or an external IP; for some clients only, when `sources` says which."""

    id: int                         # stable: the select group's id and the flows' object id
    service: ServicePlan
    index: int                      # which port of the Service
    kind: str                       # "cluster-ip", "node-port", "lb-ip" or "external-ip"
    ip: str
    port: int
    protocol: str                   # TCP or UDP
    endpoints: tuple[EndpointPlan, ...]   # eligible on this node (ready ones, else serving terminating ones)
    refuse: bool                    # no ready or serving terminating endpoint anywhere: refused at once
    masquerade: bool                # SNAT to the node (externalTrafficPolicy Cluster on a NodePort, ...)
    why_empty: str = ""             # when there are endpoints but none eligible here
    sources: tuple[int, ...] = ()   # the clients it takes, by reg0 (SRC_*); () every one
    clients: str = ""               # who those are, for its name
    family: int = 4                 # 6: an IPv6 entry (dual stack), over the endpoints' IPv6 addresses
    node_ip: str = ""               # the node's address in that family (where a refusal is DNATed)

    @property
    def fam(self) -> Family:
        return V6 if self.family == 6 else V4

    @property
    def reg(self) -> str:
        """The register the chosen endpoint's address is loaded into."""
        return REG_EP_IP6 if self.family == 6 else REG_EP_IP

    def address(self, ep: EndpointPlan) -> str:
        return ep.address(self.family)

    @property
    def name(self) -> str:
        at = f" {self.ip}" if self.kind == "external-ip" or self.family == 6 else ""
        who = f", from {self.clients}" if self.clients else ""
        return f"{self.service.key}{at}:{self.port}/{self.protocol} ({self.kind}{who})"

    @property
    def fallback(self) -> str:
        """For notes: whether the endpoints are terminating ones, none being ready."""
        return "" if any(ep.ready for ep in self.endpoints) else " (terminating pods still serving: none is ready)"


def snat_zone(zone: int) -> int:
    """The conntrack zone for SNAT to the node, distinct from the bridge's DNAT zone."""
    return (zone + 32767) % 65535 + 1


def serving(svc: ServicePlan, index: int, node: str | None = None, family: int = 4) -> list[EndpointPlan]:
    """The endpoints kube-proxy sends connections to port `index` to, as pkg/proxy/topology.go
    CategorizeEndpoints picks them (KEP-1669): of those with the target port resolved on their pod
    (and on `node` only, for a Local traffic policy), the ready ones (or published while not ready,
    which the planner folds into `ready`); when there is none, those still serving while their pod
    terminates. A terminating pod that fails its readiness is never one. The compiler's own
    reading, not the evaluator's (kubevpc.evaluator.reach with ServicePlan.cluster_endpoints and
    local_endpoints), which the flows are tested against. In `family` 6, endpoints with an IPv6
    address only (kube-proxy's IPv6 proxier reads the IPv6 EndpointSlice)."""
    usable = [e for e in svc.endpoints if e.ports[index] != 0 and (node is None or e.node == node)
              and e.address(family)]
    return [e for e in usable if e.ready] or [e for e in usable if e.serving and e.terminating]


def entries(plan: Plan, node: NodePlan) -> list[Entry]:
    """What this node balances, with the endpoints kube-proxy would use on it. kube-proxy leaves a
    Service labelled to switch it off (`proxied` false) alone: it has no entry (see unprogrammed).
    A dual-stack Service has entries in each of its families (kube-proxy runs one proxier per
    family), the IPv6 ones at its IPv6 ClusterIP and the node's IPv6 address, over the endpoints'
    IPv6 addresses; SLB VIPs and external IPs are IPv4 only."""
    raw: list[tuple[str, dict]] = []        # (what the id is made from, the entry's fields)
    vip = {slb.service: slb.vip for slb in plan.slbs}
    node6 = plan.host(node.ecs).ipv6
    for svc in plan.services:
        if svc.type == "ExternalName" or svc.headless or not svc.cluster_ip or not svc.proxied:
            continue
        if svc.has_family(4) and svc.cluster_ip_of(4):
            raw += _entries_of(svc, node, node.ip, vip.get(svc.key, ""), 4)
        if svc.has_family(6) and svc.cluster_ip_of(6) and node6:
            raw += _entries_of(svc, node, node6, "", 6)
    ids = stable_ids([key for key, _ in raw])
    return [Entry(id=ids[key], **fields) for key, fields in raw]


def _entries_of(svc: ServicePlan, node: NodePlan, node_ip: str, vip: str, family: int) -> list[tuple[str, dict]]:
    """A Service's entries in one family: its ClusterIP's ports, its SLB VIP's (IPv4), its
    NodePorts at the node's address of the family, its external IPs (IPv4)."""
    raw = []
    six = "|v6" if family == 6 else ""          # IPv4 entries keep the ids they always had
    for i, p in enumerate(svc.ports):
        if p.protocol not in PROTO:
            continue            # SCTP: accepted in manifests, this kernel cannot carry it
        anywhere = serving(svc, i, family=family)          # empty: refused, whatever the policy
        local = serving(svc, i, node.name, family)
        port = (svc, i, p.protocol, anywhere, family)
        itp_local = svc.internal_traffic_policy == "Local"
        raw.append(_raw(port, "cluster-ip", svc.cluster_ip_of(family), p.port, local if itp_local else anywhere, False,
                        "internalTrafficPolicy Local and no endpoint on this node" if itp_local else "", six))
        if svc.type == "LoadBalancer" and vip:
            # kube-proxy short-circuits the LoadBalancer address for clients in the cluster
            raw.append(_raw(port, "lb-ip", vip, p.port, anywhere, False))
        if p.node_port:
            etp_local = svc.external_traffic_policy == "Local"
            raw.append(_raw(port, "node-port", node_ip, p.node_port, local if etp_local else anywhere, not etp_local,
                            "externalTrafficPolicy Local and no endpoint on this node" if etp_local else "", six))
        if family == 4:
            raw += [_raw(port, "external-ip", ip, p.port, eligible, masq, why,
                         f"|{ip}" + (f"|{clients}" if clients else ""), sources=sources, clients=clients)
                    for ip in svc.external_ips
                    for clients, sources, eligible, masq, why in _external_ip_clients(svc, anywhere, local)]
    for _, fields in raw:
        fields["node_ip"] = node_ip
    return raw


def unprogrammed(plan: Plan) -> list[tuple[int, ServicePlan]]:
    """Services with a ClusterIP that kube-proxy leaves alone (labelled service.kubernetes.io/
    service-proxy-name or service.kubernetes.io/headless), with a stable id each. Nothing answers
    for their ClusterIP: on a real node a connection to it follows the default route into the VPC,
    which has no route for the service CIDR, and times out; the node bridge drops it at once, to
    the same effect, rather than send it into the emulated VPC."""
    found = [s for s in plan.services if not s.proxied and s.cluster_ip]
    ids = stable_ids([f"{s.key}|unprogrammed" for s in found])
    return [(ids[f"{s.key}|unprogrammed"], s) for s in found]


def _raw(port: tuple, kind: str, ip: str, number: int, eligible: list, masq: bool, why: str = "", tail: str = "",
         **more) -> tuple[str, dict]:
    """An entry before its id: what the id is made from (`<namespace>/<name>|<kind>|<port>|<protocol>`,
    and `tail` for an external IP's), and its fields. `port`: (Service, port index, protocol, the
    endpoints usable anywhere: none means refused)."""
    svc, index, protocol, anywhere, family = port
    return f"{svc.key}|{kind}|{number}|{protocol}{tail}", dict(
        service=svc, index=index, kind=kind, ip=ip, port=number, protocol=protocol, endpoints=tuple(eligible),
        refuse=not anywhere, masquerade=masq, why_empty=why, family=family, **more)


def _external_ip_clients(svc: ServicePlan, anywhere: list, local: list) -> list[tuple]:
    """How kube-proxy treats a connection to an external IP, by client (pkg/proxy/iptables
    proxier.go, the external traffic chain): with externalTrafficPolicy Cluster, or no usable
    endpoint at all, the same for every client: masqueraded, any endpoint (or refused). With
    Local: the node's pods are short-circuited like the ClusterIP (any endpoint, their address
    kept); the node itself is masqueraded, any endpoint; and what arrives from outside the node
    (the uplink, a tunnel) goes to this node's endpoints only, its client's address kept, or is
    dropped. `anywhere` and `local` are kube-proxy's choices, terminating endpoints as fallback.
    As (clients, sources, eligible endpoints, masquerade, why none is eligible)."""
    if svc.external_traffic_policy != "Local" or not anywhere:
        return [("", (), anywhere, True, "")]
    return [("pods", (SRC_POD,), anywhere, False, ""), ("the node", (SRC_HOST,), anywhere, True, ""),
            ("outside the node", (SRC_UPLINK, SRC_TUNNEL), local, False,
             "externalTrafficPolicy Local and no endpoint on this node")]


def service_flows(plan: Plan, node: NodePlan, zone: int) -> tuple[list[Flow], list[Group]]:
    """Tables 21-24, 27 and 28 of a node bridge (and 15, for a host-network endpoint on the node),
    and one select group per balanced entry."""
    t_svc, t_aff, t_afflb, t_dst, t_policy, t_ep, t_masq, t_next = (NODE.table(n) for n in (
        "service", "affinity", "affinity_lb", "destination", "egress_policy", "endpoint", "masquerade", "commit"))
    ip = {"eth_type": ETH_IP}
    new = ct_state(CT_TRK | CT_NEW)
    flows = [flow(t_svc, 400, {**ip, "ct_state": ct_state(CT_TRK | CT_INV)}, [], "service",
                  note="invalid for conntrack (e.g. a TCP segment of no known connection): dropped, so nothing "
                       "passes the policy tables without being a new connection"),
             # a UDP flow is +new until its first reply: its later datagrams are new too, but table 20's
             # lookup found the connection committed and DNATed them (+dnat); they are later packets
             flow(t_svc, 300, {**ip, "ct_state": ct_state(CT_TRK, CT_RPL), "ct_mark": (CTM_MASQ, CTM_MASQ)},
                  [Goto(t_masq)], "service", note="later packets of a masqueraded connection: SNAT again"),
             flow(t_svc, 250, {**ip, "ct_state": ct_state(CT_TRK | CT_NEW | CT_DNAT)}, [Goto(t_next)], "service",
                  note="later packets of a Service connection still new (UDP before its first reply): as established"),
             flow(t_svc, 1, {**ip, "ct_state": new}, [Goto(t_dst)], "service",
                  note="a new connection not for a Service: on to the policy tables"),
             flow(t_svc, 0, None, [Goto(t_next)], "service", note="established, related, replies"),
             flow(t_aff, 0, None, [], "affinity", note="no remembered endpoint"),
             flow(t_masq, 100, ip, [Ct(snat_zone(zone), commit=True, table=t_next, mark=CTM_SERVICE | CTM_MASQ,
                                       nat=Nat("src", node.ip, *SNAT_PORTS))], "service",
                  note="masquerade: SNAT to the node, so replies come back through it"),
             flow(t_ep, 1, {REG_SVC: 0}, [Goto(t_next)], "service", note="not a Service connection: on to commit")]
    flows += [flow(t_dst, 100, {**ip, "ip_proto": IPPROTO[proto]}, [Move("ipv4_dst", REG_EP_IP, 32),
                                                                     Move(f"{proto}_dst", REG_EP_PORT, 16),
                                                                     Goto(t_policy)], "service",
                   note=f"{proto.upper()}: the destination address and port, where the policy tables read them")
              for proto in PROTO.values()]
    flows.append(flow(t_dst, 0, ip, [Move("ipv4_dst", REG_EP_IP, 32), Goto(t_policy)], "service",
                      note="other IPv4 (ICMP): the destination address"))
    groups: list[Group] = []
    seen_vips: set[str] = set()
    balanced = entries(plan, node)
    for e in balanced:
        if e.kind in ("cluster-ip", "lb-ip", "external-ip") and e.ip not in seen_vips:
            seen_vips.add(e.ip)
            # an external IP's too: kube-proxy leaves such a packet to the node's routing, which
            # sends it back the way it came; nothing answers it either way
            flows.append(flow(t_svc, 100, {"eth_type": e.fam.eth_type, "ct_state": new, e.fam.dst: e.ip}, [],
                              "service", e.id,
                              f"{e.service.key}: a port the Service does not expose at {e.ip}: dropped"))
        f, g = _entry_flows(e, node, zone)
        flows += f
        groups += g
    flows += [flow(t_svc, 100, {**ip, "ct_state": new, "ipv4_dst": svc.cluster_ip}, [], "service", i,
                   f"{svc.key}: labelled {svc.proxy_off_label()}, so kube-proxy does not program its ClusterIP: "
                   "dropped (nothing answers for it)") for i, svc in unprogrammed(plan)]
    flows += self_masquerade_flows(balanced, node, zone)
    flows += [flow(t_afflb, 0, None, [], "affinity", note="not reached for Services without affinity"),
              flow(t_ep, 0, None, [], "service", note="no such endpoint (a group changed under a packet): dropped")]
    return flows, groups


def _entry_flows(e: Entry, node: NodePlan, zone: int) -> tuple[list[Flow], list[Group]]:
    """One entry: refused (no usable endpoint anywhere), dropped (none eligible here), or balanced
    by its select group (with session affinity when the Service asks), then DNAT to the endpoint.
    An entry for some clients only matches their reg0 in table 21, one flow each."""
    t_svc, t_aff, t_afflb, t_policy = (NODE.table(n) for n in ("service", "affinity", "affinity_lb", "egress_policy"))
    proto = PROTO[e.protocol]
    m = {"eth_type": e.fam.eth_type, "ct_state": ct_state(CT_TRK | CT_NEW), "ip_proto": IPPROTO[proto], e.fam.dst: e.ip,
         f"{proto}_dst": e.port}
    ms = [{**m, REG_SRC: s} for s in e.sources] or [m]
    if e.refuse:
        assert not e.sources, f"{e.name}: a refusal is for every client"
        # the node itself would see its own address as the source of the refused packet (a
        # martian): the controller refuses on its behalf, with a TCP reset or ICMP unreachable
        return [flow(t_svc, 210, {**m, REG_SRC: SRC_HOST}, [Output("controller")], "reject", e.id,
                     f"{e.name}: no ready endpoint (nor one serving while terminating), the node itself asks: "
                     "refused by the controller"),
                flow(t_svc, 200, m, [SetField(REG_FLAGS, FLAG_NAT_COMMITTED),
                                     Ct(zone, commit=True, table=NODE.table("commit"), mark=CTM_SERVICE,
                                        nat=Nat("dst", e.node_ip or node.ip, REJECT_PORT, REJECT_PORT))], "service",
                     e.id,
                     f"{e.name}: no ready endpoint (nor one serving while terminating): DNAT to the node's closed "
                     f"port {REJECT_PORT}, which answers TCP reset or ICMP port unreachable")], []
    if not e.endpoints:
        return [flow(t_svc, 200, x, [], "service", e.id, f"{e.name}: {e.why_empty}: dropped") for x in ms], []
    group = Group(e.id, tuple(Bucket((SetField(e.reg, addr_int(e.address(ep))), SetField(REG_EP_PORT, ep.ports[e.index]),
                                      Resubmit(t_policy))) for ep in e.endpoints), note=e.name)
    if e.service.session_affinity:
        flows = [flow(t_svc, 200, x, [SetField(REG_SVC, e.id), Resubmit(t_aff), Goto(t_afflb)], "service", e.id,
                      f"{e.name}: sessionAffinity ClientIP: look for the endpoint used last time") for x in ms]
        flows += [flow(t_afflb, 100, {REG_SVC: e.id, REG_FLAGS: (FLAG_AFFINITY_HIT, FLAG_AFFINITY_HIT)},
                       [Goto(t_policy)], "affinity", e.id, f"{e.name}: the remembered endpoint"),
                  flow(t_afflb, 60, {REG_SVC: e.id, "eth_type": e.fam.eth_type, "ip_proto": IPPROTO[proto],
                                     f"{proto}_src": 0}, [GroupAction(e.id)], "affinity", e.id,
                       f"{e.name}: never matches (no source port 0), but makes the datapath cache every new "
                       "connection apart, so each one reaches the learn action at once, not at the next "
                       "statistics push"),
                  flow(t_afflb, 50, {REG_SVC: e.id}, [GroupAction(e.id)], "affinity", e.id,
                       f"{e.name}: nothing remembered: the group picks one")]
    else:
        flows = [flow(t_svc, 200, x, [SetField(REG_SVC, e.id), GroupAction(e.id)], "service", e.id,
                      f"{e.name}: one of {len(e.endpoints)} endpoints, per connection{e.fallback}") for x in ms]
    return flows + _endpoint_flows(e, node, zone), [group]


def _endpoint_flows(e: Entry, node: NodePlan, zone: int) -> list[Flow]:
    """Table 27: commit with DNAT to the chosen endpoint and mark it, learning the choice for
    affinity; hairpin (the endpoint is the client) and masqueraded entries on to masquerade. An
    endpoint at this node's own address (a host-network pod here) takes the connection as the
    node would: never masqueraded, since kube-proxy's masquerade (nat POSTROUTING) never sees
    what the node delivers to itself; the node's own connection to it goes on to masquerade all
    the same, for its SNAT to the Service address (self_masquerade_flows)."""
    t_ep = NODE.table("endpoint")
    proto = PROTO[e.protocol]
    learn = [_learn(e, proto)] if e.service.session_affinity else []
    out = []
    for ep in e.endpoints:
        port, addr = ep.ports[e.index], e.address(ep)
        if e.family == 4 and ep.ip == node.ip:
            out += _to_this_node(e, ep, learn, zone)
            continue
        em = endpoint_match(e, ep)
        out += [flow(t_ep, 110, {**em, e.fam.src: addr}, endpoint_commit(e, ep, zone, True), "service", e.id,
                     f"{e.name}: hairpin: {ep.pod} reaches itself; masqueraded so the reply comes back here"),
                flow(t_ep, 100, em, endpoint_commit(e, ep, zone, e.masquerade), "service", e.id,
                     f"{e.name}: DNAT to {ep.pod} {_at(addr)}:{port}" + (", masquerade" if e.masquerade else ""))]
    return out


def endpoint_match(e: Entry, ep: EndpointPlan) -> dict:
    """Table 27's match for a connection of entry `e` whose endpoint `ep` was chosen (reg5, reg2, reg3)."""
    return {"eth_type": e.fam.eth_type, "ip_proto": IPPROTO[PROTO[e.protocol]], REG_SVC: e.id,
            e.reg: addr_int(e.address(ep)), REG_EP_PORT: ep.ports[e.index]}


def endpoint_commit(e: Entry, ep: EndpointPlan, zone: int, masq: bool, mark: int = 0) -> list:
    """Table 27's actions for a connection of entry `e` to endpoint `ep`: flag it committed, learn
    the choice (session affinity), commit it in `zone` with DNAT to the endpoint and its ct_mark
    (CTM_SERVICE, CTM_MASQ when masqueraded, and `mark`), then on to masquerade or commit."""
    addr, port = e.address(ep), ep.ports[e.index]
    learn = [_learn(e, PROTO[e.protocol])] if e.service.session_affinity else []
    return [SetField(REG_FLAGS, FLAG_NAT_COMMITTED)] + learn + [
        Ct(zone, commit=True, table=NODE.table("masquerade" if masq else "commit"),
           mark=CTM_SERVICE | (CTM_MASQ if masq else 0) | mark, nat=Nat("dst", addr, port, port))]


def _at(addr: str) -> str:
    """An address and port as written: [IPv6]:port."""
    return f"[{addr}]" if ":" in addr else addr


def _learn(e: Entry, proto: str) -> Learn:
    """Remember client -> endpoint for timeoutSeconds; each new connection learns again, so the
    timeout runs from the client's last new connection, as kube-proxy's `recent` match does."""
    bits = 128 if e.family == 6 else 32
    return Learn(table=NODE.table("affinity"), priority=100, hard_timeout=e.service.affinity_timeout,
                 cookie=(FEATURES["learned"] << 56) | (e.id << 32), specs=(
                     LearnMatch("eth_type", 16, value=e.fam.eth_type), LearnMatch("ip_proto", 8, value=IPPROTO[proto]),
                     LearnMatch(e.fam.src, bits), LearnMatch(e.fam.dst, bits), LearnMatch(f"{proto}_dst", 16),
                     LearnLoad(e.reg, bits, src=e.reg), LearnLoad(REG_EP_PORT, 32, src=REG_EP_PORT),
                     LearnLoad(REG_FLAGS, 32, value=FLAG_AFFINITY_HIT)))


# ------------------------------------------------------------- endpoints at the node's own address
def _to_this_node(e: Entry, ep: EndpointPlan, learn: list, zone: int) -> list[Flow]:
    """Table 27 for a host-network endpoint on this node: DNAT to the node's address, delivered to
    its namespace unmasqueraded; the node's own connection (its address as the source) marked for
    table 28, which SNATs it to the Service address (not for a NodePort: the node's kernel takes
    a connection to its own address itself, and it never reaches the bridge)."""
    t_ep, t_masq, t_next = NODE.table("endpoint"), NODE.table("masquerade"), NODE.table("commit")
    port = ep.ports[e.index]
    em = {"eth_type": ETH_IP, "ip_proto": IPPROTO[PROTO[e.protocol]], REG_SVC: e.id, REG_EP_IP: ip_int(ep.ip),
          REG_EP_PORT: port}

    def dnat(masq: bool) -> list:
        return [SetField(REG_FLAGS, FLAG_NAT_COMMITTED)] + learn + [
            Ct(zone, commit=True, table=t_masq if masq else t_next, mark=CTM_SERVICE | (CTM_MASQ if masq else 0),
               nat=Nat("dst", ep.ip, port, port))]
    out = [flow(t_ep, 100, em, dnat(False), "service", e.id,
                f"{e.name}: DNAT to {ep.pod} {ep.ip}:{port}, host network on this node: delivered here, not masqueraded")]
    if e.kind != "node-port":
        out.append(flow(t_ep, 110, {**em, "ipv4_src": ep.ip}, dnat(True), "service", e.id,
                        f"{e.name}: the node itself reaches {ep.pod} on its own address: on to table 28, for its "
                        f"SNAT to {e.ip}"))
    return out


def self_masquerade_flows(balanced: list[Entry], node: NodePlan, zone: int) -> list[Flow]:
    """The node's own connections to a Service whose endpoint is a host-network pod on the node
    (tables 15 and 28). Their packet comes back into the node's namespace, which would drop it as a
    martian were it from the node's own address, and would answer it through its loopback, past
    the bridge that must undo the DNAT. So table 28 SNATs it to the Service address the node
    asked for (the pod sees that address as its client, where upstream it sees the node's), and
    table 15 sends the replies to that address, from the node, to the SNAT zone to be undone."""
    t_unsnat, t_ct, t_masq, t_next = (NODE.table(n) for n in ("unsnat", "conntrack", "masquerade", "commit"))
    here = [e for e in balanced if e.family == 4 and e.kind != "node-port" and any(ep.ip == node.ip for ep in e.endpoints)]
    out = [flow(t_masq, 110, {"eth_type": ETH_IP, REG_SVC: e.id, "ipv4_src": node.ip, "ipv4_dst": node.ip},
                [Ct(snat_zone(zone), commit=True, table=t_next, mark=CTM_SERVICE | CTM_MASQ,
                    nat=Nat("src", e.ip, *SNAT_PORTS))], "service", e.id,
                f"{e.name}: the node to a host-network pod on itself: SNAT to {e.ip}, so the packet is no martian "
                "and the reply comes back through the bridge") for e in here]
    unsnat = [Ct(snat_zone(zone), table=t_ct, nat=Nat())]
    for ip in dict.fromkeys(e.ip for e in here):
        m = {"eth_type": ETH_IP, REG_SRC: SRC_HOST, "ipv4_dst": ip}
        out.append(flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO["icmp"]}, unsnat, "snat",
                        note=f"ICMP from the node to {ip}: maybe for its connection SNATed to that Service address"))
        out += [flow(t_unsnat, 100, {**m, "ip_proto": IPPROTO[proto], f"{proto}_dst": block}, unsnat, "snat",
                     note=f"from the node to {ip} at a SNAT port: maybe the reply of a host-network pod to the node")
                for proto in dict.fromkeys(PROTO[e.protocol] for e in here if e.ip == ip)
                for block in port_masks(*SNAT_PORTS)]
    return out
