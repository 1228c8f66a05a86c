"""The NGINX ingress controller of the emulated cluster: the nginx.conf Ingress and Secret objects
make, and the controller process that keeps a real NGINX serving it.

Two parts (the Ingress and Secret models are kubevpc.k8s's):

* :func:`render`, a pure function from a *state document* (the Ingresses, the endpoints of their
  Services and the TLS Secrets, as JSON) to a complete nginx.conf, with the routing table it
  implements (:class:`Server`, :class:`Location`) and :func:`route`, which answers "which backend
  serves this host and path" from that table by the Kubernetes rules.
* ``python -m kubevpc.ingress run``: the controller, run in the ingress pod's network namespace.
  It validates every configuration with ``nginx -t`` before use, starts NGINX as its child,
  follows the state file and reloads NGINX gracefully on each change, keeping the last good
  configuration serving when a new one is rejected.

Routing follows ingress-nginx (kubernetes/ingress-nginx, rootfs/etc/nginx/template/nginx.tmpl):

* Ingresses whose class (``spec.ingressClassName``, else the legacy annotation
  ``kubernetes.io/ingress.class``) is ``nginx`` or absent are served; others are ignored.
* All rules of one host, from every Ingress, make one ``server``; rules without a host go to the
  catch-all server. The same host, path and path type in two places: the first, in the order of
  the state's list, wins, and a warning names the other.
* ``Exact`` is ``location = /p``. ``Prefix`` matches whole path elements, so ``/foo`` is
  ``location = /foo`` and ``location /foo/`` (``/foo/bar`` yes, ``/foobar`` no) and a trailing
  ``/`` of the path is ignored; ``ImplementationSpecific`` is treated as ``Prefix``. The longest
  match wins, and an ``Exact`` path wins over a ``Prefix`` of the same path.
* A wildcard host ``*.example.com`` matches exactly one more label, as in Kubernetes (and as
  ingress-nginx's regular expression ``server_name``); an exact host wins over a wildcard.
* Backends are upstreams of the Service's endpoints (pod ``ip:targetPort``), as ingress-nginx
  balances over endpoints, not the ClusterIP. No such Service, port or endpoint: 503.
* An unmatched host or path goes to the ``spec.defaultBackend`` of the first Ingress that has
  one; without one, NGINX answers 404 ``default backend - 404``.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubevpc.k8s import ANNOTATION_PREFIX, Ingress, IngressBackend, check_tls_pair, snippet_annotations, snippet_refusal
from kubevpc.ledger import Ledger, cmdline
from kubevpc.rundir import atomic_write
from kubevpc.server import file_stamp, iso_time, open_log, write_ready_file

NGINX = "/usr/sbin/nginx"
INGRESS_CLASS = "nginx"
SSL_REDIRECT = ANNOTATION_PREFIX + "ssl-redirect"
REWRITE_TARGET = ANNOTATION_PREFIX + "rewrite-target"
CONFIGURATION_SNIPPET = ANNOTATION_PREFIX + "configuration-snippet"
SUPPORTED_ANNOTATIONS = (SSL_REDIRECT, REWRITE_TARGET, CONFIGURATION_SNIPPET)
WORKER_USERS = ("www-data", "nobody")     # NGINX's workers run as the first that exists (Debian's is www-data)


def worker_user() -> str | None:
    """The unprivileged user NGINX's workers run as, when the master runs as root."""
    import pwd
    for name in WORKER_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


NOT_FOUND_BODY = "default backend - 404"                  # what ingress-nginx's default backend says

# a rewrite target is put in nginx's `rewrite` replacement: no variables ($), no arguments (?)
REWRITE = re.compile(r"^/[A-Za-z0-9._~%!&'()*+,=:@/-]*$")


# -- the state document --------------------------------------------------------------------------


def _endpoint(text: str) -> str:
    """``IP:PORT`` (IPv6 as ``[IP]:PORT``), normalised; ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(f"endpoint {text!r} is not IP:PORT") from None
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or (ip.version == 6) != bracketed:
        raise ValueError(f"endpoint {text!r} is not IP:PORT (an IPv6 address in brackets)")
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


class StatePort(BaseModel):
    """One port of a Service, with the endpoints (pod ``ip:targetPort``) ready behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: str = "TCP"
    endpoints: list[str] = []

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        return list(dict.fromkeys(_endpoint(e) for e in endpoints))


class StateService(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ports: list[StatePort] = []


class State(BaseModel):
    """The state document the controller serves, written as JSON by the builder::

        {"generation": 7, "listen": ["10.244.0.5"], "http_port": 80, "https_port": 443,
         "ingresses": [<Ingress manifest>, ...],
         "services": {"default/web": {"ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                                 "endpoints": ["10.244.0.2:8080"]}]}},
         "secrets": {"default/web-tls": {"tls.crt": "<PEM>", "tls.key": "<PEM>"}}}

    Services and Secrets are keyed ``namespace/name``; an Ingress refers to those of its own
    namespace. Ingresses are checked one by one when rendering: an invalid one is left out with
    a warning, the rest is served.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int = 0
    listen: list[str] = Field(min_length=1)
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    allow_snippet_annotations: bool = False    # ingress-nginx's allow-snippet-annotations
    ingresses: list[dict] = []
    services: dict[str, StateService] = {}
    secrets: dict[str, dict[str, str]] = {}

    @field_validator("listen")
    @classmethod
    def _listen(cls, addresses: list[str]) -> list[str]:
        try:
            return list(dict.fromkeys(str(ipaddress.ip_address(a)) for a in addresses))
        except ValueError as exc:
            raise ValueError(f"listen: {exc}") from None

    @model_validator(mode="after")
    def _check(self) -> "State":
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        return self


# -- the routing table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A Service port as a backend: its endpoints, or none (then NGINX answers 503)."""

    service: str                  # namespace/name
    port: int | str               # as the Ingress names it: number or Service port name
    endpoints: tuple[str, ...]    # ip:port, in the state's order
    upstream: str                 # nginx upstream name; "" without endpoints


@dataclass(frozen=True)
class Location:
    """One Ingress path of a server, or the server's default location (``default=True``, Prefix
    "/", serving the default backend, or 404 when ``backend`` is None)."""

    path: str                     # as matched (a Prefix path has no trailing "/")
    prefix: bool                  # Prefix (or ImplementationSpecific) rather than Exact
    backend: Backend | None
    ingress: str = ""             # namespace/name of the Ingress it comes from
    default: bool = False
    ssl_redirect: bool = False    # plain HTTP is redirected (308) to HTTPS
    rewrite_target: str | None = None
    snippet: str = ""

    def matches(self, path: str) -> bool:
        """Kubernetes path matching: Exact is equality, Prefix compares whole path elements."""
        if not self.prefix:
            return path == self.path
        return self.path == "/" or path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True)
class Tls:
    secret: str                   # namespace/name
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class Server:
    host: str                     # "" for the catch-all server
    tls: Tls | None
    locations: tuple[Location, ...]


@dataclass(frozen=True)
class Rendered:
    """What :func:`render` makes: the nginx.conf text, the certificate and key files it refers
    to (absolute path -> content), what was left out or degraded (``warnings``), the routing
    table the text implements, and the state's generation, addresses and ports."""

    text: str
    warnings: list[str]
    files: dict[str, bytes]
    servers: list[Server] = field(default_factory=list)
    generation: int = 0
    listen: list[str] = field(default_factory=list)
    http_port: int = 80
    https_port: int = 443


def route(rendered: Rendered, host: str, path: str) -> tuple[Server, Location]:
    """The server and location that serve a request, by the Kubernetes rules nginx.conf
    implements: the exact host, else a wildcard matching one more label, else the catch-all
    server; then an Exact path, else the longest matching Prefix (the default location, Prefix
    "/", when nothing else matches). ``host`` may carry a port; the path is not decoded."""
    name = re.sub(r":\d+$", "", host).rstrip(".").lower()
    by_host = {s.host: s for s in rendered.servers}
    label, _, parent = name.partition(".")
    server = by_host.get(name) or (by_host.get("*." + parent) if label and parent else None) or by_host[""]
    exact = [loc for loc in server.locations if not loc.prefix and loc.matches(path)]
    if exact:
        return server, exact[0]
    return server, max((loc for loc in server.locations if loc.prefix and loc.matches(path)),
                       key=lambda loc: len(loc.path))


class _Builder:
    """Turns a State into servers, upstreams and files, collecting warnings on the way."""

    def __init__(self, state: State, conf_dir: str) -> None:
        self.state = state
        self.conf_dir = conf_dir
        self.warnings: list[str] = []
        self.files: dict[str, bytes] = {}
        self.upstreams: dict[str, tuple[str, ...]] = {}
        self._backends: dict[tuple[str, str, int | str], Backend] = {}
        self._certs: dict[str, Tls | None] = {}

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def ingresses(self) -> list[Ingress]:
        """The valid Ingresses of our class, in the state's order."""
        served = []
        for i, doc in enumerate(self.state.ingresses):
            try:
                ing = Ingress.model_validate(doc)
            except ValidationError as exc:
                meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
                name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
                self.warn(f"ingresses[{i}] ({name}) is invalid and not served: {_first_error(exc)}")
                continue
            if ing.ingress_class not in (None, INGRESS_CLASS):
                continue
            snippets = snippet_annotations(ing)
            if snippets and not self.state.allow_snippet_annotations:
                self.warn(f"ingress {ing.key} is not served: {snippet_refusal(snippets[0])}")
                continue
            for key in ing.metadata.annotations:
                if key.startswith(ANNOTATION_PREFIX) and key not in SUPPORTED_ANNOTATIONS:
                    self.warn(f"ingress {ing.key}: annotation {key} is not supported and is ignored")
            served.append(ing)
        return served

    def backend(self, ing: Ingress, ref: IngressBackend) -> Backend:
        """The Service port ``ref`` names, in ``ing``'s namespace, with its endpoints."""
        assert ref.service is not None
        ns, port_ref = ing.metadata.namespace, ref.service.port.ref
        service = f"{ns}/{ref.service.name}"
        cache_key = (ns, ref.service.name, port_ref)
        if cache_key in self._backends:
            return self._backends[cache_key]
        svc = self.state.services.get(service)
        port = None
        if svc is None:
            self.warn(f"ingress {ing.key}: service {service} not found: 503")
        else:
            port = next((p for p in svc.ports if (p.port if isinstance(port_ref, int) else p.name) == port_ref), None)
            if port is None:
                self.warn(f"ingress {ing.key}: service {service} has no port {port_ref}: 503")
            elif not port.endpoints:
                self.warn(f"ingress {ing.key}: service {service} port {port_ref} has no endpoints: 503")
        upstream = ""
        if port is not None and port.endpoints:
            upstream = f"{ns}_{ref.service.name}_{port.port}"
            self.upstreams[upstream] = tuple(port.endpoints)
        backend = Backend(service, port_ref, tuple(port.endpoints) if port else (), upstream)
        self._backends[cache_key] = backend
        return backend

    def certificate(self, ing: Ingress, secret_name: str) -> Tls | None:
        """The files of a TLS Secret of ``ing``'s namespace; None (and a warning) when it is
        missing or unusable. File names carry a digest of the content, so a file NGINX has
        loaded is never rewritten in place."""
        secret = f"{ing.metadata.namespace}/{secret_name}"
        if secret in self._certs:
            return self._certs[secret]
        data = self.state.secrets.get(secret)
        tls = None
        if data is None:
            self.warn(f"ingress {ing.key}: TLS secret {secret} not found: its hosts are served without TLS")
        else:
            cert, key = data.get("tls.crt", "").encode(), data.get("tls.key", "").encode()
            try:
                check_tls_pair(cert, key)
            except ValueError as exc:
                self.warn(f"ingress {ing.key}: TLS secret {secret} is unusable ({exc}): "
                          "its hosts are served without TLS")
            else:
                digest = hashlib.sha256(cert + b"\0" + key).hexdigest()[:16]
                base = os.path.join(self.conf_dir, "certs", f"{secret.replace('/', '_')}-{digest}")
                tls = Tls(secret, base + ".crt", base + ".key")
                self.files[tls.cert_file], self.files[tls.key_file] = cert, key
        self._certs[secret] = tls
        return tls

    def annotations(self, ing: Ingress) -> tuple[bool, str | None, str]:
        """ssl-redirect, rewrite-target and configuration-snippet of ``ing``."""
        notes = ing.metadata.annotations
        redirect = notes.get(SSL_REDIRECT, "true").strip().lower()
        if redirect not in ("true", "false"):
            self.warn(f"ingress {ing.key}: {SSL_REDIRECT} {notes[SSL_REDIRECT]!r} is not true or false: true")
        target = notes.get(REWRITE_TARGET)
        if target is not None and not REWRITE.match(target):
            self.warn(f"ingress {ing.key}: {REWRITE_TARGET} {target!r} is ignored: only a plain path is "
                      "supported (no capture groups, variables or query)")
            target = None
        return redirect != "false", target, notes.get(CONFIGURATION_SNIPPET, "")

    def servers(self) -> list[Server]:
        """One server per rule host plus the catch-all (""), each ending with its default location."""
        ingresses = self.ingresses()
        notes = [self.annotations(ing) for ing in ingresses]
        default = self.default_location(ingresses)
        tls = self.tls(ingresses, [redirect for redirect, _, _ in notes])
        paths: dict[str, dict[tuple[bool, str], Location]] = {"": {}}
        for ing, (redirect, target, snippet) in zip(ingresses, notes):
            for rule in ing.spec.rules:
                host = rule.host or ""
                locations = paths.setdefault(host, {})
                has_tls = bool(host) and _tls_host(host, tls) is not None
                for p in rule.http.paths if rule.http else []:
                    key = (p.prefix, p.match_path)
                    if key in locations:
                        kind = "Prefix" if p.prefix else "Exact"
                        self.warn(f"ingress {ing.key}: {host or '(any host)'} {kind} {p.match_path} is "
                                  f"already defined by ingress {locations[key].ingress}; ignored")
                        continue
                    locations[key] = Location(p.match_path, p.prefix, self.backend(ing, p.backend), ing.key,
                                              ssl_redirect=redirect and has_tls,
                                              rewrite_target=target, snippet=snippet)
        in_use = {_tls_host(host, tls) for host in paths if host}
        for host, (cert, _) in tls.items():
            if host not in in_use:
                self.warn(f"TLS host {host} (secret {cert.secret}) matches no rule host and is not served")
        servers = []
        for host, locations in paths.items():
            key = _tls_host(host, tls) if host else None
            cert, redirect = tls[key] if key else (None, False)
            if (True, "/") not in locations:
                locations[(True, "/")] = replace(default, ssl_redirect=redirect)
            ordered = sorted(locations.values(), key=lambda loc: (loc.path, loc.prefix))
            servers.append(Server(host, cert, tuple(ordered)))
        return servers

    def default_location(self, ingresses: list[Ingress]) -> Location:
        """The default location: the first defaultBackend in order, else 404 (backend None)."""
        default = Location("/", True, None, default=True)
        for ing in ingresses:
            if ing.spec.defaultBackend is None:
                continue
            if default.backend is None:
                default = Location("/", True, self.backend(ing, ing.spec.defaultBackend), ing.key, True)
            else:
                self.warn(f"ingress {ing.key}: defaultBackend ignored, the one of {default.ingress} is used")
        return default

    def tls(self, ingresses: list[Ingress], redirects: list[bool]) -> dict[str, tuple[Tls, bool]]:
        """TLS host -> its certificate and whether HTTP is redirected (the first Ingress naming it
        with a usable Secret wins)."""
        tls: dict[str, tuple[Tls, bool]] = {}
        for ing, redirect in zip(ingresses, redirects):
            for entry in ing.spec.tls:
                if not entry.hosts or not entry.secretName:
                    self.warn(f"ingress {ing.key}: a tls entry without hosts or secretName is ignored")
                    continue
                cert = self.certificate(ing, entry.secretName)
                for host in entry.hosts if cert else []:
                    if host not in tls:
                        tls[host] = (cert, redirect)
                    elif tls[host][0].secret != cert.secret:
                        self.warn(f"ingress {ing.key}: TLS for {host} already comes from secret "
                                  f"{tls[host][0].secret}; secret {cert.secret} ignored for it")
        return tls


def _tls_host(host: str, tls: dict) -> str | None:
    """The TLS host that serves a rule host: itself, else the wildcard one label up (as
    ingress-nginx finds a certificate for a host)."""
    label, _, parent = host.partition(".")
    return next((h for h in (host, "*." + parent) if h in tls and (h == host or label != "*")), None)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


# -- nginx.conf ------------------------------------------------------------------------------------

PROXY_HEADERS = (
    ("Host", "$kubevpc_host"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$remote_addr"),       # ingress-nginx's default: client headers not trusted
    ("X-Forwarded-Proto", "$scheme"),
    ("X-Forwarded-Host", "$kubevpc_host"),
    ("X-Forwarded-Port", "$server_port"),
    ("Upgrade", "$http_upgrade"),              # WebSocket
    ("Connection", "$kubevpc_connection"),
)


def _q(text: str) -> str:
    """An nginx configuration string: double-quoted, with backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _server_name(host: str) -> str:
    """A host as server_name: ``*.example.com`` becomes a regular expression matching exactly
    one label, as in Kubernetes (nginx's own ``*.`` would match any number)."""
    if not host:
        return "_"
    if host.startswith("*."):
        return _q("~^[^.]+\\." + host[2:].replace(".", "\\.") + "$")
    return host


def _location_blocks(loc: Location, exact_paths: set[str], https_port: int) -> list[str]:
    """The nginx location blocks of one Location: Exact is ``= /p``; Prefix ``/p`` is ``= /p``
    (unless an Exact path takes it) and ``/p/``; Prefix "/" is ``/``."""
    target = loc.rewrite_target or ""
    rest = _q(target.rstrip("/") + "/$1")           # the target, then what followed the Prefix
    if not loc.prefix:
        heads = [("= " + _q(loc.path), f"rewrite ^ {_q(target)} break;")]
    elif loc.path == "/":
        heads = [(_q("/"), f"rewrite ^/(.*)$ {rest} break;")]
    else:
        heads = [] if loc.path in exact_paths else [("= " + _q(loc.path), f"rewrite ^ {_q(target)} break;")]
        heads.append((_q(loc.path + "/"), f"rewrite {_q('^' + _regex_literal(loc.path) + '/(.*)$')} {rest} break;"))
    port = "" if https_port == 443 else f":{https_port}"
    blocks = []
    for head, rewrite in heads:
        body = []
        if loc.ssl_redirect:
            body.append(f"if ($scheme = http) {{ return 308 https://$host{port}$request_uri; }}")
        if loc.rewrite_target is not None:
            body.append(rewrite)
        if loc.backend is None:
            body.append(f'return 404 "{NOT_FOUND_BODY}\\n";')      # \n: nginx's escape for a newline
        elif not loc.backend.upstream:
            body.append("return 503;")
        else:
            body += [f"proxy_set_header {name} {value};" for name, value in PROXY_HEADERS]
        if loc.snippet:
            body += loc.snippet.strip("\n").splitlines()
        if loc.backend is not None and loc.backend.upstream:
            body.append(f"proxy_pass http://{loc.backend.upstream};")
        blocks.append(f"location {head} {{\n" + "".join(f"    {line}\n" for line in body) + "}")
    return blocks


def _regex_literal(text: str) -> str:
    """``text`` as a PCRE literal: every character other than a letter, digit, '/', '-' and '_'
    is escaped (PCRE takes a backslash before any non-alphanumeric character as literal)."""
    return "".join(c if c.isalnum() and c.isascii() or c in "/-_" else "\\" + c for c in text)


def render(state: dict, conf_dir: str, *, user: str | None = None) -> Rendered:
    """nginx.conf for a state document (see :class:`State`), with every path under ``conf_dir``.

    ``user``: the ``user`` directive, for a master running as root: the workers run as that
    user. They need no file: request bodies up to ``client_max_body_size`` (1m, ingress-nginx's
    proxy-body-size) stay in memory, and responses are never buffered to a file, so the temp
    paths under ``conf_dir`` (which only root can enter) are never used. Pure: no file is read
    or written. Raises
    ValueError (a pydantic ValidationError) when the document itself is malformed; problems of
    single objects only leave them out or degrade them, and are listed in ``warnings``.
    """
    st = State.model_validate(state)
    builder = _Builder(st, conf_dir)
    servers = builder.servers()
    tls = any(s.tls for s in servers)

    def path(name: str) -> str:
        return _q(os.path.join(conf_dir, name))

    out = ["# written by kubevpc.ingress; every change to the state rewrites it"]
    if user:
        out.append(f"user {user};")
    out += [
        "daemon off;",
        "worker_processes 1;",
        f"pid {path('nginx.pid')};",
        f"error_log {path('error.log')} notice;",
        f"lock_file {path('nginx.lock')};",
        "events {",
        "    worker_connections 1024;",
        "}",
        "http {",
    ]
    http = [
        "default_type text/plain;",
        "server_tokens off;",
        "server_names_hash_bucket_size 256;",
        "server_names_hash_max_size 4096;",
        "log_format kubevpc '$time_iso8601 $remote_addr $scheme \"$host\" \"$request\" $status "
        "$body_bytes_sent upstream=$upstream_addr uri=$uri';",
        f"access_log {path('access.log')} kubevpc;",
        *(f"{kind}_temp_path {path(kind + '_temp')};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "client_max_body_size 1m;",
        "client_body_buffer_size 1m;",     # a body that is allowed fits in memory: no temp file
        "proxy_max_temp_file_size 0;",     # a response is passed on, never written to a temp file
        "proxy_http_version 1.1;",
        "proxy_connect_timeout 5s;",
        "proxy_send_timeout 60s;",
        "proxy_read_timeout 60s;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "map $http_upgrade $kubevpc_connection {",
        "    default upgrade;",
        "    \"\" close;",
        "}",
        "map $http_host $kubevpc_host {",
        "    \"\" $host;",
        "    default $http_host;",
        "}",
    ]
    for name, endpoints in builder.upstreams.items():
        http += [f"upstream {name} {{", *(f"    server {ep};" for ep in endpoints), "}"]
    for server in servers:
        listen = []
        for ip in st.listen:
            catch_all = " default_server" if not server.host else ""
            listen.append(f"listen {_hostport(ip, st.http_port)}{catch_all};")
            if server.tls or (tls and not server.host):
                listen.append(f"listen {_hostport(ip, st.https_port)} ssl{catch_all};")
        body = [*listen, f"server_name {_server_name(server.host)};"]
        if server.tls:
            body += [f"ssl_certificate {_q(server.tls.cert_file)};",
                     f"ssl_certificate_key {_q(server.tls.key_file)};"]
        elif tls and not server.host:
            body.append("ssl_reject_handshake on;")     # unknown names over TLS: no certificate to offer
        exact = {loc.path for loc in server.locations if not loc.prefix}
        for loc in server.locations:
            for block in _location_blocks(loc, exact, st.https_port):
                body += block.splitlines()
        http += ["server {", *(f"    {line}" for line in body), "}"]
    out += [f"    {line}" for line in http]
    out.append("}")
    return Rendered("\n".join(out) + "\n", builder.warnings, builder.files, servers, st.generation,
                    st.listen, st.http_port, st.https_port)


# -- the controller process ------------------------------------------------------------------------

POLL = 0.2                # seconds between checks of the state file and of NGINX
READY_DEADLINE = 10.0     # NGINX must accept connections within this after it starts
TEST_DEADLINE = 20.0      # nginx -t
RELOAD_DEADLINE = 5.0     # a reload must have replaced the workers within this
QUIT_DEADLINE = 5.0       # graceful stop (SIGQUIT), then fast stop (SIGTERM), then SIGKILL
RUN_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PR_SET_PDEATHSIG = 1


class NginxError(Exception):
    """NGINX refused a configuration or could not be started."""


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (NGINX's workers, for the master)."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return kids


NGINX_ERROR = re.compile(r"\[(emerg|alert|crit)\] (?:\d+#\d+: )?(.*)")


def _nginx_errors(text: str) -> list[str]:
    """NGINX's serious messages in ``text``, without its time and pid prefix."""
    return [f"[{m[1]}] {m[2]}" for m in map(NGINX_ERROR.search, text.splitlines()) if m]


class Controller:
    """Keeps one NGINX serving the state file's configuration; see :func:`main`."""

    def __init__(self, args: argparse.Namespace, log: logging.Logger) -> None:
        self.state_path: str = args.state
        self.dir = os.path.abspath(args.dir)
        self.run_name: str = args.run
        self.status_path: str | None = args.status
        self.nginx_bin: str = args.nginx
        self.ledger = None if args.no_ledger else Ledger(args.run)
        self.log = log
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.candidate = os.path.join(self.dir, "nginx.conf.candidate")
        self.error_log = os.path.join(self.dir, "error.log")
        self.user = worker_user() if os.geteuid() == 0 else None
        self.stopping = False     # set by the signal handler: a plain flag, no lock
        self.nginx: subprocess.Popen | None = None
        self.workers: set[int] = set()
        self.stamp = file_stamp(self.state_path)
        self.served: Rendered | None = None
        self.generation: int | None = None
        self.seen: int | None = None             # the last state generation handled, applied or not
        self.ok, self.error, self.warnings, self.reloads = True, "", [], 0

    def stop(self) -> None:
        """Ask the controller to stop (signal handler)."""
        self.stopping = True

    # -- configuration --

    def _nginx_cmd(self, conf: str, *extra: str) -> list[str]:
        # -g puts the run's name on NGINX's command line: the ledger's token, wherever --dir is
        return [self.nginx_bin, *extra, "-c", conf, "-p", self.dir + "/", "-g", f"env KUBEVPC_RUN={self.run_name};"]

    def _load(self) -> dict:
        """The state document; OSError or ValueError when it cannot be read or is not an object."""
        with open(self.state_path, encoding="utf-8") as fh:
            state = json.load(fh)
        if not isinstance(state, dict):
            raise ValueError("the state document is not a JSON object")
        return state

    def _install(self, rendered: Rendered) -> None:
        """Write the files and the configuration, test it with nginx -t, and only then move it
        into place as nginx.conf; NginxError with NGINX's complaint otherwise."""
        for path, data in rendered.files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                atomic_write(path, data, 0o600 if path.endswith(".key") else 0o644, umask=True)
        atomic_write(self.conf, rendered.text, 0o644, umask=True, tmp=self.candidate, check=self._test)

    def _test(self, conf: str) -> None:
        """nginx -t of a configuration file; NginxError with NGINX's complaint."""
        try:
            res = subprocess.run(self._nginx_cmd(conf, "-t", "-q"), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=TEST_DEADLINE)
        except subprocess.TimeoutExpired:
            raise NginxError(f"nginx -t did not finish within {TEST_DEADLINE:g} s") from None
        if res.returncode != 0:
            raise NginxError("; ".join(_nginx_errors(res.stderr) or res.stderr.splitlines()
                                       or [f"nginx -t exited {res.returncode}"]))

    def _prune(self, rendered: Rendered) -> None:
        """Remove certificate files the served configuration no longer names."""
        certs = os.path.join(self.dir, "certs")
        for name in os.listdir(certs) if os.path.isdir(certs) else []:
            path = os.path.join(certs, name)
            if path not in rendered.files:
                os.unlink(path)

    def _errors_since(self, offset: int) -> list[str]:
        try:
            with open(self.error_log, "rb") as fh:
                fh.seek(offset)
                return _nginx_errors(fh.read().decode(errors="replace"))
        except OSError:
            return []

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.error_log)
        except OSError:
            return 0

    # -- NGINX --

    def start(self) -> None:
        """Serve the state file: render, test, start NGINX and wait until it accepts connections.
        A first configuration that NGINX refuses is replaced by the same state without Ingresses
        (every request then gets the 404 default backend) and reported in the status."""
        os.makedirs(self.dir, exist_ok=True)
        state = self._load()
        rendered = render(state, self.dir, user=self.user)
        self.seen = rendered.generation
        try:
            self._install(rendered)
            self.generation, self.warnings = rendered.generation, rendered.warnings
        except NginxError as exc:
            self._failed(rendered, str(exc))
            rendered = render({**state, "ingresses": []}, self.dir, user=self.user)
            self._install(rendered)
        self._log_rendered(rendered)
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        with open(self.error_log, "ab") as errlog:
            # PR_SET_PDEATHSIG: NGINX gets a fast stop (SIGTERM) if the controller dies, even by SIGKILL
            self.nginx = subprocess.Popen(self._nginx_cmd(self.conf), stdin=subprocess.DEVNULL, stdout=errlog,
                                          stderr=errlog, cwd=self.dir,
                                          preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
        if self.ledger is not None:
            self.ledger.record("process", self.nginx.pid, token=self.run_name)
        self.log.info("nginx master pid %d: %s", self.nginx.pid, " ".join(self.nginx.args))
        self._wait_ready(rendered)
        self.served = rendered
        self._prune(rendered)
        self.workers = _children(self.nginx.pid)
        self.write_status()

    def _wait_ready(self, rendered: Rendered) -> None:
        """Until NGINX accepts a TCP connection on its first HTTP address (loopback for a
        wildcard one); NginxError if it exits or the deadline passes first."""
        ip = ipaddress.ip_address(rendered.listen[0])
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        address = _hostport(str(ip), rendered.http_port)
        end = time.monotonic() + READY_DEADLINE
        assert self.nginx is not None
        while not self.stopping:
            if self.nginx.poll() is not None:
                raise NginxError(f"nginx exited with status {self.nginx.returncode}: "
                                 + ("; ".join(self._errors_since(0)[-3:]) or "no error logged"))
            try:
                socket.create_connection((str(ip), rendered.http_port), timeout=0.5).close()
                self.log.info("nginx accepts connections on %s", address)
                return
            except OSError:
                if time.monotonic() >= end:
                    raise NginxError(f"nginx does not accept connections on {address} "
                                     f"within {READY_DEADLINE:g} s") from None
            time.sleep(0.02)

    def _reload(self) -> None:
        """SIGHUP the master and wait until the new configuration takes every new connection: a
        new worker runs and each old one has gone or is shutting down (it then finishes its
        requests without accepting more). NginxError if NGINX refused the configuration."""
        assert self.nginx is not None
        before, offset = _children(self.nginx.pid), self._log_size()
        self.nginx.send_signal(signal.SIGHUP)
        end = time.monotonic() + RELOAD_DEADLINE
        while True:
            if self.nginx.poll() is not None:
                raise NginxError(f"nginx exited during the reload with status {self.nginx.returncode}")
            kids = _children(self.nginx.pid)
            if kids - before and all(b"shutting down" in cmdline(pid) for pid in kids & before):
                self.workers = kids
                return
            errors = self._errors_since(offset)
            if errors:
                raise NginxError("; ".join(errors))
            if time.monotonic() >= end:
                raise NginxError(f"nginx started no new worker within {RELOAD_DEADLINE:g} s of the reload")
            time.sleep(0.02)

    def apply(self) -> None:
        """Serve the state file's new content if NGINX accepts it; else keep the last good one."""
        try:
            rendered = render(self._load(), self.dir, user=self.user)
        except (OSError, ValueError) as exc:
            self._failed(None, f"state file {self.state_path}: {exc}")
            return
        self.seen = rendered.generation
        assert self.served is not None
        if rendered.text == self.served.text and rendered.files == self.served.files:
            self.generation, self.ok, self.error, self.warnings = rendered.generation, True, "", rendered.warnings
            self.log.info("generation %d: configuration unchanged", rendered.generation)
            self.write_status()
            return
        try:
            self._install(rendered)
            self._reload()
        except NginxError as exc:
            self._failed(rendered, str(exc))
            return
        self.served, self.generation, self.reloads = rendered, rendered.generation, self.reloads + 1
        self.ok, self.error, self.warnings = True, "", rendered.warnings
        self._prune(rendered)
        self.log.info("applied generation %d", rendered.generation)
        self._log_rendered(rendered)
        self.write_status()

    def _failed(self, rendered: Rendered | None, error: str) -> None:
        what = f"generation {rendered.generation}" if rendered else "the state"
        serving = "no Ingress" if self.generation is None else f"generation {self.generation}"
        self.ok, self.error = False, error
        self.warnings = rendered.warnings if rendered else self.warnings
        self.log.error("%s not applied, serving %s: %s", what, serving, error)
        self.write_status()

    def _log_rendered(self, rendered: Rendered) -> None:
        self.log.info("generation %d: %d server(s), %d location(s), %d certificate(s)", rendered.generation,
                      len(rendered.servers), sum(len(s.locations) for s in rendered.servers),
                      len(rendered.files) // 2)
        for warning in rendered.warnings:
            self.log.warning("warning: %s", warning)

    def write_status(self) -> None:
        if not self.status_path:
            return
        status = {"generation": self.generation, "seen": self.seen, "ok": self.ok, "error": self.error, "warnings": self.warnings,
                  "nginx_pid": self.nginx.pid if self.nginx else None, "reloads": self.reloads,
                  "time": iso_time(time.time())}
        atomic_write(self.status_path, json.dumps(status, indent=1) + "\n", 0o644, umask=True)

    def watch(self) -> int:
        """Follow the state file until asked to stop (0) or until NGINX dies (1)."""
        assert self.nginx is not None
        while not self.stopping:
            if self.nginx.poll() is not None:
                self.log.error("nginx (pid %d) exited unexpectedly with status %d: %s", self.nginx.pid,
                               self.nginx.returncode, "; ".join(self._errors_since(0)[-3:]) or "no error logged")
                self.ok, self.error = False, f"nginx exited with status {self.nginx.returncode}"
                self.write_status()
                self._stop_orphans()
                return 1
            stamp = file_stamp(self.state_path)
            if stamp is not None and stamp != self.stamp:
                self.stamp = stamp
                self.apply()
            time.sleep(POLL)
        self.shutdown()
        return 0

    def _stop_orphans(self) -> None:
        """Workers outlive a master killed with SIGKILL: stop those we know, still NGINX workers."""
        orphans = [pid for pid in self.workers if cmdline(pid).startswith(b"nginx: worker process")]
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        if orphans:
            self.log.info("killed orphaned nginx worker(s) %s", ", ".join(map(str, orphans)))

    def shutdown(self) -> None:
        """Stop NGINX: graceful quit, then fast stop, then SIGKILL, each after a deadline."""
        if self.nginx is None or self.nginx.poll() is not None:
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            self.nginx.send_signal(sig)
            try:
                self.nginx.wait(QUIT_DEADLINE)
                break
            except subprocess.TimeoutExpired:
                self.log.error("nginx (pid %d) still running %g s after %s", self.nginx.pid, QUIT_DEADLINE,
                               signal.Signals(sig).name)
        self.log.info("nginx (pid %d) stopped", self.nginx.pid)


def _run_name(text: str) -> str:
    if not RUN_TOKEN.match(text):
        raise argparse.ArgumentTypeError(f"bad --run {text!r}: letters, digits, '.', '_' and '-' only")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubevpc.ingress",
        description="The NGINX ingress controller of the emulated cluster.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="serve a state document with NGINX, following its changes",
        description=(
            "Render the JSON state document (Ingresses, Service endpoints, TLS Secrets) into DIR/nginx.conf, "
            "check it with nginx -t, start NGINX (daemon off) as a child and write the ready file once it "
            "accepts connections. Then poll the state file every 0.2 s: each change is rendered, tested with "
            "nginx -t and applied by a graceful reload; a configuration NGINX refuses is reported in the log "
            "and status file while the last good one keeps serving. SIGTERM or SIGINT stops NGINX (quit, "
            "then terminate) and exits 0; if NGINX dies, exits 1."
        ),
    )
    run.add_argument("--state", required=True, metavar="FILE", help="the JSON state document (replaced atomically)")
    run.add_argument("--dir", required=True, metavar="DIR",
                     help="NGINX's prefix: nginx.conf, certificates, logs, pid and temp files go here")
    run.add_argument("--run", required=True, type=_run_name, metavar="RUNNAME",
                     help="the run's name: the ledger to record NGINX in, and the token on its command line")
    run.add_argument("--log", metavar="FILE", help="event log (default: standard error)")
    run.add_argument("--ready", metavar="FILE", help="once NGINX accepts connections, write our pid here")
    run.add_argument("--status", metavar="FILE",
                     help="JSON status (generation, ok, error, warnings, nginx_pid, reloads, time), "
                          "rewritten atomically after each change")
    run.add_argument("--no-ledger", action="store_true", help="do not record NGINX in the run's ledger")
    run.add_argument("--nginx", default=NGINX, metavar="PATH", help=f"the NGINX binary (default {NGINX})")
    show = sub.add_parser("render", help="print the nginx.conf of a state document, and its warnings",
                          description="Print the nginx.conf of a state document (warnings on standard error); "
                                      "nothing is written or started.")
    show.add_argument("--state", required=True, metavar="FILE", help="the JSON state document")
    show.add_argument("--dir", default="/tmp/kubevpc-ingress", metavar="DIR", help="the prefix paths refer to")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        with open(args.state, encoding="utf-8") as fh:
            rendered = render(json.load(fh), os.path.abspath(args.dir))
        for warning in rendered.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        sys.stdout.write(rendered.text)
        return 0
    log = open_log("kubevpc.ingress", args.log)
    controller = Controller(args, log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: controller.stop())
    log.info("ingress controller pid %d: state %s, dir %s", os.getpid(), args.state, controller.dir)
    try:
        controller.start()
    except (OSError, ValueError, NginxError) as exc:
        log.error("cannot serve %s: %s", args.state, exc)
        controller.ok, controller.error = False, str(exc)
        controller.write_status()
        controller.shutdown()
        return 1
    if controller.stopping:
        controller.shutdown()
        return 0
    if args.ready:
        write_ready_file(args.ready)
    code = controller.watch()
    log.info("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
