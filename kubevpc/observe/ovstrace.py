"""What Open vSwitch says, for `kubevpc trace` (kubevpc.observe.trace): the text of
`ovs-appctl ofproto/trace` parsed into the flows each pass matched, its datapath actions and the
flow a recirculation resumes with; flows as ofproto/trace prints and takes them; the conntrack
state a connection's first packet has after a ct action; the bridge and table a ct action resumes
at; a select group's buckets (`ovs-ofctl dump-groups`); datapath ports (`dpif/show`). And the two
commands themselves, each within a deadline."""
from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass, field

from ..errors import KubevpcError


@dataclass
class Hit:
    """One flow matched in one table of one bridge."""

    bridge: str
    table: int
    priority: int
    cookie: int
    match: str
    actions: list[str] = field(default_factory=list)


@dataclass
class Pass:
    """The first datapath pass of an ofproto/trace call, up to its first recirculation."""

    flow: str
    hits: list[Hit]
    final_flow: str
    datapath_actions: str
    resumed_flow: str = ""       # the "Flow:" of the recirculation after it (NAT simulated), if any


HIT = re.compile(r"^\s*(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?\s*$")
BRIDGE = re.compile(r'^\s*bridge\("([^"]+)"\)')


def parse(text: str) -> Pass:
    """The first pass of ofproto/trace's text output, and the flow its next recirculation resumes with."""
    first, _, rest = text.partition("\n" + "=" * 79 + "\nrecirc(")
    flow = final = actions = ""
    hits: list[Hit] = []
    bridge = ""
    for line in first.splitlines():
        if line.startswith("Flow: "):
            flow = line[6:].strip()
        elif line.startswith("Final flow: "):
            final = line[12:].strip()
        elif line.startswith("Datapath actions: "):
            actions = line[18:].strip()
        elif m := BRIDGE.match(line):
            bridge = m.group(1)
        elif m := HIT.match(line):
            hits.append(Hit(bridge, int(m.group(1)), int(m.group(3)), int(m.group(4) or "0", 16), m.group(2) or ""))
        elif hits and line.startswith("    ") and line.strip() and not line.strip().startswith("->"):
            hits[-1].actions.append(line.strip())
    if final in ("", "unchanged"):
        final = flow
    resumed = ""
    for line in rest.splitlines():
        if line.startswith("Flow: "):
            resumed = line[6:].strip()
            break
    return Pass(flow, hits, final, actions, resumed)


def fields(flow: str) -> dict[str, str]:
    """A flow's text (as ofproto/trace prints it) as key=value pairs; bare words map to ""."""
    out: dict[str, str] = {}
    for part in flow.split(","):
        key, sep, value = part.partition("=")
        out[key.strip()] = value if sep else ""
    return out


def flow_text(f: dict[str, str]) -> str:
    """A flow as ofproto/trace takes it (its parser knows tp_src and tp_dst for TCP only)."""
    proto = "udp" if "udp" in f else ""
    names = {"tp_src": f"{proto}_src", "tp_dst": f"{proto}_dst"} if proto else {}
    return ",".join(names.get(k, k) if v == "" else f"{names.get(k, k)}={v}" for k, v in f.items())


def split_actions(text: str) -> list[str]:
    """Datapath actions, split at the commas that are not inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return [a.strip() for a in out if a.strip()]


def ct_record(action: str) -> tuple[int, str, bool]:
    """(zone, "src"/"dst"/"", committed) of a datapath ct action."""
    zone = int(re.search(r"zone=(\d+)", action).group(1)) if "zone=" in action else 0
    kind = "dst" if "nat(dst" in action else "src" if "nat(src" in action else ""
    return zone, kind, "commit" in action


def ct_state_after(action: str, history: list) -> str:
    """The conntrack state of a connection's first packet after `action` (ofproto/trace's flow
    syntax): new, plus dnat or snat when it was translated in that zone, by this action or by a
    commit before it (a lookup without nat translates nothing)."""
    zone, kind, _ = ct_record(action) if action.startswith("ct(") else (0, "", False)
    kinds = {k for z, k, committed in history if z == zone and committed and k} if "nat" in action else set()
    if kind:
        kinds.add(kind)
    return "|".join(["new", "trk"] + [{"dst": "dnat", "src": "snat"}[k] for k in sorted(kinds)])


def resume_at(p: Pass) -> tuple[str, int] | None:
    """The bridge and table a pass's last ct(table=...) action resumes at."""
    for h in reversed(p.hits):
        for a in reversed(h.actions):
            m = re.match(r"ct\((.*)\)$", a)
            if m and "table=" in a:
                return h.bridge, int(re.search(r"table=(\d+)", a).group(1))
    return None


def group_action(p: Pass) -> tuple[str, int]:
    for h in reversed(p.hits):
        for a in reversed(h.actions):
            m = re.match(r"group:(\d+)", a)
            if m:
                return h.bridge, int(m.group(1))
    raise KubevpcError("a select group's recirculation without a group action")


def group_buckets(ofctl, bridge: str, gid: int) -> list[str]:
    out = ofctl(["-O", "OpenFlow13", "dump-groups", bridge, f"group_id={gid}"])
    for line in out.splitlines():
        if f"group_id={gid}," in line:
            return [b.split("actions=", 1)[1].rstrip(",") for b in line.split("bucket=")[1:]]
    return []


def bucket_words(actions: str) -> str:
    ip = re.search(r"set_field:(0x[0-9a-f]+)->reg2", actions)
    port = re.search(r"set_field:(0x[0-9a-f]+)->reg3", actions)
    if ip and port:
        return f"endpoint {ipaddress.IPv4Address(int(ip.group(1), 16))}:{int(port.group(1), 16)}"
    return f"bucket {actions}"


def appctl(*args: str) -> str:
    try:
        res = subprocess.run(["ovs-appctl", "--timeout=10", *args], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KubevpcError(f"ovs-appctl {args[0]} did not answer within 20 s") from None
    if res.returncode != 0:
        raise KubevpcError(f"ovs-appctl {' '.join(args[:2])} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def ofctl(args: list[str]) -> str:
    res = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, timeout=20,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise KubevpcError(f"ovs-ofctl {' '.join(args[:3])} failed: {res.stderr.strip()}")
    return res.stdout


def dpif_ports(appctl) -> dict[int, tuple[str, int, str]]:
    """Datapath port number -> (bridge, OpenFlow port, port name), from dpif/show."""
    out: dict[int, tuple[str, int, str]] = {}
    bridge = ""
    for line in appctl("dpif/show").splitlines():
        if line.startswith("  ") and not line.startswith("    ") and line.strip().endswith(":"):
            bridge = line.strip()[:-1]
            continue
        m = re.match(r"^\s{4}(\S+) (\d+)/(\d+):", line)
        if m:
            out[int(m.group(3))] = (bridge, int(m.group(2)), m.group(1))
    return out
