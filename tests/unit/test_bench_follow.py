"""Change -> datapath follows (kubevpc/bench/follow.py): when probes first saw the new behaviour
for good, from samples (pure); and the probe stream with its Follower on loopback (no root, no
namespace: a fake Lab runs the stream as a plain process)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kubevpc.bench import follow
from kubevpc.bench.follow import NEW, OLD, Follower, connects, followed_at, not_answered_by, saw_old
from kubevpc.bench.follow_probe import parse
from kubevpc.errors import KubevpcError
from kubevpc.probe import PortBlocks

REPO = Path(__file__).resolve().parents[2]


def s(start: float, ok: bool, name: str | None = None, outcome: str = "") -> dict:
    return {"start": start, "ok": ok, "outcome": outcome or ("answered" if ok else "timeout"), "name": name}


def test_classifiers():
    deny, allow = connects(before=True), connects(before=False)
    assert deny(s(0, True)) == OLD and deny(s(0, False)) == NEW and deny(s(0, False, outcome="error")) is None
    assert allow(s(0, False)) == OLD and allow(s(0, True)) == NEW
    gone = not_answered_by("web-1")
    assert gone(s(0, True, "web-1")) == OLD and gone(s(0, True, "web-0")) == NEW and gone(s(0, False)) is None


def test_followed_at_is_the_first_probe_after_the_last_old_one_once_settled():
    deny = connects(before=True)
    # t0 = 10.0; probes every 0.1 s; the old behaviour until 10.3, then the new one
    samples = [s(9.8, True), s(9.9, True), s(10.0, True), s(10.1, True), s(10.2, False), s(10.3, True)] + \
              [s(10.4 + i / 10, False) for i in range(5)]
    assert followed_at(samples, 10.0, deny, horizon=20, settle=0.3) == pytest.approx(0.4)
    assert followed_at(samples, 10.0, deny, horizon=10.6, settle=0.3) is None      # not settled yet by 10.6
    assert followed_at(samples, 10.0, deny, horizon=10.75, settle=0.3) == pytest.approx(0.4)
    assert followed_at(samples[:7], 10.0, deny, horizon=20, settle=0.3) is None    # ends after one new probe
    assert followed_at([s(9.9, True)], 10.0, deny, horizon=20) is None              # nothing after the change


def test_followed_at_ignores_probes_that_tell_nothing_and_order_of_arrival():
    gone = not_answered_by("web-1")
    samples = [s(10.05, True, "web-0"), s(10.0, True, "web-1"), s(10.1, False), s(10.15, True, "web-1"),
               s(10.2, True, "web-0"), s(10.6, True, "web-0"), s(10.25, False, outcome="error")]
    assert followed_at(samples, 10.0, gone, horizon=20, settle=0.3) == pytest.approx(0.2)
    # no old behaviour after the change at all: followed with the first probe after it
    assert followed_at([s(10.02, True, "web-0"), s(10.5, True, "web-0")], 10.0, gone, horizon=20) == \
        pytest.approx(0.02)


def test_saw_old_counts_probes_before_the_change_only():
    deny = connects(before=True)
    samples = [s(1.0, True), s(1.1, True), s(1.2, False), s(1.3, True), s(2.5, True)]
    assert saw_old(samples, 2.0, deny, horizon=5)
    assert not saw_old(samples, 1.25, deny, horizon=5)              # two before 1.25
    assert not saw_old(samples, 2.0, deny, horizon=1.15)            # the third has not reported by then


def test_probe_stream_arguments():
    args = parse(["--source-ports", "12000:12100", "--interval", "0.02", "tcp:10.0.0.1:80"])
    assert (args.interval, args.timeout, args.target.port, args.source_ports.next) == (0.02, 0.3, 80, 12000)
    ports = ["--source-ports", "12000:12100"]
    for bad in ([*ports, "--interval", "0", "tcp:1.2.3.4:80"], [*ports, "--timeout", "nan", "tcp:1.2.3.4:80"],
                ["tcp:1.2.3.4:80"], ["--source-ports", "9:1", "tcp:1.2.3.4:80"], [*ports, "icmp:1.2.3.4:80"]):
        with pytest.raises(SystemExit):
            parse(bad)


# ------------------------------------------------------------------------- on loopback
class Answering:
    """A TCP listener on loopback answering as a kubevpc server does (a JSON line), until closed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(json.dumps({"name": "a", "client": "x"}).encode() + b"\n")

    def close(self) -> dict:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)        # wakes the accept() under way
        except OSError:
            pass
        self.sock.close()
        return {"flows_updated_s": 0.0}


class FakeLab:
    """What Follower needs of a Lab: source ports, and popen (here without a namespace)."""

    source_ports = PortBlocks(21000, 29999)

    def popen(self, endpoint, cmd, **kwargs):
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kwargs)


def test_follower_sees_a_listener_close(monkeypatch):
    monkeypatch.setattr(follow, "ROOT", str(REPO))
    server = Answering()
    got = Follower(FakeLab(), "pod/a", "127.0.0.1", server.port, deadline=3).measure(server.close,
                                                                                  connects(before=True))
    assert got["flows_updated_s"] == 0.0 and got["follows_s"] is not None and 0 <= got["follows_s"] < 1.0


def test_follower_reports_a_change_not_followed_and_one_with_nothing_to_move(monkeypatch):
    monkeypatch.setattr(follow, "ROOT", str(REPO))
    server = Answering()
    try:
        got = Follower(FakeLab(), "pod/a", "127.0.0.1", server.port, deadline=0.3).measure(
            lambda: {"flows_updated_s": 0.1}, connects(before=True))
        assert got["follows_s"] is None and "still saw the old behaviour 0.3 s after the change" in got["follow_error"]
    finally:
        server.close()
    monkeypatch.setattr(follow, "LEAD_S", 0.5)
    with pytest.raises(KubevpcError, match="was not seen before it"):
        Follower(FakeLab(), "pod/a", "127.0.0.1", server.port, deadline=0.3).measure(
            lambda: {}, connects(before=True))


def test_the_probe_stream_needs_no_more_than_the_standard_library():
    """It runs with `python -S` (no site-packages): nothing outside the standard library is imported."""
    out = subprocess.run([sys.executable, "-S", "-c", "import sys, kubevpc.bench.follow_probe; "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'yaml', 'pydantic')))"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert NEW != OLD


def test_a_long_stream_probes_less_often_to_stay_within_its_ports():
    short = Follower(FakeLab(), "pod/a", "10.0.0.1", 80, deadline=5)
    assert short.interval == follow.INTERVAL_S and short.duration / short.interval <= follow.MAX_PORTS * 1.1
    long = Follower(FakeLab(), "pod/a", "10.0.0.1", 80, deadline=30)
    assert long.interval > follow.INTERVAL_S and long.duration / long.interval == pytest.approx(follow.MAX_PORTS)
