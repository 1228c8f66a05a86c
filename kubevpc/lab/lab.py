"""The Lab: one scenario's network, brought up, probed, changed as it runs and taken down
(kubevpc.lab re-exports it). Changes are worked out on the manifests in kubevpc/lab/changes.py;
the network is built by topologies/build.py."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable, Iterable

from topologies.build import Builder, teardown
from topologies.datapath import wait_datapath
from topologies.shell import bridge_connections, wait_for
from topologies.uplinks import add_uplinks

from ..errors import DeadlineError, KubevpcError
from ..k8s import check_labels
from ..daemons.ingress import ingress_status, write_ingress_state
from ..daemons.nodehealth import write_node_health
from ..daemons.slb import write_slb_config
from ..ledger import Ledger, run_dir
from ..scenario.load import load
from ..observe.flowlog import dump_learned, live_records, read_counters, read_records
from ..observe.trace import Trace, trace
from ..planning import TERMINAL_PHASES, HostPlan, Plan, make_plan, plan_warnings, resolve_endpoint
from ..probe import PortBlocks
from ..rundir import atomic_write
from . import changes, dryrun
from .grace import Terminations, check_grace_period
from .nodes import Nodes
from .probing import Probe, Probing  # noqa: F401 - Probe: kubevpc.lab.lab.Probe, as before
from .servers import Servers, stop_process


def new_run_name() -> str:
    return "kv" + secrets.token_hex(2)


class Lab(Servers, Nodes, Probing):
    def __init__(self, scenario: str, mode: str | None = None, run: str | None = None,
                 datapath: str | None = None, say: Callable[[str], None] = lambda s: None,
                 allow_dirs: Iterable[str] = ()):
        """`allow_dirs`: directories besides the scenario's own from which its `file:` references
        may be read."""
        self.file = scenario
        self.mode = mode
        self.run = run or new_run_name()
        self.datapath = datapath
        self.say = say
        self.loaded = load(scenario, mode, tuple(allow_dirs))
        for w in self.loaded.warnings:            # objects skipped: kinds that do not touch the network
            say(f"warning: {w}")
        self.plan: Plan = make_plan(self.loaded, self.run)
        for w in plan_warnings(self.loaded, self.plan):   # what ACK accepts and does not act on
            say(f"warning: {w}")
        self.ready: dict[str, bool] = {}      # readiness set while running, by pod key
        self.labels: dict[str, dict[str, str | None]] = {}   # labels set (None: removed) while running
        self.net = None
        self.timings: dict[str, float] = {}
        self.source_ports = PortBlocks()          # probes never reuse a recent source port
        self.stopped: set[str] = set()            # servers stopped on purpose (stop_server), by name
        self._deaths_told = 0                      # controller deaths a change has reported already
        self._plan_file = 0                       # st_mtime_ns of the plan.json last handed over
        self.terminating = Terminations(self._expire_in_background)   # pods deleted, in their grace period
        self.lock = threading.RLock()             # changes, from callers and from the grace period timer

    # ------------------------------------------------------------------------------ lifecycle
    def up(self) -> "Lab":
        if os.path.exists(run_dir(self.run)):
            raise KubevpcError(f"a run named {self.run} already exists; run `kubevpc clean` first")
        t0 = time.monotonic()
        builder = Builder(self.plan, Ledger(self.run), self.say, self.datapath)
        self.net, self.builder = builder.net, builder
        self.plan = builder.plan            # with the checksum hops, where the datapath takes them
        try:
            builder.build()
        except BaseException:
            self.down()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def down(self) -> dict[str, int]:
        self.terminating.cancel()
        if self.net is None:
            return {}
        t0 = time.monotonic()
        # a second Ctrl-C during teardown must not leave half the network behind
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            counts = teardown(self.net, self.say)
            shutil.rmtree(self.net.ledger.dir, ignore_errors=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.net = None
        self.timings["down"] = time.monotonic() - t0
        return counts

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ---------------------------------------------------------------------------- endpoints
    def host(self, endpoint: str) -> HostPlan:
        try:
            return resolve_endpoint(self.plan, endpoint)
        except KeyError:
            raise KubevpcError(f"no endpoint {endpoint!r}; expected pod/<namespace>/<name>, ecs/<name>, "
                               f"node/<name> or inet/<name>; this scenario has {', '.join(h.key for h in self.plan.hosts)}") from None

    def address(self, endpoint: str, family: int = 4) -> str:
        """An endpoint's IPv4 address, or with family 6 its IPv6 address (dual stack)."""
        h = self.host(endpoint)
        if family == 6 and not h.ipv6:
            raise KubevpcError(f"{h.key} has no IPv6 address (a dual-stack cluster's pods and instances on a "
                               "vSwitch with an ipv6Cidr have one)")
        return h.ipv6 if family == 6 else h.ip

    def _pid(self, endpoint: str) -> int:
        if self.net is None:
            raise KubevpcError("the lab is not up")
        return self.net.host_pid(self.host(endpoint).key)

    def exec(self, endpoint: str, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command inside an endpoint's network namespace."""
        return subprocess.run(["mnexec", "-a", str(self._pid(endpoint)), *cmd], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, endpoint: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        """Start a command inside an endpoint's network namespace and return at once; the caller
        owns the process and stops it (an iperf3 server, a capture)."""
        return subprocess.Popen(["mnexec", "-a", str(self._pid(endpoint)), *cmd], stdin=subprocess.DEVNULL, **kwargs)

    def trace(self, source: str, dest: str, port: int, proto: str = "tcp") -> Trace:
        """Follow a new connection's first packet through every bridge it crosses (kubevpc.observe.trace),
        with the evaluator's verdict beside it and any disagreement named."""
        if self.net is None:
            raise KubevpcError("the lab is not up")
        return trace(self.plan, source, dest, port, proto, self.status().get("slb_health"))

    def flow_log(self, active: bool = False) -> list[dict]:
        """The run's flow log records (kubevpc.observe.flowlog: Alibaba Cloud VPC Flow Logs' fields), oldest
        first; active: with the connections still open as they stand (log-status ACTIVE)."""
        if self.net is None:
            raise KubevpcError("the lab is not up")
        records = read_records(self.net.state_dir)
        return records + (live_records(self.plan, dump_learned(self.plan)) if active else [])

    def rule_counters(self) -> list:
        """Packets and bytes each security group rule and NetworkPolicy flow matched, from the
        flows' own counters (kubevpc.observe.flowlog.Counter)."""
        if self.net is None:
            raise KubevpcError("the lab is not up")
        return read_counters(self.plan, self.status().get("slb_health"))

    def service(self, name: str):
        """A Service of the plan by `<namespace>/<name>` or `<name>` (namespace default)."""
        try:
            return self.plan.service(name.removeprefix("svc/"))
        except KeyError:
            raise KubevpcError(f"no Service {name!r}; this scenario has "
                               f"{', '.join(s.key for s in self.plan.services) or 'none'}") from None

    # ------------------------------------------------------------------- changing it as it runs
    def set_ready(self, pod: str, ready: bool) -> dict:
        """Mark a pod ready or not ready: Service endpoints, groups, DNS and SLB backends follow."""
        key = self._pod_key(pod)
        return self._update(self.loaded.manifests, {**self.ready, key: ready})

    def label(self, target: str, labels: dict[str, str | None]) -> dict:
        """Set (a value) or remove (None) labels of a pod (`pod/<ns>/<name>`) or a namespace
        (`namespace/<name>`), as `kubectl label` does. Service endpoints and NetworkPolicy follow."""
        try:
            check_labels({k: v for k, v in labels.items() if v is not None})
        except ValueError as exc:
            raise KubevpcError(f"labels {labels}: {exc}") from None
        if target.startswith("namespace/"):
            name = target.removeprefix("namespace/")
            if name not in self.plan.namespaces:
                raise KubevpcError(f"no namespace {name!r}; this scenario has {', '.join(self.plan.namespaces)}")
            old = self.plan.namespaces[name]
            new = {k: v for k, v in {**old, **labels}.items() if v is not None}
            return self.apply({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": name, "labels": new}})
        key = self._pod_key(target)
        wanted = {**self.labels.get(key, {}), **labels}
        return self._update(self.loaded.manifests, self.ready, {**self.labels, key: wanted})

    def apply(self, *objects: dict, origin: str = "<api>") -> dict:
        """Create or replace objects by kind, namespace and name, as `kubectl apply` would:
        Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods, Deployments, StatefulSets,
        DaemonSets and ConfigMaps (Terway's eni-config and a node's own: new pods follow them; a pod
        vSwitch new to a node attaches an uplink, an ENI, to it; running pods keep their addresses);
        kinds that do not touch the network are skipped, each told to `say`. A Service
        keeps its ClusterIP and NodePorts when the new object does not set them. New pods (a new
        Pod, a new Deployment, more replicas) are started and join Services once they listen;
        pods that go (fewer replicas) are removed after the flows stop sending to them. A running
        pod keeps its node, address and ports: a change to those is refused.
        `origin` names where the objects came from in error messages (the CLI passes file names)."""
        return self._update(changes.applied(self.loaded.manifests, changes.parse_objects(objects, origin, self.say)),
                            self.ready)

    def scale(self, deployment: str, replicas: int, grace_period: int | None = None) -> dict:
        """Set a Deployment's (`deploy/<ns>/<name>`) or a StatefulSet's (`sts/<ns>/<name>`) replicas,
        as `kubectl scale` does. A Deployment's pods are named `<deployment>-<index>`: scaling up adds
        indexes above the highest; a StatefulSet's are `<name>-0` .. `<name>-(replicas-1)`. Scaling
        down removes the highest ones, which terminate gracefully (see delete)."""
        return self._update(changes.scaled(self.loaded.manifests, deployment, replicas), self.ready,
                            grace_period=grace_period)

    def dry_run(self, objects: list[dict], deletes: list[str] | None = None, origin: str = "<api>",
                grace_period: int | None = None) -> dict:
        """What apply(*objects), then delete() of each of `deletes`, would change: planned against the
        running plan, not carried out (kubevpc/lab/dryrun.py; `kubevpc apply|delete --dry-run`)."""
        _check_grace(grace_period)
        with self.lock:
            return dryrun.plan_change(self, objects, deletes or [], origin, grace_period)

    def set_network_policies(self, *objects: dict, origin: str = "<api>") -> dict:
        """Make these the scenario's NetworkPolicies, all others removed, in one change."""
        return self._update(changes.with_network_policies(self.loaded.manifests, objects, origin), self.ready)

    def delete(self, ref: str, grace_period: int | None = None) -> dict:
        """Delete a Service (`svc/<ns>/<name>`), a NetworkPolicy (`netpol/<ns>/<name>`), an Ingress
        (`ingress/<ns>/<name>`), a Pod (`pod/<ns>/<name>`) or a Deployment with its pods
        (`deploy/<ns>/<name>`), a StatefulSet or a DaemonSet with its pods (`sts/`, `ds/`). A pod of a
        Deployment is replaced by a new one with a new name and address, as the ReplicaSet
        controller does; a pod of a StatefulSet or a DaemonSet is created again under its own name
        once it is gone (with its address too, in eni mode, under a StatefulSet's Fixed PodNetworking).

        Pods terminate gracefully, as kubectl's `--grace-period`: for `grace_period` seconds (None:
        the pod's terminationGracePeriodSeconds, 30 by default) a pod keeps running and serving,
        and is an endpoint that is serving and terminating but not ready; then it is removed. 0
        removes it at once. Deleting a terminating pod again may shorten its grace period."""
        _check_grace(grace_period)
        with self.lock:
            key = self._terminating_key(ref)
            if key:
                return self._shorten(key, grace_period)
            manifests, pods = changes.deleted(self.loaded.manifests, self.plan, ref)
            return self._update(manifests, self.ready, deleted=pods, grace_period=grace_period)

    def _terminating_key(self, ref: str) -> str:
        """The key of the terminating pod `ref` names, or ""."""
        if not ref.startswith(("pod/", "po/")):
            return ""
        kind, _, rest = ref.partition("/")
        ns, _, name = rest.rpartition("/")
        key = f"pod/{ns or 'default'}/{name}"
        return key if key in self.terminating else ""

    def _shorten(self, key: str, grace_period: int | None) -> dict:
        """A terminating pod deleted again: a shorter grace period replaces the rest of its own."""
        left = self.terminating.shorten(key, grace_period)
        if left > 0:
            self.say(f"{key} is terminating; {left:.0f} s of its grace period left")
            return {"terminating": {key: round(left, 3)}}
        return self._expire()

    def ingress_certificate(self, secret: str) -> str:
        """The PEM file of the certificate an Ingress's TLS Secret (`<namespace>/<name>`) holds: the
        declared Secret's, written out, or the self-signed one made for it at set-up."""
        ns, _, name = secret.rpartition("/")
        key = f"{ns or 'default'}/{name}"
        for h in self.plan.pods:
            if h.app == "ingress":
                with open(self.net.rundir.ingress_state(h.namespace, h.name), encoding="utf-8") as fh:
                    pem = json.load(fh)["secrets"].get(key, {}).get("tls.crt")
                if pem:
                    path = self.net.rundir.certificate(key)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "w", encoding="ascii") as fh:
                        fh.write(pem)
                    return path
        raise KubevpcError(f"no TLS Secret {key} is served by an ingress controller of this scenario")

    def delete_service(self, name: str) -> dict:
        svc = self.service(name)
        return self.delete(f"svc/{svc.namespace}/{svc.name}")

    def _pod_key(self, pod: str) -> str:
        key = self.host(pod).key
        if not key.startswith("pod/"):
            raise KubevpcError(f"{pod} is not a pod")
        return key

    def _update(self, manifests: list, ready: dict[str, bool], labels: dict | None = None,
                deadline: float = 10, deleted: frozenset[str] = frozenset(), grace_period: int | None = None) -> dict:
        """Plan again (pods that stay keep their node, address and port), bring up the pods the
        change adds, hand the new plan to the controller, the DNS, the node health servers and the
        SLB checkers (they watch their files), then take down the pods it removes. Pods removed
        with a grace period (their own, or `grace_period`) stay, terminating, until it ends.
        Returns how long the flows took to follow."""
        with self.lock:
            return self._change(manifests, ready, labels, deadline, deleted, grace_period)

    def _replan(self, manifests: list, ready: dict[str, bool], labels: dict | None, deleted: frozenset[str],
                grace_period: int | None, loaded=None) -> tuple[changes.Replanned, dict[str, float]]:
        """The change planned (of the scenario `loaded`: with a node added); pods it removes that
        have a grace period are planned again as terminating, with the time each one's grace period ends."""
        labels = self.labels if labels is None else labels
        loaded = loaded or self.loaded
        wall = time.time()          # a fixed address's release TTL counts in wall-clock time (plan.json keeps it)
        change = changes.replan(loaded, self.plan, self.run, manifests, ready, labels,
                                self.terminating.keys(), deleted, wall)
        now = time.monotonic()
        graceful = {h.key: now + (h.grace_period if grace_period is None else grace_period)
                    for h in change.removed if h.kind == "pod" and not h.terminating and h.key not in self.terminating}
        graceful = {k: t for k, t in graceful.items() if t > now}
        if graceful:
            change = changes.replan(loaded, self.plan, self.run, manifests, ready, labels,
                                    self.terminating.keys() | frozenset(graceful), deleted, wall)
        return change, graceful

    def _warn_new(self, change: changes.Replanned) -> None:
        """The warnings of the changed plan (kubevpc.planning.plan_warnings) that the running one
        did not have, told to `say`: a policy or label applied that selects an exclusive-ENI pod."""
        told = {(w.value, w.expected) for w in plan_warnings(self.loaded, self.plan)}
        for w in plan_warnings(change.loaded, change.plan):
            if (w.value, w.expected) not in told:
                self.say(f"warning: {w}")

    def _change(self, manifests: list, ready: dict[str, bool], labels: dict | None, deadline: float,
                deleted: frozenset[str], grace_period: int | None, loaded=None) -> dict:
        if self.net is None:
            raise KubevpcError("the lab is not up")
        t0 = time.monotonic()
        change, graceful = self._replan(manifests, ready, labels, deleted, grace_period, loaded)
        self._warn_new(change)
        version = self.status().get("plan_version", 0)
        pods: dict[str, float] = {}
        if change.uplinks:      # ENIs attached: a node's pods take addresses from a vSwitch new to it
            self.say(f"attaching {', '.join(f'{n} to {u.vswitch}' for n, u in change.uplinks)}")
            add_uplinks(self.builder, change.plan, change.uplinks)
        self._build_nodes(change)       # nodes added (kubevpc/lab/nodes.py), not yet connected
        if change.added:        # the pods listen before any Service sends to them; flows are timed from then
            self.say(f"starting {', '.join(h.key for h in change.added)}")
            self.builder.add_pods(change.plan, change.added)
            pods["pods_started_s"] = time.monotonic() - t0
            t0 = time.monotonic()
        self._hand_over(change)
        self._connect_nodes(change, deadline)
        self.terminating.start(graceful)
        self.terminating.forget(h.key for h in change.removed)
        if graceful:
            self.say(f"{len(graceful)} pod(s) terminating: {', '.join(sorted(graceful))}")
        self._wait_programmed(version, deadline)
        took = time.monotonic() - t0
        self._stop_finished(change)
        if change.removed:         # nothing is sent to them any more
            self.say(f"removing {', '.join(h.key for h in change.removed)}")
            t1 = time.monotonic()
            self.builder.remove_pods(change.removed)
            pods["pods_removed_s"] = time.monotonic() - t1
        self._reload_ingress(deadline)
        self._wait_files_taken(deadline)
        wait_datapath(self.status, deadline)
        cached = time.monotonic() - t0
        self.say(f"change programmed in {took * 1000:.0f} ms, in the datapath's cache in {cached * 1000:.0f} ms")
        term = {k: v for k, v in self.terminating.left().items() if k in graceful}
        out = {"flows_updated_s": took, "datapath_s": cached, **pods, **({"terminating": term} if term else {}),
               **self._controller_note()}
        again = changes.recreated(self.loaded.manifests, change.removed)
        if again:           # the StatefulSet controller: the same names, once the old pods are gone
            self.say(f"re-creating {', '.join(again)}")
            out["recreated"] = self._change(self.loaded.manifests, self.ready, None, deadline, frozenset(), None)
        return out

    def _stop_finished(self, change: changes.Replanned) -> None:
        """The servers of pods that reached a terminal phase (Succeeded, Failed) stop, as their
        containers have."""
        for h in change.plan.pods:
            name = h.key
            if h.phase in TERMINAL_PHASES and name in self.net.servers and name not in self.stopped:
                self.say(f"{h.key} is {h.phase}: its server stops")
                self.stopped.add(name)
                stop_process(self.net.servers[name])

    def _expire_in_background(self) -> None:
        try:
            self._expire()
        except Exception as exc:        # noqa: BLE001 - a timer thread has no caller to tell: say it, try again
            self.say(f"removing the pods whose grace period ended failed: {exc}; trying again in 5 s")
            with self.lock:
                self.terminating.retry(5)

    def _expire(self) -> dict:
        """Remove the pods whose grace period has ended."""
        with self.lock:
            due = self.terminating.due() if self.net is not None else set()
            if not due:
                self.terminating.schedule()
                return {}
            self.say(f"grace period over: {', '.join(sorted(due))}")
            return self._change(self.loaded.manifests, self.ready, None, 10, frozenset(), None)

    def _hand_over(self, change: changes.Replanned) -> None:
        """The new plan becomes the Lab's, and the run's: plan.json (the controller watches it), the
        DNS zone, the node health servers' and the SLB checkers' files."""
        plan = change.plan
        state = self.net.state_dir
        atomic_write(self.net.rundir.plan, plan.model_dump_json(indent=1))
        self._plan_file = os.stat(self.net.rundir.plan).st_mtime_ns      # the controller reports it once loaded
        self.loaded, self.plan, self.ready, self.labels = change.loaded, plan, dict(change.ready), dict(change.labels)
        self.net.plan = self.builder.plan = plan
        if plan.dns is not None:
            self.builder.write_dns_zone()
        for node in plan.nodes:
            write_node_health(state, plan, node.name)
        for slb in plan.slbs:
            write_slb_config(state, slb)

    def _wait_programmed(self, version: int, deadline: float) -> None:
        """Until the controller has programmed every bridge at a plan newer than `version`."""
        def programmed() -> bool:
            st = self.status()
            if st.get("plan_file", self._plan_file) != self._plan_file:
                return False        # still the plan before (a version raised by SLB health alone)
            return st.get("plan_version", 0) > version and all(
                b.get("programmed") and b.get("plan_version", 0) == st["plan_version"] for b in st["bridges"].values())
        try:
            wait_for("the controller to program the change", programmed, deadline, interval=0.01)
        except DeadlineError:
            raise KubevpcError(f"the change was not programmed within {deadline:g} s: "
                               f"{self.why_not_programmed(version)}") from None

    def _reload_ingress(self, deadline: float) -> None:
        """The ingress controllers render, check and reload NGINX; a bad Ingress is reported by
        them and the last good configuration keeps serving."""
        state, plan = self.net.state_dir, self.plan
        ingress = {h.key: write_ingress_state(state, plan, h) for h in plan.pods if h.app == "ingress"}

        def reloaded() -> bool:
            return all((ingress_status(state, plan.host(k)).get("seen") or 0) >= g for k, g in ingress.items())
        if ingress:
            wait_for("the ingress controllers to take the change", reloaded, deadline, interval=0.02)
            for key in ingress:
                st = ingress_status(state, plan.host(key))
                if not st.get("ok", True):
                    self.say(f"{key}: NGINX kept its last good configuration: {st.get('error')}")

    def _controller_note(self) -> dict:
        """A controller that died since the last change was told (during this one, or just before it,
        when the supervisor may have restarted it already): the change waited for the new one."""
        note = {}
        deaths = len(self.net.supervisor.deaths) if self.net.supervisor else 0
        if deaths > self._deaths_told:
            note["controller"] = self.net.describe_controller()
            self.say(f"since the last change, {note['controller']}")
        self._deaths_told = deaths
        return note

    def why_not_programmed(self, version: int | None = None) -> str:
        """Why the bridges are not all programmed at the controller's plan version (or at a plan
        newer than `version`): the controller, the bridges' connections as Open vSwitch reports
        them, the controller's own errors, and its deaths before."""
        st = self.status()
        sup = st.get("supervisor", {})
        why = []
        if not st.get("alive", True):
            why.append(self.net.describe_controller())
        elif version is not None and st.get("plan_version", 0) <= version:
            age = time.time() - st.get("time", time.time())
            why.append(f"the controller (pid {st.get('pid')}) has not taken the changed plan: it is still at plan "
                       f"v{st.get('plan_version', 0)}, and last wrote its status {age:.0f} s ago (hung?)")
        names = sorted(st.get("bridges", {}))
        connected = bridge_connections(names)
        if connected and not all(connected.values()):
            why.append(f"{sum(connected.values())} of {len(names)} bridges connected to it, as Open vSwitch last "
                       f"reported (not: {', '.join(n for n in names if not connected[n])})")
        behind = [n for n, b in st.get("bridges", {}).items()
                  if not (b.get("programmed") and b.get("plan_version") == st.get("plan_version"))]
        if behind:
            why.append(f"not programmed at plan v{st.get('plan_version', 0)}: {', '.join(sorted(behind))}")
        if st.get("errors"):
            why.append("controller errors: " + "; ".join(st["errors"][-3:]))
        if st.get("alive", True) and sup.get("deaths"):
            why.append(f"(earlier: {self.net.describe_controller()})")
        return "; ".join(w for w in why if w) or "no cause found; see controller.log in the run's directory"

    def status(self) -> dict:
        return self.net.controller_status() if self.net else {}


def _check_grace(value) -> None:
    try:
        check_grace_period(value)
    except ValueError as exc:
        raise KubevpcError(str(exc)) from None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
