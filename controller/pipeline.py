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


# Registers, declared once. reg0: where the packet came from (node bridge); reg1: output port.
REG_SRC = "reg0"
REG_OUT = "reg1"
SRC_POD, SRC_HOST, SRC_UPLINK, SRC_TUNNEL = 1, 2, 3, 4

VROUTER = Pipeline("vrouter", (
    Table(0, "classify", "ARP to the ARP responder, IPv4 to routing, everything else dropped", (10, 20)),
    Table(10, "arp", "answer ARP for each vSwitch's gateway address on that vSwitch's port"),
    Table(20, "route", "longest-prefix match over the route table: system routes (one per vSwitch "
          "CIDR) go on to the neighbour table; custom and pod routes rewrite MACs and output", (30,)),
    Table(30, "neighbor", "one flow per known address on a vSwitch: decrement TTL, rewrite MACs, "
          "output to that vSwitch"),
))

VSWITCH = Pipeline("vswitch", (
    Table(0, "classify", "ARP to the ARP responder, IPv4 to conntrack, ICMP time exceeded straight to "
          "l2 (it comes from packet-outs, which OVS cannot recirculate), everything else dropped", (10, 20, 40)),
    Table(10, "arp", "answer ARP for every address on this vSwitch (gateway and instances); no flooding"),
    Table(20, "conntrack", "send IPv4 through conntrack in this vSwitch's zone", (30,)),
    Table(30, "sg_egress", "established and related pass; new connections meet the security group "
          "egress rules of the instance they come from (anti-spoofing first)", (40,)),
    Table(40, "l2", "destination MAC to output port in reg1", (50,)),
    Table(50, "sg_ingress", "new connections meet the ingress rules of the instance they go to; "
          "accepted ones are committed to conntrack", (60,)),
    Table(60, "output", "output to the port in reg1"),
))

NODE = Pipeline("node", (
    Table(0, "classify", "mark the source (pod, host, uplink, tunnel) in reg0; pods may only send "
          "from their own MAC and IP; ICMP time exceeded skips conntrack", (10, 20, 30)),
    Table(10, "arp", "answer ARP for the pods' gateway and local pods; pass the node's own ARP to "
          "and from the vSwitch"),
    Table(20, "conntrack", "conntrack with NAT in the node's zone: replies of SNATed connections "
          "get their pod address back", (30,)),
    Table(30, "route", "the node's routing: local pods, the node itself, other nodes' pod CIDRs "
          "(tunnel or uplink by mode), the VPC (SNAT to the node in vxlan mode)", (35,)),
    Table(35, "snat_out", "after SNAT: rewrite MACs and output to the uplink"),
))

PIPELINES = {p.role: p for p in (VROUTER, VSWITCH, NODE)}
