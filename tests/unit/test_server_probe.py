"""Unit tests for kubevpc.daemons.server and kubevpc.probe, on loopback only, no root."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from kubevpc.probe import (SOURCE_PORTS, PortBlocks, PortRange, Result, Target, format_line, parse_target,
                           probe)

REPO = Path(__file__).resolve().parents[2]
LO = "127.0.0.1"
READY_DEADLINE = 5.0
RUN = "run-test-1"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def free_port(kind: int) -> int:
    """A port currently free on 127.0.0.1 for ``kind`` (SOCK_STREAM/SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


def start_server(
    tmp_path: Path, listens: list[str], name: str = "pod-a", bind: str = LO
) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"{name}.ready"
    cmd = [sys.executable, "-m", "kubevpc.daemons.server", "--name", name, "--run", RUN,
           "--bind", bind, "--ready-file", str(ready)]
    for listen in listens:
        cmd += ["--listen", listen]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True)
    return proc, ready


def wait_ready(proc: subprocess.Popen, ready: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server not ready within deadline")
        time.sleep(0.01)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    ports = {"tcp": free_port(socket.SOCK_STREAM), "udp": free_port(socket.SOCK_DGRAM),
             "http": free_port(socket.SOCK_STREAM)}
    proc, ready = start_server(
        tmp_path, [f"TCP:{ports['tcp']}", f"UDP:{ports['udp']}", f"HTTP:{ports['http']}"]
    )
    wait_ready(proc, ready)
    yield {"proc": proc, "ports": ports, "ready": ready}
    stop(proc)


def run_probe_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubevpc.probe", *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=10)


def check_answer(r: Result, proto: str, port: int) -> None:
    """An answered probe carries the server's identity and our own address."""
    assert r.ok and r.outcome == "answered", r
    a = r.answer
    assert a is not None
    assert a["name"] == "pod-a"
    assert a["run"] == RUN
    assert a["proto"] == proto
    assert a["port"] == port
    assert a["server"] == f"{LO}:{port}"
    ip, _, cport = a["client"].rpartition(":")
    assert ip == LO and int(cport) > 0
    # The client the server saw is the probe's own socket (no NAT on loopback).
    assert r.detail == f"local={a['client']}"


# -- server + library ------------------------------------------------------------


def test_ready_file_holds_server_pid(server: dict) -> None:
    assert server["ready"].read_text().strip() == str(server["proc"].pid)


def test_library_probes_every_listener(server: dict) -> None:
    p = server["ports"]
    targets = [Target(LO, p["tcp"], "tcp", key="t"), Target(LO, p["udp"], "udp", key="u"),
               Target(LO, p["http"], "http", key="h"),
               # HTTP spoken to a TCP listener: proto reflects what the client spoke
               Target(LO, p["tcp"], "http", key="th")]
    results = probe(targets, timeout=2.0)
    assert [r.key for r in results] == ["t", "u", "h", "th"]
    check_answer(results[0], "tcp", p["tcp"])
    check_answer(results[1], "udp", p["udp"])
    check_answer(results[2], "http", p["http"])
    check_answer(results[3], "http", p["tcp"])
    assert results[2].answer["status"] == 200 and results[3].answer["status"] == 200
    assert "status" not in results[0].answer
    assert all(0 < r.elapsed_ms < 2000 for r in results)


def test_cli_json_in_input_order_with_keys(server: dict) -> None:
    p = server["ports"]
    cp = run_probe_cli("--timeout", "2", "--json", f"web=http:{LO}:{p['http']}",
                       f"tcp:{LO}:{p['tcp']}", f"dns=udp:{LO}:{p['udp']}")
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert [(o["key"], o["proto"], o["port"]) for o in out] == [
        ("web", "http", p["http"]), ("", "tcp", p["tcp"]), ("dns", "udp", p["udp"])]
    for o in out:
        check_answer(Result(**o), o["proto"], o["port"])


def test_cli_readable_lines(server: dict) -> None:
    closed = free_port(socket.SOCK_STREAM)
    cp = run_probe_cli("--timeout", "1", f"tcp:{LO}:{server['ports']['tcp']}", f"tcp:{LO}:{closed}")
    assert cp.returncode == 0  # exit 0 whatever the outcomes
    lines = cp.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("OK ") and "answered" in lines[0] and "name=pod-a" in lines[0]
    assert lines[1].startswith("FAIL") and "refused" in lines[1]


@contextlib.contextmanager
def next_port_taken():
    """A free UDP port, while the port after it is bound here (the test is skipped if it cannot be)."""
    first = free_port(socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        try:
            taken.bind(("0.0.0.0", first + 1))
        except OSError:
            pytest.skip(f"port {first + 1} is in use here")
        yield first


def test_probes_bind_the_given_source_ports_in_turn_skipping_ports_in_use(server: dict) -> None:
    """Each probe, TCP, UDP or HTTP, takes its own port of the range, so that no probe meets the
    conntrack entries of an earlier one; a port already bound in the namespace is skipped, and when
    the range is used up the probe fails naming the range, rather than falling back to a kernel port."""
    p = server["ports"]
    with next_port_taken() as first:
        targets = [Target(LO, p["udp"], "udp", key="u0"), Target(LO, p["udp"], "udp", key="u1"),
                   Target(LO, p["tcp"], "tcp", key="t"), Target(LO, p["http"], "http", key="h")]
        results = probe(targets, timeout=2.0, ports=PortRange(first, first + 40))
        for r in results:
            check_answer(r, r.proto, r.port)
        used = {r.key: int(r.answer["client"].rpartition(":")[2]) for r in results}
        assert len(set(used.values())) == 4 and all(first <= p <= first + 40 for p in used.values()), used
        assert used["u0"] == first and first + 1 not in (used["u1"], used["t"], used["h"]), used
        left = probe([Target(LO, p["udp"], "udp")], timeout=1.0, ports=PortRange(first + 1, first + 1))[0]
    assert not left.ok and f"no source port left in the range up to {first + 1}" in left.detail, left
    cp = run_probe_cli("--json", "--source-ports", f"{first + 41}:{first + 80}", f"tcp:{LO}:{p['tcp']}")
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)[0]
    assert out["ok"] and first + 41 <= int(out["answer"]["client"].rpartition(":")[2]) <= first + 80, out


@pytest.mark.parametrize("bad", ["0:10", "10:9", "10", "a:b", "1:65536"])
def test_cli_bad_source_port_range_exits_2_naming_it(bad: str) -> None:
    cp = run_probe_cli("--source-ports", bad, f"udp:{LO}:1")
    assert cp.returncode == 2 and repr(bad) in cp.stderr and "FIRST:LAST" in cp.stderr, cp.stderr


def test_port_blocks_follow_each_other_and_wrap_before_the_end() -> None:
    blocks = PortBlocks(100, 199)
    assert blocks.take(4) == (100, 119)          # 4 probes + 16 spare
    assert blocks.take(0) == (120, 135)
    assert blocks.take(30) == (136, 181)
    assert blocks.take(4) == (100, 119)          # 182..201 would pass the end: start again
    assert blocks.take(500) == (100, 199)        # never more than the range
    assert PortBlocks().take(0) == (SOURCE_PORTS[0], SOURCE_PORTS[0] + 15)


@pytest.mark.parametrize("bad", ["tcp:127.0.0.1", "sctp:127.0.0.1:80", "udp:127.0.0.1:99999",
                                 "http::80"])
def test_cli_bad_argument_exits_2_naming_it(bad: str) -> None:
    cp = run_probe_cli("--json", f"tcp:{LO}:1", bad)
    assert cp.returncode == 2
    assert bad in cp.stderr
    assert cp.stdout == ""


def test_silent_tcp_client_gets_json_line_after_first_bytes_wait(server: dict) -> None:
    port = server["ports"]["tcp"]
    with socket.create_connection((LO, port), timeout=3) as s:
        local = "%s:%d" % s.getsockname()
        start = time.monotonic()
        data = s.makefile("rb").read()  # until the server closes
        waited = time.monotonic() - start
    assert 0.9 <= waited < 2.5
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    answer = json.loads(data)
    assert answer["proto"] == "tcp" and answer["client"] == local


def _raw_http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection((LO, port), timeout=3) as s:
        s.sendall(request)
        data = s.makefile("rb").read()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers, body


def test_http_response_is_proper_http11(server: dict) -> None:
    status, headers, body = _raw_http(server["ports"]["http"],
                                      b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["proto"] == "http"


def test_healthz_answers_ok(server: dict) -> None:
    status, headers, body = _raw_http(server["ports"]["http"],
                                      b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert body == b"ok\n" and headers["content-length"] == "3"


# -- failure outcomes ------------------------------------------------------------


def test_closed_ports_are_refused() -> None:
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    r_tcp, r_udp = probe([Target(LO, tcp, "tcp"), Target(LO, udp, "udp")], timeout=2.0)
    assert (r_tcp.outcome, r_tcp.ok, r_tcp.answer) == ("refused", False, None)
    assert (r_udp.outcome, r_udp.ok, r_udp.answer) == ("refused", False, None)
    assert r_tcp.elapsed_ms < 1000 and r_udp.elapsed_ms < 1000


def test_udp_blackhole_times_out_within_deadline() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((LO, 0))  # bound, so no ICMP refusal, but never answers
        port = hole.getsockname()[1]
        start = time.monotonic()
        # Several blackholes probed at once finish in one deadline, not several.
        results = probe([Target(LO, port, "udp", key=str(i)) for i in range(5)], timeout=0.5)
        total = time.monotonic() - start
        hole.settimeout(0)
        received = 0
        try:
            while hole.recv(100) == b"kubevpc-probe":
                received += 1
        except BlockingIOError:
            pass
    assert [r.outcome for r in results] == ["timeout"] * 5
    assert all(450 <= r.elapsed_ms < 900 for r in results)
    assert total < 1.2
    assert received > 5  # retransmissions happened


def test_tcp_peer_closing_without_answer_is_error() -> None:
    with socket.socket() as lst:
        lst.bind((LO, 0))
        lst.listen()

        def accept_and_close() -> None:
            conn, _ = lst.accept()
            conn.close()

        t = threading.Thread(target=accept_and_close, daemon=True)
        t.start()
        (r,) = probe([Target(LO, lst.getsockname()[1], "tcp")], timeout=2.0)
        t.join(2)
    assert r.outcome == "error" and not r.ok
    assert "without an answer" in r.detail or "reset" in r.detail.lower()


def test_parse_target_forms() -> None:
    assert parse_target("tcp:10.0.0.5:80") == Target("10.0.0.5", 80, "tcp", "")
    assert parse_target("dns=UDP:10.0.0.5:53") == Target("10.0.0.5", 53, "udp", "dns")
    assert parse_target("http:[fd00::1]:8080") == Target("fd00::1", 8080, "http", "")
    with pytest.raises(ValueError, match="bad target"):
        parse_target("tcp:10.0.0.5:0")


def test_format_line_mentions_outcome() -> None:
    r = Result("k", LO, 1, "tcp", False, "timeout", None, 12.5, "no answer")
    assert format_line(r) == "FAIL k tcp:127.0.0.1:1 timeout 12.5ms (no answer)"


# -- server lifecycle -----------------------------------------------------------


def test_sigterm_exits_zero_promptly(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    proc, ready = start_server(tmp_path, [f"TCP:{port}"])
    wait_ready(proc, ready)
    with socket.create_connection((LO, port)):
        # an idle client connection must not delay the exit
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=2)
        assert time.monotonic() - start < 1.0
    assert rc == 0


@pytest.mark.parametrize("kind,proto", [(socket.SOCK_STREAM, "TCP"), (socket.SOCK_DGRAM, "UDP")])
def test_port_in_use_exits_nonzero_naming_port(tmp_path: Path, kind: int, proto: str) -> None:
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind((LO, 0))
        if kind == socket.SOCK_STREAM:
            busy.listen()
        port = busy.getsockname()[1]
        free = free_port(socket.SOCK_STREAM)
        proc, ready = start_server(tmp_path, [f"TCP:{free}", f"{proto}:{port}"])
        try:
            rc = proc.wait(timeout=READY_DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read()
    assert rc != 0
    assert f"{proto}:{port}" in err and "in use" in err
    assert not ready.exists()


def test_udp_wildcard_bind_answers_from_destination_address(tmp_path: Path) -> None:
    # Bound to 0.0.0.0, the server must reply *from* the address the client
    # targeted (127.0.0.2 here, still loopback), or the probe's connected
    # socket would drop the reply; "server" must name that address too.
    port = free_port(socket.SOCK_DGRAM)
    proc, ready = start_server(tmp_path, [f"UDP:{port}"], bind="0.0.0.0")
    try:
        wait_ready(proc, ready)
        (r,) = probe([Target("127.0.0.2", port, "udp")], timeout=2.0)
    finally:
        assert stop(proc) == 0
    assert r.outcome == "answered", r
    assert r.answer["server"] == f"127.0.0.2:{port}"
