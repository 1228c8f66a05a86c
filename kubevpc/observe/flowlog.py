"""Rule counters and flow logs of a running scenario.

**Rule counters.** Every flow carries a cookie (controller/flows.py: feature, object, content),
and Open vSwitch counts the packets and bytes each flow matched. Read by cookie and named by the
compiler's notes, those counters say what each security group rule and each NetworkPolicy did:
a security group rule sees the first packet of each connection (later packets pass as
established), an isolation or drop flow every packet it dropped.

**Flow logs** (the fields of Alibaba Cloud VPC Flow Logs, per ENI) are kept by the vSwitches
themselves: when a security group accepts a new connection at an ENI, the vSwitch learns a flow
per direction in its `flowlog` table (controller/flowlog.py: flowlog_flows), matching the
connection's tuple, the ENI's port and the side of the ENI; every later packet of the
connection, both ways, is counted there. When a rule rejects one, it learns a REJECT flow the
same way, which counts the retries. Learned flows expire once idle for the window and the switch
reports their counters to the controller (OFPT_FLOW_REMOVED); every window the controller also
reads the live ones, and writes what each counted since it last wrote, as a record, to the run's
flowlog.jsonl: a connection that lasts longer than a window gets a record per window, as in the
cloud. The packet that learns a flow is not in its counts (Open vSwitch installs a learned flow
after the packet that learned it): `packets` adds it back, `bytes` cannot, and the record says
so (`first-packet-bytes`: "uncounted").
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator

from controller.compile import compile_plan
from controller.flows import FEATURES, FLOWLOG_TABLES
from controller.pipeline import FLOWLOG_OUT

from ..errors import KubevpcError
from ..planning import Attachment, Plan
from ..rundir import RunDir

FLOW = re.compile(r"cookie=(0x[0-9a-f]+).*?table=(\d+), n_packets=(\d+), n_bytes=(\d+)")


@dataclass(frozen=True)
class Counter:
    kind: str                # "security group", "NetworkPolicy"
    name: str                # the compiler's note: the rule, the attachment or pod, what it does
    action: str              # "accept", "drop"
    bridge: str
    packets: int
    bytes: int


def dump_flows(bridge: str, table: int | None = None) -> str:
    """`ovs-ofctl dump-flows` of a bridge (of one table), within a deadline."""
    cmd = ["ovs-ofctl", "--timeout=10", "-O", "OpenFlow13", "dump-flows", bridge] + (
        [f"table={table}"] if table is not None else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KubevpcError(f"ovs-ofctl dump-flows {bridge} did not answer within 20 s") from None
    if res.returncode != 0:
        raise KubevpcError(f"ovs-ofctl dump-flows {bridge} failed: {res.stderr.strip()}")
    return res.stdout


def rule_counters(plan: Plan, compiled: dict, dumps: dict[str, str]) -> list[Counter]:
    """The counters of the security group and NetworkPolicy flows, by cookie, summed per note;
    `dumps` is each bridge's dump-flows text, `compiled` compile_plan's flow sets."""
    out: dict[tuple, list[int]] = {}
    for bridge, text in dumps.items():
        by_cookie = {f.cookie: f for f in compiled[bridge].flows} if bridge in compiled else {}
        for line in text.splitlines():
            m = FLOW.search(line)
            if not m:
                continue
            f = by_cookie.get(int(m.group(1), 16))
            if f is None or f.feature not in ("secgroup", "netpol") or not f.note:
                continue
            action = "drop" if f.drops else "accept"
            kind = "security group" if f.feature == "secgroup" else "NetworkPolicy"
            if kind == "NetworkPolicy" and ": dimension " in f.note:
                continue                 # a conjunction's parts: the conj_id flow counts the connection
            key = (kind, f.note, action, bridge.removeprefix(plan.run + "-"))
            total = out.setdefault(key, [0, 0])
            total[0] += int(m.group(3))
            total[1] += int(m.group(4))
    return [Counter(*key, *value) for key, value in sorted(out.items())]


def read_counters(plan: Plan, health: dict | None = None) -> list[Counter]:
    compiled = compile_plan(plan, health)
    return rule_counters(plan, compiled, {b.name: dump_flows(b.name) for b in plan.bridges
                                          if b.role in ("vswitch", "node")})


def top_drops(counters: list[Counter], n: int = 5) -> list[Counter]:
    return sorted((c for c in counters if c.action == "drop" and c.packets), key=lambda c: -c.packets)[:n]


# ------------------------------------------------------------------------------- flow logs
FLOWLOG_VERSION = 1
FLOWLOG_RECORD = FEATURES["flowlog_record"]
MAX_FLOWLOG_BYTES = 64 << 20            # then flowlog.jsonl becomes flowlog.jsonl.1 (one generation kept)
FIELDS = ("version", "vpc-id", "vswitch-id", "vm-id", "eni-id", "srcaddr", "srcport", "dstaddr", "dstport",
          "protocol", "direction", "packets", "bytes", "start", "end", "action", "log-status")


@dataclass(frozen=True)
class LearnedFlow:
    """A flow-log flow as the switch holds or held it: the bridge, its cookie, its match (os-ken's
    field names), counters, and when it was learned."""

    bridge: str
    cookie: int
    match: tuple
    packets: int
    bytes: int
    learned_at: float

    def key(self) -> tuple:
        return self.bridge, self.cookie, self.match


def decode_cookie(cookie: int) -> tuple[int, bool, bool] | None:
    """(direction, accept, first) of a learned flow-log flow's cookie; None for any other cookie."""
    if cookie >> 56 != FLOWLOG_RECORD:
        return None
    bits = (cookie >> 32) & 0xFFFF
    return bits >> 2, bool(bits & 1), bool(bits & 2)


class _Index:
    """What eni_at, eni_names and record look up in a plan, by key: a flow log window of a 100 x 100
    matrix makes some 15,000 records, and a scan of the plan's attachments for each took seconds."""

    def __init__(self, plan: Plan) -> None:
        self.vswitch_of_bridge: dict[str, str] = {}
        for v in plan.vswitches:
            self.vswitch_of_bridge.setdefault(v.bridge, v.name)
        self.vswitches = {v.name: v for v in plan.vswitches}
        self.node_of = {h.key: h.node for h in plan.hosts}
        self.at: dict[tuple[str, int], list[Attachment]] = {}
        for a in plan.attachments:
            self.at.setdefault((a.vswitch, a.ofport), []).append(a)
        self.routed = {key: [ipaddress.ip_network(a.ip) for a in here if "/" in a.ip] for key, here in self.at.items()}


_INDEXES: dict[int, tuple[Plan, _Index]] = {}


def _index(plan: Plan) -> _Index:
    """The plan's _Index, made once per plan object (the controller keeps one plan per change)."""
    hit = _INDEXES.get(id(plan))
    if hit is None or hit[0] is not plan:
        if len(_INDEXES) >= 8:
            _INDEXES.clear()
        hit = _INDEXES[id(plan)] = (plan, _Index(plan))
    return hit[1]


def eni_at(plan: Plan, bridge: str, ofport: int, address: str) -> Attachment | None:
    """The ENI behind a vSwitch port that holds this address: the attachment with the address
    itself (an ECS instance, a node, an eni-mode pod), else the port's primary attachment when
    the address is in a CIDR routed to it (pods in vpc-route mode)."""
    index = _index(plan)
    key = (index.vswitch_of_bridge.get(bridge), ofport)
    here = index.at.get(key, [])
    exact = next((a for a in here if a.ip == address), None)
    if exact is not None:
        return exact
    primary = next((a for a in here if "/" not in a.ip and not a.owner.startswith("route/")), None)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if any(ip in net for net in index.routed.get(key, [])):
        return primary
    return None


def eni_names(plan: Plan, a: Attachment) -> tuple[str, str]:
    """(eni-id, vm-id) of an attachment: eni-<instance> for an instance's primary ENI, and
    eni-<namespace>-<pod> on the pod's node for an eni-mode pod."""
    kind, _, name = a.owner.partition("/")
    if kind == "pod":
        return "eni-" + name.replace("/", "-"), _index(plan).node_of.get(a.owner, "")
    return "eni-" + name, name


def record(plan: Plan, f: LearnedFlow, packets: int, nbytes: int, start: float, end: float,
           with_first: bool) -> dict | None:
    """A flow log record of what a learned flow counted over [start, end]; with_first: the record
    includes the packet that learned the flow (not in the switch's counts). None when the flow
    is not a flow-log flow or no ENI matches it."""
    decoded = decode_cookie(f.cookie)
    if decoded is None:
        return None
    direction, accept, first = decoded
    m = dict(f.match)
    out = direction == FLOWLOG_OUT
    port = m.get("in_port") if out else m.get("reg1")
    src, dst = m.get("ipv4_src"), m.get("ipv4_dst")
    if port is None or src is None or dst is None:
        return None
    a = eni_at(plan, f.bridge, int(port), src if out else dst)
    if a is None:
        return None
    eni, vm = eni_names(plan, a)
    vsw = _index(plan).vswitches[a.vswitch]
    proto = int(m.get("ip_proto", 0))
    add_first = with_first and first
    if packets + int(add_first) == 0:
        return None                    # a direction nothing travelled in (no reply)
    rec = {"version": FLOWLOG_VERSION, "vpc-id": vsw.vpc, "vswitch-id": vsw.name, "vm-id": vm, "eni-id": eni,
           "srcaddr": src, "srcport": int(m.get("tcp_src", m.get("udp_src", 0))),
           "dstaddr": dst, "dstport": int(m.get("tcp_dst", m.get("udp_dst", 0))),
           "protocol": proto, "direction": "out" if out else "in",
           "packets": packets + int(add_first), "bytes": nbytes,
           "start": int(start), "end": int(end), "action": "ACCEPT" if accept else "REJECT", "log-status": "OK"}
    if add_first:
        rec["first-packet-bytes"] = "uncounted"
    return rec


_OFCTL_NAMES = {"nw_src": "ipv4_src", "nw_dst": "ipv4_dst", "nw_proto": "ip_proto", "dl_type": "eth_type"}
_OFCTL_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}


def parse_learned(bridge: str, text: str, now: float | None = None) -> list[LearnedFlow]:
    """The flow-log flows in `ovs-ofctl dump-flows` output (table=70): os-ken field names, so that
    they read as the controller's OFPT_FLOW_REMOVED matches do."""
    now = time.time() if now is None else now
    out = []
    for line in text.splitlines():
        m = re.search(r"cookie=(0x[0-9a-f]+), duration=([\d.]+)s, table=70, n_packets=(\d+), n_bytes=(\d+), "
                      r".*?priority=100,(\S+)", line)
        if not m or decode_cookie(int(m.group(1), 16)) is None:
            continue
        fields: dict[str, int | str] = {}
        for part in m.group(5).split(","):
            key, eq, value = part.partition("=")
            if not eq:
                if key in _OFCTL_PROTOS:
                    fields.update(eth_type=0x800, ip_proto=_OFCTL_PROTOS[key])
                elif key == "ip":
                    fields["eth_type"] = 0x800
                continue
            key = _OFCTL_NAMES.get(key, key)
            if key in ("tp_src", "tp_dst"):
                continue
            fields[key] = value if key in ("ipv4_src", "ipv4_dst") else int(value, 0)
        for tp in ("tp_src", "tp_dst"):
            tm = re.search(rf"\b{tp}=(\d+)", m.group(5))
            if tm:
                proto = {6: "tcp", 17: "udp"}.get(int(fields.get("ip_proto", 0)))
                if proto:
                    fields[f"{proto}_{tp[3:]}"] = int(tm.group(1))
        out.append(LearnedFlow(bridge, int(m.group(1), 16), tuple(sorted(fields.items())), int(m.group(3)),
                               int(m.group(4)), now - float(m.group(2))))
    return out


def dump_learned(plan: Plan) -> list[LearnedFlow]:
    """The flow-log flows every vSwitch of a run holds now."""
    out = []
    for b in plan.bridges:
        if b.role == "vswitch":
            out += parse_learned(b.name, dump_flows(b.name, FLOWLOG_TABLES[0]))
    return out


class Recorder:
    """What the controller keeps between windows: what each live flow-log flow had counted when
    it was last written. `window` gives live flows' records; `removed` the last of a flow."""

    def __init__(self, plan: Plan, path: str):
        self.plan, self.path = plan, path
        self.written: dict[tuple, tuple[int, int, float]] = {}   # key: (packets, bytes, until)

    def window(self, live: list[LearnedFlow], now: float) -> list[dict]:
        records = []
        for f in live:
            before = self.written.get(f.key())
            packets, nbytes, since = before if before else (0, 0, f.learned_at)
            if before and f.packets == packets:
                continue
            rec = record(self.plan, f, f.packets - packets, f.bytes - nbytes, since, now, before is None)
            self.written[f.key()] = (f.packets, f.bytes, now)
            if rec:
                records.append(rec)
        return records

    def removed(self, f: LearnedFlow, idle_timeout: int, now: float) -> dict | None:
        before = self.written.pop(f.key(), None)
        packets, nbytes, since = before if before else (0, 0, f.learned_at)
        if before and f.packets == packets:
            return None
        end = max(since, now - idle_timeout)        # idle for the window: the last packet was about then
        return record(self.plan, f, f.packets - packets, f.bytes - nbytes, since, end, before is None)

    def write(self, records: list[dict]) -> None:  # not an atomic write: appends, and rotates the log
        if not records:
            return
        try:
            if os.path.getsize(self.path) > MAX_FLOWLOG_BYTES:
                os.replace(self.path, self.path + ".1")
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as fh:
            for r in records:
                fh.write(json.dumps(r, sort_keys=False) + "\n")


def read_records(state_dir: str) -> list[dict]:
    """The run's flow log records, oldest first (the previous generation too)."""
    out = []
    path = RunDir(state_dir).flowlog
    for name in (path + ".1", path):
        out += list(_lines(name))
    return out


def _lines(path: str, offset: int = 0) -> Iterator[dict]:
    try:
        with open(path) as fh:
            fh.seek(offset)
            for line in fh:
                if line.endswith("\n"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
    except FileNotFoundError:
        return


def live_records(plan: Plan, learned: list[LearnedFlow], now: float | None = None) -> list[dict]:
    """Records of the flows still alive, as they stand (log-status ACTIVE): what `kubevpc flowlog`
    adds to the written ones."""
    now = time.time() if now is None else now
    out = []
    for f in learned:
        rec = record(plan, f, f.packets, f.bytes, f.learned_at, now, True)
        if rec:
            rec["log-status"] = "ACTIVE"
            out.append(rec)
    return out
