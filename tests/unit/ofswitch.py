"""A fake OpenFlow 1.3 switch on a real socket, for tests that run the controller as a process
(tests/unit/test_controller_process.py): hello, features (its datapath id), port description
(os-ken waits for it), echo, barrier, flow and group mods (by cookie and group id), ONF bundles
(extension 230: open, add, commit, applied at the commit) and the group description and flow
stats a read-back asks for. It keeps only cookies and group ids, as the controller's verdict does."""
from __future__ import annotations

import socket
import struct
import threading
import time

VERSION = 4
HELLO, ECHO_REQUEST, ECHO_REPLY, EXPERIMENTER, FEATURES_REQUEST, FEATURES_REPLY = 0, 2, 3, 4, 5, 6
FLOW_MOD, GROUP_MOD, MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 14, 15, 18, 19, 20, 21
MP_FLOW, MP_GROUP_DESC, MP_PORT_DESC = 1, 7, 13
ONF, BUNDLE_CONTROL, BUNDLE_ADD = 0x4F4E4600, 2300, 2301
OPEN, COMMIT = 0, 4
FLOW_ADD, FLOW_DELETE, GROUP_DELETE = 0, 3, 2


def header(kind: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", VERSION, kind, length, xid)


class OFSwitch(threading.Thread):
    """One bridge: connects to `path` and answers until the controller closes the connection."""

    def __init__(self, path: str, dpid: int):
        super().__init__(daemon=True)
        self.path, self.dpid = path, dpid
        self.flows: dict[int, int] = {}         # cookie -> table
        self.groups: set[int] = set()
        self.bundle: list | None = None
        self.counts = {"flow_mods": 0, "bundles": 0, "flow_dumps": 0}
        self.sock: socket.socket | None = None

    def run(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        end = time.monotonic() + 10
        while True:
            try:
                sock.connect(self.path)
                break
            except OSError:
                if time.monotonic() > end:
                    return
                time.sleep(0.02)
        self.sock = sock
        sock.sendall(header(HELLO, 8, 1))
        buf = b""
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 8:
                length = struct.unpack_from("!H", buf, 2)[0]
                if len(buf) < length:
                    break
                msg, buf = buf[:length], buf[length:]
                self.handle(msg)

    def handle(self, msg: bytes) -> None:
        kind, xid = msg[1], struct.unpack_from("!I", msg, 4)[0]
        if kind == ECHO_REQUEST:
            self.sock.sendall(header(ECHO_REPLY, 8, xid))
        elif kind == FEATURES_REQUEST:
            self.sock.sendall(header(FEATURES_REPLY, 32, xid) + struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0, 0))
        elif kind in (FLOW_MOD, GROUP_MOD):
            if self.bundle is not None:
                self.bundle.append(msg)
            else:
                self.apply(msg)
        elif kind == EXPERIMENTER:
            self.experimenter(msg, xid)
        elif kind == BARRIER_REQUEST:
            self.sock.sendall(header(BARRIER_REPLY, 8, xid))
        elif kind == MULTIPART_REQUEST:
            self.multipart(struct.unpack_from("!H", msg, 8)[0], xid)

    def apply(self, msg: bytes) -> None:
        if msg[1] == FLOW_MOD:
            self.counts["flow_mods"] += 1
            cookie, _mask, table, command = struct.unpack_from("!QQBB", msg, 8)
            if command == FLOW_ADD:
                self.flows[cookie] = table
            elif command == FLOW_DELETE:
                self.flows.pop(cookie, None)
        else:
            command, _type, _pad, gid = struct.unpack_from("!HBBI", msg, 8)
            (self.groups.discard if command == GROUP_DELETE else self.groups.add)(gid)

    def experimenter(self, msg: bytes, xid: int) -> None:
        experimenter, exp_type = struct.unpack_from("!II", msg, 8)
        assert experimenter == ONF, hex(experimenter)
        if exp_type == BUNDLE_ADD:
            inner = msg[24:]
            assert struct.unpack_from("!I", inner, 4)[0] == xid, "a bundled message carries the bundle add's xid"
            self.bundle.append(inner)
            return
        bundle_id, kind, flags = struct.unpack_from("!IHH", msg, 16)
        if kind == OPEN:
            assert self.bundle is None
            self.bundle = []
        elif kind == COMMIT:
            for m in self.bundle:
                self.apply(m)
            self.bundle = None
            self.counts["bundles"] += 1
        self.sock.sendall(header(EXPERIMENTER, 24, xid) + struct.pack("!IIIHH", ONF, BUNDLE_CONTROL, bundle_id,
                                                                           kind + 1, flags))

    def multipart(self, kind: int, xid: int) -> None:
        if kind == MP_GROUP_DESC:
            self.reply(xid, kind, [struct.pack("!HBxI", 8, 1, g) for g in sorted(self.groups)])
        elif kind == MP_FLOW:
            self.counts["flow_dumps"] += 1
            self.reply(xid, kind, [struct.pack("!HBxIIHHHH4xQQQHH4x", 56, table, 0, 0, 0, 0, 0, 0, cookie, 0, 0, 1, 4)
                                   for cookie, table in self.flows.items()])
        elif kind == MP_PORT_DESC:
            self.reply(xid, kind, [])

    def reply(self, xid: int, kind: int, entries: list[bytes], per_message: int = 500) -> None:
        parts = [entries[i:i + per_message] for i in range(0, len(entries), per_message)] or [[]]
        for k, part in enumerate(parts):
            body = b"".join(part)
            more = 1 if k < len(parts) - 1 else 0
            self.sock.sendall(header(MULTIPART_REPLY, 16 + len(body), xid) + struct.pack("!HH4x", kind, more) + body)
