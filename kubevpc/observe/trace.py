"""`kubevpc trace`: follow a connection's first packet through every bridge it really crosses.

Open vSwitch's own `ofproto/trace` does the work on each bridge, from the right in_port. What it
cannot do alone, this module does between its calls:

- **Conntrack.** The pipelines recirculate after each `ct(table=...)`. The first packet of a
  connection is `trk,new`, plus `dnat` or `snat` once it has been translated in that zone (by
  this `ct` action, or by a commit earlier on the way). Each continuation is traced with
  `ofproto/trace-packet-out` from the table the `ct` action names, with that state in the flow
  and the addresses as Open vSwitch's NAT simulation left them.
- **Select groups.** A Service's or an SLB listener's group picks its bucket by a datapath hash,
  which a trace cannot know: every bucket is followed, each a branch of its own (at most
  MAX_LEAVES).
- **Between bridges.** A patch port is followed by `ofproto/trace` itself. A veth pair between two
  bridges (a node's uplink, a vRouter's link to its edge) ends the datapath pass: the packet is
  traced again on the bridge at its other end. A packet sent into a node's VXLAN device is
  encapsulated as the kernel would (outer addresses from the plan, UDP to the VXLAN port), the
  outer packet is traced from the node's own port across the VPC to the peer node, and the inner
  one from the peer's VXLAN port.

Each hop lists the tables taken and the flows matched, with the notes the compiler gave them
(`controller/compile.py`; the cookies say which flow is which), and the decisions in words. The
evaluator's verdict (kubevpc.evaluator.explain) is given beside the trace, and a disagreement is
flagged. What Open vSwitch prints, and how it is asked, is in kubevpc.observe.ovstrace.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from controller.compile import compile_plan
from controller.flows import FEATURES
from controller.pipeline import PIPELINES

from ..errors import KubevpcError
from ..evaluator.explain import explain
from ..planning import HostPlan, Plan, resolve_endpoint
from . import ovstrace
from .ovstrace import (Hit, Pass, bucket_words, ct_record, ct_state_after, dpif_ports, fields, flow_text, group_action,
                       group_buckets, parse, resume_at, split_actions)

MAX_CALLS = 240           # ofproto/trace calls for one trace, branches included (about 10 ms each)
MAX_LEAVES = 16           # branches followed through select groups
VXLAN_SOURCE_PORT = 49152 # the outer UDP source port (the kernel hashes the inner flow; any will do)


# ----------------------------------------------------------------------------------- the result
@dataclass
class Hop:
    """The packet on one bridge (patch-port neighbours included: a datapath pass can cross several)."""

    bridge: str                  # where it entered
    role: str
    in_port: str
    packet: str                  # source -> destination as it entered
    tables: list[str]            # "n0 table 21 (service): <note>"
    decisions: list[str]         # in the user's words
    outcome: str                 # where it went next
    bridges: list[str] = field(default_factory=list)   # every bridge of the pass (patch ports are crossed in it)


@dataclass
class Trace:
    source: str
    dest: str
    port: int
    proto: str
    hops: list[Hop]
    outcome: str                 # "delivered", "dropped", "controller", "unfinished"
    reason: str
    delivered_to: str = ""
    delivered_at: str = ""       # the address and port it was delivered to (after any DNAT)
    seen_source: str = ""        # the source address the destination received
    branches: list["Branch"] = field(default_factory=list)
    expected: object = None      # the evaluator's Explanation
    disagreement: str = ""

    def leaves(self) -> list["Trace"]:
        return [self] if not self.branches else [x for b in self.branches for x in b.trace.leaves()]

    def as_dict(self) -> dict:
        out = {"source": self.source, "dest": self.dest, "port": self.port, "protocol": self.proto,
               "outcome": self.outcome, "reason": self.reason, "delivered_to": self.delivered_to,
               "delivered_at": self.delivered_at,
               "seen_source": self.seen_source, "disagreement": self.disagreement,
               "hops": [h.__dict__ for h in self.hops],
               "branches": [{"via": b.via, **b.trace.as_dict()} for b in self.branches]}
        if self.expected is not None:
            out["expected"] = {"allowed": self.expected.allowed, "reason": self.expected.reason,
                               "seen_source": self.expected.seen_source}
        return out


@dataclass
class Branch:
    via: str                     # the bucket taken, e.g. "endpoint 10.244.1.2:8080"
    trace: Trace


# -------------------------------------------------------------------------------- the tracer
class Tracer:
    """Traces in one running network: its plan, and Open vSwitch as it holds the run's bridges."""

    def __init__(self, plan: Plan, flows: dict | None = None, appctl=None, ofctl=None):
        self.plan = plan
        self.appctl = appctl or ovstrace.appctl
        self.ofctl = ofctl or ovstrace.ofctl
        self.ports = dpif_ports(self.appctl)
        self.by_name = {p.name: (b, p) for b in plan.bridges for p in b.ports}
        self.hosts_by_veth = {h.veth: h for h in plan.hosts if h.veth}     # host-network pods have none
        self.notes: dict[tuple[str, int], tuple[str, str]] = {}      # (bridge, cookie) -> (feature, note)
        if flows is None:
            flows = compile_plan(plan)
        for name, fs in flows.items():
            for f in fs.flows:
                self.notes[(name, f.cookie)] = (f.feature, f.note)
        self.calls = 0
        self.leaves = 1

    # ---------------------------------------------------------------------------------- entry
    def trace(self, source: str, dest: str, port: int, proto: str = "tcp") -> Trace:
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise KubevpcError(f"protocol {proto!r}: expected tcp or udp")
        asked = _host(self.plan, source)
        src = self.plan.network_host(asked)        # a host-network pod sends from its node's namespace
        dst_ip = _destination_ip(self.plan, dest)
        packet = {"in_port": str(src.ofport), proto: "", "dl_src": src.mac, "dl_dst": self._next_hop_mac(src, dst_ip),
                  "nw_src": src.ip, "nw_dst": dst_ip, "nw_ttl": "64", "tp_src": "40000", "tp_dst": str(port)}
        if proto == "tcp":
            packet["tcp_flags"] = "syn"
        t = Trace(asked.key, dest, port, proto, [], "unfinished", "")
        self._segment(t, src.bridge, packet, history=[], tunnel=None)
        return t

    # ------------------------------------------------------------------------------ segments
    def _segment(self, t: Trace, bridge: str, packet: dict, history: list, tunnel: dict | None,
                 actions: str = "", ct_state: str = "") -> None:
        """Trace `packet` on `bridge`: from table 0, or with `actions` (a bucket's, or a resubmit to
        the table a ct action resumes at) in conntrack state `ct_state`. Then follow where it goes:
        another pass, a branch per bucket, another bridge, or its end."""
        hop: Hop | None = None
        while True:
            self.calls += 1
            if self.calls > MAX_CALLS:
                t.outcome, t.reason = "unfinished", f"gave up after {MAX_CALLS} ofproto/trace calls"
                return
            flow = {k: v for k, v in packet.items() if k not in ("recirc_id", "ct_state", "eth")}
            if ct_state:
                flow = {"ct_state": ct_state, **flow}
            text = (self.appctl("ofproto/trace-packet-out", bridge, flow_text(flow), actions) if actions
                    else self.appctl("ofproto/trace", bridge, flow_text(flow)))
            p = parse(text)
            if hop is None:
                hop = Hop(bridge, self.plan.bridge(bridge).role, _port_name(self.plan, bridge, packet.get("in_port", "")),
                          _addresses(packet), [], [], "")
                t.hops.append(hop)
            self._describe(hop, p)
            dp = split_actions(p.datapath_actions)
            history += [ct_record(a) for a in dp if a.startswith("ct(")]
            if not (dp and dp[-1].startswith("recirc(")):
                self._leave(t, hop, p, dp, history, tunnel)
                return
            if len(dp) > 1 and dp[-2].startswith("hash("):          # a select group, by datapath hash
                self._buckets(t, hop, p, history, tunnel)
                return
            resume = resume_at(p)
            if resume is None:
                t.outcome, t.reason = "unfinished", "a recirculation without a ct(table=...) to resume from"
                return
            rbridge, table = resume
            ct_state = ct_state_after(dp[-2] if len(dp) > 1 else "", history)
            packet = fields(p.resumed_flow or p.final_flow)
            actions = f"resubmit(,{table})"
            if rbridge != bridge:                       # the ct action was on a patch neighbour
                bridge = rbridge
                hop.outcome = f"over a patch port to {bridge}"
                hop = None

    def _buckets(self, t: Trace, hop: Hop, p: Pass, history: list, tunnel: dict | None) -> None:
        """A select group: each bucket is a branch of its own (MAX_LEAVES at most in all)."""
        gbridge, gid = group_action(p)
        buckets = group_buckets(self.ofctl, gbridge, gid)
        if not buckets:
            hop.outcome = f"select group {gid} has no bucket"
            t.outcome, t.reason = "dropped", f"group {gid} on {gbridge} has no bucket: nothing to send to (dropped)"
            return
        base = fields(p.final_flow)
        state = base.get("ct_state", "")
        room = max(1, MAX_LEAVES - self.leaves + 1)
        chosen = buckets[:room]
        self.leaves += len(chosen) - 1
        hop.outcome = f"select group {gid}: one bucket per connection" + (
            f"; {len(chosen)} of {len(buckets)} followed" if len(chosen) < len(buckets) else "; each followed")
        t.outcome, t.reason = "branches", f"{len(chosen)} bucket(s) of group {gid}"
        for actions in chosen:
            sub = Trace(t.source, t.dest, t.port, t.proto, [], "unfinished", "")
            t.branches.append(Branch(bucket_words(actions), sub))
            self._segment(sub, gbridge, dict(base), list(history), tunnel, actions=actions, ct_state=state)

    # --------------------------------------------------------------------------- where it went
    def _leave(self, t: Trace, hop: Hop, p: Pass, dp: list[str], history: list, tunnel: dict | None) -> None:
        final = fields(p.final_flow)
        outputs = [a for a in dp if a.isdigit()]
        if any(a.startswith("userspace(") for a in dp):
            refusal = any(self._feature(h) == "reject" for h in p.hits)
            hop.outcome = "to the controller (packet-in)"
            t.outcome = "controller"
            t.reason = ("sent to the controller, which answers for the Service with a TCP reset or an ICMP port "
                        "unreachable: no ready endpoint" if refusal else "sent to the controller (packet-in)")
            return
        if not outputs:
            # the flow that dropped it: counting it for the flow log (a resubmit to the flowlog tables) is not
            last = next((h for h in reversed(p.hits) if self._feature(h) != "flowlog"
                         and h.cookie >> 56 != FEATURES["flowlog_record"]), None)
            hop.outcome = "dropped"
            t.outcome = "dropped"
            if last is None:
                t.reason = "dropped"
                return
            why = self._note(last)
            t.reason = (f"dropped on {last.bridge.removeprefix(self.plan.run + '-')} in table {last.table} "
                        f"({_table_name(self.plan, last.bridge, last.table)})" + (f": {why}" if why else
                                                                                  f" by {last.match or 'its default'}"))
            return
        if len(set(outputs)) > 1:
            hop.decisions.append(f"sent to {len(outputs)} ports; following the first")
        bridge, ofport, name = self.ports.get(int(outputs[0]), ("?", 0, f"datapath port {outputs[0]}"))
        port = self.by_name.get(name)
        kind = port[1].kind if port else ""
        proto = next((x for x in ("tcp", "udp") if x in final), t.proto)
        nxt = {proto: "", **{k: final[k] for k in PACKET_FIELDS if k in final}}
        if kind in ("link", "hop"):
            pbridge, pport = self.by_name[port[1].peer]
            what = "the checksum hop (a veth pair), back" if kind == "hop" else "a veth pair,"
            hop.outcome = f"out of {name}, {what} into {pbridge.name} port {pport.ofport}"
            self._segment(t, pbridge.name, {"in_port": str(pport.ofport), **nxt}, history, tunnel)
            return
        if kind == "vxlan":
            self._encapsulate(t, hop, bridge, nxt, history)
            return
        host = self.hosts_by_veth.get(name)
        if host is None:
            hop.outcome = f"out of {bridge} port {ofport} ({name})"
            t.outcome, t.reason = "unfinished", f"out of {bridge} port {ofport} ({name}), which kubevpc does not follow"
            return
        if tunnel and host.kind == "ecs" and host.node == host.name and final.get("nw_dst") == host.ip:
            node = self.plan.node(host.node)
            hop.outcome = f"to node {node.name}'s namespace, whose VXLAN device decapsulates it"
            self._segment(t, node.bridge, {"in_port": str(OFPORT_TUNNEL), **tunnel["inner"]}, tunnel["history"], None)
            return
        hop.outcome = f"delivered to {host.key} through {name}"
        t.outcome, t.delivered_to, t.seen_source = "delivered", host.key, final.get("nw_src", "")
        t.delivered_at = f"{final.get('nw_dst')}:{final.get('tp_dst')}"
        t.reason = f"delivered to {host.key} at {final.get('nw_dst')}:{final.get('tp_dst')}, from {t.seen_source}"

    def _encapsulate(self, t: Trace, hop: Hop, bridge: str, inner: dict, history: list) -> None:
        """The kernel's VXLAN device: the inner frame's destination MAC names the peer node (its
        pods' gateway), whose address is the outer destination. The device was made in the node's
        namespace, so the outer packet leaves from there and enters the node bridge at the node's port."""
        plan = self.plan
        node = next(n for n in plan.nodes if n.bridge == bridge)
        peer = next((plan.node(x.peer) for x in node.tunnels if plan.node(x.peer).gateway_mac == inner.get("dl_dst")),
                    None)
        if peer is None:
            hop.outcome = "into the VXLAN device"
            t.outcome, t.reason = "dropped", f"the VXLAN device knows no peer at {inner.get('dl_dst')}: dropped"
            return
        host = plan.host(node.ecs)
        port = plan.cluster.vxlan_port
        outer = {"in_port": str(host.ofport), "udp": "", "dl_src": host.mac, "dl_dst": self._next_hop_mac(host, peer.ip),
                 "nw_src": node.ip, "nw_dst": peer.ip, "nw_ttl": "64", "tp_src": str(VXLAN_SOURCE_PORT),
                 "tp_dst": str(port)}
        hop.outcome = f"into the VXLAN device (port {OFPORT_TUNNEL}), to node {peer.name}"
        hop.decisions.append(f"VXLAN VNI {plan.cluster.vni}: {inner.get('nw_src')} → {inner.get('nw_dst')} is carried "
                             f"in UDP {node.ip}:{VXLAN_SOURCE_PORT} → {peer.ip}:{port}, sent from node {node.name}'s "
                             "namespace")
        # the outer packet is a connection of its own: conntrack knows nothing of it yet
        self._segment(t, bridge, outer, [], tunnel={"inner": inner, "history": history})

    # ------------------------------------------------------------------------------- wording
    def _feature(self, h: Hit) -> str:
        return self.notes.get((h.bridge, h.cookie), ("", ""))[0]

    def _note(self, h: Hit) -> str:
        return self.notes.get((h.bridge, h.cookie), ("", ""))[1]

    def _describe(self, hop: Hop, p: Pass) -> None:
        for h in p.hits:
            short = h.bridge.removeprefix(self.plan.run + "-")
            note = self._note(h)
            hop.tables.append(f"{short} table {h.table} ({_table_name(self.plan, h.bridge, h.table)}): "
                              + (note or f"{h.match or 'any'}, priority {h.priority} [cookie {h.cookie:#x}]"))
            if short not in hop.bridges:
                hop.bridges.append(short)
            if note and self._feature(h) in DECISIONS and not any(x in note for x in ROUTINE) \
                    and note not in hop.decisions:
                hop.decisions.append(note)
        for a in split_actions(p.datapath_actions):
            m = re.search(r"nat\((src|dst)=([^)]*)\)", a)
            if a.startswith("ct(") and m:
                zone = re.search(r"zone=(\d+)", a)
                hop.decisions.append(f"{'SNAT' if m.group(1) == 'src' else 'DNAT'} to {m.group(2)}"
                                     + (f" (conntrack zone {zone.group(1)})" if zone else ""))

    def _next_hop_mac(self, h: HostPlan, ip: str) -> str:
        """The MAC a host sends to for `ip`: the owner's on its own subnet, else its gateway's."""
        net = ipaddress.IPv4Network(f"{h.ip}/{h.prefixlen}", strict=False)
        if ipaddress.IPv4Address(ip) in net and ip != h.gateway:
            owner = next((x for x in self.plan.hosts if x.ip == ip), None)
            if owner is not None:
                return owner.mac
            att = next((a for a in self.plan.attachments if a.ip == ip), None)
            if att is not None:
                return att.mac
        return h.gateway_mac


# the flows whose notes are decisions in the user's words (but for the routine ones)
DECISIONS = ("secgroup", "netpol", "route", "eip", "natgw", "slb", "snat", "reject", "spoof", "tunnel", "edge",
             "service", "uplink", "pod", "host", "resolver")
ROUTINE = ("everything else", "not for an SLB listener", "not isolated for", "established connections pass",
           ": dimension ", "a new connection not for a Service", "not a Service connection", "on to the policy tables",
           "where the policy tables read them", "established, related, replies", "conntrack with NAT")
PACKET_FIELDS = ("dl_src", "dl_dst", "nw_src", "nw_dst", "nw_ttl", "tp_src", "tp_dst", "tcp_flags")


def _addresses(packet: dict) -> str:
    return f"{packet.get('nw_src')}:{packet.get('tp_src')} → {packet.get('nw_dst')}:{packet.get('tp_dst')}"


OFPORT_TUNNEL = 100


def _table_name(plan: Plan, bridge: str, table: int) -> str:
    try:
        role = plan.bridge(bridge).role
        return PIPELINES[role].by_id(table).name
    except KeyError:
        return "?"


def _port_name(plan: Plan, bridge: str, in_port: str) -> str:
    try:
        b = plan.bridge(bridge)
    except KeyError:
        return in_port
    for p in b.ports:
        if str(p.ofport) == str(in_port):
            return f"{p.ofport} ({p.name}, {p.kind}{' from ' + p.peer if p.peer else ''})"
    return str(in_port)


def _host(plan: Plan, ref: str) -> HostPlan:
    try:
        return resolve_endpoint(plan, ref)
    except KeyError:
        raise KubevpcError(f"no endpoint {ref!r}; expected pod/<namespace>/<name>, ecs/<name>, node/<name> or "
                           f"inet/<name>") from None


def _destination_ip(plan: Plan, dest: str) -> str:
    if dest.startswith("svc/"):
        try:
            svc = plan.service(dest.removeprefix("svc/"))
        except KeyError:
            raise KubevpcError(f"no Service {dest!r}") from None
        if not svc.cluster_ip:
            raise KubevpcError(f"Service {svc.key} has no ClusterIP")
        return svc.cluster_ip
    if dest.startswith("eip/"):
        eip = next((e for e in plan.eips if e.name == dest[4:]), None)
        if eip is None:
            raise KubevpcError(f"no EIP {dest[4:]!r}")
        return eip.ip
    if dest.startswith("slb/"):
        slb = next((s for s in plan.slbs if s.host == dest), None)
        if slb is None:
            raise KubevpcError(f"no SLB {dest!r}")
        return slb.vip
    try:
        return str(ipaddress.IPv4Address(dest))
    except ValueError:
        return _host(plan, dest).ip


# ------------------------------------------------------------------------- beside the evaluator
def compare(t: Trace, expected) -> str:
    """What differs between the trace and the evaluator's Explanation ("" when they agree): the
    network's verdict (delivered or not, on every branch), and the client address."""
    leaves = t.leaves()
    unfinished = [x for x in leaves if x.outcome not in ("delivered", "dropped", "refused", "controller")]
    if unfinished:
        return f"the trace cannot say: it ends {unfinished[0].outcome}: {unfinished[0].reason}"
    # a refusal by a destination that does not listen is the network's delivery (port 1 of a node
    # is one: the node refuses it itself)
    listens = not any(s.stage == "destination" and s.passes is False for s in _all_steps(expected))
    delivered = [x for x in leaves if x.outcome == "delivered" or (not listens and x.outcome == "refused")]
    want = expected.allowed if listens else True
    refused = [x for x in leaves if x.outcome in ("refused", "controller")]
    if want is False and refused and not delivered:
        return ""                        # refused on the way (no endpoint): the evaluator's refusal too
    if want is True and len(delivered) != len(leaves):
        bad = next(x for x in leaves if x.outcome != "delivered")
        return f"the evaluator says it connects, but the trace ends {bad.outcome}: {bad.reason}"
    if want is False and delivered:
        return f"the evaluator says it does not connect ({expected.reason}), but the trace delivers it: {delivered[0].reason}"
    if want is None and (not delivered or len(delivered) == len(leaves)):
        return ("the evaluator says it depends on the endpoint, but the trace " +
                ("delivers every branch" if delivered else "delivers no branch"))
    if want is True and expected.seen_source and any(x.seen_source != expected.seen_source for x in delivered):
        other = next(x for x in delivered if x.seen_source != expected.seen_source)
        return f"the evaluator expects the server to see {expected.seen_source}, the trace delivers from {other.seen_source}"
    return ""


def _all_steps(e) -> list:
    return list(e.steps) + [s for b in e.branches for s in _all_steps(b.explanation)]


def trace(plan: Plan, source: str, dest: str, port: int, proto: str = "tcp", health: dict | None = None) -> Trace:
    """Trace a connection in the running network of `plan`, with the evaluator's verdict beside it."""
    t = Tracer(plan, compile_plan(plan, health)).trace(source, dest, port, proto)
    for leaf in t.leaves():
        if leaf.outcome == "delivered" and leaf.delivered_to.startswith("ecs/") \
                and leaf.delivered_at.endswith(f":{REJECT_PORT}"):
            leaf.outcome = "refused"
            leaf.reason += f" (port {REJECT_PORT}, where nothing listens: the node refuses it, as kube-proxy does " \
                           "for a Service without endpoints)"
    try:
        t.expected = explain(plan, source, dest, port, proto)
    except KubevpcError as exc:
        t.disagreement = f"the evaluator cannot judge it: {exc}"
        return t
    t.disagreement = compare(t, t.expected)
    return t


REJECT_PORT = 1
