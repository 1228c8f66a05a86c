"""A fake os-ken datapath and the switch behind it, for tests of the os-ken shell (controller/app.py).

The datapath is what the application uses of os-ken's `Datapath`: its id, ofproto module and
parser, xids from the same counter, and `send_msg`, which serializes every message as os-ken
would (a message os-ken cannot encode fails here). A Batch (controller/ofmsg.py) is recorded as
the messages it carries: its flow mods parsed back from its bytes by os-ken, its group mods as
they were given, and, in a bundle, the bundle's open and commit around them. The switch takes
the messages in the order they were sent, as a switch reads them from its connection: it
applies flow and group mods (those of a bundle all at once at its commit, or none of them if it
refuses one, as Open vSwitch's atomic bundles do), and answers each request, in parts, to the
application's handler, as os-ken's event loop would. No socket to ovs-vswitchd and no eventlet
loop are involved.
"""
from __future__ import annotations

import socket
from types import SimpleNamespace

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as OFP
from os_ken.ofproto import ofproto_v1_3_parser as PARSER

import controller.app as app_module
from controller.ofmsg import BUNDLE_FLAGS, Batch

ALL = 0xFFFFFFFFFFFFFFFF


class FakeDatapath:
    """One connection: `sent` holds every message in order; its socket is one end of a socket
    pair, so SO_PEERCRED names this process."""

    def __init__(self, dpid: int, switch: FakeSwitch):
        self.id, self.switch = dpid, switch
        self.ofproto, self.ofproto_parser = OFP, PARSER
        self.xid = 0
        self.is_active, self.closed = True, False
        self.socket, self.peer_end = socket.socketpair()
        self.sent: list = []
        self.taken = 0                  # how many of `sent` the switch has read
        self.writes = 0                 # send_msg calls: a Batch is one write

    def set_xid(self, msg) -> int:
        self.xid = (self.xid + 1) & OFP.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.writes += 1
        if isinstance(msg, Batch):
            self.sent.extend(self.unbatched(msg))
        else:
            self.sent.append(msg)

    def unbatched(self, batch: Batch) -> list:
        """The messages a Batch carries, as the switch reads them."""
        inner = []
        for part in batch.parts:
            if isinstance(part, bytes):
                version, kind, length, xid = ofproto_parser.header(part)
                assert length == len(part)
                part = ofproto_parser.msg(self, version, kind, length, batch.xid, part)
            inner.append(part)
        if batch.bundle_id is None:
            return inner
        ctrl = [PARSER.ONFBundleCtrlMsg(self, batch.bundle_id, kind, BUNDLE_FLAGS, [])
                for kind in (OFP.ONF_BCT_OPEN_REQUEST, OFP.ONF_BCT_COMMIT_REQUEST)]
        return [ctrl[0], *inner, ctrl[1]]

    def close(self) -> None:
        self.closed, self.is_active = True, False

    def hang_up(self) -> None:
        """The switch closes its end (poll shows POLLRDHUP on ours)."""
        self.peer_end.close()
        self.is_active = False


class FakeSwitch:
    """A bridge's tables: flows by cookie ({cookie: (table, priority)}), group ids. `refuse`:
    cookies it never takes (an add is lost); `part`: entries per multipart reply message."""

    def __init__(self, part: int = 40, refuse: frozenset[int] = frozenset()):
        self.flows: dict[int, tuple[int, int]] = {}
        self.groups: dict[int, int] = {}            # group id -> number of buckets
        self.part, self.refuse = part, set(refuse)
        self.stats: dict[int, tuple[int, int]] = {}  # cookie -> (packets, bytes) for flow-stats replies
        self.hold_barriers = False                  # keep barrier requests unanswered (in `held`)
        self.held: list[int] = []                   # xids of the barriers held
        self.bundle: list | None = None             # the mods of the bundle open, until its commit
        self.bundles: list[int] = []                # each bundle committed: how many mods it held
        self.refused_bundles = 0                    # bundles not applied: they held a mod the switch refuses

    def bundle_ctrl(self, msg) -> None:
        """Open a bundle, or commit it: every mod at once, or none if one is refused."""
        assert msg.flags == BUNDLE_FLAGS
        if msg.type == OFP.ONF_BCT_OPEN_REQUEST:
            assert self.bundle is None, "a bundle opened inside another"
            self.bundle = []
            return
        assert msg.type == OFP.ONF_BCT_COMMIT_REQUEST and self.bundle is not None
        mods, self.bundle = self.bundle, None
        if any(isinstance(m, PARSER.OFPFlowMod) and m.command == OFP.OFPFC_ADD and m.cookie in self.refuse
               for m in mods):
            self.refused_bundles += 1
            return
        self.bundles.append(len(mods))
        for m in mods:
            self.apply(m)

    def take(self, msg) -> None:
        """A flow or group mod read from the connection: into the open bundle, or applied."""
        if self.bundle is not None:
            self.bundle.append(msg)
        else:
            self.apply(msg)

    def apply(self, msg) -> None:
        """A flow or group mod, as Open vSwitch applies it."""
        if isinstance(msg, PARSER.OFPFlowMod):
            if msg.command == OFP.OFPFC_ADD and msg.cookie not in self.refuse:
                self.flows[msg.cookie] = (msg.table_id, msg.priority)
            elif msg.command == OFP.OFPFC_DELETE:
                assert msg.cookie_mask == ALL and msg.table_id == OFP.OFPTT_ALL
                self.flows.pop(msg.cookie, None)
        elif isinstance(msg, PARSER.OFPGroupMod):
            if msg.command == OFP.OFPGC_DELETE:
                self.groups.pop(msg.group_id, None)
            else:
                exists = msg.group_id in self.groups
                assert exists == (msg.command == OFP.OFPGC_MODIFY), f"group {msg.group_id}: {msg.command}"
                self.groups[msg.group_id] = len(msg.buckets)

    def flow_stats(self, msg) -> list:
        cookies = [c for c in sorted(self.flows) if c & msg.cookie_mask == msg.cookie
                   and msg.table_id in (OFP.OFPTT_ALL, self.flows[c][0])]
        return [SimpleNamespace(cookie=c, match={"in_port": 1, "ipv4_src": "10.0.0.1"},
                                packet_count=self.stats.get(c, (0, 0))[0], byte_count=self.stats.get(c, (0, 0))[1],
                                duration_sec=1, duration_nsec=0) for c in cookies]


def event(dp: FakeDatapath, **fields) -> SimpleNamespace:
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp, **fields))


def _reply(app, handler, dp: FakeDatapath, xid: int, body: list, part: int) -> None:
    """A multipart reply in parts of `part` entries: all but the last flagged REPLY_MORE."""
    chunks = [body[i:i + part] for i in range(0, len(body), part)] or [[]]
    for k, chunk in enumerate(chunks):
        flags = OFP.OFPMPF_REPLY_MORE if k < len(chunks) - 1 else 0
        handler(event(dp, xid=xid, body=chunk, flags=flags))


def pump(app, dp: FakeDatapath, limit: int = 100000) -> None:
    """The switch reads what the application sent, in order, and answers each request at once:
    what the answer makes the application send is read after what was sent before it."""
    switch = dp.switch
    while dp.taken < len(dp.sent):
        limit -= 1
        assert limit > 0, "the application and the switch never settle"
        msg = dp.sent[dp.taken]
        dp.taken += 1
        if isinstance(msg, (PARSER.OFPFlowMod, PARSER.OFPGroupMod)):
            switch.take(msg)
        elif isinstance(msg, PARSER.ONFBundleCtrlMsg):
            switch.bundle_ctrl(msg)
        elif isinstance(msg, PARSER.OFPGroupDescStatsRequest):
            body = [SimpleNamespace(group_id=g) for g in sorted(switch.groups)]
            _reply(app, app._group_desc, dp, msg.xid, body, switch.part)
        elif isinstance(msg, PARSER.OFPFlowStatsRequest):
            _reply(app, app._flow_stats, dp, msg.xid, switch.flow_stats(msg), switch.part)
        elif isinstance(msg, PARSER.OFPBarrierRequest):
            if switch.hold_barriers:
                switch.held.append(msg.xid)
            else:
                app._barrier(event(dp, xid=msg.xid))


def connect(app, dp: FakeDatapath) -> None:
    """The switch's features reply: os-ken's EventOFPSwitchFeatures."""
    app._features(event(dp))


def disconnect(app, dp: FakeDatapath) -> None:
    """os-ken's EventOFPStateChange to DEAD_DISPATCHER."""
    dp.is_active = False
    app._disconnected(SimpleNamespace(datapath=dp))


class StopLoop(Exception):
    """Raised by a patched hub.sleep to end a watcher loop after one pass."""


def one_pass(loop) -> None:
    """Run one pass of a watcher loop (`while True: hub.sleep(...); ...`)."""
    hub, calls = app_module.hub, []
    saved = hub.sleep

    def sleep(_seconds):
        calls.append(_seconds)
        if len(calls) > 1:
            raise StopLoop

    hub.sleep = sleep
    try:
        loop()
    except StopLoop:
        pass
    finally:
        hub.sleep = saved
