"""The Lab's servers: every process the run started in its namespaces (pods' and instances'
servers, the DNS, ingress controllers, SLB health checkers, node health servers), what state each
is in, and stopping and starting them (kubevpc/lab/lab.py mixes this in)."""
from __future__ import annotations

import os
import subprocess

from topologies.shell import wait_for
from topologies.supervisor import ending

from ..errors import KubevpcError
from ..daemons.harness import taken
from ..planning import TERMINAL_PHASES

# the checkout (or site-packages) the kubevpc package is in: where `python -m kubevpc.probe` and the
# servers are started from inside the namespaces
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stop_process(proc) -> None:
    """Terminate, and kill after 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Servers:
    """Needs `net`, `plan`, `builder`, `stopped` and `host()` from the Lab."""

    def servers(self) -> list[dict]:
        """Every server the run started (pods', instances', the DNS, ingress controllers, SLB health
        checkers, node health servers): its endpoint, program, pid and state, which is running,
        stopped (by stop_server) or dead (with how it ended, when known)."""
        out = []
        for name, proc in sorted((self.net.servers if self.net else {}).items()):
            key, _, program = name.partition("#")
            code = proc.poll()
            state = "running" if code is None else "stopped" if name in self.stopped else "dead"
            out.append({"endpoint": key, "program": program.rpartition(".")[2] or "server", "pid": proc.pid,
                        "state": state, "how": "" if code is None or code == -1 else ending(code)})
        return out

    def server_down(self, endpoint: str) -> str:
        """Why an endpoint's own server does not answer ("" when it runs): stopped or dead, or its
        pod in a terminal phase."""
        phase = next((h.phase for h in self.plan.pods if h.key == endpoint), "")
        if phase in TERMINAL_PHASES:
            return f"{endpoint} is in phase {phase}: nothing runs in it"
        for s in self.servers():
            if s["endpoint"] == endpoint and s["program"] == "server" and s["state"] != "running":
                how = f", {s['how']}" if s["how"] else ""
                return (f"the server of {endpoint} was stopped (kubevpc stop-server)" if s["state"] == "stopped"
                        else f"the server of {endpoint} is not running (pid {s['pid']}{how})")
        return ""

    def down_reason(self, dest: str) -> str:
        """Why a destination cannot answer on its own account ("" when its servers run): the server
        of an endpoint (pod/..., ecs/..., node/...), or of the endpoints of a Service (svc/...)."""
        if not self.net:
            return ""
        if dest.startswith("svc/"):
            keys = sorted({e.pod for e in self.service(dest).endpoints})
        else:
            try:
                keys = [self.host(dest).key]
            except KubevpcError:
                return ""
        return "; ".join(r for r in (self.server_down(k) for k in keys) if r)

    def stop_server(self, endpoint: str, program: str = "server") -> None:
        """Stop what runs in an endpoint: its pod/ECS server, or (program="nodehealth") a node's
        kube-proxy health check server. Connections to it are then refused; health checks fail."""
        key = self.host(endpoint).key
        proc = self._process(key, program)
        self.stopped.add(key if program == "server" else f"{key}#kubevpc.{program}")
        stop_process(proc)

    def start_server(self, endpoint: str, program: str = "server", timeout: float = 30) -> None:
        """Start it again (after stop_server), and wait until it listens."""
        h = self.host(endpoint)
        if self._process(h.key, program).poll() is None:
            raise KubevpcError(f"the {program} of {h.key} is running")
        builder = self.builder
        ready_dir = self.net.rundir.ready_dir
        self.stopped.discard(h.key if program == "server" else f"{h.key}#kubevpc.{program}")
        if program == "server":
            builder.start_server(h, ready_dir, ROOT)
            ready = lambda: os.path.exists(self.net.rundir.ready(h.ready_name))  # noqa: E731
        else:
            ready = builder.start_node_health(h.node, ready_dir, ROOT)
        wait_for(f"the {program} of {h.key}", ready, timeout)

    def _wait_files_taken(self, deadline: float) -> None:
        """Until every running node health server and cluster DNS server has taken its file as this
        change wrote it (they look every 0.2 s), so that a health check or a name asked once a change
        has returned sees the change, as kube-proxy's and CoreDNS's do once they have synced."""
        running = lambda name: (p := self.net.servers.get(name)) is not None and p.poll() is None  # noqa: E731
        configs = [self.net.rundir.nodehealth(n.name, ".json") for n in self.plan.nodes
                   if running(f"{n.ecs}#kubevpc.nodehealth")]
        if self.plan.dns is not None and any(running(k) for k in self.plan.dns.pods):
            configs.append(self.net.rundir.dns_zone)
        configs = [c for c in configs if os.path.exists(c)]
        wait_for("the node health and DNS servers to take the change", lambda: all(taken(c) for c in configs),
                 max(deadline, 1.0), interval=0.01)

    def _process(self, key: str, program: str) -> subprocess.Popen:
        if self.net is None:
            raise KubevpcError("the lab is not up")
        name = key if program == "server" else f"{key}#kubevpc.{program}"
        if name not in self.net.servers:
            raise KubevpcError(f"nothing called {program} runs in {key}")
        return self.net.servers[name]

