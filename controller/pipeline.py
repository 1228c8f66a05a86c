"""The pipeline of each kind of bridge, declared as data.

Each table has a number, a name, what it does, and the tables it may send packets to (by
goto_table or by ct(table=...)). tests/unit/test_flows.py checks every compiled flow against
this declaration; docs/design.md walks a packet through the same tables.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    doc: str
    next: tuple[int, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    role: str
    tables: tuple[Table, ...]

    def table(self, name: str) -> int:
        for t in self.tables:
            if t.name == name:
                return t.id
        raise KeyError(name)

    def by_id(self, tid: int) -> Table:
        for t in self.tables:
            if t.id == tid:
                return t
        raise KeyError(tid)


# Registers, declared once (registers survive conntrack recirculation, not patch ports).
REG_SRC = "reg0"        # node bridge: where the packet came from (SRC_*)
REG_ROUTE_TABLE = "reg0"    # vRouter: the custom route table of the vSwitch the packet came from (its number, 1, 2, ...)
REG_OUT = "reg1"        # vSwitch: the output port chosen by l2; node bridge: the uplink chosen by route
REG_EP_IP = "reg2"      # the Service endpoint or SLB backend chosen (address) ...
REG_EP_PORT = "reg3"    # ... and its port
REG_EP_IP6 = "xxreg2"   # ... its IPv6 address (dual stack): the 128 bits of reg8-reg11
REG_FLAGS = "reg4"      # node bridge: FLAG_* bits
REG_SVC = "reg5"        # the Service entry (node bridge) or SLB listener (vSwitch) being balanced
REG_FLOWLOG_SIDE = "reg6"   # vSwitch: which side of an ENI a packet is counted at (FLOWLOG_OUT, FLOWLOG_IN)
REG_FLOWLOG_CODE = "reg7"   # vSwitch: what flowlog_learn learns (FLOWLOG_*_AT_*)
FLOWLOG_OUT, FLOWLOG_IN = 1, 2        # sg_egress: leaving the ENI at in_port; sg_ingress: entering the ENI at reg1
FLOWLOG_ACCEPT_AT_SOURCE, FLOWLOG_ACCEPT_AT_DEST, FLOWLOG_REJECT_AT_DEST, FLOWLOG_REJECT_AT_SOURCE = 1, 2, 3, 4
SRC_POD, SRC_HOST, SRC_UPLINK, SRC_TUNNEL = 1, 2, 3, 4
FLAG_AFFINITY_HIT = 0x1   # session affinity found a remembered endpoint
FLAG_NAT_COMMITTED = 0x2  # the connection was committed with its Service DNAT
FLAG_CSUM_DONE = 0x4      # checksum hop: the packet came back from the hop, or needs none (controller/csumhop.py)
# ct_mark bits on node bridges (stored with the connection, seen on every later packet)
CTM_SERVICE = 0x1         # DNATed to a Service endpoint
CTM_MASQ = 0x2            # also SNATed to the node (NodePort or external IP with policy Cluster, hairpin)
CTM_HOP = 0x4             # checksum hop: this connection's packets from local pods are NATed here and then
                          # tunnelled, so they go through the hop before any NAT (controller/csumhop.py)

VROUTER = Pipeline("vrouter", (
    Table(0, "classify", "ARP to the ARP responder, IPv4 to routing, everything else dropped; IPv4 from a "
          "vSwitch associated with a custom route table: the table's number into reg0, to route_custom; from a "
          "peering connection: only addresses of this VPC, to the system table; from the VPC's DNS resolver "
          "only ARP and DNS answers", (10, 20, 21)),
    Table(10, "arp", "answer ARP for each vSwitch's gateway address on that vSwitch's port (and the "
          "vRouter's address on the resolver's port)"),
    Table(20, "route", "DNS to the VPC's resolver above every route (anything else to it dropped); then "
          "the system route table, longest-prefix match: system routes (one per vSwitch "
          "CIDR) go on to the neighbour table; custom and pod routes rewrite MACs and output; NAT gateway "
          "routes and, below every route, addresses outside the VPC go to the edge; peering routes to the "
          "peering connection's patch port. Packets from the edge and from peerings route here", (30,)),
    Table(21, "route_custom", "DNS to the VPC's resolver above every route, as in route; then the custom "
          "route tables, each matched on its number in reg0, as route does the system table (the system routes "
          "of every vSwitch are in each)", (30,)),
    Table(30, "neighbor", "one flow per known address on a vSwitch: decrement TTL, rewrite MACs, "
          "output to that vSwitch"),
))

VSWITCH = Pipeline("vswitch", (
    Table(0, "classify", "ARP to the ARP responder, IPv4 to conntrack, ICMP time exceeded straight to "
          "l2 (it comes from packet-outs, which OVS cannot recirculate), everything else dropped; a node's "
          "patch port becomes its uplink's port (in_port) and table 0 is looked up again", (0, 10, 20, 40)),
    Table(10, "arp", "answer ARP for every address on this vSwitch (gateway and instances); no flooding"),
    Table(20, "conntrack", "send IPv4 through conntrack (with NAT) in this vSwitch's zone: SLB "
          "connections get their DNAT, replies its reverse", (25,)),
    Table(25, "slb", "new connections to an SLB listener (VIP and port): the listener's select group "
          "over its healthy backends; no healthy backend: dropped. Later packets of a balanced connection "
          "(ct_mark = the listener), already DNATed by conntrack: the backend's MAC", (26, 30)),
    Table(26, "slb_backend", "DNAT to the chosen backend, committed; the destination MAC becomes the "
          "backend's (on this vSwitch) or the vRouter's", (30,)),
    Table(30, "sg_egress", "established and related pass; new connections meet the security group "
          "egress rules of the instance they come from (anti-spoofing first); with flow logs, what passes is "
          "counted in flowlog and what a rule decides is learned there", (40, 70, 71)),
    Table(40, "l2", "destination MAC to output port in reg1", (50,)),
    Table(50, "sg_ingress", "new connections meet the ingress rules of the instance they go to; "
          "accepted ones are committed to conntrack; with flow logs, counted and learned as in sg_egress",
          (60, 70, 71)),
    Table(60, "output", "output to the port in reg1"),
    Table(70, "flowlog", "flows learned per connection, direction and ENI (reg6: the side; in_port or reg1: "
          "the ENI's port): each counts its packets and bytes for the flow log; nothing else happens here"),
    Table(71, "flowlog_learn", "learn the flowlog flows of a connection a security group just decided (reg7: "
          "accepted or rejected, at the source's or the destination's ENI), by protocol"),
))

NODE = Pipeline("node", (
    Table(0, "classify", "mark the source (pod, host, uplink, tunnel) in reg0; pods may only send "
          "from their own MAC and IP; ICMP time exceeded skips conntrack", (10, 15, 30)),
    Table(10, "arp", "answer ARP for the pods' gateway and local pods; pass the node's own ARP to "
          "and from the vSwitch"),
    Table(15, "unsnat", "packets to the node's address go through the SNAT zone first: replies of "
          "connections SNATed to the node get their real destination back (and the node's replies to a "
          "Service address it was SNATed to, from a host-network pod on it); with the checksum hop, a "
          "pod's such packets are looked up there without NAT first (table 16), and its other packets in the "
          "node's zone without NAT (table 19)", (16, 19, 20)),
    Table(16, "hop_unsnat", "checksum hop (vxlan, KUBEVPC_VXLAN_CSUM_HOP): a pod's packet that the SNAT "
          "zone shows as part of a connection marked for the hop (ct_mark 0x4) goes into the hop before its "
          "un-SNAT; any other is un-SNATed, as table 15 does", (20,)),
    Table(19, "hop", "checksum hop: a pod's packet, looked up in the node's zone without NAT by table 15: of "
          "a connection marked for the hop (ct_mark 0x4: NATed here, then tunnelled) into the hop before its NAT; "
          "of another Service connection, conntrack again with NAT, as table 20 does; anything else on to "
          "service (no NAT to apply)", (21,)),
    Table(20, "conntrack", "conntrack with NAT in the node's zone: packets of Service connections get "
          "their DNAT (forward) or its reverse (replies)", (21,)),
    Table(21, "service", "new connections to a ClusterIP, NodePort, SLB VIP or external IP (for some "
          "clients only, by reg0, where the traffic policy tells them apart): session affinity, then the "
          "Service's select group (one bucket per endpoint, which loads its address and port into reg2 "
          "and reg3); no endpoints: DNAT to a closed port of the node, which refuses; other new connections "
          "to destination; later packets of masqueraded connections (new or established) to masquerade, "
          "others to commit",
          (22, 23, 24, 25, 28, 29)),
    Table(22, "affinity", "learned flows (sessionAffinity ClientIP): client, Service address and port "
          "-> the endpoint chosen last time, with a hard timeout of timeoutSeconds"),
    Table(23, "affinity_lb", "a remembered endpoint is used; otherwise the select group chooses", (25,)),
    Table(24, "destination", "new connections not for a Service: their own destination address and "
          "port into reg2 and reg3, where the policy tables read the destination", (25,)),
    Table(25, "egress_policy", "NetworkPolicy egress of the source pod: new connections, with the "
          "destination after Service DNAT (reg2, reg3), decided before anything is committed", (26,)),
    Table(26, "ingress_policy", "NetworkPolicy ingress of the destination pod (reg2, reg3), the "
          "source as it arrived (before masquerade)", (27,)),
    Table(27, "endpoint", "Service connections: commit with DNAT to the chosen endpoint and mark it; learn "
          "the choice for affinity; masquerade when the Service entry or hairpin needs it. Others: on", (28, 29)),
    Table(28, "masquerade", "SNAT to the node's address in the SNAT zone (NodePorts and external IPs "
          "with externalTrafficPolicy Cluster, the node itself to an external IP, hairpin); the node to a "
          "host-network pod on itself: SNAT to the Service address", (29,)),
    Table(29, "commit", "commit new connections that no Service committed, so replies are known as "
          "replies (+rpl) wherever they go; not those conntrack DNATed (committed already)", (30,)),
    Table(30, "route", "the node's routing: local pods, the node itself, other nodes' pod CIDRs "
          "(tunnel or uplink by mode), the VPC (SNAT to the node in vxlan mode); in eni mode, hosts of "
          "the node on another vSwitch routed to by address (Terway's host route)", (35, 36)),
    Table(35, "snat_out", "after SNAT: rewrite MACs and on to the uplink", (36,)),
    Table(36, "uplink", "to the vSwitch (the uplink in reg1): through the uplink's veth pair, which ends "
          "the datapath pass, when a Service committed the connection here or conntrack shows it new, and "
          "for the rest of Service and SNAT flows other than TCP, so that none overtakes their first packets; "
          "otherwise through the patch port beside it, in the same pass"),
))

EDGE = Pipeline("edge", (
    Table(0, "classify", "IPv4 through conntrack with NAT in the edge's zone (replies get their "
          "translation undone); everything else dropped", (10,)),
    Table(10, "translate", "invalid dropped; established and related on; new connections from the VPC: "
          "an EIP's 1:1 SNAT, else a NAT gateway's SNAT entry when a route sends the destination to it, "
          "else dropped; new connections from the internet: to an instance's EIP or an SLB listener's, "
          "DNAT to the private address, else dropped (nothing unsolicited gets in)", (20, 30)),
    Table(20, "to_internet", "only public sources leave: MACs rewritten, out to the internet router"),
    Table(30, "to_vpc", "MACs rewritten, out to the vRouter"),
))

INTERNET = Pipeline("internet", (
    Table(0, "classify", "hosts may only send from their own address (ARP and IPv4); an edge only from "
          "its VPC's public addresses; everything else dropped", (10, 20)),
    Table(10, "arp", "answer ARP for the router and the zone's hosts; nothing is flooded"),
    Table(20, "route", "to a host of the zone: MACs rewritten, out of its port; to a VPC's public "
          "address: to that VPC's edge; anything else dropped"),
))

PIPELINES = {p.role: p for p in (VROUTER, VSWITCH, NODE, EDGE, INTERNET)}
