"""A fake OpenFlow 1.3 switch, as a local attacker would write one: for each target it connects,
says hello, answers the features request with the datapath id it claims, answers echoes, dumps
(empty) and barriers, and counts what the controller sends it for a few seconds.

    python3 - --dpid 0x1a2b --seconds 3 unix:/path/to.sock tcp:127.0.0.1:6653 < fakeswitch.py

It prints one JSON object per target: {"target", "connected", "error", "flow_mods", "group_mods",
"closed", "messages"}. Standard library only, so that an unprivileged user can run it with the
system Python, fed on standard input (it needs to read nothing of the checkout).
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import time

VERSION = 4                                   # OpenFlow 1.3
HELLO, ECHO_REQUEST, ECHO_REPLY, FEATURES_REQUEST, FEATURES_REPLY = 0, 2, 3, 5, 6
FLOW_MOD, GROUP_MOD, MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 14, 15, 18, 19, 20, 21


def header(kind: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", VERSION, kind, length, xid)


def connect(target: str, timeout: float) -> socket.socket:
    kind, _, where = target.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = where
    else:
        host, _, port = where.rpartition(":")
        host = host.strip("[]")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        address = (host, int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def play(target: str, dpid: int, seconds: float) -> dict:
    result = {"target": target, "connected": False, "error": "", "flow_mods": 0, "group_mods": 0,
              "closed": False, "messages": {}}
    try:
        sock = connect(target, 2.0)
    except OSError as exc:
        result["error"] = exc.strerror or str(exc)
        return result
    result["connected"] = True
    counts: dict[int, int] = {}
    buf = b""
    end = time.monotonic() + seconds
    with sock:
        sock.sendall(header(HELLO, 8, 1))
        while time.monotonic() < end:
            sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except OSError as exc:
                result["error"], result["closed"] = exc.strerror or str(exc), True
                break
            if not chunk:
                result["closed"] = True
                break
            buf += chunk
            while len(buf) >= 8:
                _, kind, length, xid = struct.unpack("!BBHI", buf[:8])
                if length < 8 or len(buf) < length:
                    break
                msg, buf = buf[:length], buf[length:]
                counts[kind] = counts.get(kind, 0) + 1
                try:
                    if kind == FEATURES_REQUEST:
                        sock.sendall(header(FEATURES_REPLY, 32, xid) + struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0, 0))
                    elif kind == ECHO_REQUEST:
                        sock.sendall(header(ECHO_REPLY, length, xid) + msg[8:])
                    elif kind == MULTIPART_REQUEST:          # an empty table, an empty group list
                        sock.sendall(header(MULTIPART_REPLY, 16, xid) + msg[8:10] + struct.pack("!H4x", 0))
                    elif kind == BARRIER_REQUEST:
                        sock.sendall(header(BARRIER_REPLY, 8, xid))
                except OSError:
                    result["closed"] = True
                    break
    result.update(flow_mods=counts.get(FLOW_MOD, 0), group_mods=counts.get(GROUP_MOD, 0),
                  messages={str(k): v for k, v in sorted(counts.items())})
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dpid", required=True, help="the datapath id to claim (0x... or decimal)")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to listen on each connection")
    ap.add_argument("targets", nargs="+", help="unix:PATH or tcp:HOST:PORT")
    args = ap.parse_args()
    for target in args.targets:
        print(json.dumps(play(target, int(args.dpid, 0), args.seconds)), flush=True)


if __name__ == "__main__":
    main()
