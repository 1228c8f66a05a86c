"""Unit tests for the SLB: annotations (kubevpc.render.slb), thresholds, probes and the checker process
(kubevpc.daemons.slb) (loopback, no root)."""
from __future__ import annotations

import json
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from kubevpc.render.slb import PREFIX, CheckSpec, SlbAnnotationError, SlbConfig, slb_config
from kubevpc.daemons.slb import Backend, Transition, probe, transition_line
from tests.unit.procs import DEADLINE, REPO, Daemon, child_env, wait_for, write_json

LO = "127.0.0.1"
LISTENER = "shop/web:80/TCP"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def ann(**kv: str) -> dict[str, str]:
    """Annotations from suffixes written with '_' for '-'."""
    return {PREFIX + k.replace("_", "-"): v for k, v in kv.items()}


# -- annotations --------------------------------------------------------------


def test_defaults_without_annotations() -> None:
    cfg = slb_config({"unrelated": "x"})
    assert cfg == SlbConfig()
    assert (cfg.address_type, cfg.scheduler, cfg.check_type) == ("internet", "rr", "tcp")
    assert (cfg.interval, cfg.connect_timeout, cfg.timeout) == (2, 5, 5)
    assert (cfg.healthy_threshold, cfg.unhealthy_threshold) == (3, 3)
    assert (cfg.uri, cfg.domain, cfg.connect_port) == ("/", None, None)
    assert (cfg.http_codes, cfg.method, cfg.warnings) == (("http_2xx",), "head", ())


@pytest.mark.parametrize("suffix, value, field, parsed", [
    ("address-type", "intranet", "address_type", "intranet"),
    ("scheduler", "wrr", "scheduler", "wrr"),
    ("scheduler", "wlc", "scheduler", "wlc"),
    ("health-check-type", "http", "check_type", "http"),
    ("health-check-interval", "50", "interval", 50),
    ("health-check-connect-timeout", "300", "connect_timeout", 300),
    ("healthy-threshold", "2", "healthy_threshold", 2),
    ("unhealthy-threshold", "10", "unhealthy_threshold", 10),
    ("health-check-connect-port", "8080", "connect_port", 8080),
    ("health-check-connect-port", "-520", "connect_port", None),
])
def test_each_annotation_is_read(suffix: str, value: str, field: str, parsed: object) -> None:
    assert getattr(slb_config({PREFIX + suffix: value}), field) == parsed


def test_http_annotations_are_read() -> None:
    cfg = slb_config(ann(health_check_type="http", health_check_uri="/healthz?full=1",
                         health_check_domain="shop.example.com", health_check_timeout="9",
                         health_check_httpcode="http_2xx,http_3xx", health_check_method="get"))
    assert (cfg.uri, cfg.domain, cfg.timeout) == ("/healthz?full=1", "shop.example.com", 9)
    assert (cfg.http_codes, cfg.method) == (("http_2xx", "http_3xx"), "get")
    assert slb_config(ann(health_check_type="http", health_check_domain="$_ip")).domain is None


def test_legacy_prefix_is_read_and_the_new_one_wins() -> None:
    legacy = "service.beta.kubernetes.io/alicloud-loadbalancer-"
    assert slb_config({legacy + "scheduler": "wlc"}).scheduler == "wlc"
    both = {legacy + "scheduler": "wlc", PREFIX + "scheduler": "wrr"}
    assert slb_config(both).scheduler == "wrr"


def test_unknown_annotations_are_ignored_with_a_warning() -> None:
    cfg = slb_config(ann(bandwidth="50", health_check_flag="on", scheduler="wrr"))
    assert cfg.scheduler == "wrr"
    assert cfg.warnings == (
        f"metadata.annotations.{PREFIX}bandwidth: '50': not emulated by kubevpc, ignored",
        f"metadata.annotations.{PREFIX}health-check-flag: 'on': not emulated by kubevpc, ignored",
    )


@pytest.mark.parametrize("extra, suffix, value, expected", [
    ({}, "address-type", "public", "one of internet, intranet"),
    ({}, "scheduler", "sch", "one of rr, wrr, wlc"),
    ({}, "health-check-type", "udp", "one of tcp, http"),
    ({}, "health-check-interval", "2s", "an integer from 1 to 50 (seconds)"),
    ({}, "health-check-interval", "51", "an integer from 1 to 50 (seconds)"),
    ({}, "health-check-connect-timeout", "0", "an integer from 1 to 300 (seconds)"),
    ({}, "healthy-threshold", "1", "an integer from 2 to 10"),
    ({}, "unhealthy-threshold", "three", "an integer from 2 to 10"),
    ({}, "health-check-connect-port", "70000", "-520 (the backend port) or an integer from 1 to 65535"),
    (ann(health_check_type="http"), "health-check-timeout", "301", "an integer from 1 to 300 (seconds)"),
    (ann(health_check_type="http"), "health-check-uri", "healthz", "a path starting with '/'"),
    (ann(health_check_type="http"), "health-check-uri", "/" + "a" * 80, "a path starting with '/'"),
    (ann(health_check_type="http"), "health-check-domain", "bad_domain", "$_ip, or a domain"),
    (ann(health_check_type="http"), "health-check-httpcode", "200", "a comma-separated list of http_2xx"),
    (ann(health_check_type="http"), "health-check-method", "POST", "one of head, get"),
    ({}, "health-check-uri", "/healthz", "only valid with health-check-type http (this Service's is tcp)"),
    ({}, "health-check-domain", "a.example", "only valid with health-check-type http"),
    ({}, "health-check-timeout", "5", "only valid with health-check-type http"),
    ({}, "health-check-httpcode", "http_2xx", "only valid with health-check-type http"),
])
def test_invalid_values_name_key_value_and_expectation(
        extra: dict[str, str], suffix: str, value: str, expected: str) -> None:
    with pytest.raises(SlbAnnotationError) as info:
        slb_config({**extra, PREFIX + suffix: value})
    (problem,) = info.value.problems
    assert (problem.key, problem.value) == (PREFIX + suffix, value)
    assert problem.expected.startswith(expected)
    assert problem.path == f"metadata.annotations.{PREFIX}{suffix}"
    assert str(info.value) == f"{problem.path}: {value!r}: {problem.expected}"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SlbAnnotationError) as info:
        slb_config(ann(scheduler="lc", health_check_interval="0", healthy_threshold="11",
                       health_check_uri="x", bandwidth="5"))
    keys = [p.key for p in info.value.problems]
    assert keys == [PREFIX + s for s in ("health-check-interval", "health-check-uri",
                                         "healthy-threshold", "scheduler")]
    assert len(str(info.value).splitlines()) == 4


def test_an_invalid_check_type_does_not_also_flag_http_keys() -> None:
    with pytest.raises(SlbAnnotationError) as info:
        slb_config(ann(health_check_type="HTTP", health_check_uri="/"))
    assert [p.key for p in info.value.problems] == [PREFIX + "health-check-type"]


def test_health_check_settings_follow_alibaba_timeouts() -> None:
    check = slb_config({}).health_check()
    assert check == CheckSpec(type="tcp", interval=2, connect_timeout=5, timeout=5,
                              healthy_threshold=3, unhealthy_threshold=3)
    # A timeout shorter than the interval is replaced by the interval.
    assert slb_config(ann(health_check_interval="10", health_check_connect_timeout="3")) \
        .health_check().connect_timeout == 10
    # On a TCP listener the connect timeout also bounds HTTP checks.
    http = slb_config(ann(health_check_type="http", health_check_connect_timeout="7",
                          health_check_domain="a.example", health_check_method="get"))
    assert (http.timeout, http.health_check().timeout) == (7, 7)
    assert (http.health_check().domain, http.health_check().method) == ("a.example", "GET")


# -- thresholds, with an injected clock ----------------------------------------


def test_a_new_backend_is_out_of_rotation_until_the_healthy_threshold() -> None:
    b = Backend(healthy_threshold=3, unhealthy_threshold=2, now=100.0)
    assert (b.status, b.healthy, b.since) == ("initial", False, 100.0)
    assert b.record(True, 101.0) is None
    assert b.record(True, 102.0) is None
    assert not b.healthy
    assert b.record(True, 103.0) == Transition("healthy", 3, "")
    assert (b.healthy, b.since, b.successes) == (True, 103.0, 3)
    assert b.record(True, 104.0) is None  # no repeated transition
    assert b.since == 103.0


def test_down_after_exactly_n_failures_up_after_exactly_m_successes() -> None:
    b = Backend(healthy_threshold=2, unhealthy_threshold=3, now=0.0)
    b.record(True, 1.0)
    b.record(True, 2.0)
    assert b.healthy
    assert b.record(False, 3.0, "connection refused") is None
    assert b.record(False, 4.0, "connection refused") is None
    assert b.healthy  # still in rotation after 2 of 3 failures
    assert b.record(False, 5.0, "timeout after 5 s") == Transition("unhealthy", 3, "timeout after 5 s")
    assert (b.status, b.since, b.last_error) == ("unhealthy", 5.0, "timeout after 5 s")
    assert b.record(True, 6.0) is None
    assert b.record(True, 7.0) == Transition("healthy", 2, "")
    assert b.state() == {"status": "healthy", "healthy": True, "since": 7.0,
                         "successes": 2, "failures": 0, "last_error": "timeout after 5 s"}


def test_a_success_resets_the_failure_count_and_a_failure_the_success_count() -> None:
    b = Backend(healthy_threshold=2, unhealthy_threshold=2, now=0.0)
    b.record(True, 1.0)
    b.record(True, 2.0)
    for t in range(3, 10, 2):  # fail, pass, fail, pass...: never two failures in a row
        assert b.record(False, float(t), "refused") is None
        assert b.record(True, float(t + 1)) is None
    assert b.healthy and b.failures == 0
    b = Backend(healthy_threshold=2, unhealthy_threshold=2, now=0.0)
    for t in range(1, 8, 2):  # pass, fail, ...: a new backend never reaches healthy
        assert b.record(True, float(t)) is None
        assert b.record(False, float(t + 1), "refused") is None
    assert b.status == "initial" and b.successes == 0


def test_a_new_backend_that_keeps_failing_becomes_unhealthy() -> None:
    b = Backend(healthy_threshold=3, unhealthy_threshold=3, now=0.0)
    assert b.record(False, 1.0, "refused") is None
    assert b.record(False, 2.0, "refused") is None
    assert b.record(False, 3.0, "refused") == Transition("unhealthy", 3, "refused")


def test_transition_lines() -> None:
    assert transition_line(LISTENER, "192.168.1.10:30080", Transition("unhealthy", 3, "connection refused")) \
        == f"listener {LISTENER} backend 192.168.1.10:30080 unhealthy after 3 failures (connection refused)"
    assert transition_line(LISTENER, "192.168.1.10:30080", Transition("healthy", 2, "")) \
        == f"listener {LISTENER} backend 192.168.1.10:30080 healthy after 2 successes"


# -- local servers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


class _Quiet(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass  # accept and close: enough for a TCP check


def tcp_server(port: int = 0) -> socketserver.ThreadingTCPServer:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer((LO, port), _Quiet)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def http_server(status: int, seen: list[tuple[str, str, str]] | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if seen is not None:
                seen.append((self.command, self.path, self.headers.get("Host", "")))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LO, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[list[socketserver.BaseServer]]:
    started: list[socketserver.BaseServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_probe_tcp_open_and_closed(servers: list) -> None:
    servers.append(tcp_server())
    check = CheckSpec(type="tcp", connect_timeout=1)
    assert probe(check, LO, servers[0].server_address[1]) is None
    assert probe(check, LO, free_port()) == "connection refused"


def test_probe_http_status_method_and_host(servers: list) -> None:
    seen: list[tuple[str, str, str]] = []
    servers.extend([http_server(200, seen), http_server(302), http_server(500)])
    ok, redirect, error = (s.server_address[1] for s in servers)
    check = CheckSpec(type="http", timeout=1, uri="/healthz", domain="shop.example.com")
    assert probe(check, LO, ok) is None
    assert seen == [("HEAD", "/healthz", "shop.example.com")]
    assert probe(check, LO, redirect) == "HTTP 302, expected http_2xx"
    assert probe(check.model_copy(update={"http_codes": ("http_2xx", "http_3xx")}), LO, redirect) is None
    assert probe(check, LO, error) == "HTTP 500, expected http_2xx"
    assert probe(check.model_copy(update={"method": "GET", "domain": ""}), LO, ok) is None
    assert seen[-1] == ("GET", "/healthz", LO)


def test_a_probe_never_outlasts_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind((LO, 0))
        silent.listen(8)
        check = CheckSpec(type="http", timeout=0.3)
        start = time.monotonic()
        assert probe(check, LO, silent.getsockname()[1]) == "timeout after 0.3 s"
        assert time.monotonic() - start < 0.3 + 0.2


# -- the checker process ------------------------------------------------------------


class CheckerRun(Daemon):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__()
        self.config = tmp_path / "checker.json"
        self.state = tmp_path / "state.json"
        self.log = tmp_path / "checker.log"
        self.ready = tmp_path / "checker.ready"

    def start(self, config: dict) -> None:
        write_json(self.config, config)
        proc = self.launch("kubevpc.daemons.slb", "check", "--config", str(self.config),
                           "--state", str(self.state), "--log", str(self.log), "--ready", str(self.ready))
        wait_for("checker ready", lambda: self.ready.exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()

    def backends(self, listener: str = LISTENER) -> dict[str, dict]:
        return json.loads(self.state.read_text())["listeners"].get(listener, {})

    def wait_status(self, key: str, status: str) -> dict:
        return wait_for(f"{key} {status}", lambda: self.backends().get(key, {}).get("status") == status
                        and self.backends()[key])


@pytest.fixture
def checker(tmp_path: Path) -> Iterator[CheckerRun]:
    run = CheckerRun(tmp_path)
    yield run
    run.close()


FAST = {"type": "tcp", "interval": 0.1, "connect_timeout": 0.5, "timeout": 0.5,
        "healthy_threshold": 2, "unhealthy_threshold": 2}


def listener(check: dict, *ports: int, name: str = LISTENER) -> dict:
    return {"name": name, "check": check,
            "backends": [{"id": f"node-{i}", "ip": LO, "port": p} for i, p in enumerate(ports, 1)]}


def test_checker_follows_backends_and_logs_transitions(checker: CheckerRun, servers: list) -> None:
    servers.extend([tcp_server(), http_server(200), http_server(500)])
    up, http_ok, http_bad = (s.server_address[1] for s in servers)
    down = free_port()
    http = {**FAST, "type": "http", "uri": "/healthz"}
    checker.start({"listeners": [listener(FAST, up, down),
                                 listener(http, http_ok, http_bad, name="shop/web:443/TCP")]})
    first = json.loads(checker.state.read_text())  # written before the ready file
    assert {k: v["status"] for k, v in first["listeners"][LISTENER].items()} == \
        {f"{LO}:{up}": "initial", f"{LO}:{down}": "initial"}

    assert checker.wait_status(f"{LO}:{up}", "healthy")["id"] == "node-1"
    failed = checker.wait_status(f"{LO}:{down}", "unhealthy")
    assert (failed["healthy"], failed["last_error"]) == (False, "connection refused")
    wait_for("http backends judged", lambda: {
        k: v["status"] for k, v in checker.backends("shop/web:443/TCP").items()}
        == {f"{LO}:{http_ok}": "healthy", f"{LO}:{http_bad}": "unhealthy"})
    assert checker.backends("shop/web:443/TCP")[f"{LO}:{http_bad}"]["last_error"] \
        == "HTTP 500, expected http_2xx"

    # The listener closes: out of rotation after 2 failures; reopened: back after 2 successes.
    servers[0].shutdown()
    servers[0].server_close()
    checker.wait_status(f"{LO}:{up}", "unhealthy")
    servers[0] = tcp_server(up)
    checker.wait_status(f"{LO}:{up}", "healthy")

    lines = checker.log.read_text().splitlines()
    backend = f"listener {LISTENER} backend {LO}:{up}"
    mine = [line for line in lines if backend in line]
    assert all(re.match(f"{ISO} ", line) for line in mine)
    assert [line.split(" ", 1)[1] for line in mine] == [
        f"{backend} healthy after 2 successes",
        f"{backend} unhealthy after 2 failures (connection refused)",
        f"{backend} healthy after 2 successes",
    ]
    assert any(re.fullmatch(f"{ISO} listener {re.escape(LISTENER)} backend {LO}:{down} unhealthy "
                            r"after 2 failures \(connection refused\)", line) for line in lines)
    assert checker.stop() == 0


def test_checker_reloads_its_config_keeping_known_backends(checker: CheckerRun, servers: list) -> None:
    servers.extend([tcp_server(), tcp_server()])
    first, second = (s.server_address[1] for s in servers)
    checker.start({"listeners": [listener(FAST, first)]})
    since = checker.wait_status(f"{LO}:{first}", "healthy")["since"]

    write_json(checker.config, {"listeners": [listener(FAST, first, second)]})
    added = checker.wait_status(f"{LO}:{second}", "healthy")
    assert added["id"] == "node-2"
    assert checker.backends()[f"{LO}:{first}"]["since"] == since  # state kept

    write_json(checker.config, {"listeners": [listener(FAST, second)]})
    wait_for("first backend removed", lambda: list(checker.backends()) == [f"{LO}:{second}"])

    checker.config.write_text("{not json")  # a bad reload keeps the last good config
    wait_for("reload error logged", lambda: "config not reloaded" in checker.log.read_text())
    assert list(checker.backends()) == [f"{LO}:{second}"]
    assert checker.stop() == 0


def test_checker_refuses_an_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    write_json(config, {"listeners": [{"name": "x", "check": {"type": "udp"},
                                       "backends": [{"id": "n", "ip": "10.0.0.300", "port": 80}]}]})
    proc = subprocess.run(
        [sys.executable, "-m", "kubevpc.daemons.slb", "check", "--config", str(config),
         "--state", str(tmp_path / "state.json")],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert "listeners.0.check.type" in proc.stderr
    assert "listeners.0.backends.0.ip" in proc.stderr
    assert not (tmp_path / "state.json").exists()
