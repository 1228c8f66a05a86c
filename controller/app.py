"""The os-ken application: a thin shell around the pure compilers (controller/compile.py) and the
pure reconcile (controller/reconcile.py).

It reads the run's plan, compiles the flows of every bridge, and on each switch connection
reconciles the switch's flow table with them by cookie (flows whose cookie is not wanted are
deleted, wanted ones that are missing are added; unchanged flows are not touched). It is told when
the plan file changes and sends each bridge its difference (controller/planwatch.py). What to
send, and when a bridge is programmed, is decided by controller/reconcile.py; this module
translates os-ken's events into its arguments and its messages into os-ken's (the flow and group
mods of one step in one write, inside one OpenFlow bundle: controller/ofmsg.py's Batch), and
keeps per bridge only what that translation needs (`Link`). One lock keeps the handlers and the
plan watcher from reconciling a bridge at the same time.
Packet-ins are counted per bridge: in steady state there are none, except TTL expiries, which it
answers with ICMP time exceeded so that traceroute shows the hops.

Status (connected bridges, flow counts, packet-ins) is written atomically to status.json in the
run's state directory; the runner waits on it with a deadline. A bridge counts as programmed only
once the switch has answered a barrier after the last change and a dump of its flow table that
holds every flow wanted and nothing stale, by cookie: what the switch holds, not what was sent.

Only ovs-vswitchd may connect (its pid, from its pidfile, against the connection's peer
credentials), and a second connection for a bridge that is connected already is refused while
the first one is alive: both are reported in status.json ("refused") and the log, and get nothing.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.lib.packet import ethernet, icmp, ipv4, packet
from os_ken.ofproto import ofproto_v1_3

from kubevpc.observe.flowlog import LearnedFlow, Recorder
from kubevpc.rundir import RunDir, atomic_write, ovs_rundir
from kubevpc.planning import Plan

from . import reconcile
from .flows import FEATURES
from .ndp import advertisement
from .refuse import refusal
from .ofmsg import Batch, delete_cookie_bytes, flow_mod_bytes, group_mod, lean_flow_stats
from .planwatch import PlanWatch, ms
from .purge import Purge
from .reconcile import AddFlow, Barrier, BridgeState, DeleteFlow, Desired, GroupMod, Outcome, ReadBack
from .settings import settings
from .watch import DirWatch

REJECT, FLOWLOG_RECORD, ND = FEATURES["reject"], FEATURES["flowlog_record"], FEATURES["nd"]

LOG = logging.getLogger("kubevpc.controller")
SO_PEERCRED_SIZE = struct.calcsize("3i")


def peer(sock) -> tuple[int | None, int | None]:
    """The connecting process's pid and uid (SO_PEERCRED), or (None, None) for a socket without them."""
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, SO_PEERCRED_SIZE))
    except (OSError, AttributeError):
        return None, None
    return pid, uid


def vswitchd_pid() -> int | None:
    """ovs-vswitchd's pid, from its pidfile (the daemon's own, not its monitor's)."""
    try:
        with open(os.path.join(ovs_rundir(), "ovs-vswitchd.pid"), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def hung_up(sock) -> bool:
    """Has the peer closed this connection, or has it failed? (Unread data does not hide it.)"""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _previous_plan_version(state_dir: str) -> int:
    """The plan version of the controller this one replaces (0 for the first): versions only grow."""
    try:
        with open(RunDir(state_dir).status, encoding="utf-8") as fh:
            return int(json.load(fh).get("plan_version", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _logged(handler):
    """os-ken drops a handler's exception silently: log it and put it in status.json. A handler
    runs holding the application's lock (the plan watcher sends to the bridges too)."""
    @functools.wraps(handler)
    def wrapper(self, ev):
        with self.lock:
            try:
                return handler(self, ev)
            except Exception as exc:
                LOG.exception("%s failed", handler.__name__)
                self.status["errors"].append(f"{handler.__name__}: {type(exc).__name__}: {exc}")
                self._write_status()
    return wrapper


@dataclass
class Link:
    """One bridge as the shell sees it: its connection while there is one, the xids of its latest
    requests (a new plan may come while a read-back is under way: replies are taken only from the
    latest requests), the parts of multipart replies collected so far, and the reconcile's state."""

    state: BridgeState
    dp: Any = None                                          # os-ken's Datapath, while connected
    dump_xids: tuple[int | None, int | None] = (None, None)  # (group desc, flow stats) of the latest read-back
    groups: set[int] | None = None                          # group ids of the read-back under way
    cookies: set[int] | None = None                         # cookies of the read-back under way
    barrier_xid: int | None = None                          # the latest barrier
    flowlog_xid: int | None = None                          # the latest flow-log window's stats request
    flowlog_live: list = field(default_factory=list)        # flow-log flows collected from its reply
    bundle_id: int = 0                                      # the latest bundle opened on this connection


class KubevpcController(PlanWatch, app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan_path = os.environ["KUBEVPC_PLAN"]
        self.state_dir = os.environ["KUBEVPC_STATE"]
        self.plan: Plan | None = None
        self.plan_mtime = 0                 # st_mtime_ns of the plan.json loaded
        self.desired: dict[str, Desired] = {}     # bridge name -> what it should hold at the current plan version
        self.by_dpid: dict[int, str] = {}         # dpid -> bridge name
        self.links: dict[str, Link] = {}          # bridge name -> its connection and reconcile state
        self.status = {"pid": os.getpid(), "started": time.time(), "bridges": {}, "errors": [], "refused": [],
                       "plan_version": _previous_plan_version(self.state_dir)}
        self.health, self.health_stamps = {}, ()
        self.loads, self.loads_changed = {}, False    # wlc: established connections per backend
        self.flowlog: Recorder | None = None
        self.change_timing: dict = {}     # the plan version in force: when it was seen, and its phases
        # every handler and the plan watcher take it: one thread at a time reconciles
        self.lock = threading.RLock()
        self.settings = self._settings()
        self.purge = Purge(self.settings["purge"])
        self.stopped = threading.Event()
        self.watch = DirWatch({os.path.dirname(self.plan_path), self.state_dir})
        self.status["notified"] = self.watch.notified
        lean_flow_stats()
        self._reload()
        hub.spawn(self._watch_plan)
        hub.spawn(self._watch_loads)
        hub.spawn(self._watch_flowlog)

    def _settings(self) -> dict:
        """KUBEVPC_BUNDLE and KUBEVPC_PURGE (controller/settings.py); the builder refuses bad
        values before it starts the controller, so a bad one here is an error and the defaults."""
        try:
            out = settings()
        except ValueError as exc:
            LOG.error("%s", exc)
            self.status["errors"].append(str(exc))
            out = settings({})
        self.status["settings"] = out
        return out

    def _write_status(self):
        atomic_write(RunDir(self.state_dir).status, json.dumps({**self.status, "time": time.time()}, indent=1, sort_keys=True))

    # ----------------------------------------------------------------------------- switches
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @_logged
    def _features(self, ev):
        dp = ev.msg.datapath
        name = self.by_dpid.get(dp.id)
        why = self._refusal(dp, name)
        if why:
            self._refuse_connection(dp, name, why)
            return
        ofp, parser = dp.ofproto, dp.ofproto_parser
        # packet-ins: table misses (there should be none), explicit ones, and TTL expiry
        mask = (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL)
        # flow removed: flow-log flows that expired or went with the flow that learned them
        removed = (1 << ofp.OFPRR_IDLE_TIMEOUT) | (1 << ofp.OFPRR_HARD_TIMEOUT) | (1 << ofp.OFPRR_DELETE)
        dp.send_msg(parser.OFPSetAsync(dp, [mask, 0], [0, 0], [removed, 0]))
        link = self.links.setdefault(name, Link(BridgeState(name)))
        link.dp = dp
        self.status["bridges"][name].update(connected=True, programmed=False)
        LOG.info("bridge %s (%#x) connected", name, dp.id)
        self._apply(name, link, dp, reconcile.connected(link.state))

    def _refusal(self, dp, name: str | None) -> str:
        """Why this connection may not program a bridge; "" when it may."""
        pid, uid = peer(dp.socket)
        switch = vswitchd_pid()
        if pid is None:
            return "the peer cannot be identified (no peer credentials)"
        if switch is not None and pid != switch:
            return f"the peer is pid {pid} (uid {uid}), not ovs-vswitchd (pid {switch})"
        if switch is None and uid != 0:
            return f"the peer is pid {pid} (uid {uid}), not root, and ovs-vswitchd's pidfile cannot be read"
        if name is None:
            return f"datapath {dp.id:#x} is none of this run's bridges"
        old = self.links[name].dp if name in self.links else None
        if old is not None and old is not dp and old.is_active and not hung_up(old.socket):
            return f"bridge {name} ({dp.id:#x}) is connected already, and that connection is alive"
        return ""

    def _refuse_connection(self, dp, name: str | None, why: str) -> None:
        """Close a connection that may not program a bridge; say so loudly, in the log and in status.json."""
        pid, uid = peer(dp.socket)
        LOG.error("refused a connection claiming datapath %#x%s: %s", dp.id or 0, f" ({name})" if name else "", why)
        self.status["refused"] = (self.status["refused"] + [{"time": time.time(), "dpid": f"{dp.id or 0:#x}",
                                                             "bridge": name, "pid": pid, "uid": uid, "why": why}])[-20:]
        self._write_status()
        dp.close()

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    @_logged
    def _disconnected(self, ev):
        dp = ev.datapath
        name = self.by_dpid.get(dp.id)
        link = self.links.get(name)
        if link is None or link.dp is not dp:
            return                        # a refused connection, or one already replaced
        link.dp, link.groups, link.cookies = None, None, None
        link.state = reconcile.disconnected(link.state)
        self.status["bridges"][name].update(connected=False, programmed=False)
        LOG.warning("bridge %s (%#x) disconnected", name, dp.id)
        self._write_status()
        self.purge.confirmed(name)          # not waited for: it gets every flow again when it connects
        self._purge_if_due()

    # ---------------------------------------------------------------------------- reconcile
    def _since_change(self) -> float | None:
        """Milliseconds since the plan version in force was seen (status.json: how a change's time
        splits into loading, compiling, sending, the switch's barrier reply and the read-back)."""
        started = self.change_timing.get("started")
        return None if started is None else ms(time.monotonic() - started)

    def _desired(self, name: str) -> Desired:
        return self.desired.get(name) or Desired(self.status["plan_version"])

    def _apply(self, name: str, link: Link, dp, out: Outcome) -> None:
        """Take the reconcile's outcome: its state, its counters and verdict in status.json, its
        messages to the switch in order."""
        link.state = out.state
        st = self.status["bridges"][name]
        for key, n in out.counts.items():
            st[key] = st.get(key, 0) + n
        self._send_all(link, dp, out.send)
        if out.programmed_at is not None:
            st.update(programmed=True, programmed_at=out.programmed_at, plan_version=self._desired(name).version,
                      change_ms=self._since_change())
        if out.error:
            self.status["errors"].append(out.error)
        if out.programmed_at is not None or out.error:
            self._write_status()

    def _send_all(self, link: Link, dp, msgs) -> None:
        """The reconcile's messages in order: each run of flow and group mods as one Batch (one
        write; one atomic bundle with KUBEVPC_BUNDLE=1), then the barrier or read-back after it."""
        mods: list = []
        for msg in (*msgs, None):
            if isinstance(msg, (AddFlow, DeleteFlow, GroupMod)):
                mods.append(msg)
                continue
            if mods:
                self._send_mods(link, dp, mods)
                mods = []
            if msg is not None:
                self._send(link, dp, msg)

    def _send_mods(self, link: Link, dp, mods: list) -> None:
        parts = [flow_mod_bytes(m.flow) if isinstance(m, AddFlow) else delete_cookie_bytes(m.cookie)
                 if isinstance(m, DeleteFlow) else group_mod(dp, m.group, m.command) for m in mods]
        bundle = None
        if self.settings["bundle"]:
            link.bundle_id = bundle = link.bundle_id % 0xFFFFFFFF + 1
        dp.send_msg(Batch(dp, parts, bundle))
        self.purge.changed()

    def _send(self, link: Link, dp, msg) -> None:
        """A barrier or a read-back; their xids are kept to recognise the replies."""
        if isinstance(msg, Barrier):
            barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
            dp.set_xid(barrier)
            link.barrier_xid = barrier.xid
            dp.send_msg(barrier)
        elif isinstance(msg, ReadBack):
            self._read_back(link, dp)
        else:
            raise TypeError(f"no translation for {msg!r}")

    def _read_back(self, link: Link, dp) -> None:
        """Ask for the switch's groups, then its flows: replies come in this order."""
        link.cookies, link.groups = set(), set()
        parser = dp.ofproto_parser
        groups = parser.OFPGroupDescStatsRequest(dp, 0)
        flows = parser.OFPFlowStatsRequest(dp, 0, dp.ofproto.OFPTT_ALL, dp.ofproto.OFPP_ANY,
                                           dp.ofproto.OFPG_ANY, 0, 0, parser.OFPMatch())
        for msg in (groups, flows):
            dp.set_xid(msg)
        link.dump_xids = (groups.xid, flows.xid)
        dp.send_msg(groups)
        dp.send_msg(flows)

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    @_logged
    def _group_desc(self, ev):
        dp = ev.msg.datapath
        name = self.by_dpid.get(dp.id)
        link = self.links.get(name)
        if link is None or link.groups is None or ev.msg.xid != link.dump_xids[0]:
            return                        # a reply to a read-back a newer plan has replaced
        link.groups.update(g.group_id for g in ev.msg.body)
        if ev.msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            return
        present, link.groups = link.groups, None
        self._apply(name, link, dp, reconcile.groups_reported(link.state, self._desired(name), present))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @_logged
    def _flow_stats(self, ev):
        dp = ev.msg.datapath
        name = self.by_dpid.get(dp.id)
        link = self.links.get(name)
        if link is not None and ev.msg.xid == link.flowlog_xid:
            self._flowlog_window(dp, link, ev.msg)
            return
        if link is None or link.cookies is None or ev.msg.xid != link.dump_xids[1]:
            return                        # a reply to a read-back a newer plan has replaced
        link.cookies.update(stat.cookie for stat in ev.msg.body)
        if ev.msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            return
        present, link.cookies = link.cookies, None
        self._apply(name, link, dp, reconcile.flows_reported(link.state, self._desired(name), present, time.time()))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @_logged
    def _barrier(self, ev):
        name = self.by_dpid.get(ev.msg.datapath.id)
        link = self.links.get(name)
        if link is None or ev.msg.xid != link.barrier_xid:
            return
        current = link.state.barrier is not None and link.state.barrier == self._desired(name).version
        if current:
            self.status["bridges"][name]["barrier_ms"] = self._since_change()
        self._apply(name, link, ev.msg.datapath, reconcile.barrier_replied(link.state, self._desired(name)))
        if current:
            self.purge.confirmed(name)
            self._purge_if_due()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    @_logged
    def _error(self, ev):
        name = self.by_dpid.get(ev.msg.datapath.id, "?")
        text = f"{name}: OpenFlow error type={ev.msg.type} code={ev.msg.code} on {bytes(ev.msg.data[:512]).hex()}"
        LOG.error(text)
        self.status["errors"].append(text)
        self._write_status()

    # ----------------------------------------------------------------------------- flow logs
    def _watch_flowlog(self):
        """Every window, read the vSwitches' live flow-log flows (table 70, by cookie): a
        connection that outlasts the window gets a record per window."""
        while True:
            plan = self.plan
            window = plan.flow_log_window if plan is not None else 0
            hub.sleep(window or 1.0)
            if not window or self.plan is not plan:
                continue
            with self.lock:
                self._ask_flowlog(plan)

    def _ask_flowlog(self, plan: Plan) -> None:
        """Ask each connected vSwitch for its live flow-log flows."""
        for name, link in list(self.links.items()):
            dp = link.dp
            if dp is None or plan.bridge(name).role != "vswitch":
                continue
            parser, ofp = dp.ofproto_parser, dp.ofproto
            req = parser.OFPFlowStatsRequest(dp, 0, 70, ofp.OFPP_ANY, ofp.OFPG_ANY, FLOWLOG_RECORD << 56,
                                             0xFF << 56, parser.OFPMatch())
            dp.set_xid(req)
            link.flowlog_xid = req.xid
            link.flowlog_live = []
            dp.send_msg(req)

    def _flowlog_window(self, dp, link: Link, msg):
        now = time.time()
        link.flowlog_live.extend(
            LearnedFlow(link.state.name, s.cookie, tuple(sorted(s.match_items())), s.packet_count, s.byte_count,
                        now - s.duration_sec - s.duration_nsec / 1e9) for s in msg.body)
        if msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            return
        link.flowlog_xid = None
        live, link.flowlog_live = link.flowlog_live, []
        if self.flowlog is not None:
            self.flowlog.write(self.flowlog.window(live, now))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @_logged
    def _flow_removed(self, ev):
        msg = ev.msg
        name = self.by_dpid.get(msg.datapath.id)
        if name is None or msg.cookie >> 56 != FLOWLOG_RECORD or self.flowlog is None:
            return
        now = time.time()
        f = LearnedFlow(name, msg.cookie, tuple(sorted(msg.match.items())), msg.packet_count, msg.byte_count,
                        now - msg.duration_sec - msg.duration_nsec / 1e9)
        idle = msg.idle_timeout if msg.reason == msg.datapath.ofproto.OFPRR_IDLE_TIMEOUT else 0
        rec = self.flowlog.removed(f, idle, now)
        if rec:
            self.flowlog.write([rec])

    # ---------------------------------------------------------------------------- packet-in
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @_logged
    def _packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        name = self.by_dpid.get(dp.id)
        if name is None:
            return
        st = self.status["bridges"][name]
        if msg.reason == dp.ofproto.OFPR_INVALID_TTL:
            st["ttl_expired"] += 1
            self._time_exceeded(dp, name, msg)
        elif msg.cookie >> 56 == REJECT:
            st["refused"] = st.get("refused", 0) + 1
            self._refuse(dp, msg)
        elif msg.cookie >> 56 == ND and self.plan.bridge(name).role == "vswitch":
            st["nd"] = st.get("nd", 0) + 1
            self._reply(dp, msg, advertisement(self.plan, self.plan.bridge(name).owner, msg.data))
        else:
            st["packet_in"] += 1
        self._write_status()

    def _reply(self, dp, msg, data: bytes | None) -> None:
        """Send `data` (if any) back out of the port `msg` came in."""
        if data is None:
            return
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(msg.match["in_port"])], data=data))

    def _refuse(self, dp, msg):
        """A node connecting to a Service without endpoints: answer as the Service address would,
        TCP reset or ICMP (ICMPv6) port unreachable, back out of the port it came in (refuse.py)."""
        self._reply(dp, msg, refusal(msg.data))

    def _time_exceeded(self, dp, name: str, msg):
        """Answer an expired packet with ICMP time exceeded from this hop's address."""
        pkt = packet.Packet(msg.data)
        eth, ip = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4)
        if eth is None or ip is None or ip.proto == 1 and pkt.get_protocol(icmp.icmp).type in (3, 11):
            return
        in_port = msg.match["in_port"]
        hop = self._hop_address(name, in_port)
        if hop is None:
            return
        hop_ip, hop_mac = hop
        original = msg.data[14:14 + ip.header_length * 4 + 8]
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(dst=eth.src, src=hop_mac, ethertype=0x0800))
        reply.add_protocol(ipv4.ipv4(dst=ip.src, src=hop_ip, proto=1, ttl=64))
        reply.add_protocol(icmp.icmp(type_=11, code=0, data=icmp.TimeExceeded(data=original)))
        reply.serialize()
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(in_port)], data=reply.data))

    def _hop_address(self, name: str, in_port: int):
        plan = self.plan
        bridge = plan.bridge(name)
        if bridge.role == "vrouter":
            for v in plan.vswitches:
                if v.bridge and v.vpc == bridge.owner and v.vrouter_port == in_port:
                    return v.gateway, v.gateway_mac
        if bridge.role == "node":
            node = plan.node(bridge.owner)
            if node.gateway:
                return node.gateway, node.gateway_mac
            vsw = plan.vswitch(node.vswitch)
            return vsw.gateway, vsw.gateway_mac
        return None
