"""kubevpc.probeloop: many probes from one process and one selector loop, on loopback, no root.

Its results are kubevpc.probe's (the same outcomes, answers and details, compared side by side);
every probe has its own deadline; probes start paced (a cap on those in flight, of which a probe
whose handshake has not completed within the window leaves) and spread over the destinations;
results come in input order. Namespaces are mocked at the setns boundary only (a unit test may
not enter one): the real path is tests/e2e/test_probe_matrix.py's."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kubevpc import probeloop
from kubevpc.daemons import nsenter
from kubevpc.errors import KubevpcError
from kubevpc.probe import MAX_READ, Target, probe
from kubevpc.probeloop import Job, Loop, parse_request, probe_many, spread_order

from .test_server_probe import (LO, REPO, _env, check_answer, free_port, next_port_taken, start_server, stop,
                                wait_ready)

SELF_NS = f"/proc/{os.getpid()}/ns/net"


@pytest.fixture
def server(tmp_path):
    """A pod's server (kubevpc.daemons.server, named pod-a) on loopback: TCP, UDP and HTTP."""
    ports = {"tcp": free_port(socket.SOCK_STREAM), "udp": free_port(socket.SOCK_DGRAM),
             "http": free_port(socket.SOCK_STREAM)}
    proc, ready = start_server(tmp_path, [f"TCP:{ports['tcp']}", f"UDP:{ports['udp']}", f"HTTP:{ports['http']}"])
    wait_ready(proc, ready)
    yield {"ports": ports}
    stop(proc)


def jobs(*targets: Target, **kw) -> list[Job]:
    return [Job(t, **kw) for t in targets]


@contextlib.contextmanager
def full_backlog():
    """A TCP port whose accept queue is full: a SYN to it is dropped, as a policy drops one, and
    sent again only after 1 s, past the deadlines here."""
    with socket.socket() as lst:
        lst.bind((LO, 0))
        lst.listen(0)
        filler = socket.create_connection(lst.getsockname(), timeout=2)      # the one it queues
        try:
            yield lst.getsockname()[1]
        finally:
            filler.close()


@contextlib.contextmanager
def answering(delay: float = 0.0, line: bytes = b'{"name": "slow", "client": "c"}\n'):
    """A TCP server answering each connection `line` after `delay` s, counting connections open at
    once (`seen["most"]`)."""
    lst = socket.socket()
    lst.bind((LO, 0))
    lst.listen(512)
    seen = {"now": 0, "most": 0, "all": 0}
    lock = threading.Lock()

    def one(conn):
        with conn, contextlib.suppress(OSError):
            with lock:
                seen["now"] += 1
                seen["all"] += 1
                seen["most"] = max(seen["most"], seen["now"])
            conn.settimeout(2)
            conn.recv(4096)             # the probe speaks first; its request read, no reset at close
            time.sleep(delay)
            with lock:
                seen["now"] -= 1
            conn.sendall(line)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass

    def serve():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    try:
        yield lst.getsockname()[1], seen
    finally:
        lst.close()


# -- the same results as kubevpc.probe ---------------------------------------------------
def test_every_listener_answers_as_kubevpc_probe_has_it(server):
    p = server["ports"]
    targets = [Target(LO, p["tcp"], "tcp", key="t"), Target(LO, p["udp"], "udp", key="u"),
               Target(LO, p["http"], "http", key="h"), Target(LO, p["tcp"], "http", key="th")]
    results = probe_many(jobs(*targets), 2.0)
    assert [r.key for r in results] == ["t", "u", "h", "th"]
    for r in results:
        check_answer(r, r.proto, r.port)         # the server's name, and local= the client it saw
    assert results[2].answer["status"] == 200 and "status" not in results[0].answer
    before = probe(targets, 2.0)
    strip = lambda r: (r.key, r.outcome, {k: v for k, v in r.answer.items() if k != "client"})  # noqa: E731
    assert [strip(r) for r in results] == [strip(r) for r in before]


def test_refused_and_unknown_outcomes_read_as_kubevpc_probes():
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    targets = [Target(LO, tcp, "tcp"), Target(LO, udp, "udp"), Target(LO, tcp, "http"), Target(LO, 1, "sctp")]
    got, before = probe_many(jobs(*targets), 2.0), probe(targets, 2.0)
    assert [(r.outcome, r.detail, r.answer) for r in got] == [(r.outcome, r.detail, r.answer) for r in before]
    assert [r.outcome for r in got] == ["refused", "refused", "refused", "error"]
    assert got[0].detail == f"[Errno 111] Connect call failed ('{LO}', {tcp})"


@pytest.mark.parametrize("line, proto, outcome, detail", [
    (b"", "tcp", "error", "connection closed without an answer"),
    (b"not json\n", "tcp", "error", "answer is not JSON: b'not json\\n'"),
    (b"[1, 2]\n", "tcp", "error", "answer is not a JSON object: b'[1, 2]\\n'"),
    (b'{"name": "x"}', "tcp", "answered", ""),                    # no newline, then the end: readline's
    (b"x" * (MAX_READ + 10), "tcp", "error", "bad answer: Separator is not found, and chunk exceed the limit"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"name\": \"h\"}\n", "http", "answered", ""),
    (b"SSH-2.0\r\n\r\n", "http", "error", "not an HTTP response: 'SSH-2.0'"),
    (b"HTTP/1.1 503 No\r\n\r\noops", "http", "error", "HTTP 503: answer is not JSON: b'oops'"),
])
def test_bad_answers_read_as_kubevpc_probes(line, proto, outcome, detail):
    with answering(line=line) as (port, _):
        t = Target(LO, port, proto)
        (got,), (before,) = probe_many(jobs(t), 2.0), probe([t], 2.0)
    assert (got.outcome, got.answer) == (before.outcome, before.answer)
    assert got.outcome == outcome
    if outcome != "answered":
        assert got.detail == before.detail == detail


# -- deadlines -----------------------------------------------------------------------------
def test_a_dropped_syn_and_a_silent_udp_port_time_out_each_at_its_own_deadline():
    with full_backlog() as port, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((LO, 0))
        t0 = time.monotonic()
        got = probe_many(jobs(Target(LO, port, "tcp"), Target(LO, hole.getsockname()[1], "udp")), 0.3)
        took = time.monotonic() - t0
        hole.settimeout(0)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while hole.recv(100) == b"kubevpc-probe":
                sent += 1
    assert [(r.outcome, r.detail) for r in got] == [("timeout", "no answer within 0.3s")] * 2
    assert all(300 <= r.elapsed_ms < 700 for r in got) and took < 1.0
    assert sent == 4, "the first datagram and three more within the deadline, as kubevpc.probe"


def test_deadlines_count_from_each_probes_own_start():
    """Three probes, one at a time (cap 1, counted for their whole deadline): each gets its own
    0.2 s, started after the one before it: none is cut short by the batch's clock."""
    with full_backlog() as port:
        t0 = time.monotonic()
        got = Loop(jobs(*[Target(LO, port, "tcp", str(i)) for i in range(3)]), 0.2, cap=1, window=5).run()
        took = time.monotonic() - t0
    assert [r.outcome for r in got] == ["timeout"] * 3
    assert all(200 <= r.elapsed_ms < 450 for r in got), [r.elapsed_ms for r in got]
    assert took >= 0.6


# -- pacing --------------------------------------------------------------------------------
def test_no_more_than_the_cap_are_in_flight_and_all_answer():
    with answering(delay=0.05) as (port, seen):
        loop = Loop(jobs(*[Target(LO, port, "tcp", str(i)) for i in range(24)]), 2.0, cap=4)
        t0 = time.monotonic()
        got = loop.run()
        took = time.monotonic() - t0
    assert [r.outcome for r in got] == ["answered"] * 24 and [r.key for r in got] == [str(i) for i in range(24)]
    assert loop.peak == 4 and seen["most"] <= 4 and seen["all"] == 24
    assert took >= 24 / 4 * 0.05 * 0.9, "paced: six rounds of four"
    assert loop.load == 0 and loop.open == 0


def test_probes_whose_syn_goes_unanswered_leave_the_cap_after_the_window():
    """Denied cells (SYNs dropped) would hold the cap for their whole deadline: after the window
    they no longer count, so twelve of them at a cap of 2 take about one deadline, not six."""
    with full_backlog() as port:
        t0 = time.monotonic()
        got = Loop(jobs(*[Target(LO, port, "tcp", str(i)) for i in range(12)]), 0.4, cap=2, window=0.02).run()
        took = time.monotonic() - t0
    assert [r.outcome for r in got] == ["timeout"] * 12
    assert all(r.elapsed_ms >= 400 for r in got)
    assert took < 1.5, took        # counted whole, they would take 12 / 2 x 0.4 = 2.4 s


def test_the_open_sockets_cap_holds_even_for_probes_out_of_the_pacing_count():
    with full_backlog() as port:
        loop = Loop(jobs(*[Target(LO, port, "tcp", str(i)) for i in range(6)]), 0.2, cap=100, window=0, max_open=2)
        t0 = time.monotonic()
        got = loop.run()
    assert [r.outcome for r in got] == ["timeout"] * 6 and time.monotonic() - t0 >= 0.6


def test_starts_are_spread_over_destinations_and_results_come_in_input_order():
    t = lambda host, key: Target(host, 80, "tcp", key)    # noqa: E731
    js = [Job(t("10.0.0.1", "a1"), spread="node/n1"), Job(t("10.0.0.1", "a2"), spread="node/n1"),
          Job(t("10.0.0.2", "b1"), spread="node/n1"), Job(t("10.0.1.1", "c1"), spread="node/n2"),
          Job(t("10.0.1.1", "c2"), spread="node/n2"), Job(t("172.21.0.1", "s1"))]
    assert [js[i].target.key for i in spread_order(js)] == ["a1", "c1", "s1", "b1", "c2", "a2"]
    with answering() as (port, _):
        targets = [Target(LO, port, "tcp", str(i)) for i in range(10)]
        got = probe_many([Job(x, spread=f"n{i % 3}") for i, x in enumerate(targets)], 2.0)
    assert [r.key for r in got] == [str(i) for i in range(10)] and {r.outcome for r in got} == {"answered"}


# -- source ports --------------------------------------------------------------------------
def test_each_group_takes_the_ports_of_the_range_in_order(server):
    p = server["ports"]
    with next_port_taken() as first:
        loop = Loop(jobs(Target(LO, p["udp"], "udp", "u0"), Target(LO, p["udp"], "udp", "u1"),
                         Target(LO, p["tcp"], "tcp", "t"), Target(LO, p["http"], "http", "h"), group="g"),
                    2.0, ports=(first, first + 40))
        got = loop.run()
        used = {r.key: int(r.answer["client"].rpartition(":")[2]) for r in got}
        assert set(loop.ranges) == {"g"}
        assert used["u0"] == first and len(set(used.values())) == 4 and first + 1 not in used.values(), used
        left = probe_many(jobs(Target(LO, p["udp"], "udp")), 1.0, ports=(first + 1, first + 1))[0]
    assert left.outcome == "error" and f"no source port left in the range up to {first + 1}" in left.detail


# -- namespaces, mocked at setns -------------------------------------------------------------
def test_each_source_namespace_is_entered_once_a_batch_and_left_for_home(tmp_path, monkeypatch, server):
    entered = []
    monkeypatch.setattr(nsenter, "_setns", lambda fd, what: entered.append(what))
    ns = []
    for name in ("pod-a", "pod-b"):         # stand for two namespaces' files: other inodes than ours
        (tmp_path / name).write_text("")
        ns.append(str(tmp_path / name))
    port = server["ports"]["tcp"]
    js = [Job(Target(LO, port, "tcp", str(i)), netns=ns[i % 2], group=ns[i % 2]) for i in range(4)]
    js.append(Job(Target(LO, port, "tcp", "own"), netns=SELF_NS, group="own"))    # ours: not entered
    got = probe_many(js, 2.0, ports=(free_port(socket.SOCK_STREAM), 65535))
    assert [r.outcome for r in got] == ["answered"] * 5
    assert entered == [ns[0], "of the probe loop", ns[1], "of the probe loop"], "one batch: each entered once"


def test_a_namespace_that_cannot_be_entered_fails_its_probes_only(tmp_path, monkeypatch, server):
    def setns(fd, what):
        if what.endswith("gone"):
            raise OSError(1, f"cannot enter the network namespace {what}: Operation not permitted")
    monkeypatch.setattr(nsenter, "_setns", setns)
    (tmp_path / "gone").write_text("")
    port = server["ports"]["tcp"]
    got = probe_many([Job(Target(LO, port, "tcp", "x"), netns=str(tmp_path / "gone")),
                      Job(Target(LO, port, "tcp", "y"))], 2.0)
    assert (got[0].outcome, got[1].outcome) == ("error", "answered")
    assert "cannot enter the network namespace" in got[0].detail and got[0].detail.endswith("not permitted")


# -- the process and its request -------------------------------------------------------------
def run_loop(request) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-m", "kubevpc.probeloop"], input=json.dumps(request), cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=30)


def test_the_process_answers_a_request_in_order(server):
    p = server["ports"]
    cp = run_loop({"timeout": 2, "ports": None, "cap": 8, "window": 0.1, "probes": [
        {"key": "1", "target": f"udp:{LO}:{p['udp']}", "netns": SELF_NS, "group": "a", "spread": "n"},
        {"key": "0", "target": f"http:{LO}:{p['http']}"}]})
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert [(o["key"], o["proto"], o["outcome"], o["answer"]["name"]) for o in out] == [
        ("1", "udp", "answered", "pod-a"), ("0", "http", "answered", "pod-a")]


@pytest.mark.parametrize("request_, message", [
    ([], 'expected a JSON object with a list "probes"'),
    ({"probes": [], "timeout": 0}, "timeout 0: must be > 0"),
    ({"probes": [], "timeout": "1"}, "timeout '1': expected a number >= 0"),
    ({"probes": [], "ports": [5, 1]}, "bad --source-ports '5:1'"),
    ({"probes": [], "ports": [1]}, "ports [1]: expected [FIRST, LAST]"),
    ({"probes": [], "cap": 0}, "cap 0: expected a number >= 1"),
    ({"probes": [{"target": "tcp:10.0.0.1:0"}]}, "bad target 'tcp:10.0.0.1:0'"),
    ({"probes": [{"target": "tcp:10.0.0.1:80", "netns": 3}]}, "probes[0]: key, netns, group and spread are strings"),
    ({"probes": ["tcp:10.0.0.1:80"]}, "probes[0]: expected an object with a string target"),
])
def test_a_bad_request_is_refused_naming_what_is_wrong(request_, message):
    with pytest.raises(ValueError) as exc:
        parse_request(request_)
    assert message in str(exc.value)


def test_the_process_exits_2_on_a_bad_request_or_a_source_namespace_gone(tmp_path):
    cp = run_loop({"probes": [{"target": "tcp:10.0.0.1:0"}]})
    assert cp.returncode == 2 and "kubevpc.probeloop: bad target" in cp.stderr and cp.stdout == ""
    gone = str(tmp_path / "proc-gone")
    cp = run_loop({"probes": [{"target": "tcp:10.0.0.1:80", "netns": gone}]})
    assert cp.returncode == 2 and gone in cp.stderr


def test_the_labs_probe_settings_are_checked(monkeypatch):
    from kubevpc.lab import probing
    for name in (probing.PROBE_ENV, probing.CAP_ENV, probing.WINDOW_ENV):
        monkeypatch.delenv(name, raising=False)
    assert probing.probe_settings() == ("one", probeloop.PACE_CAP, probeloop.PACE_WINDOW)
    monkeypatch.setenv(probing.PROBE_ENV, "per-source")
    monkeypatch.setenv(probing.CAP_ENV, "512")
    monkeypatch.setenv(probing.WINDOW_ENV, "0.25")
    assert probing.probe_settings() == ("per-source", 512, 0.25)
    for name, value, message in ((probing.PROBE_ENV, "many", "KUBEVPC_PROBE='many': expected one of one, per-source"),
                                 (probing.CAP_ENV, "0", "KUBEVPC_PROBE_CAP='0'"),
                                 (probing.CAP_ENV, "x", "KUBEVPC_PROBE_CAP='x'"),
                                 (probing.WINDOW_ENV, "-1", "KUBEVPC_PROBE_WINDOW='-1'")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(KubevpcError, match="expected") as exc:
                probing.probe_settings()
            assert message in str(exc.value)


def test_many_probes_from_one_process_all_answer_within_their_deadline(server):
    """A burst the size of a matrix row a hundred times over, against one server process."""
    port = server["ports"]["tcp"]
    t0 = time.monotonic()
    got = probe_many(jobs(*[Target(LO, port, "tcp", str(i)) for i in range(1000)]), 1.0)
    assert {r.outcome for r in got} == {"answered"} and time.monotonic() - t0 < 10
    assert max(r.elapsed_ms for r in got) < 1000

