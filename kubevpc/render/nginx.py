"""The nginx.conf of the ingress controller, from its state document: a pure function
(:func:`render`), the routing table that nginx.conf implements (:class:`Server`,
:class:`Location`), and :func:`route`, which answers "which backend serves this host and path"
from that table by the Kubernetes rules. The state document is :class:`State`; the controller
process that serves it is kubevpc.daemons.ingress's.

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

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubevpc.k8s import ANNOTATION_PREFIX, Ingress, IngressBackend, check_tls_pair, snippet_annotations, snippet_refusal

INGRESS_CLASS = "nginx"
SSL_REDIRECT = ANNOTATION_PREFIX + "ssl-redirect"
REWRITE_TARGET = ANNOTATION_PREFIX + "rewrite-target"
CONFIGURATION_SNIPPET = ANNOTATION_PREFIX + "configuration-snippet"
SUPPORTED_ANNOTATIONS = (SSL_REDIRECT, REWRITE_TARGET, CONFIGURATION_SNIPPET)

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


def hostport(ip: str, port: int) -> str:
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
    http = _http_settings(conf_dir)
    for name, endpoints in builder.upstreams.items():
        http += [f"upstream {name} {{", *(f"    server {ep};" for ep in endpoints), "}"]
    for server in servers:
        http += ["server {", *(f"    {line}" for line in _server_block(server, st, tls)), "}"]
    out = [*_main_context(conf_dir, user), *(f"    {line}" for line in http), "}"]
    return Rendered("\n".join(out) + "\n", builder.warnings, builder.files, servers, st.generation,
                    st.listen, st.http_port, st.https_port)


def _path(conf_dir: str, name: str) -> str:
    return _q(os.path.join(conf_dir, name))


def _main_context(conf_dir: str, user: str | None) -> list[str]:
    """nginx.conf up to ``http {``."""
    out = ["# written by kubevpc.ingress; every change to the state rewrites it"]
    if user:
        out.append(f"user {user};")
    return out + [
        "daemon off;",
        "worker_processes 1;",
        f"pid {_path(conf_dir, 'nginx.pid')};",
        f"error_log {_path(conf_dir, 'error.log')} notice;",
        f"lock_file {_path(conf_dir, 'nginx.lock')};",
        "events {",
        "    worker_connections 1024;",
        "}",
        "http {",
    ]


def _http_settings(conf_dir: str) -> list[str]:
    """The settings of the http block, before its upstreams and servers."""
    return [
        "default_type text/plain;",
        "server_tokens off;",
        "server_names_hash_bucket_size 256;",
        "server_names_hash_max_size 4096;",
        "log_format kubevpc '$time_iso8601 $remote_addr $scheme \"$host\" \"$request\" $status "
        "$body_bytes_sent upstream=$upstream_addr uri=$uri';",
        f"access_log {_path(conf_dir, 'access.log')} kubevpc;",
        *(f"{kind}_temp_path {_path(conf_dir, kind + '_temp')};"
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


def _server_block(server: Server, st: State, tls: bool) -> list[str]:
    """The body of one server block: listen, names, certificate, locations."""
    body = []
    for ip in st.listen:
        catch_all = " default_server" if not server.host else ""
        body.append(f"listen {hostport(ip, st.http_port)}{catch_all};")
        if server.tls or (tls and not server.host):
            body.append(f"listen {hostport(ip, st.https_port)} ssl{catch_all};")
    body.append(f"server_name {_server_name(server.host)};")
    if server.tls:
        body += [f"ssl_certificate {_q(server.tls.cert_file)};",
                 f"ssl_certificate_key {_q(server.tls.key_file)};"]
    elif tls and not server.host:
        body.append("ssl_reject_handshake on;")     # unknown names over TLS: no certificate to offer
    exact = {loc.path for loc in server.locations if not loc.prefix}
    for loc in server.locations:
        for block in _location_blocks(loc, exact, st.https_port):
            body += block.splitlines()
    return body
