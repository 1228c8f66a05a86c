"""Nodes added to a running network: a node pool scaled out (kubevpc.lab.nodes). Each is made as the
builder makes a node of a new network (topologies/build.py): its ECS namespace with its veth and
addresses (and, in vxlan mode, its route to the pod CIDR through the tunnel), its VXLAN device and
forwarding entries to every peer, the other nodes' entries to it, its bridge with its ports and
datapath type, its uplinks (as topologies/uplinks.py attaches an ENI), its resolv.conf where the
VPC has a resolver, its servers and kube-proxy's health check server. Each resource is recorded
in the ledger before it exists, so teardown and `kubevpc clean` remove it as any other.

The bridge is made without a controller and connects (`connect_bridges`) only once the controller
holds the plan that names it: a datapath that is none of the run's bridges is refused, and said so
in status.json. Until then it is in secure fail mode: it forwards nothing."""
from __future__ import annotations

import os
import subprocess

from kubevpc.daemons.nodehealth import NodeHealthServer, write_node_health
from kubevpc.ledger import NETNS_ETC, Entry, remove
from kubevpc.planning import NodePlan, Plan
from kubevpc.render.dns import vpc_resolv_conf

from .build import bridge_command, controller_command, ports_command
from .dns import give_resolv_confs
from .hops import hop_pairs, make_hops
from .servers import stop_node_servers
from .shell import sh, vsctl_order, wait_for
from .uplinks import add_uplinks


def add_nodes(builder, plan: Plan, nodes: list[NodePlan]) -> None:
    """Make `nodes` of `plan` in the running network of `builder` (a Builder), not yet connected to
    the controller. On failure what was made for them is removed again and the builder keeps its
    plan."""
    old, builder.plan = builder.plan, plan
    hosts = tuple(plan.host(n.ecs) for n in nodes)
    try:
        builder._namespaces(hosts)          # noqa: SLF001 - the builder's own steps, for these hosts only
        builder._links(hosts)               # noqa: SLF001
        builder._addresses(hosts)           # noqa: SLF001
        builder._tunnels(nodes)             # noqa: SLF001
        _peers_learn(builder, plan, nodes)
        make_hops(builder.ledger, plan, nodes)       # their checksum hops, where the running nodes have them
        _bridges(builder, plan, nodes)
        add_uplinks(builder, plan, [(n.name, u) for n in nodes for u in n.uplinks])
        builder._buffers([h.veth for h in hosts] + [n.tunnels[0].ifname for n in nodes if n.tunnels]  # noqa: SLF001
                         + [name for pair in hop_pairs(plan, nodes) for name in pair])
        _resolv_confs(builder, plan, hosts)
        builder._servers(hosts)             # noqa: SLF001 - the instance's own servers, if it declares ports
        _node_health(builder, plan, nodes)
    except BaseException as exc:
        try:
            remove_nodes(builder, nodes)
        except Exception as cleanup:          # the first failure is the one to report
            exc.add_note(f"removing the half-made nodes failed too: {cleanup}; `kubevpc clean` removes them")
        builder.plan = old
        raise


def _peers_learn(builder, plan: Plan, nodes: list[NodePlan]) -> None:
    """vxlan: the running nodes' VXLAN devices learn where each new node's gateway MAC lives (its
    address), as flanneld adds an FDB entry when a node joins."""
    entries = _peer_entries(plan, nodes)
    if entries:
        # replace: the same entry again (a node made again after a failed attempt) is no error
        sh(["bridge", "-batch", "-"], "".join(f"fdb replace {e}\n" for e in entries))


def _peer_entries(plan: Plan, nodes: list[NodePlan]) -> list[str]:
    """The FDB entries the running nodes' VXLAN devices need for `nodes`: MAC, device, address."""
    new = {n.name: n for n in nodes}
    return [f"{new[t.peer].gateway_mac} dev {n.tunnels[0].ifname} dst {t.remote_ip}"
            for n in plan.nodes if n.name not in new for t in n.tunnels if t.peer in new]


def _bridges(builder, plan: Plan, nodes: list[NodePlan]) -> None:
    """Each node's bridge with its own ports but the uplinks (add_uplinks makes those, with their
    veth pairs), and no controller yet."""
    names = [n.bridge for n in nodes]
    uplinks = {name for n in nodes for u in n.uplinks for name in (u.port, u.patch)}
    builder.ledger.record("bridge", *names)
    cmd = []
    for name in names:
        b = plan.bridge(name)
        cmd += bridge_command(b, builder.net.datapath.kind, plan.run)
        cmd += ports_command(name, [p for p in b.ports if p.name not in uplinks])
    sh(["ovs-vsctl", "--timeout=60", *vsctl_order(cmd)], timeout=90)


def _resolv_confs(builder, plan: Plan, hosts) -> None:
    """In a VPC with a DNS resolver, an instance's resolv.conf names it (topologies/dns.py)."""
    confs = [(h, vpc_resolv_conf(plan.internet.resolvers)) for h in hosts
             if plan.resolver(plan.vswitch(h.vswitch).vpc) is not None]
    give_resolv_confs(builder.net.rundir, builder.ledger, builder.net.hosts, confs)


def _node_health(builder, plan: Plan, nodes: list[NodePlan]) -> None:
    """kube-proxy's health check server on each new node, when a Service with policy Local needs one."""
    ready_dir, root = builder.net.rundir.ready_dir, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    waits = [builder.start_node_health(n.name, ready_dir, root) for n in nodes
             if write_node_health(builder.ledger.dir, plan, n.name)]
    wait_for("node health check servers", lambda: all(w() for w in waits), 30)


def connect_bridges(builder, nodes: list[NodePlan]) -> None:
    """The new nodes' bridges connect to the run's controller (which holds the plan naming them)."""
    cmd = ["ovs-vsctl", "--timeout=60"]
    for n in nodes:
        cmd += controller_command(n.bridge, builder.net)
    sh(cmd, timeout=90)


def remove_nodes(builder, nodes: list[NodePlan]) -> None:
    """Take half-made nodes out again: their processes, bridge, ports on the vSwitches, links,
    namespace and files. Each step tolerates what is already gone."""
    plan, net = builder.plan, builder.net
    keys = {n.ecs for n in nodes}
    stop_node_servers(net, [n.name for n in nodes])     # the server of the node's own ports, if it declares any
    for name in [s for s in net.servers if s.partition("#")[0] in keys]:
        proc = net.servers.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    entries = [Entry("bridge", n.bridge) for n in nodes]
    cmd = ["ovs-vsctl", "--timeout=60"]
    for n in nodes:
        entries += [Entry("link", name) for u in n.uplinks for name in (u.port, u.peer)]
        entries += [Entry("link", t.ifname) for t in n.tunnels[:1]]
        entries += [Entry("link", name) for pair in hop_pairs(plan, [n]) for name in pair]
        for u in n.uplinks:
            for port in (u.peer, u.patch_peer):
                cmd += ["--", "--if-exists", "del-port", plan.vswitch(u.vswitch).bridge, port]
    for key in keys:
        h = plan.host(key)
        shell = net.hosts.pop(key, None)
        if shell is not None:         # Mininet's shell in the namespace, as the ledger has it
            for fd in (shell.stdin, shell.stdout):
                try:
                    fd.close()
                except Exception:       # noqa: BLE001 - closing what may be closed already
                    pass
            entries.append(Entry("process", str(shell.pid), token=h.netns))
        entries += [Entry("link", h.veth), Entry("netns", h.netns), Entry("file", f"{NETNS_ETC}/{h.netns}"),
                    Entry("file", net.rundir.resolv(h.netns)), Entry("file", net.rundir.ready(h.netns)),
                    Entry("file", net.rundir.ready(h.netns, NodeHealthServer.NAME))]
    sh(cmd, timeout=90, check=False)
    fdb = _peer_entries(plan, nodes)
    if fdb:
        sh(["bridge", "-force", "-batch", "-"], "".join(f"fdb del {e}\n" for e in fdb), check=False)
    remove(entries)
