"""Unit tests for kubevpc.daemons.nodehealth, kube-proxy's healthCheckNodePort server (loopback, no root)."""
from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Iterator

import pytest

from kubevpc.daemons import nodehealth
from kubevpc.daemons.nodehealth import HealthPort, NodeHealthConfigError, parse_ports, render
from tests.unit.procs import DEADLINE, Daemon, wait_for, write_json

LO = "127.0.0.1"

# What kube-proxy (pkg/proxy/healthcheck/service_health.go) writes, byte for byte.
KUBE_PROXY_BODY = (b'{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n'
                   b'\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}')


def test_render_reproduces_kube_proxy() -> None:
    status, headers, body = render(HealthPort("default", "web", 2))
    assert (status, body) == (200, KUBE_PROXY_BODY)
    assert headers == [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                       ("X-Load-Balancing-Endpoint-Weight", "2")]
    status, headers, body = render(HealthPort("shop", "api", 0))
    assert status == 503
    assert json.loads(body) == {"service": {"namespace": "shop", "name": "api"},
                                "localEndpoints": 0, "serviceProxyHealthy": True}
    assert ("X-Load-Balancing-Endpoint-Weight", "0") in headers


@pytest.mark.parametrize("data, message", [
    ([], 'expected {"ports"'),
    ({"ports": {}, "extra": 1}, 'expected {"ports"'),
    ({"ports": {"http": {}}}, "ports.http: not a port number"),
    ({"ports": {"70000": {}}}, "ports.70000: not a port number"),
    ({"ports": {"32000": {"name": "web"}}}, "ports.32000: expected exactly namespace, name"),
    ({"ports": {"32000": {"namespace": "d", "name": "w", "local_endpoints": -1}}},
     "ports.32000.local_endpoints: -1: expected an integer >= 0"),
    ({"ports": {"32000": {"namespace": "d", "name": "", "local_endpoints": 1}}},
     "ports.32000.name: '': expected a name"),
])
def test_invalid_configs_name_the_key(data: object, message: str) -> None:
    with pytest.raises(NodeHealthConfigError, match="^" + message.replace("{", r"\{").replace(".", r"\.")):
        parse_ports(data)


# -- the server process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


def ports_config(ports: dict[int, tuple[str, str, int]]) -> dict:
    return {"ports": {str(p): {"namespace": ns, "name": name, "local_endpoints": n}
                      for p, (ns, name, n) in ports.items()}}


def ask(port: int, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LO, port, timeout=2)
    try:
        conn.request(method, "/any/path")
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def status_of(port: int) -> int | None:
    try:
        return ask(port)[0]
    except OSError:
        return None


class Run(Daemon):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__()
        self.config = tmp_path / "health.json"
        self.ready = tmp_path / "health.ready"
        self.log = tmp_path / "health.log"

    def start(self, config: dict) -> None:
        write_json(self.config, config)
        proc = self.launch("kubevpc.daemons.nodehealth", "--config", str(self.config),
                           "--listen", LO, "--ready", str(self.ready), "--log", str(self.log))
        wait_for("server ready", lambda: self.ready.exists() or proc.poll() is not None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path)
    yield run
    run.close()


def test_answers_like_kube_proxy_and_follows_its_config(server: Run) -> None:
    web, api, extra = free_port(), free_port(), free_port()
    server.start(ports_config({web: ("default", "web", 2), api: ("shop", "api", 0)}))
    assert server.proc.poll() is None, server.proc.stderr.read()

    status, headers, body = ask(web)
    assert (status, body) == (200, KUBE_PROXY_BODY)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Load-Balancing-Endpoint-Weight"] == "2"
    status, headers, body = ask(api)
    assert status == 503
    assert json.loads(body)["service"] == {"namespace": "shop", "name": "api"}
    status, headers, body = ask(web, "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(KUBE_PROXY_BODY)))

    # web loses its local endpoints, api is removed, a new port appears.
    write_json(server.config, ports_config({web: ("default", "web", 0), extra: ("shop", "cart", 1)}))
    wait_for("web answers 503", lambda: status_of(web) == 503)
    assert json.loads(ask(web)[2])["localEndpoints"] == 0
    wait_for("api port closed", lambda: status_of(api) is None)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LO, api), timeout=1)
    wait_for("new port answers", lambda: status_of(extra) == 200)

    server.config.write_text("{broken")  # a bad reload keeps the last good config
    wait_for("reload error logged", lambda: "config not reloaded" in server.log.read_text())
    assert status_of(extra) == 200
    assert server.stop() == 0


def test_a_taken_port_fails_at_start(server: Run) -> None:
    with socket.socket() as taken:
        taken.bind((LO, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server.start(ports_config({port: ("default", "web", 1)}))
        assert server.proc.wait(timeout=DEADLINE) == 1
        assert f"cannot listen on {LO}:{port} for default/web" in server.proc.stderr.read()
        assert not server.ready.exists()


def test_the_server_says_which_version_of_its_config_it_has_taken(server: Run) -> None:
    web = free_port()
    server.start(ports_config({web: ("default", "web", 1)}))
    config = str(server.config)
    assert nodehealth.taken(config), "the file it started with"
    write_json(server.config, ports_config({web: ("default", "web", 0)}))
    assert not nodehealth.taken(config) or status_of(web) == 503     # not taken before it looks again
    wait_for("the new file taken", lambda: nodehealth.taken(config))
    assert status_of(web) == 503, "taken means serving it: the Lab waits for this after a change"
    server.config.write_text("{broken")                               # refused, but seen: nobody waits forever
    wait_for("the broken file seen", lambda: nodehealth.taken(config))
    assert status_of(web) == 503
    os.unlink(nodehealth.seen_path(config))
    assert not nodehealth.taken(config), "nothing said: not taken"
