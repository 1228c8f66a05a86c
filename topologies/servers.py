"""The servers of pods and instances, as the builder (topologies/build.py) starts them.

The cluster DNS, the VPCs' resolvers and the ingress controllers are programs of their own, each
started by `mnexec` in its host's namespace (topologies/dns.py names their command lines). The
plain servers, which answer with their name and the client address they saw, run one of two ways,
chosen by the environment variable KUBEVPC_SERVERS:

- `node` (the default): one node server per node (kubevpc.daemons.nodeserver), a process in the
  node's namespace, serves the node's pods (host-network ones too) and the node's own ports. It
  enters each pod's namespace to make that pod's sockets. A pod costs sockets, not a process.
  ECS instances that are not nodes, and the internet's hosts, keep a process each, as below.
- `pod`: a process per pod and instance, forked by the run's fork server (kubevpc.daemons.forkserver).

Either way each server answers the same, writes its ready file once it listens, and stops and
starts alone (kubevpc/lab/servers.py).
"""
from __future__ import annotations

import os
import subprocess

from kubevpc.daemons.forkserver import ForkServer
from kubevpc.daemons.nodeserver import NodeServerDaemon, NodeServerProcess
from kubevpc.errors import BuildError
from kubevpc.planning import HostPlan, Plan

from .dns import DAEMONS, daemon_command

SERVERS_ENV = "KUBEVPC_SERVERS"
SERVERS_MODES = ("node", "pod")


def servers_mode(environ: dict | None = None) -> str:
    """KUBEVPC_SERVERS: "node" (one server process per node; the default when unset or empty) or "pod"."""
    value = (os.environ if environ is None else environ).get(SERVERS_ENV, "").strip() or "node"
    if value not in SERVERS_MODES:
        raise BuildError(f"{SERVERS_ENV}={value!r}: expected node (one server process per node, the default) "
                         "or pod (one process per pod)")
    return value


def listens(h: HostPlan) -> list[str]:
    """What h's server listens on, as `--listen` takes it: PROTO:PORT, HTTP for ports named http*."""
    return [f"{'HTTP' if s.name.startswith('http') else s.protocol}:{s.port}" for s in h.servers]


def binds(h: HostPlan) -> tuple[str, str]:
    """(IPv4 address, IPv6 address) h's server binds: a host-network pod's server runs in its node's
    namespace, on the node's address only; others on every IPv4 address and their IPv6 one."""
    return (h.ip, "") if h.host_network else ("0.0.0.0", h.ipv6)


def fork_request(plan: Plan, h: HostPlan, ready: str, pid: int, log: str) -> dict:
    """A fork server's request for h's server, in the namespace of the shell `pid`."""
    bind, bind6 = binds(h)
    argv = ["--name", h.name, "--run", plan.run]
    for listen in listens(h):
        argv += ["--listen", listen]
    argv += ["--bind", bind] if h.host_network else ["--bind6", bind6] if bind6 else []
    return {"netns": f"/proc/{pid}/ns/net", "name": h.name, "log": log, "argv": [*argv, "--ready-file", ready]}


def open_request(h: HostPlan, ready: str, pid: int) -> dict:
    """A node server's request for h's server, in the namespace of the shell `pid`."""
    bind, bind6 = binds(h)
    return {"open": h.key, "netns": f"/proc/{pid}/ns/net", "name": h.name, "listen": listens(h),
            "bind": bind, "bind6": bind6, "ready": ready}


def start_servers(builder, hosts: list[HostPlan], ready_dir: str, root: str) -> None:
    """Start the servers of these hosts without waiting for them to listen; each host's handle (a
    Popen, a forked process or a pod's server in its node server) goes to `builder.net.servers`."""
    net, plan = builder.net, builder.plan
    log_path = net.rundir.servers_log
    by_node = servers_mode() == "node"
    forked, served = [], {}
    for h in hosts:
        ready = os.path.join(ready_dir, h.ready_name)
        if os.path.exists(ready):
            os.unlink(ready)
        if h.app in DAEMONS:
            with open(log_path, "ab") as log:
                proc = net.hosts[h.key].popen(daemon_command(plan, net.rundir, h, ready), stdout=log,
                                              stderr=subprocess.STDOUT, cwd=root, stdin=subprocess.DEVNULL)
            builder.ledger.record("process", proc.pid, token=plan.run)
            net.servers[h.key] = proc
            continue
        pid = net.hosts[plan.network_host(h).key].pid
        if by_node and h.node:
            served.setdefault(h.node, []).append((h, open_request(h, ready, pid)))
        else:
            forked.append((h, fork_request(plan, h, ready, pid, log_path)))
    if forked:
        if net.forkserver is None:
            net.forkserver = ForkServer(plan.run, builder.ledger, root, log_path)
        procs = net.forkserver.spawn([r for _, r in forked], timeout=30 + len(forked) * 0.02)
        for (h, _), proc in zip(forked, procs):
            net.servers[h.key] = proc
    for node, requests in served.items():
        handles = node_server(builder, node, root).open([r for _, r in requests])
        for (h, _), handle in zip(requests, handles):
            net.servers[h.key] = handle


def node_server(builder, node: str, root: str) -> NodeServerProcess:
    """The node server of `node`: the one running, or a new one in the node's namespace (the first
    pod of the node, or after the last one died), written to the ledger."""
    net, plan = builder.net, builder.plan
    current = net.nodeservers.get(node)
    if current is not None and current.alive():
        return current
    if current is not None:               # dead: its pipes go with it
        current.stop()
    cmd = NodeServerDaemon.argv("--run", plan.run, "--node", node)
    with open(net.rundir.servers_log, "ab") as log:
        proc = net.hosts[plan.node(node).ecs].popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=log, cwd=root)
    builder.ledger.record("process", proc.pid, token=plan.run)
    net.nodeservers[node] = NodeServerProcess(proc, node)
    return net.nodeservers[node]


def stop_node_servers(net, nodes: list[str], deadline: float = 5.0) -> None:
    """Stop the node servers of these nodes (nodes taken out of the network) and wait for them."""
    procs = [net.nodeservers.pop(n) for n in nodes if n in net.nodeservers]
    for p in procs:
        p.stop()
    for p in procs:
        try:
            p.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(timeout=deadline)
