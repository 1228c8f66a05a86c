"""Unit tests for the ingress controller: the Ingress and Secret models and certificates (kubevpc.k8s),
the routing table and nginx.conf (kubevpc.render.nginx), and the controller process
(kubevpc.daemons.ingress) with a real NGINX on loopback (no root needed).

The NGINX tests start ``python -m kubevpc.daemons.ingress run --no-ledger`` on non-privileged ports in
front of real ``python -m kubevpc.daemons.server`` upstreams (and one in-process server that echoes the
request it got). Every wait has a deadline.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from pydantic import ValidationError

from kubevpc.daemons.ingress import NGINX
from kubevpc.render.nginx import NOT_FOUND_BODY, render, route
from kubevpc.k8s import KINDS, Ingress, Secret, self_signed, tls_pair
import kubevpc.rundir
from kubevpc.ledger import Entry, Ledger
from tests.unit.procs import DEADLINE, Daemon, run_module, stop_process, wait_for, write_json

LO = "127.0.0.1"
HTTP_TIMEOUT = 5.0
CONF_DIR = "/run/ingress-test"       # render() is pure: this directory is never created


# -- manifests and state documents --------------------------------------------------------------


def backend(service: str, port: int | str) -> dict:
    return {"service": {"name": service, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def path(p: str, service: str, port: int | str = 80, kind: str = "Prefix") -> dict:
    return {"path": p, "pathType": kind, "backend": backend(service, port)}


def rule(host: str | None, *paths: dict) -> dict:
    out: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host:
        out["host"] = host
    return out


def ingress(name: str, *rules: dict, namespace: str = "default", annotations: dict | None = None,
            **spec: Any) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"rules": list(rules), **spec}}


def services(**endpoints: list[str]) -> dict:
    """Services of the default namespace with one port 80 named http: name=[endpoints]."""
    return {f"default/{name}": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "endpoints": eps}]}
            for name, eps in endpoints.items()}


SVCS = services(web=["10.244.0.2:8080", "10.244.1.3:8080"], api=["10.244.0.7:9000"], empty=[])


def state(*ingresses: dict, svcs: dict = SVCS, **extra: Any) -> dict:
    return {"generation": 1, "listen": ["10.244.0.5"], "ingresses": list(ingresses), "services": svcs, **extra}


def served(rendered: Any, host: str, p: str) -> str:
    """What serves host and path: "ns/svc", "404" or "503"."""
    loc = route(rendered, host, p)[1]
    if loc.backend is None:
        return "404"
    return loc.backend.service if loc.backend.upstream else "503"


# -- models -------------------------------------------------------------------------------------------


def test_a_valid_ingress_parses() -> None:
    ing = Ingress.model_validate(ingress(
        "web", rule("*.example.com", path("/", "web", "http", "ImplementationSpecific")),
        tls=[{"hosts": ["a.example.com"], "secretName": "tls"}], defaultBackend=backend("web", 80)))
    assert ing.key == "default/web" and ing.ingress_class is None
    assert ing.spec.rules[0].http.paths[0].backend.service.port.ref == "http"
    assert KINDS[("networking.k8s.io/v1", "Ingress")] is Ingress and KINDS[("v1", "Secret")] is Secret


@pytest.mark.parametrize("manifest, where, words", [
    (ingress("x", rule("a.com", path("/", "web", kind="Regex"))), "pathType", "'Exact', 'Prefix'"),
    (ingress("x", rule("a.com", {"path": "/", "backend": backend("web", 80)})), "pathType", "Field required"),
    (ingress("x", rule("a.com", path("foo", "web"))), "paths.0", "must be an absolute path"),
    (ingress("x", rule("a.com", path("/a//b", "web"))), "paths.0", "must not contain '//'"),
    (ingress("x", rule("a.com", {"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": "web", "port": {"number": 80, "name": "http"}}}})), "port", "exactly one"),
    (ingress("x", rule("a.com", path("/", "web", 0))), "number", "greater than or equal to 1"),
    (ingress("x", rule("a.com", path("/", "Web"))), "service.name", "DNS-1035"),
    (ingress("x"), "spec", "either defaultBackend or rules"),
    (ingress("x", rule("10.0.0.1", path("/", "web"))), "host", "not an IP address"),
    (ingress("x", rule("A.example.com", path("/", "web"))), "host", "DNS-1123 subdomain"),
    (ingress("x", rule("foo.*.com", path("/", "web"))), "host", "DNS-1123 subdomain"),
    (ingress("x", rule("a.com", path("/", "web")), tls=[{"hosts": ["1.2.3.4"]}]), "tls", "not an IP address"),
])
def test_invalid_ingresses_are_refused_naming_the_field(manifest: dict, where: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        Ingress.model_validate(manifest)
    err = info.value.errors()[0]
    assert where in ".".join(map(str, err["loc"])) or where in err["msg"], info.value
    assert words in err["msg"], info.value


def tls_secret(cert: bytes, key: bytes, **fields: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
            **fields}


def test_self_signed_certificate_names_its_hosts() -> None:
    cert_pem, key_pem = self_signed(["a.example.com", "*.b.example.com", "127.0.0.1"], days=2)
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.com", "*.b.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.subject.rfc4514_string() == "CN=a.example.com" == cert.issuer.rfc4514_string()
    assert 1 <= (cert.not_valid_after - cert.not_valid_before).days <= 2
    assert tls_pair(Secret.model_validate(tls_secret(cert_pem, key_pem))) == (cert_pem, key_pem)


def test_tls_pair_prefers_string_data_and_checks_the_pair() -> None:
    cert, key = self_signed(["a.example.com"])
    other_cert, other_key = self_signed(["b.example.com"])
    secret = Secret.model_validate(tls_secret(cert, key, stringData={"tls.crt": other_cert.decode(),
                                                                     "tls.key": other_key.decode()}))
    assert tls_pair(secret) == (other_cert, other_key)
    mismatched = Secret.model_validate(tls_secret(cert, other_key))
    with pytest.raises(ValueError, match="not the key of tls.crt"):
        tls_pair(mismatched)
    with pytest.raises(ValueError, match="tls.crt is not a PEM certificate"):
        tls_pair(Secret.model_validate(tls_secret(b"hello", key)))
    with pytest.raises(ValueError, match="has no tls.key"):
        tls_pair(Secret.model_validate({**tls_secret(cert, key), "type": "Opaque",
                                        "data": {"tls.crt": base64.b64encode(cert).decode()}}))


@pytest.mark.parametrize("change, words", [
    ({"data": {"tls.crt": "not base64!", "tls.key": ""}}, "not valid base64"),
    ({"data": {"tls.crt": ""}}, "data['tls.key'] is required"),
    ({"data": {"bad/key": ""}, "type": "Opaque"}, "alphanumeric"),
])
def test_invalid_secrets_are_refused(change: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("[", r"\[")):
        Secret.model_validate({**tls_secret(b"", b""), **change})


# -- the routing table ----------------------------------------------------------------------------


def test_ingresses_of_one_host_merge_and_the_first_wins_a_conflict() -> None:
    r = render(state(
        ingress("a", rule("shop.example.com", path("/", "web"), path("/cart", "api"))),
        ingress("b", rule("shop.example.com", path("/cart", "web"), path("/pay", "api", kind="Exact"))),
        ingress("c", rule("shop.example.com", path("/cart/", "web", kind="ImplementationSpecific"))),
    ), CONF_DIR)
    assert [s.host for s in r.servers] == ["", "shop.example.com"]
    assert served(r, "shop.example.com", "/cart/x") == "default/api"
    assert served(r, "shop.example.com", "/pay") == "default/api"
    assert served(r, "SHOP.example.com:80", "/") == "default/web"
    assert r.warnings == [
        "ingress default/b: shop.example.com Prefix /cart is already defined by ingress default/a; ignored",
        "ingress default/c: shop.example.com Prefix /cart is already defined by ingress default/a; ignored",
    ]
    assert r.text.count("server_name shop.example.com;") == 1


def test_exact_and_prefix_paths_match_as_in_kubernetes() -> None:
    r = render(state(ingress("a", rule("a.com", path("/foo", "web"), path("/foo", "api", kind="Exact"),
                                       path("/foo/bar/", "empty"), path("/x/", "api")))), CONF_DIR)
    expected = {"/foo": "default/api", "/foo/": "default/web", "/foo/baz": "default/web",
                "/foobar": "404", "/foo/bar": "503", "/foo/bar/baz": "503", "/foo/barbaz": "default/web",
                "/x": "default/api", "/x/y": "default/api", "/xy": "404", "/": "404"}
    assert {p: served(r, "a.com", p) for p in expected} == expected
    # nginx: Exact is "= /p"; Prefix /foo is "/foo/" and no "= /foo", which the Exact path owns
    assert r.text.count('location = "/foo" {') == 1 and 'location "/foo/" {' in r.text


def test_hosts_wildcards_and_the_catch_all_server() -> None:
    r = render(state(ingress("a", rule("*.example.com", path("/", "web")), rule("api.example.com", path("/", "api")),
                             rule(None, path("/any", "api")))), CONF_DIR)
    assert served(r, "x.example.com", "/") == "default/web"
    assert served(r, "api.example.com", "/") == "default/api"          # an exact host beats a wildcard
    assert served(r, "a.b.example.com", "/") == "404"                    # a wildcard is one label
    assert served(r, "example.com", "/") == "404"
    assert served(r, "other.org", "/any") == "default/api"               # host-less rules: catch-all
    assert served(r, "x.example.com", "/any") == "default/web"           # ... and there only
    assert 'server_name "~^[^.]+\\\\.example\\\\.com$";' in r.text


def test_ingress_class_filtering() -> None:
    r = render(state(
        ingress("absent", rule("a.com", path("/", "web"))),
        ingress("nginx", rule("b.com", path("/", "web")), ingressClassName="nginx"),
        ingress("other", rule("c.com", path("/", "web")), ingressClassName="alb"),
        ingress("legacy", rule("d.com", path("/", "web")), annotations={"kubernetes.io/ingress.class": "alb"}),
    ), CONF_DIR)
    assert sorted(s.host for s in r.servers) == ["", "a.com", "b.com"]


def test_default_backend_of_the_first_ingress_else_404() -> None:
    r = render(state(ingress("a", rule("a.com", path("/a", "api")))), CONF_DIR)
    assert served(r, "a.com", "/b") == served(r, "nowhere", "/") == "404"
    assert f'return 404 "{NOT_FOUND_BODY}\\n";' in r.text
    r = render(state(ingress("a", rule("a.com", path("/a", "api"))),
                     ingress("b", defaultBackend=backend("web", "http")),
                     ingress("c", defaultBackend=backend("api", 80))), CONF_DIR)
    assert served(r, "a.com", "/b") == served(r, "nowhere", "/") == "default/web"
    assert served(r, "a.com", "/a") == "default/api"
    assert r.warnings == ["ingress default/c: defaultBackend ignored, the one of default/b is used"]
    assert NOT_FOUND_BODY not in r.text


def test_backends_are_endpoints_by_port_number_or_name_else_503() -> None:
    svcs = {**SVCS, "default/multi": {"ports": [
        {"name": "http", "port": 80, "endpoints": ["10.244.0.2:8080"]},
        {"name": "admin", "port": 9090, "endpoints": ["10.244.0.2:9091", "10.244.0.3:9091"]}]}}
    r = render(state(ingress("a", rule("a.com", path("/num", "multi", 9090), path("/name", "multi", "admin"),
                                       path("/empty", "empty"), path("/nosvc", "gone"),
                                       path("/noport", "multi", "metrics"))), svcs=svcs), CONF_DIR)
    for p in ("/num", "/name"):
        b = route(r, "a.com", p)[1].backend
        assert b.endpoints == ("10.244.0.2:9091", "10.244.0.3:9091") and b.upstream == "default_multi_9090"
    assert [served(r, "a.com", p) for p in ("/empty", "/nosvc", "/noport")] == ["503"] * 3
    assert r.warnings == ["ingress default/a: service default/empty port 80 has no endpoints: 503",
                          "ingress default/a: service default/gone not found: 503",
                          "ingress default/a: service default/multi has no port metrics: 503"]
    assert r.text.count("upstream default_multi_9090 {") == 1
    assert "server 10.244.0.3:9091;" in r.text and r.text.count("return 503;") == 6   # Prefix: 2 locations each


def test_tls_servers_redirects_and_missing_secrets() -> None:
    cert, key = self_signed(["secure.example.com"])
    secrets = {"default/tls": {"tls.crt": cert.decode(), "tls.key": key.decode()}}
    tls = [{"hosts": ["secure.example.com"], "secretName": "tls"}]
    r = render(state(ingress("a", rule("secure.example.com", path("/", "web")), tls=tls),
                     ingress("b", rule("secure.example.com", path("/keep", "api")),
                             annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
                     ingress("c", rule("open.example.com", path("/", "web")),
                             tls=[{"hosts": ["open.example.com"], "secretName": "absent"}]),
                     secrets=secrets, https_port=8443), CONF_DIR)
    server, loc = route(r, "secure.example.com", "/x")
    assert server.tls is not None and loc.ssl_redirect
    assert r.files == {server.tls.cert_file: cert, server.tls.key_file: key}
    assert all(p.startswith(CONF_DIR + "/certs/") for p in r.files)
    assert not route(r, "secure.example.com", "/keep")[1].ssl_redirect
    assert route(r, "open.example.com", "/")[0].tls is None
    assert r.warnings == ["ingress default/c: TLS secret default/absent not found: "
                          "its hosts are served without TLS"]
    assert "listen 10.244.0.5:8443 ssl;" in r.text and "listen 10.244.0.5:8443 ssl default_server;" in r.text
    assert "return 308 https://$host:8443$request_uri;" in r.text
    assert "ssl_reject_handshake on;" in r.text
    no_tls = render(state(ingress("c", rule("open.example.com", path("/", "web")))), CONF_DIR)
    assert not [ln for ln in no_tls.text.splitlines() if "listen" in ln and "ssl" in ln] and no_tls.files == {}


def test_a_wildcard_tls_host_covers_rule_hosts_one_label_down() -> None:
    cert, key = self_signed(["*.example.com"])
    secrets = {"default/wild": {"tls.crt": cert.decode(), "tls.key": key.decode()}}
    r = render(state(ingress("a", rule("a.example.com", path("/", "web")), rule("a.b.example.com", path("/", "web")),
                             tls=[{"hosts": ["*.example.com", "lonely.example.com"], "secretName": "wild"}]),
                     secrets=secrets), CONF_DIR)
    assert route(r, "a.example.com", "/")[0].tls.secret == "default/wild"
    assert route(r, "a.b.example.com", "/")[0].tls is None
    assert [s.host for s in r.servers] == ["", "a.example.com", "a.b.example.com"]    # no server for TLS alone
    assert r.warnings == ["TLS host lonely.example.com (secret default/wild) matches no rule host and is not served"]


def test_annotations_rewrite_snippet_and_unsupported_ones() -> None:
    notes = {"nginx.ingress.kubernetes.io/rewrite-target": "/v2/",
             "nginx.ingress.kubernetes.io/configuration-snippet": "add_header X-Ingress a;",
             "nginx.ingress.kubernetes.io/proxy-body-size": "8m"}
    r = render(state(ingress("a", rule("a.com", path("/api", "api"), path("/exact", "api", kind="Exact")),
                             annotations=notes),
                     ingress("b", rule("b.com", path("/", "web")),
                             annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}),
                     allow_snippet_annotations=True), CONF_DIR)
    assert 'rewrite "^/api/(.*)$" "/v2/$1" break;' in r.text
    assert r.text.count('rewrite ^ "/v2/" break;') == 2               # = /api and = /exact
    assert r.text.count("add_header X-Ingress a;") == 3               # each location of Ingress a
    assert r.warnings == [
        "ingress default/a: annotation nginx.ingress.kubernetes.io/proxy-body-size is not supported and is ignored",
        "ingress default/b: nginx.ingress.kubernetes.io/rewrite-target '/$2' is ignored: only a plain path is "
        "supported (no capture groups, variables or query)"]


@pytest.mark.parametrize("key", ["configuration-snippet", "server-snippet", "auth-snippet"])
def test_a_snippet_is_not_served_unless_the_state_allows_it(key) -> None:
    notes = {f"nginx.ingress.kubernetes.io/{key}": "access_log /tmp/kubevpc-snippet-test;"}
    r = render(state(ingress("a", rule("a.com", path("/", "web")), annotations=notes),
                     ingress("b", rule("b.com", path("/", "api")))), CONF_DIR)
    assert "access_log /tmp" not in r.text and [s.host for s in r.servers] == ["", "b.com"]
    assert r.warnings == [f"ingress default/a is not served: nginx.ingress.kubernetes.io/{key} annotation cannot be "
                          "used. Snippet directives are disabled by the Ingress administrator (ingress-nginx's "
                          "allow-snippet-annotations is false by default since 1.9, CVE-2021-25742); set "
                          "cluster.ingress.allowSnippetAnnotations: true in the scenario to allow them (NGINX's "
                          "master runs as root: only for scenarios you trust)"]
    allowed = render(state(ingress("a", rule("a.com", path("/", "web")),
                                   annotations={"nginx.ingress.kubernetes.io/configuration-snippet": "add_header X a;"}),
                           allow_snippet_annotations=True), CONF_DIR)
    assert "add_header X a;" in allowed.text and not allowed.warnings


def test_workers_run_as_an_unprivileged_user_and_need_no_file() -> None:
    r = render(state(ingress("a", rule("a.com", path("/", "web")))), CONF_DIR, user="www-data")
    assert "user www-data;" in r.text and "user root" not in r.text
    for line in ("client_max_body_size 1m;", "client_body_buffer_size 1m;", "proxy_max_temp_file_size 0;"):
        assert line in r.text


def test_an_invalid_ingress_is_left_out_and_a_malformed_state_refused() -> None:
    r = render(state(ingress("bad", rule("10.1.1.1", path("/", "web"))), ingress("good", rule("a.com", path("/", "web")))),
               CONF_DIR)
    assert [s.host for s in r.servers] == ["", "a.com"]
    assert r.warnings == ["ingresses[0] (default/bad) is invalid and not served: "
                          "spec.rules.0.host: Value error, host '10.1.1.1' must be a DNS name, not an IP address"]
    for broken in ({**state(), "listen": []}, {**state(), "listen": ["eth0"]},
                   {**state(), "services": {"default/web": {"ports": [{"port": 80, "endpoints": ["10.0.0.1"]}]}}}):
        with pytest.raises(ValueError):
            render(broken, CONF_DIR)


def test_nginx_conf_keeps_everything_under_its_directory() -> None:
    r = render(state(ingress("a", rule("a.com", path("/", "web")))), CONF_DIR, user="root")
    for directive in ("pid", "error_log", "lock_file", "access_log", "client_body_temp_path", "proxy_temp_path"):
        line = next(ln for ln in r.text.splitlines() if ln.strip().startswith(directive + " "))
        assert f'"{CONF_DIR}/' in line, line
    assert r.text.startswith("# written by kubevpc.ingress") and "\nuser root;\ndaemon off;\nworker_processes 1;\n" in r.text
    for header in ("Host $kubevpc_host", "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr",
                   "X-Forwarded-Proto $scheme", "X-Forwarded-Host $kubevpc_host"):
        assert f"proxy_set_header {header};" in r.text


# -- the controller with a real NGINX -------------------------------------------------------------

needs_nginx = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason=f"{NGINX} is not installed (nginx-light)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


class TLSConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1 with a chosen SNI name (HTTPSConnection would send none for an IP)."""

    def __init__(self, port: int, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(LO, port, timeout=HTTP_TIMEOUT)
        self._context, self._name = context, server_hostname

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._name)


def get(port: int, host: str, p: str = "/", tls: ssl.SSLContext | None = None) -> tuple[int, dict, str]:
    """One request on a new connection: status, headers (lower-case names), body."""
    conn = TLSConnection(port, tls, host) if tls else http.client.HTTPConnection(LO, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", p, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def name_of(port: int, host: str, p: str = "/", tls: ssl.SSLContext | None = None) -> str:
    status, _, body = get(port, host, p, tls)
    assert status == 200, (host, p, status, body)
    return json.loads(body)["name"]


class Echo(BaseHTTPRequestHandler):
    """An upstream answering with the path and headers it received."""

    def do_GET(self) -> None:
        body = json.dumps({"name": "echo", "path": self.path, "headers": dict(self.headers),
                           "server": f"{LO}:{self.server.server_address[1]}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Services: web (web-0, web-1), api (api-0), other (other-0) as kubevpc.daemons.server processes,
    and echo in this process; as the state's "services"."""
    ready = tmp_path_factory.mktemp("ready")
    procs, svcs = [], {}
    echo = ThreadingHTTPServer((LO, 0), Echo)
    threading.Thread(target=echo.serve_forever, args=(0.05,), daemon=True).start()
    try:
        for name, count in (("web", 2), ("api", 1), ("other", 1)):
            eps = []
            for i in range(count):
                port = free_port()
                procs.append(run_module("kubevpc.daemons.server", "--name", f"{name}-{i}", "--run", "ingresstest",
                                        "--listen", f"HTTP:{port}", "--bind", LO,
                                        "--ready-file", str(ready / f"{name}-{i}")))
                eps.append(f"{LO}:{port}")
            svcs[f"default/{name}"] = {"ports": [{"name": "http", "port": 80, "endpoints": eps}]}
        svcs["default/echo"] = {"ports": [{"name": "http", "port": 80,
                                           "endpoints": [f"{LO}:{echo.server_address[1]}"]}]}
        wait_for("the upstream servers' ready files", lambda: len(list(ready.iterdir())) == len(procs))
        yield svcs
    finally:
        for proc in procs:
            stop_process(proc)
        echo.shutdown()
        echo.server_close()


class Controller:
    """One `python -m kubevpc.daemons.ingress run` in a temp dir, and its state file."""

    def __init__(self, tmp: Path, svcs: dict) -> None:
        self.tmp, self.svcs = tmp, svcs
        self.http, self.https = free_port(), free_port()
        self.state, self.status_file, self.log = tmp / "state.json", tmp / "status.json", tmp / "ingress.log"
        self.ready, self.dir = tmp / "ready", tmp / "nginx"
        self.daemon = Daemon()
        self.generation = 0

    def write(self, *ingresses: dict, **extra: Any) -> int:
        self.generation += 1
        write_json(self.state, {"generation": self.generation, "listen": [LO], "http_port": self.http,
                                "https_port": self.https, "ingresses": list(ingresses), "services": self.svcs,
                                **extra})
        return self.generation

    def start(self, ledger: bool = False) -> subprocess.Popen:
        proc = self.daemon.launch("kubevpc.daemons.ingress", "run", "--state", str(self.state), "--dir", str(self.dir),
                                  "--run", "ingresstest", "--log", str(self.log), "--ready", str(self.ready),
                                  "--status", str(self.status_file), *([] if ledger else ["--no-ledger"]))
        wait_for("the controller's ready file", self.ready.exists, proc=proc)
        return proc

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_status(self, **expected: Any) -> dict:
        return wait_for(f"status {expected} (last: {self.status()}; log: {self.log_text()})",
                        lambda: (s := self.status()) and all(s.get(k) == v for k, v in expected.items()) and s,
                        proc=self.daemon.proc)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def controller(tmp_path: Path, upstreams: dict) -> Iterator[Controller]:
    c = Controller(tmp_path, upstreams)
    yield c
    c.daemon.close()


ROUTES = (
    ingress("shop", rule("shop.example.com", path("/", "web"), path("/api", "api"),
                         path("/exact", "other", kind="Exact"))),
    ingress("more", rule("shop.example.com", path("/echo", "echo")), rule("*.example.com", path("/", "other")),
            rule(None, path("/anyhost", "api"))),
)


@needs_nginx
def test_nginx_routes_as_the_routing_table_says(controller: Controller) -> None:
    controller.write(*ROUTES)
    controller.start()
    assert controller.status()["ok"] and controller.status()["generation"] == 1
    rendered = render(json.loads(controller.state.read_text()), str(controller.dir))
    names = set()
    for host, p in [("shop.example.com", "/"), ("shop.example.com", "/api"), ("shop.example.com", "/api/v1"),
                    ("shop.example.com", "/apiv1"), ("shop.example.com", "/exact"), ("shop.example.com", "/exact/"),
                    ("shop.example.com", "/echo/x"), ("x.example.com", "/api"), ("a.b.example.com", "/"),
                    ("nowhere.org", "/anyhost"), ("nowhere.org", "/"), ("SHOP.example.com", "/api")]:
        status, _, body = get(controller.http, host, p)
        loc = route(rendered, host, p)[1]
        if loc.backend is None:
            assert (status, body) == (404, NOT_FOUND_BODY + "\n"), (host, p)
        else:
            assert status == 200, (host, p, status, body)
            answer = json.loads(body)
            assert answer["server"] in loc.backend.endpoints, (host, p, answer, loc)
            names.add(answer["name"])
    assert names == {"web-0", "web-1", "api-0", "other-0", "echo"}    # round robin reached both web pods
    status, _, body = get(controller.http, "shop.example.com", "/echo/x?q=1")
    headers = json.loads(body)["headers"]
    assert json.loads(body)["path"] == "/echo/x?q=1"
    assert headers["Host"] == "shop.example.com"
    assert (headers["X-Real-IP"], headers["X-Forwarded-For"]) == (LO, LO)
    assert (headers["X-Forwarded-Proto"], headers["X-Forwarded-Host"]) == ("http", "shop.example.com")


@needs_nginx
def test_nginx_serves_tls_with_the_secret_and_redirects_http(controller: Controller) -> None:
    cert, key = self_signed(["secure.example.com"])
    (controller.tmp / "ca.pem").write_bytes(cert)
    notes = {"nginx.ingress.kubernetes.io/rewrite-target": "/v2"}
    controller.write(ingress("secure", rule("secure.example.com", path("/", "web"), path("/echo", "echo")),
                             tls=[{"hosts": ["secure.example.com"], "secretName": "tls"}], annotations=notes),
                     secrets={"default/tls": {"tls.crt": cert.decode(), "tls.key": key.decode()}})
    controller.start()
    ctx = ssl.create_default_context(cafile=str(controller.tmp / "ca.pem"))
    assert name_of(controller.https, "secure.example.com", "/", ctx).startswith("web-")
    _, _, body = get(controller.https, "secure.example.com", "/echo/a?b=1", ctx)
    echoed = json.loads(body)
    assert echoed["path"] == "/v2/a?b=1" and echoed["headers"]["X-Forwarded-Proto"] == "https"
    status, headers, _ = get(controller.http, "secure.example.com", "/some/where?x=1")
    assert (status, headers["location"]) == (308, f"https://secure.example.com:{controller.https}/some/where?x=1")
    with pytest.raises(ssl.SSLError):              # a name without a certificate: handshake refused
        get(controller.https, "unknown.example.com", "/", ssl.create_default_context(cafile=str(controller.tmp / "ca.pem")))
    with pytest.raises(ssl.SSLCertVerificationError):    # and the certificate is really checked
        get(controller.https, "secure.example.com", "/", ssl.create_default_context())


@needs_nginx
def test_nginx_follows_changes_and_keeps_the_last_good_configuration(controller: Controller) -> None:
    controller.write(ingress("a", rule("app.example.com", path("/", "web"))))
    controller.start()
    assert name_of(controller.http, "app.example.com").startswith("web-")
    gen = controller.write(ingress("a", rule("app.example.com", path("/", "api"))))
    controller.wait_status(generation=gen, ok=True, reloads=1)
    assert name_of(controller.http, "app.example.com") == "api-0"
    bad = controller.write(ingress("a", rule("app.example.com", path("/", "other")),
                                   annotations={"nginx.ingress.kubernetes.io/configuration-snippet": "no_such_directive on;"}),
                           allow_snippet_annotations=True)
    status = controller.wait_status(ok=False)
    assert status["generation"] == gen and status["reloads"] == 1
    assert 'unknown directive "no_such_directive"' in status["error"]
    assert f"generation {bad} not applied, serving generation {gen}" in controller.log_text()
    assert name_of(controller.http, "app.example.com") == "api-0"
    good = controller.write(ingress("a", rule("app.example.com", path("/", "other"))))
    controller.wait_status(generation=good, ok=True, reloads=2)
    assert name_of(controller.http, "app.example.com") == "other-0"
    assert f"applied generation {good}" in controller.log_text()


@needs_nginx
def test_no_request_is_dropped_while_nginx_reloads(controller: Controller) -> None:
    controller.write(ingress("a", rule("app.example.com", path("/", "web"))))
    controller.start()
    results: list[object] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                results.append(get(controller.http, "app.example.com")[0])
            except OSError as exc:
                results.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for i in range(5):
            gen = controller.write(ingress("a", rule("app.example.com", path("/", ("api", "web")[i % 2]))))
            controller.wait_status(generation=gen, ok=True, reloads=i + 1)
    finally:
        done.set()
        thread.join(DEADLINE)
    assert len(results) > 20 and all(r == 200 for r in results), [r for r in results if r != 200]


@needs_nginx
def test_sigterm_stops_nginx_and_a_dead_nginx_stops_the_controller(controller: Controller, tmp_path: Path,
                                                                   upstreams: dict) -> None:
    controller.write(ingress("a", rule("app.example.com", path("/", "web"))))
    proc = controller.start()
    master = controller.status()["nginx_pid"]
    workers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _ppid(pid) == master]
    assert workers and b"KUBEVPC_RUN=ingresstest" in Path(f"/proc/{master}/cmdline").read_bytes()
    assert stop_process(proc) == 0
    for pid in (master, *workers):
        assert not Path(f"/proc/{pid}").exists(), f"nginx pid {pid} survived"
    assert f"nginx (pid {master}) stopped" in controller.log_text()

    second = Controller(tmp_path / "second", upstreams)
    second.tmp.mkdir()
    second.write(ingress("a", rule("app.example.com", path("/", "web"))))
    proc = second.start()
    try:
        os.kill(second.status()["nginx_pid"], signal.SIGTERM)    # NGINX dies behind the controller's back
        assert proc.wait(DEADLINE) == 1
        assert "exited unexpectedly" in second.log_text() and second.status()["ok"] is False
    finally:
        second.daemon.close()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


@needs_nginx
def test_a_first_configuration_nginx_refuses_serves_no_ingress(controller: Controller) -> None:
    controller.write(ingress("a", rule("app.example.com", path("/", "web")),
                             annotations={"nginx.ingress.kubernetes.io/configuration-snippet": "}"}),
                     allow_snippet_annotations=True)
    controller.start()
    status = controller.status()
    assert (status["ok"], status["generation"]) == (False, None) and "[emerg]" in status["error"]
    status, _, body = get(controller.http, "app.example.com")
    assert (status, body) == (404, NOT_FOUND_BODY + "\n")


@needs_nginx
def test_nginx_is_recorded_in_the_run_ledger(controller: Controller, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "runs" / "ingresstest").mkdir(parents=True)
    monkeypatch.setenv("KUBEVPC_STATE_DIR", str(state_dir))     # for the child's kubevpc.ledger
    monkeypatch.setattr(kubevpc.rundir, "STATE_ROOT", str(state_dir))
    controller.write(ingress("a", rule("app.example.com", path("/", "web"))))
    controller.start(ledger=True)
    pid = controller.status()["nginx_pid"]
    assert Ledger("ingresstest").entries() == [Entry("process", str(pid), "ingresstest")]
    assert b"ingresstest" in Path(f"/proc/{pid}/cmdline").read_bytes()     # what `kubevpc clean` checks


def test_render_command_prints_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(state(ingress("a", rule("a.com", path("/", "gone"))))))
    proc = run_module("kubevpc.daemons.ingress", "render", "--state", str(tmp_path / "state.json"), "--dir", str(tmp_path),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0 and "server_name a.com;" in out and f'pid "{tmp_path}/nginx.pid";' in out
    assert err == "warning: ingress default/a: service default/gone not found: 503\n"
