"""Build and tear down the emulated network of a Plan.

Mininet makes the namespaces (one Host per ECS instance and per pod); everything else is done in
batches: all veth pairs with one `ip -batch`, every namespace's addresses and routes over netlink
from one thread that enters each namespace in turn, all bridges and ports with one `ovs-vsctl`
transaction. Each resource is written
to the run's ledger before it is created, so a crash leaves nothing `kubevpc clean` cannot find.
Nothing here touches the root namespace's addresses or routes: root-side veth ends, VXLAN
devices and bridge ports carry no address.

The builder runs commands with topologies/shell.py, picks the datapath and its offloads with
topologies/datapath.py, and works inside the namespaces with topologies/netns.py. The daemons it
starts write their own configuration files and name their own command lines (kubevpc.daemons);
every file of the run's directory is named by kubevpc.rundir.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kubevpc.daemons.dns import write_zone
from kubevpc.daemons.forkserver import ForkServer
from kubevpc.daemons.nodeserver import PodServer
from kubevpc.daemons.nodehealth import NodeHealthServer, nodehealth_command, write_node_health
from kubevpc.daemons.slb import SlbChecker, checker_command, write_slb_config
from kubevpc.errors import BuildError
from kubevpc.ledger import NETNS_ETC, NETNS_LINK, Entry, Ledger, remove
from kubevpc.planning import TERMINAL_PHASES, BridgePlan, HostPlan, NodePlan, OvsPort, Plan, with_csum_hops
from kubevpc.rundir import RunDir, atomic_write, controller_socket

from .dns import give_resolv_confs, resolv_confs, resolver_addresses, write_zones
from .datapath import (OVS_RCVBUF, RCVBUF_ENV, Datapath, checksums_off, csum_hop_setting, detect_datapath,
                       enlarge_ovs_rcvbuf, full_checksums_setting, offloads_for)
from .hops import make_hops
from .hosts import HostStartError, start_hosts
from .netns import host_addresses, in_each_namespace, no_ipv6
from .servers import start_servers
from .shell import bridge_connections, sh, vsctl_order, wait_for  # noqa: F401 - bridge_connections: tests take it from here
from .supervisor import ControllerSupervisor, check_controller_settings, ending, unix_listening

Say = Callable[[str], None]


HOSTS_DEADLINE, HOSTS_DEADLINE_PER_HOST = 30.0, 0.05    # s for every host's shell to come up (topologies/hosts.py)
SERVER_LIVENESS_INTERVAL = 0.5    # s between two looks at the processes of servers not yet listening


def own(hosts) -> list[HostPlan]:
    """The hosts with a namespace and an interface of their own: all but host-network pods, which
    run in their node's (their server is started there; nothing else is made for them)."""
    return [h for h in hosts if not h.host_network]


def servers_ready(hosts: Sequence[HostPlan], ready_dir: str, procs: dict, log: str) -> Callable[[], bool]:
    """A test for wait_for: have all these hosts' servers written their ready files?

    It costs one directory listing a call, whatever the number of hosts, and forgets each host
    once it is ready. Whether a server not yet ready has exited (its process, two reads of /proc)
    is looked at every SERVER_LIVENESS_INTERVAL only: looking at 1,000 processes every 50 ms took
    a good part of a core from the servers starting beside it (docs/performance.md, Scale)."""
    pending = {h.ready_name: h for h in hosts}
    last = [float("-inf")]

    def test() -> bool:
        for name in os.listdir(ready_dir):
            pending.pop(name, None)
        now = time.monotonic()
        if pending and now - last[0] >= SERVER_LIVENESS_INTERVAL:
            last[0] = now
            for h in pending.values():
                if procs[h.key].poll() is not None:
                    raise BuildError(f"the server of {h.key} exited; see {log}")
        return not pending
    return test


CONTROLLER_BACKOFF_MS = 1000             # Open vSwitch's longest wait between two connection attempts


@dataclass
class Network:
    """A built network: its plan, its Mininet hosts and the processes it runs."""

    plan: Plan
    ledger: Ledger
    datapath: Datapath
    hosts: dict = field(default_factory=dict)           # host key -> mininet Host
    servers: dict = field(default_factory=dict)         # host key -> Popen, or ForkedProcess
    forkserver: ForkServer | None = None                # forks the servers of instances (of pods too, in pod mode)
    nodeservers: dict = field(default_factory=dict)     # node -> NodeServerProcess: its pods' servers (node mode)
    supervisor: ControllerSupervisor | None = None      # runs the controller, and again when it dies
    controller_socket: str = ""                         # the controller's Unix socket (kubevpc.rundir.controller_socket)
    timings: dict = field(default_factory=dict)

    @property
    def state_dir(self) -> str:
        return self.ledger.dir

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.ledger.dir)

    @property
    def controller(self) -> subprocess.Popen | None:
        """The controller process running now (a new one after a restart)."""
        return self.supervisor.proc if self.supervisor else None

    @property
    def controller_target(self) -> str:
        """Where the bridges connect, as Open vSwitch writes it: unix:<socket>."""
        return f"unix:{self.controller_socket}"

    def host_pid(self, key: str) -> int:
        """The pid of the shell in host `key`'s namespace: a host-network pod's is its node's."""
        home = key if key in self.hosts else self.plan.network_host(self.plan.host(key)).key
        return self.hosts[home].pid

    def controller_status(self) -> dict:
        """status.json as the controller last wrote it, corrected by what the run knows besides:
        a file written by a controller that is not running now (dead, or replaced by one that has
        not written yet) programs nothing, whatever it says. "supervisor" says which process runs,
        and every death seen."""
        try:
            with open(self.rundir.status, encoding="utf-8") as fh:
                status = json.load(fh)
        except (OSError, json.JSONDecodeError):
            status = {}
        if self.supervisor is None:
            return status
        sup = self.supervisor.state()
        status["supervisor"] = sup
        status["alive"] = sup["alive"] and status.get("pid") == sup["pid"]
        if not status["alive"]:
            for bridge in status.get("bridges", {}).values():
                bridge.update(connected=False, programmed=False)
        return status

    def describe_controller(self) -> str:
        """What is wrong with the controller, in a sentence ("" when it runs)."""
        sup = self.supervisor.state() if self.supervisor else {}
        if sup.get("gave_up"):
            return sup["gave_up"]
        dead = [f"pid {d['pid']} {d['how']} at {time.strftime('%H:%M:%S', time.localtime(d['at']))}"
                for d in sup.get("deaths", [])]
        if not sup.get("alive", True):
            return f"the controller is not running ({sup.get('dead')}); the supervisor starts it again"
        if dead:
            return (f"the controller died ({'; '.join(dead)}) and runs again as pid {sup['pid']}")
        return ""


def bridge_command(b: BridgePlan, datapath: str, run: str) -> list[str]:
    """ovs-vsctl's arguments that make bridge `b` on `datapath` (netdev or system), in secure fail
    mode (no flows, no forwarding until the controller programs it), labelled with the run."""
    return ["--", "add-br", b.name, "--", "set", "bridge", b.name, f"datapath_type={datapath}",
            "fail_mode=secure", "protocols=OpenFlow13", f"other-config:datapath-id={b.dpid:016x}",
            "other-config:disable-in-band=true", f"external_ids:kubevpc-run={run}",
            f"external_ids:kubevpc-role={b.role}", f"external_ids:kubevpc-owner={b.owner}"]


def controller_command(bridge: str, net: Network) -> list[str]:
    """ovs-vsctl's arguments that connect a bridge to the run's controller."""
    # after a controller restart, reconnect within a second (Open vSwitch's default: 8 s)
    return ["--", "set-controller", bridge, net.controller_target,
            "--", "set", "controller", bridge, f"max_backoff={CONTROLLER_BACKOFF_MS}"]


def ports_command(bridge: str, ports: Sequence[OvsPort], may_exist: bool = False) -> list[str]:
    """ovs-vsctl's arguments that add these ports to a bridge at their planned numbers."""
    cmd = []
    for p in ports:
        cmd += ["--", *(["--may-exist"] if may_exist else []), "add-port", bridge, p.name, "--", "set", "interface",
                p.name, f"ofport_request={p.ofport}"]
        if p.kind == "patch":
            cmd += ["type=patch", f"options:peer={p.peer}"]
    return cmd


class Builder:
    def __init__(self, plan: Plan, ledger: Ledger, say: Say = lambda s: None, datapath: str | None = None):
        self.plan = plan
        self.ledger = ledger
        self.say = say
        check_controller_settings()
        self.net = Network(plan, ledger, detect_datapath(datapath))
        self.offloads = offloads_for(plan, self.net.datapath, full_checksums_setting(), csum_hop_setting())
        if self.offloads.csum_hop:        # every node bridge gets its checksum hop (topologies/hops.py)
            self.plan = self.net.plan = with_csum_hops(plan)
        self.rcvbuf: dict = {}            # what _buffers did to Open vSwitch's receive buffers

    def build(self) -> Network:
        net, plan = self.net, self.plan
        self.ledger.create()
        atomic_write(net.rundir.plan, plan.model_dump_json(indent=1))
        self.say(f"datapath: {net.datapath.note}")
        steps = [("namespaces", self._namespaces), ("links", self._links), ("addresses", self._addresses),
                 ("tunnels", self._tunnels), ("controller", self._controller), ("bridges", self._bridges),
                 ("buffers", self._buffers), ("flows", self._wait_programmed), ("dns", self._dns),
                 ("servers", self._servers), ("slb", self._slb)]
        for name, step in steps:
            t0 = time.monotonic()
            step()
            net.timings[name] = time.monotonic() - t0
        return net

    # ---------------------------------------------------------------------------- namespaces
    def _namespaces(self, hosts: tuple[HostPlan, ...] | None = None) -> None:
        """A namespace for every host with one of its own (not host-network pods), of the plan or `hosts`."""
        if hosts is not None:
            hosts = own(hosts)
            if not hosts:
                return
        else:
            hosts = own(self.plan.hosts)
            extra = f", {len(self.plan.internet_hosts)} on the internet" if self.plan.internet_hosts else ""
            self.say(f"creating {len(hosts)} namespaces ({len(self.plan.instances)} ECS, {len(self.plan.own_pods)} "
                     f"pods{extra})")
        self.ledger.record("netns", *[h.netns for h in hosts])
        try:        # every shell started at once (topologies/hosts.py), each recorded as soon as it runs
            made = start_hosts([h.netns for h in hosts], lambda node: self.ledger.record("process", node.pid,
                                                                                      token=node.name),
                               HOSTS_DEADLINE + HOSTS_DEADLINE_PER_HOST * len(hosts))
        except HostStartError as exc:
            raise BuildError(str(exc)) from None
        for h, node in zip(hosts, made):
            self.net.hosts[h.key] = node
        # name the namespaces so users can `ip netns exec <run>-pod-default-web-0 ...`
        sh(["ip", "-batch", "-"], "".join(f"netns attach {h.netns} {self.net.hosts[h.key].pid}\n" for h in hosts))

    def _links(self, hosts: tuple[HostPlan, ...] | None = None) -> None:
        # node uplinks and the vRouters' links to their edges: veth pairs between two bridges, both
        # ends in the root namespace (listed once, from the node's or the vRouter's side), made
        # with the network; pods added later come with their own veth only
        pairs = [(p.name, p.peer) for b in self.plan.bridges if b.role in ("node", "vrouter")
                 for p in b.ports if p.kind == "link"] if hosts is None else []
        hosts = own(self.plan.hosts if hosts is None else hosts)
        if not hosts and not pairs:
            return
        ends = [n for pair in pairs for n in pair]
        mtu = self.offloads.link_mtu
        if hosts:           # their namespaces take them away at teardown (kubevpc.ledger.NETNS_LINK)
            self.ledger.record("link", *[h.veth for h in hosts], token=NETNS_LINK)
        if ends:
            self.ledger.record("link", *ends)
        sh(["ip", "-batch", "-"], "".join(
            f"link add {h.veth} mtu {h.mtu} type veth peer name {h.ifname} netns {self.net.hosts[h.key].pid}\n"
            for h in hosts) + "".join(f"link add {a} mtu {mtu} type veth peer name {b} mtu {mtu}\n"
                                      for a, b in pairs))
        no_ipv6([h.veth for h in hosts] + ends)
        sh(["ip", "-batch", "-"], "".join(f"link set {n} up\n" for n in [h.veth for h in hosts] + ends))
        if pairs:                   # made with the network: the node bridges' checksum hops too
            make_hops(self.ledger, self.plan)

    def _addresses(self, hosts: tuple[HostPlan, ...] | None = None) -> None:
        cl = self.plan.cluster
        full = hosts is None
        hosts = own(self.plan.hosts if hosts is None else hosts)
        if not hosts:
            return
        jobs = []
        for h in hosts:
            # a node reaches other nodes' pods through the tunnel: its packets must be small enough
            routes = [(cl.pod_cidr, cl.pod_mtu)] if cl and cl.mode == "vxlan" and h.kind == "ecs" and h.node else []
            jobs.append((f"/proc/{self.net.hosts[h.key].pid}/ns/net", f"{h.key} ({h.netns})",
                         functools.partial(host_addresses, h, routes, checksums_off(self.offloads, h))))
        if self.net.datapath.kind == "netdev" and full:
            self.say(f"offloads: {self.offloads.note}")
        try:
            in_each_namespace(jobs)
        except BuildError as exc:
            raise BuildError(f"could not give the hosts their addresses: {exc}") from None

    def _tunnels(self, nodes: Sequence[NodePlan] | None = None) -> None:
        """VXLAN devices are created in the node's namespace, so their outer packets carry the
        node's address and cross the emulated vSwitch and vRouter, then moved to the root
        namespace to become ports of the node bridge. Those of every node, or of `nodes` (added
        to a running network: topologies/nodes.py)."""
        cl = self.plan.cluster
        nodes = [n for n in (self.plan.nodes if nodes is None else nodes) if n.tunnels]
        if not nodes:
            return
        self.say(f"creating {len(nodes)} VXLAN devices (VNI {cl.vni}, UDP {cl.vxlan_port})")
        self.ledger.record("link", *[n.tunnels[0].ifname for n in nodes])
        me = os.getpid()
        for n in nodes:
            t0 = n.tunnels[0]
            ns = self.plan.host(n.ecs).netns
            sh(["ip", "-n", ns, "-batch", "-"],
               f"link add {t0.ifname} type vxlan id {cl.vni} local {t0.local_ip} dstport {cl.vxlan_port} "
               f"dev eth0 nolearning\nlink set {t0.ifname} netns {me}\n")
        batch = []
        for n in nodes:
            ifname = n.tunnels[0].ifname
            batch.append(f"link set {ifname} up")
            for t in n.tunnels:   # the peer's gateway MAC lives at the peer's address
                batch.append(f"fdb append {self.plan.node(t.peer).gateway_mac} dev {ifname} dst {t.remote_ip}")
        no_ipv6([n.tunnels[0].ifname for n in nodes])
        sh(["ip", "-batch", "-"], "\n".join(b for b in batch if b.startswith("link")) + "\n")
        sh(["bridge", "-batch", "-"], "\n".join(b for b in batch if b.startswith("fdb")) + "\n")
        if self.net.datapath.kind == "netdev":
            # the kernel must compute the inner checksums itself (see docs/performance.md)
            for n in nodes:
                sh(["ethtool", "-K", n.tunnels[0].ifname, "tx", "off", "tso", "off", "gso", "off"], check=False)

    # ---------------------------------------------------------------------------- controller
    def _controller(self) -> None:
        """The controller, on a Unix socket only root can connect to, under a supervisor that
        starts it again when it dies (topologies/supervisor.py)."""
        net = self.net
        net.controller_socket = controller_socket(self.plan.run)
        self.ledger.record("file", net.controller_socket)
        net.supervisor = ControllerSupervisor(self._spawn_controller, self.say)
        proc = net.supervisor.start()
        self.say(f"controller (os-ken) pid {proc.pid} on {net.controller_socket}")

        def listening() -> bool:
            if net.supervisor.deaths or not net.supervisor.alive():
                raise BuildError(f"the controller (pid {proc.pid}) {ending(proc.wait())}; see "
                                 f"{net.rundir.controller_log}")
            return unix_listening(net.controller_socket)
        wait_for("controller listening", listening, 20)

    def _spawn_controller(self) -> subprocess.Popen:
        """Start one controller process and record it in the ledger (also after a death)."""
        cmd = [sys.executable, "-m", "controller", "--plan", self.net.rundir.plan,
               "--state", self.ledger.dir, "--socket", self.net.controller_socket, "--run", self.plan.run]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(self.net.rundir.controller_log, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.ledger.record("process", proc.pid, token=self.plan.run)
        return proc

    def _bridges(self) -> None:
        plan = self.plan
        self.say(f"creating {len(plan.bridges)} Open vSwitch bridges in one transaction")
        self.ledger.record("bridge", *[b.name for b in plan.bridges])
        cmd = []
        for b in plan.bridges:
            cmd += bridge_command(b, self.net.datapath.kind, plan.run) + controller_command(b.name, self.net)
            cmd += ports_command(b.name, b.ports)
        sh(["ovs-vsctl", "--timeout=60", *vsctl_order(cmd)], timeout=120)

    def _buffers(self, names: list[str] | None = None) -> None:
        """Larger receive buffers for Open vSwitch's packet sockets on our ports (userspace datapath):
        every port of the plan, or only these."""
        if self.net.datapath.kind != "netdev":
            return
        if names is None:
            names = [p.name for b in self.plan.bridges for p in b.ports if p.kind != "patch"]
        try:
            size = int(os.environ.get(RCVBUF_ENV) or OVS_RCVBUF)
        except ValueError:
            raise BuildError(f"{RCVBUF_ENV}={os.environ[RCVBUF_ENV]!r}: expected a number of bytes") from None
        if size <= 0:
            done, why, size = 0, f"{RCVBUF_ENV}={size}", 0
        else:
            done, why = enlarge_ovs_rcvbuf(names, size)
        self.rcvbuf = {"ports": self.rcvbuf.get("ports", 0) + len(names),
                       "sockets": self.rcvbuf.get("sockets", 0) + done, "bytes": size, "problem": why}
        if size and (why or done < len(names)):
            self.say(f"Open vSwitch's receive buffers enlarged on {done} of {len(names)} ports"
                     + (f" ({why}); TCP through the bridges will be slower" if why else ""))

    def _wait_programmed(self) -> None:
        names = {b.name for b in self.plan.bridges}

        def done() -> bool:
            st = self.net.controller_status()
            if st.get("errors"):
                raise BuildError("controller reported: " + "; ".join(st["errors"][:5]))
            bridges = st.get("bridges", {})
            return all(bridges.get(n, {}).get("programmed") for n in names)
        wait_for("controller programming every bridge", done, 60)
        st = self.net.controller_status()
        total = sum(b.get("flows", 0) for b in st.get("bridges", {}).values())
        self.say(f"{len(names)} bridges connected; {total} flows installed")

    # ----------------------------------------------------------------------------------- DNS
    def write_dns_zone(self) -> None:
        """The records the cluster DNS serves, written atomically; the server reloads on change."""
        write_zone(self.net.rundir, self.plan)

    def _dns(self, pods: tuple[HostPlan, ...] | None = None) -> None:
        """The zones, the resolvers' second address, and a resolv.conf for each pod (of `pods`, or
        every pod and, in a VPC with a resolver, every ECS instance): topologies/dns.py."""
        plan = self.plan
        if pods is None:
            write_zones(plan, self.net.rundir)
            resolver_addresses(plan, {h.key: self.net.hosts[h.key].pid for h in plan.resolvers})
            if plan.dns:
                self.say(f"cluster DNS {plan.dns.ip} ({plan.dns.domain}): resolv.conf for {len(plan.own_pods)} pods")
            if plan.resolvers:
                self.say(f"VPC DNS {', '.join(plan.internet.resolvers)} in {len(plan.resolvers)} VPCs, answering "
                         f"{plan.internet.domain}")
        give_resolv_confs(self.net.rundir, self.ledger, self.net.hosts, resolv_confs(plan, pods))

    # ----------------------------------------------------------------------------------- SLB
    def _slb(self, hosts: tuple[str, ...] | None = None) -> None:
        """One health checker per SLB (of `hosts`, the SLB namespaces added to a running network),
        in the SLB's own namespace (its probes come from the VIP), and kube-proxy's health check
        server on every node when a Service has policy Local and the node has none yet."""
        plan = self.plan
        slbs = [s for s in plan.slbs if hosts is None or s.host in hosts]
        ready_dir = self.net.rundir.ready_dir
        os.makedirs(ready_dir, exist_ok=True)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        waits = [self.start_node_health(node.name, ready_dir, root) for node in plan.nodes
                 if write_node_health(self.ledger.dir, plan, node.name)
                 and f"{node.ecs}#kubevpc.{NodeHealthServer.NAME}" not in self.net.servers]
        wait_for("node health check servers", lambda: all(w() for w in waits), 30)
        if not slbs:
            return
        self.say(f"starting {len(slbs)} SLB health checkers")
        waits = []
        for slb in slbs:
            write_slb_config(self.ledger.dir, slb)
            waits.append(self._spawn(slb.host, SlbChecker.NAME, checker_command(self.net.rundir, slb.service),
                                     ready_dir, root))
        wait_for("SLB health checkers", lambda: all(w() for w in waits), 30)

    def start_node_health(self, node: str, ready_dir: str, root: str) -> Callable[[], bool]:
        """kube-proxy's health check server in a node's namespace (policy Local)."""
        n = self.plan.node(node)
        return self._spawn(n.ecs, NodeHealthServer.NAME, nodehealth_command(self.net.rundir, node, n.ip), ready_dir, root)

    def _spawn(self, key: str, name: str, cmd: list[str], ready_dir: str, root: str) -> Callable[[], bool]:
        """Start daemon ``name`` (command line ``cmd``, and its ready file) in host ``key``'s namespace;
        a test for wait_for: has it written its ready file?"""
        h = self.plan.host(key)
        program = f"kubevpc.{name}"               # how Lab names it (stop_server, start_server)
        ready = os.path.join(ready_dir, f"{h.netns}-{name}")
        if os.path.exists(ready):
            os.unlink(ready)
        log = open(self.net.rundir.servers_log, "ab")
        proc = self.net.hosts[key].popen(cmd + ["--ready", ready], stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                         stdin=subprocess.DEVNULL)
        log.close()
        self.ledger.record("process", proc.pid, token=self.plan.run)
        self.net.servers[f"{key}#{program}"] = proc

        def ready_or_dead() -> bool:
            if proc.poll() is not None:
                raise BuildError(f"{program} in {key} exited with {proc.returncode}; see {self.net.rundir.servers_log}")
            return os.path.exists(ready)
        return ready_or_dead

    # ------------------------------------------------------------------------------- servers
    def _servers(self, hosts: tuple[HostPlan, ...] | None = None) -> None:
        full = hosts is None
        # a pod in a terminal phase (Succeeded, Failed: evicted) has stopped: nothing listens in it
        hosts = [h for h in (self.plan.hosts if full else hosts) if h.servers and h.phase not in TERMINAL_PHASES]
        if not hosts:
            return
        if full:
            self.say(f"starting servers in {len(hosts)} namespaces")
        ready_dir = self.net.rundir.ready_dir
        os.makedirs(ready_dir, exist_ok=True)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.start_servers(hosts, ready_dir, root)
        wait_for("pod and ECS servers listening",
                 servers_ready(hosts, ready_dir, self.net.servers, self.net.rundir.servers_log),
                 30 + len(hosts) * 0.02)

    def start_server(self, h: HostPlan, ready_dir: str, root: str) -> None:
        self.start_servers([h], ready_dir, root)

    def start_servers(self, hosts: list[HostPlan], ready_dir: str, root: str) -> None:
        """Start the servers of these hosts, without waiting for them to listen (topologies/servers.py:
        the programs of their own, and the plain servers in their node's server or forked)."""
        start_servers(self, hosts, ready_dir, root)

    # ------------------------------------------------------------------ pods coming and going
    def add_pods(self, plan: Plan, pods: list[HostPlan]) -> None:
        """Bring up pods (and SLB namespaces) of a changed plan in the running network, as the
        kubelet and the CNI plugin (and the cloud controller manager) would: namespace, veth on the
        node (vSwitch) bridge at the planned port, addresses and routes, resolv.conf, then the
        pod's server or the SLB's health checker, and kube-proxy's health check server on nodes
        that need one now, waited for. The caller then hands the plan to the controller, so a pod
        joins Services only once it listens. On failure, what was made for them is removed again
        and the builder keeps its plan."""
        old = self.plan
        self.plan = plan
        try:
            self._namespaces(tuple(pods))
            self._links(tuple(pods))
            self._addresses(tuple(pods))
            wired = own(pods)           # a host-network pod has nothing but its server
            cmd = []
            for h in wired:
                cmd += ["--", "add-port", h.bridge, h.veth, "--", "set", "interface", h.veth,
                        f"ofport_request={h.ofport}"]
            if wired:
                sh(["ovs-vsctl", "--timeout=60", *vsctl_order(cmd)], timeout=90)
                self._buffers([h.veth for h in wired])
            self._dns(tuple(h for h in wired if h.kind == "pod"))
            self._servers(tuple(pods))
            self._slb(tuple(h.key for h in pods if h.kind == "slb"))
        except BaseException as exc:
            try:
                self.remove_pods(pods)
            except Exception as cleanup:          # the first failure is the one to report
                exc.add_note(f"removing the half-made pods failed too: {cleanup}; `kubevpc clean` removes them")
            self.plan = old
            raise

    def remove_pods(self, pods: list[HostPlan], deadline: float = 5.0) -> None:
        """Take pods out of the running network (after the controller stopped sending to them):
        their processes, their node bridge port and veth, their namespace and files. Each step
        tolerates what is already gone, so it also clears a half-made pod. (Their ledger entries
        stay; teardown tolerates what is gone.)"""
        procs = [(name, proc) for h in pods for name, proc in list(self.net.servers.items())
                 if name == h.key or name.startswith(h.key + "#")]
        for name, proc in procs:
            proc.terminate()
        end = time.monotonic() + deadline
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=deadline)
            del self.net.servers[name]
        entries = [Entry("file", self.net.rundir.ready(h.ready_name)) for h in pods if h.host_network]
        for h in own(pods):
            node = self.net.hosts.pop(h.key, None)
            if node is not None:          # Mininet's shell in the namespace, as the ledger has it
                for fd in (node.stdin, node.stdout):
                    try:
                        fd.close()
                    except Exception:
                        pass
                entries.append(Entry("process", str(node.pid), token=h.netns))
            entries += [Entry("link", h.veth), Entry("netns", h.netns), Entry("file", os.path.join(NETNS_ETC, h.netns)),
                        Entry("file", self.net.rundir.resolv(h.netns)), Entry("file", self.net.rundir.ready(h.netns))]
        cmd = ["ovs-vsctl", "--timeout=60"]
        for h in own(pods):
            cmd += ["--", "--if-exists", "del-port", h.bridge, h.veth]
        if len(cmd) > 2:
            sh(cmd, timeout=90)
        remove(entries)


def teardown(net: Network, say: Say = lambda s: None) -> dict[str, int]:
    """Remove everything the ledger lists (kubevpc.ledger.remove: every process stopped under one
    deadline, the bridges in one transaction, the namespaces, which take the hosts' veths with
    them, in one batch); close Mininet's handles on the hosts first, so that their shells end."""
    for node in net.hosts.values():
        for fd in (node.stdin, node.stdout):
            try:
                fd.close()
            except Exception:
                pass
    for proc in list(net.servers.values()):   # first, so that they end while the controller does
        if isinstance(proc, PodServer):   # it ends with its node server, stopped below
            continue
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
    for server in net.nodeservers.values():
        server.stop()
    if net.supervisor is not None:        # no restarts from here on
        net.supervisor.stop()
    if net.forkserver is not None:
        try:
            net.forkserver.close()
        except Exception as exc:          # the ledger stops it anyway
            say(f"the fork server did not stop: {exc}")
    counts = remove(net.ledger.entries(), say)
    for proc in list(net.servers.values()):
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    for node in net.hosts.values():
        try:
            node.shell.wait(timeout=5)
        except Exception:
            pass
    return counts
