"""Rule counters and flow logs of a running scenario.

**Rule counters.** Every flow carries a cookie (controller/flows.py: feature, object, content),
and Open vSwitch counts the packets and bytes each flow matched. Read by cookie and named by the
compiler's notes, those counters say what each security group rule and each NetworkPolicy did:
a security group rule sees the first packet of each connection (later packets pass as
established), an isolation or drop flow every packet it dropped.

**Flow logs** (the fields of Alibaba Cloud VPC Flow Logs) are kept by the vSwitches themselves:
when a security group accepts a new connection at an ENI, the vSwitch learns a flow per
direction in its `flowlog` table, matching the connection's original tuple (conntrack's
ct_nw_src and friends) and the side of the ENI; every later packet of the connection, both
ways, is counted there. When it drops one, it learns a REJECT flow the same way. The controller
reads that table every second; a flow that has been idle for the capture window expires, and its
last counts become a record in the run's flowlog.jsonl. Records of flows still alive are read
from the table directly. The first packet in each direction creates its record's flow and is
not in its counts (Open vSwitch installs a learned flow after the packet that learned it):
`packets` adds it back, `bytes` cannot, and says so (`first_packet_bytes_uncounted`).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from .errors import KubevpcError
from .plan import Plan

FLOW = re.compile(r"cookie=(0x[0-9a-f]+).*?table=(\d+), n_packets=(\d+), n_bytes=(\d+)")


@dataclass(frozen=True)
class Counter:
    kind: str                # "security group", "NetworkPolicy"
    name: str                # the compiler's note: the rule, the attachment or pod, what it does
    action: str              # "accept", "drop"
    bridge: str
    packets: int
    bytes: int


def dump_flows(bridge: str) -> str:
    try:
        res = subprocess.run(["ovs-ofctl", "--timeout=10", "-O", "OpenFlow13", "dump-flows", bridge],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
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
            action = "drop" if not f.actions else "accept"
            kind = "security group" if f.feature == "secgroup" else "NetworkPolicy"
            if kind == "NetworkPolicy" and ": dimension " in f.note:
                continue                 # a conjunction's parts: the conj_id flow counts the connection
            key = (kind, f.note, action, bridge.removeprefix(plan.run + "-"))
            total = out.setdefault(key, [0, 0])
            total[0] += int(m.group(3))
            total[1] += int(m.group(4))
    return [Counter(*key, *value) for key, value in sorted(out.items())]


def read_counters(plan: Plan, health: dict | None = None) -> list[Counter]:
    from controller.compile import compile_plan
    compiled = compile_plan(plan, health)
    return rule_counters(plan, compiled, {b.name: dump_flows(b.name) for b in plan.bridges
                                          if b.role in ("vswitch", "node")})


def top_drops(counters: list[Counter], n: int = 5) -> list[Counter]:
    return sorted((c for c in counters if c.action == "drop" and c.packets), key=lambda c: -c.packets)[:n]
