"""kube-proxy's healthCheckNodePort server, run in each emulated node.

For a LoadBalancer Service with ``externalTrafficPolicy: Local``, kube-proxy answers HTTP on the
Service's ``healthCheckNodePort`` on every node, so that the cloud load balancer sends traffic only
to nodes that hold a ready endpoint: 200 when the node has at least one local endpoint, 503
otherwise. What we reproduce comes from kubernetes/kubernetes, pkg/proxy/healthcheck/
service_health.go (``hcHandler.ServeHTTP``):

* every method and path get the same answer;
* headers ``Content-Type: application/json``, ``X-Content-Type-Options: nosniff`` and, since
  Kubernetes 1.28 (kubernetes/kubernetes#118999), ``X-Load-Balancing-Endpoint-Weight: <local
  endpoints>``;
* the body, tab-indented and without a final newline::

      {
      	"service": {
      		"namespace": "default",
      		"name": "web"
      	},
      	"localEndpoints": 1,
      	"serviceProxyHealthy": true
      }

  ``serviceProxyHealthy`` is kube-proxy's own /healthz verdict (1.28+, KEP-3836), ANDed into the
  status. The emulated proxy is always healthy, so it is always true here.

Configuration (JSON), re-read when the file changes; a bad file leaves the last good one running::

    {"ports": {"32000": {"namespace": "default", "name": "web", "local_endpoints": 1}}}

One ThreadingHTTPServer per port. Stdlib only: ``python -m kubevpc.daemons.nodehealth`` runs in the
node's network namespace.
"""
from __future__ import annotations

import argparse
import json
import logging
import socketserver
import os
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubevpc.daemons.harness import ConfigFile, Daemon, Refused, file_stamp, write_seen
from kubevpc.daemons.harness import seen_path, taken  # noqa: F401 (importable from here, as before)
from kubevpc.errors import KubevpcError
from kubevpc.render.nodehealth import health_ports
from kubevpc.rundir import RunDir

POLL = 0.2  # how often the config file's stamp is compared; bounds the reaction to SIGTERM
SERVICE_PROXY_HEALTHY = True  # the emulated kube-proxy's /healthz verdict, ANDed into the status


@dataclass(frozen=True)
class HealthPort:
    """What one healthCheckNodePort reports: its Service and that Service's local endpoints."""

    namespace: str
    name: str
    local_endpoints: int


class NodeHealthConfigError(KubevpcError):
    """The configuration file is unreadable or invalid."""


def parse_ports(data: object) -> dict[int, HealthPort]:
    """Validate the decoded config; errors name the offending key."""
    ports = data.get("ports") if isinstance(data, dict) else None
    if not isinstance(ports, dict) or set(data) != {"ports"}:
        raise NodeHealthConfigError('expected {"ports": {"PORT": {...}, ...}}')
    result: dict[int, HealthPort] = {}
    for key, entry in ports.items():
        where = f"ports.{key}"
        if not key.isdigit() or not 1 <= int(key) <= 65535:
            raise NodeHealthConfigError(f"{where}: not a port number from 1 to 65535")
        if not isinstance(entry, dict) or set(entry) != {"namespace", "name", "local_endpoints"}:
            raise NodeHealthConfigError(f"{where}: expected exactly namespace, name, local_endpoints")
        count = entry["local_endpoints"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise NodeHealthConfigError(f"{where}.local_endpoints: {count!r}: expected an integer >= 0")
        for field in ("namespace", "name"):
            if not isinstance(entry[field], str) or not entry[field]:
                raise NodeHealthConfigError(f"{where}.{field}: {entry[field]!r}: expected a name")
        result[int(key)] = HealthPort(entry["namespace"], entry["name"], count)
    return result


def load_ports(path: str) -> dict[int, HealthPort]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise NodeHealthConfigError(f"{path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise NodeHealthConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    try:
        return parse_ports(data)
    except NodeHealthConfigError as exc:
        raise NodeHealthConfigError(f"{path}: {exc}") from None


def render(entry: HealthPort) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body exactly as kube-proxy's hcHandler writes them."""
    status = 200 if entry.local_endpoints != 0 and SERVICE_PROXY_HEALTHY else 503
    body = (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": {json.dumps(entry.namespace)},\n'
        f'\t\t"name": {json.dumps(entry.name)}\n'
        "\t},\n"
        f'\t"localEndpoints": {entry.local_endpoints},\n'
        f'\t"serviceProxyHealthy": {json.dumps(SERVICE_PROXY_HEALTHY)}\n'
        "}"
    ).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Load-Balancing-Endpoint-Weight", str(entry.local_endpoints)),
    ]
    return status, headers, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # like Go's net/http
    server: "_PortServer"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET  # kube-proxy ignores the method

    def _answer(self, with_body: bool) -> None:
        entry = self.server.owner.ports.get(self.server.server_address[1])
        # A port being closed: kube-proxy's handler returns without writing, Go sends 200.
        status, headers, body = render(entry) if entry else (200, [], b"")
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # one answer per connection keeps closing simple
        self.end_headers()
        self.close_connection = True
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # health checkers poll every few seconds: no access log


class _PortServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: "NodeHealth") -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """HTTPServer.server_bind asks the resolver for this host's name (socket.getfqdn); in a
        node's namespace no resolver answers, and the lookup cost 10 s before every start."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port


class NodeHealth:
    """The listening sockets of one node, one per healthCheckNodePort."""

    def __init__(self, listen: str, log: logging.Logger) -> None:
        self.listen = listen
        self.ports: dict[int, HealthPort] = {}  # replaced whole, read by handler threads
        self._servers: dict[int, _PortServer] = {}
        self._log = log

    def apply(self, ports: dict[int, HealthPort]) -> list[str]:
        """Answer for ``ports`` from now on: close the others, open the new ones.

        Returns one message per port that could not be opened; like kube-proxy, such a port is
        tried again at the next configuration change.
        """
        for port in sorted(set(self._servers) - set(ports)):
            self._close(port)
        for port, entry in sorted(ports.items()):
            if self.ports.get(port) != entry:
                self._log.info("port %d: %s/%s, %d local endpoint(s)",
                               port, entry.namespace, entry.name, entry.local_endpoints)
        self.ports = dict(ports)
        errors = []
        for port in sorted(set(ports) - set(self._servers)):
            try:
                server = _PortServer((self.listen, port), self)
            except OSError as exc:
                entry = ports[port]
                errors.append(f"cannot listen on {self.listen}:{port} for "
                              f"{entry.namespace}/{entry.name}: {exc.strerror or exc}")
                continue
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL},
                             daemon=True).start()
            self._servers[port] = server
            self._log.info("port %d: listening on %s", port, self.listen)
        for error in errors:
            self._log.error("%s", error)
        return errors

    def close(self) -> None:
        for port in sorted(self._servers):
            self._close(port)

    def _close(self, port: int) -> None:
        server = self._servers.pop(port)
        server.shutdown()
        server.server_close()
        self._log.info("port %d: closed", port)


class NodeHealthServer(Daemon):
    """``python -m kubevpc.daemons.nodehealth``: the server's process around :class:`NodeHealth`,
    following its configuration file."""

    NAME = "nodehealth"
    DESCRIPTION = (
        "kube-proxy's healthCheckNodePort server: on each configured port, answer 200 when "
        "the Service has a local endpoint on this node and 503 otherwise, with kube-proxy's "
        "JSON body. The config file is re-read when it changes; SIGTERM or SIGINT stops."
    )
    LOG = "events"
    health: NodeHealth | None = None

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, metavar="FILE",
                       help='{"ports": {"PORT": {"namespace": NS, "name": NAME, "local_endpoints": N}}}')
        p.add_argument("--listen", required=True, metavar="IP", help="address to listen on (the node IP)")
        p.add_argument("--ready", metavar="FILE", help="once every port listens, write our pid here")
        p.add_argument("--log", metavar="FILE", help="event log (default: standard error)")

    def start(self) -> None:
        self.stamp = file_stamp(self.args.config)
        try:
            ports = load_ports(self.args.config)
        except NodeHealthConfigError as exc:
            raise Refused(2, str(exc)) from None
        self.health = NodeHealth(self.args.listen, self.log)
        errors = self.health.apply(ports)
        if errors:
            raise Refused(1, *errors)
        self._seen()

    def _seen(self) -> None:
        """Say which version of the configuration file now serves (or was refused): its stamp in
        `<config>.seen`, which the Lab waits for after a change (kubevpc.lab.servers)."""
        write_seen(self.args.config, self.stamp)

    def serve(self) -> int:
        while not self.stopping:
            time.sleep(POLL)
            self._reload()
        return 0

    def _reload(self) -> None:
        """Take the configuration file if it changed; a bad one leaves the last good one serving."""
        assert self.health is not None and self.log is not None
        if file_stamp(self.args.config) == self.stamp:
            return
        self.stamp = file_stamp(self.args.config)
        try:
            ports = load_ports(self.args.config)
        except NodeHealthConfigError as exc:
            self.log.error("config not reloaded, keeping the last good one: %s", exc)
            self._seen()
            return
        self.health.apply(ports)
        self._seen()

    def close(self) -> None:
        if self.health is not None:
            self.health.close()


main = NodeHealthServer.main


# -- the builder's side ----------------------------------------------------------------


class PortsFile(ConfigFile):
    """A node's health check ports, nodehealth-<node>.json in the run directory."""

    def __init__(self, rundir: RunDir, plan: Any, node: str) -> None:
        super().__init__(rundir.nodehealth(node, ".json"))
        self.plan, self.node = plan, node

    def build(self) -> dict:
        return health_ports(self.plan, self.node)

    def dry_run(self, doc: object) -> None:
        parse_ports(doc)


def write_node_health(state_dir: str, plan: Any, node: str) -> bool:
    """Write a node's health check ports, if it has any (a Service with policy Local): True then.
    A node whose server runs already (its file exists) gets its file written even without any,
    so the ports of a Service deleted while running close."""
    config = PortsFile(RunDir(state_dir), plan, node)
    doc = config.build()
    if doc["ports"] or os.path.exists(config.path):
        config.write(doc)
    return bool(doc["ports"])


def nodehealth_command(rundir: RunDir, node: str, ip: str) -> list[str]:
    """The health check server of a node, listening on its address, without its ready file."""
    return NodeHealthServer.argv("--config", rundir.nodehealth(node, ".json"), "--listen", ip,
                                 "--log", rundir.nodehealth(node, ".log"))

if __name__ == "__main__":
    sys.exit(main())
