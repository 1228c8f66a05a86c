"""The Python API: bring a scenario up, probe it, take it down.

    with Lab("scenarios/default.yaml", mode="eni") as lab:
        r = lab.connect("pod/default/web-0", "ecs/ecs-db", 5432)
        assert r.ok and r.answer["client"].startswith(lab.address("pod/default/web-0"))

Endpoints are `pod/<namespace>/<name>`, `ecs/<name>` or `node/<name>`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .errors import DeadlineError, KubevpcError
from .ledger import Ledger, run_dir
from .load import load
from .plan import HostPlan, Plan, make_plan, resolve_endpoint
from .probe import PortBlocks, Result
from .rundir import atomic_write


def new_run_name() -> str:
    return "kv" + secrets.token_hex(2)


@dataclass(frozen=True)
class Probe:
    """One connection attempt to make: from an endpoint to an endpoint's port."""

    source: str
    dest: str
    port: int
    proto: str = "tcp"         # tcp | udp | http
    key: str = ""


class Lab:
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
        self.plan: Plan = make_plan(self.loaded, self.run)
        self.ready: dict[str, bool] = {}      # readiness set while running, by pod key
        self.labels: dict[str, dict[str, str | None]] = {}   # labels set (None: removed) while running
        self.net = None
        self.timings: dict[str, float] = {}
        self.source_ports = PortBlocks()          # probes never reuse a recent source port
        self.stopped: set[str] = set()            # servers stopped on purpose (stop_server), by name
        self._deaths_told = 0                      # controller deaths a change has reported already

    # ------------------------------------------------------------------------------ lifecycle
    def up(self) -> "Lab":
        from topologies.build import Builder
        if os.path.exists(run_dir(self.run)):
            raise KubevpcError(f"a run named {self.run} already exists; run `kubevpc clean` first")
        t0 = time.monotonic()
        builder = Builder(self.plan, Ledger(self.run), self.say, self.datapath)
        self.net, self.builder = builder.net, builder
        try:
            builder.build()
        except BaseException:
            self.down()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def down(self) -> dict[str, int]:
        from topologies.build import teardown
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

    def address(self, endpoint: str) -> str:
        return self.host(endpoint).ip

    def _pid(self, endpoint: str) -> int:
        if self.net is None:
            raise KubevpcError("the lab is not up")
        return self.net.host_pid(self.host(endpoint).key)

    def exec(self, endpoint: str, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command inside an endpoint's network namespace."""
        return subprocess.run(["mnexec", "-a", str(self._pid(endpoint)), *cmd], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    # ------------------------------------------------------------------------------- probing
    def connect(self, source: str, dest: str, port: int, proto: str = "tcp", timeout: float = 2.0) -> Result:
        return self.probe([Probe(source, dest, port, proto)], timeout)[0]

    def probe(self, probes: Iterable[Probe], timeout: float = 2.0) -> list[Result]:
        """Run probes, every source namespace in parallel, every target of a source concurrently."""
        probes = list(probes)
        by_source: dict[str, list[int]] = {}
        for i, p in enumerate(probes):
            by_source.setdefault(self.host(p.source).key, []).append(i)
        procs = {}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not probes:
            return []
        ports = ["--source-ports", "%d:%d" % self.source_ports.take(max(map(len, by_source.values())))]
        for src, idxs in by_source.items():
            targets = [f"{i}={probes[i].proto}:{self._dest_ip(probes[i].dest)}:{probes[i].port}" for i in idxs]
            procs[src] = subprocess.Popen(
                ["mnexec", "-a", str(self._pid(src)), sys.executable, "-m", "kubevpc.probe", "--json",
                 "--timeout", str(timeout), *ports, *targets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, cwd=root, stdin=subprocess.DEVNULL)
        results: list[Result | None] = [None] * len(probes)
        for src, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=timeout * 4 + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise KubevpcError(f"probes from {src} did not finish within {timeout * 4 + 10:.0f} s") from None
            if proc.returncode != 0:
                raise KubevpcError(f"probe in {src} failed: {err.strip()}")
            for item in json.loads(out):
                results[int(item["key"])] = Result(**item)
        return results  # type: ignore[return-value]

    def matrix(self, sources: Iterable[str] = ("pods",), ports: Iterable[tuple[int, str]] = ((80, "tcp"),),
               dests: Iterable[str] | None = None, timeout: float = 1.0):
        """The reachability matrix (kubevpc.matrix): expected next to observed, for every pair of
        the chosen endpoints (groups pods, ecs, nodes, services; references; patterns) and ports."""
        from .matrix import matrix
        return matrix(self, sources, ports, dests, timeout)

    def trace(self, source: str, dest: str, port: int, proto: str = "tcp"):
        """Follow a new connection's first packet through every bridge it crosses (kubevpc.trace),
        with the evaluator's verdict beside it and any disagreement named."""
        from .trace import trace
        if self.net is None:
            raise KubevpcError("the lab is not up")
        return trace(self.plan, source, dest, port, proto, self.status().get("slb_health"))

    def flow_log(self, active: bool = False) -> list[dict]:
        """The run's flow log records (kubevpc.flowlog: Alibaba Cloud VPC Flow Logs' fields), oldest
        first; active: with the connections still open as they stand (log-status ACTIVE)."""
        from .flowlog import dump_learned, live_records, read_records
        if self.net is None:
            raise KubevpcError("the lab is not up")
        records = read_records(self.net.state_dir)
        return records + (live_records(self.plan, dump_learned(self.plan)) if active else [])

    def rule_counters(self) -> list:
        """Packets and bytes each security group rule and NetworkPolicy flow matched, from the
        flows' own counters (kubevpc.flowlog.Counter)."""
        from .flowlog import read_counters
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

    def _dest_ip(self, dest: str) -> str:
        """An address, an endpoint (pod/..., ecs/..., node/..., inet/..., slb/...), an EIP (eip/<name>; an
        internet-facing SLB's is slb-<namespace>-<name>) or a Service's ClusterIP (svc/...)."""
        if dest.count(".") == 3 and dest.replace(".", "").isdigit():
            return dest
        if dest.startswith("eip/"):
            eip = next((e for e in self.plan.eips if e.name == dest[4:]), None)
            if eip is None:
                raise KubevpcError(f"no EIP {dest[4:]!r}; this scenario has "
                                   f"{', '.join(e.name for e in self.plan.eips) or 'none'}")
            return eip.ip
        if dest.startswith("svc/"):
            svc = self.service(dest)
            if not svc.cluster_ip:
                raise KubevpcError(f"Service {svc.key} has no ClusterIP ({'headless' if svc.headless else svc.type})")
            return svc.cluster_ip
        return self.address(dest)

    # ------------------------------------------------------------------- changing it as it runs
    def set_ready(self, pod: str, ready: bool) -> dict:
        """Mark a pod ready or not ready: Service endpoints, groups, DNS and SLB backends follow."""
        key = self._pod_key(pod)
        return self._update(self.loaded.manifests, {**self.ready, key: ready})

    def label(self, target: str, labels: dict[str, str | None]) -> dict:
        """Set (a value) or remove (None) labels of a pod (`pod/<ns>/<name>`) or a namespace
        (`namespace/<name>`), as `kubectl label` does. Service endpoints and NetworkPolicy follow."""
        from .k8s import check_labels
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
        changes = {**self.labels.get(key, {}), **labels}
        return self._update(self.loaded.manifests, self.ready, {**self.labels, key: changes})

    def apply(self, *objects: dict, origin: str = "<api>") -> dict:
        """Create or replace objects by kind, namespace and name, as `kubectl apply` would:
        Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods and Deployments. A Service
        keeps its ClusterIP and NodePorts when the new object does not set them. New pods (a new
        Pod, a new Deployment, more replicas) are started and join Services once they listen;
        pods that go (fewer replicas) are removed after the flows stop sending to them. A running
        pod keeps its node, address and ports: a change to those is refused.
        `origin` names where the objects came from in error messages (the CLI passes file names)."""
        manifests = list(self.loaded.manifests)
        for entry in self._parsed(objects, origin):
            cls, meta = type(entry.obj), entry.obj.metadata
            at = _find_manifest(manifests, cls, meta.namespace, meta.name)
            if at is None:
                manifests.append(entry)
            else:
                manifests[at] = entry
        return self._update(manifests, self.ready)

    def scale(self, deployment: str, replicas: int) -> dict:
        """Set a Deployment's replicas (`deploy/<ns>/<name>`), as `kubectl scale` does. Pods are
        named `<deployment>-<index>`: scaling up adds the next indexes, scaling down removes the
        highest ones."""
        from .k8s import Deployment
        kind, _, rest = deployment.partition("/")
        ns, _, name = rest.rpartition("/")
        if kind not in ("deploy", "deployment", "deployments") or not name:
            raise KubevpcError(f"cannot scale {deployment!r}; expected deploy/<namespace>/<name> or deploy/<name>")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise KubevpcError(f"replicas {replicas!r}: expected a whole number, 0 or more")
        at = _find_manifest(self.loaded.manifests, Deployment, ns or "default", name)
        if at is None:
            raise KubevpcError(f"no Deployment {ns or 'default'}/{name} in this scenario")
        m = self.loaded.manifests[at]
        obj = m.obj.model_copy(update={"spec": m.obj.spec.model_copy(update={"replicas": replicas})})
        manifests = list(self.loaded.manifests)
        manifests[at] = dataclasses.replace(m, obj=obj)
        return self._update(manifests, self.ready)

    def set_network_policies(self, *objects: dict, origin: str = "<api>") -> dict:
        """Make these the scenario's NetworkPolicies, all others removed, in one change."""
        from .k8s import NetworkPolicy, kind_of
        for obj in objects:
            if kind_of(obj) != ("networking.k8s.io/v1", "NetworkPolicy"):
                raise KubevpcError(f"expected NetworkPolicies, not {'/'.join(kind_of(obj))}")
        kept = [m for m in self.loaded.manifests if not isinstance(m.obj, NetworkPolicy)]
        return self._update(kept + self._parsed(objects, origin), self.ready)

    @staticmethod
    def _parsed(objects, origin: str = "<api>") -> list:
        """Objects that may change while running, validated as the API server would."""
        from pydantic import ValidationError

        from .k8s import Deployment, Ingress, Namespace, NetworkPolicy, Pod, Secret, Service, kind_of
        from .load import Manifest, Source, all_kinds, pydantic_problems
        out = []
        for obj in objects:
            cls = all_kinds().get(kind_of(obj))
            if cls not in (Service, NetworkPolicy, Namespace, Ingress, Secret, Pod, Deployment):
                raise KubevpcError(f"only Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods and "
                                   f"Deployments can be applied while the scenario runs, not {'/'.join(kind_of(obj))}")
            try:
                parsed = cls.model_validate(obj)
            except ValidationError as exc:
                meta = obj.get("metadata")
                where = f"{kind_of(obj)[1]} {meta.get('name', '?') if isinstance(meta, dict) else '?'}"
                raise KubevpcError(f"{where} is invalid: " + "; ".join(
                    f"{p.path}: {p.expected}" for p in pydantic_problems(Source(origin, obj, {}), exc))) from None
            meta = parsed.metadata
            # problems the planner finds in it name the origin and the object's own paths
            out.append(Manifest(obj=parsed, file=origin, path=f"{origin}/{cls.__name__}/{meta.namespace}/{meta.name}",
                                source=Source(origin, obj, {}), prefix=()))
        return out

    def delete(self, ref: str) -> dict:
        """Delete a Service (`svc/<ns>/<name>`), a NetworkPolicy (`netpol/<ns>/<name>`), an Ingress
        (`ingress/<ns>/<name>`), a Pod (`pod/<ns>/<name>`) or a Deployment with its pods
        (`deploy/<ns>/<name>`). A pod of a Deployment is not deleted alone: scale the Deployment."""
        from .k8s import Deployment, Ingress, NetworkPolicy, Pod, Service
        kinds = {"svc": Service, "service": Service, "netpol": NetworkPolicy, "networkpolicy": NetworkPolicy,
                 "ing": Ingress, "ingress": Ingress, "pod": Pod, "po": Pod, "deploy": Deployment,
                 "deployment": Deployment}
        kind, _, rest = ref.partition("/")
        ns, _, name = rest.rpartition("/")
        if kind.lower() not in kinds or not name:
            raise KubevpcError(f"cannot delete {ref!r}; expected svc/, netpol/, ingress/, pod/ or deploy/ "
                               "followed by <namespace>/<name>")
        cls = kinds[kind.lower()]
        at = _find_manifest(self.loaded.manifests, cls, ns or "default", name)
        if at is None and cls is Pod and f"pod/{ns or 'default'}/{name}" in {h.key for h in self.plan.pods}:
            owner = next((m.obj.metadata.name for m in self.loaded.manifests if isinstance(m.obj, Deployment)
                          and m.obj.metadata.namespace == (ns or "default")
                          and name.rpartition("-")[0] == m.obj.metadata.name), None)
            if owner:
                raise KubevpcError(f"pod {ns or 'default'}/{name} belongs to Deployment {owner}, which would "
                                   f"replace it; scale the Deployment (kubevpc scale deploy/{ns or 'default'}/{owner} "
                                   "--replicas N) or delete it")
            raise KubevpcError(f"pod {ns or 'default'}/{name} is the cluster's own (the DNS); it cannot be deleted")
        if at is None:
            raise KubevpcError(f"no {cls.__name__} {ns or 'default'}/{name} in this scenario")
        return self._update(self.loaded.manifests[:at] + self.loaded.manifests[at + 1:], self.ready)

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
                deadline: float = 10) -> dict:
        """Plan again (pods that stay keep their node, address and port), bring up the pods the
        change adds, hand the new plan to the controller, the DNS, the node health servers and the
        SLB checkers (they watch their files), then take down the pods it removes. Returns how
        long the flows took to follow."""
        from topologies.build import wait_for

        from .daemons.ingress import ingress_status, write_ingress_state
        from .daemons.nodehealth import write_node_health
        from .daemons.slb import write_slb_config
        from .k8s import Service
        if self.net is None:
            raise KubevpcError("the lab is not up")
        t0 = time.monotonic()
        labels = self.labels if labels is None else labels
        # every Service keeps its ClusterIP and NodePorts, whatever comes or goes before it
        manifests = [dataclasses.replace(m, obj=_keep_allocations(m.obj, self.plan)) if isinstance(m.obj, Service)
                     else m for m in manifests]
        loaded = dataclasses.replace(self.loaded, manifests=tuple(manifests))
        plan = make_plan(loaded, self.run, ready, labels, previous=self.plan)
        added, removed = _pods_changed(self.plan, plan)
        ready = {k: v for k, v in ready.items() if k not in {h.key for h in removed}}
        labels = {k: v for k, v in labels.items() if k not in {h.key for h in removed}}
        version = self.status().get("plan_version", 0)
        pods: dict[str, float] = {}
        if added:        # the pods listen before any Service sends to them; flows are timed from then
            self.say(f"starting {len(added)} pod(s): {', '.join(h.key for h in added)}")
            self.builder.add_pods(plan, added)
            pods["pods_started_s"] = time.monotonic() - t0
            t0 = time.monotonic()
        state = self.net.state_dir
        atomic_write(self.net.rundir.plan, plan.model_dump_json(indent=1))
        self.loaded, self.plan, self.ready, self.labels = loaded, plan, dict(ready), dict(labels)
        self.net.plan = self.builder.plan = plan
        if plan.dns is not None:
            self.builder.write_dns_zone()
        for node in plan.nodes:
            write_node_health(state, plan, node.name)
        for slb in plan.slbs:
            write_slb_config(state, slb)

        def programmed() -> bool:
            st = self.status()
            return st.get("plan_version", 0) > version and all(
                b.get("programmed") and b.get("plan_version", 0) == st["plan_version"] for b in st["bridges"].values())
        try:
            wait_for("the controller to program the change", programmed, deadline, interval=0.01)
        except DeadlineError:
            raise KubevpcError(f"the change was not programmed within {deadline:g} s: "
                               f"{self.why_not_programmed(version)}") from None
        took = time.monotonic() - t0
        if removed:         # nothing is sent to them any more
            self.say(f"removing {len(removed)} pod(s): {', '.join(h.key for h in removed)}")
            t1 = time.monotonic()
            self.builder.remove_pods(removed)
            pods["pods_removed_s"] = time.monotonic() - t1
        # the ingress controllers render, check and reload NGINX; a bad Ingress is reported by
        # them and the last good configuration keeps serving
        ingress = {h.key: write_ingress_state(state, plan, h) for h in plan.pods if h.app == "ingress"}

        def reloaded() -> bool:
            return all((ingress_status(state, plan.host(k)).get("seen") or 0) >= g for k, g in ingress.items())
        if ingress:
            wait_for("the ingress controllers to take the change", reloaded, deadline, interval=0.02)
            for key in ingress:
                st = ingress_status(state, plan.host(key))
                if not st.get("ok", True):
                    self.say(f"{key}: NGINX kept its last good configuration: {st.get('error')}")
        # the datapath's flow cache follows once the revalidators have been through it: a whole
        # cycle that started after the change (the first wait may end a cycle already under way)
        for _ in range(2):
            subprocess.run(["ovs-appctl", f"--timeout={int(deadline)}", "revalidator/wait"], check=True,
                           capture_output=True, stdin=subprocess.DEVNULL)
        cached = time.monotonic() - t0
        self.say(f"change programmed in {took * 1000:.0f} ms, in the datapath's cache in {cached * 1000:.0f} ms")
        note = {}
        # a controller that died since the last change was told (during this one, or just before it,
        # when the supervisor may have restarted it already): the change waited for the new one
        deaths = len(self.net.supervisor.deaths) if self.net.supervisor else 0
        if deaths > self._deaths_told:
            note["controller"] = self.net.describe_controller()
            self.say(f"since the last change, {note['controller']}")
        self._deaths_told = deaths
        return {"flows_updated_s": took, "datapath_s": cached, **pods, **note}
    def why_not_programmed(self, version: int | None = None) -> str:
        """Why the bridges are not all programmed at the controller's plan version (or at a plan
        newer than `version`): the controller, the bridges' connections as Open vSwitch reports
        them, the controller's own errors, and its deaths before."""
        from topologies.build import bridge_connections
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
                        "state": state, "how": "" if code is None or code == -1 else _ending(code)})
        return out

    def server_down(self, endpoint: str) -> str:
        """Why an endpoint's own server does not answer ("" when it runs): stopped or dead."""
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
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def start_server(self, endpoint: str, program: str = "server", timeout: float = 30) -> None:
        """Start it again (after stop_server), and wait until it listens."""
        from topologies.build import wait_for
        h = self.host(endpoint)
        if self._process(h.key, program).poll() is None:
            raise KubevpcError(f"the {program} of {h.key} is running")
        builder = self.builder
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ready_dir = self.net.rundir.ready_dir
        self.stopped.discard(h.key if program == "server" else f"{h.key}#kubevpc.{program}")
        if program == "server":
            builder.start_server(h, ready_dir, root)
            ready = lambda: os.path.exists(self.net.rundir.ready(h.netns))  # noqa: E731
        else:
            ready = builder.start_node_health(h.node, ready_dir, root)
        wait_for(f"the {program} of {h.key}", ready, timeout)

    def _process(self, key: str, program: str) -> subprocess.Popen:
        if self.net is None:
            raise KubevpcError("the lab is not up")
        name = key if program == "server" else f"{key}#kubevpc.{program}"
        if name not in self.net.servers:
            raise KubevpcError(f"nothing called {program} runs in {key}")
        return self.net.servers[name]

    def status(self) -> dict:
        return self.net.controller_status() if self.net else {}


def _ending(code: int) -> str:
    from topologies.supervisor import ending
    return ending(code)


def _pods_changed(old: Plan, new: Plan) -> tuple[list[HostPlan], list[HostPlan]]:
    """The pods a change adds and removes. Everything else must stay as it is: a change that would
    add or remove SLBs or node uplinks, or move, renumber or reshape a running pod, is refused."""
    def fixed(p: Plan):
        return ([h for h in p.hosts if h.kind != "pod"],
                {b.name: [x for x in b.ports if not (x.kind == "veth" and x.peer.startswith("pod/"))] for b in p.bridges})
    if fixed(old) != fixed(new):
        was = {h.key for h in old.hosts if h.kind != "pod"}
        now = {h.key for h in new.hosts if h.kind != "pod"}
        what = ", ".join(sorted(now - was)) or ", ".join(f"-{k}" for k in sorted(was - now))
        raise KubevpcError("this change adds or removes SLBs or node uplinks" + (f" ({what})" if what else "") +
                           ", which a running scenario cannot do; restart the scenario with the change instead")
    before = {h.key: h for h in old.pods}
    after = {h.key: h for h in new.pods}
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        for field, what in (("node", "node"), ("servers", "ports"), ("app", "program")):
            if getattr(a, field) != getattr(b, field):
                raise KubevpcError(f"{key} would change its {what} ({getattr(a, field) or '-'} -> "
                                   f"{getattr(b, field) or '-'}): a running pod cannot; delete it and create it "
                                   "again (for a Deployment, scale it to fewer replicas and back)")
    return ([h for k, h in after.items() if k not in before], [h for k, h in before.items() if k not in after])


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _find_manifest(manifests, cls, namespace: str, name: str) -> int | None:
    return next((i for i, m in enumerate(manifests) if isinstance(m.obj, cls)
                 and (m.obj.metadata.namespace, m.obj.metadata.name) == (namespace, name)), None)


def _keep_allocations(svc, plan: Plan):
    """The API server keeps a Service's ClusterIP and NodePorts across updates: so do we."""
    from .k8s import Service
    try:
        old = plan.service(f"{svc.metadata.namespace}/{svc.metadata.name}")
    except KeyError:
        return svc
    spec = svc.spec.model_dump(exclude_none=True)
    if svc.spec.clusterIP is None and old.cluster_ip:
        spec["clusterIP"] = old.cluster_ip
    kept = {(p.port, p.protocol): p.node_port for p in old.ports if p.node_port}
    if svc.spec.healthCheckNodePort is None and old.health_check_node_port and \
            svc.spec.type == "LoadBalancer" and svc.spec.externalTrafficPolicy == "Local":
        spec["healthCheckNodePort"] = old.health_check_node_port
    if svc.spec.type in ("NodePort", "LoadBalancer"):
        for p in spec.get("ports", []):
            if "nodePort" not in p and (p["port"], p.get("protocol", "TCP")) in kept:
                p["nodePort"] = kept[(p["port"], p.get("protocol", "TCP"))]
    return Service.model_validate({"apiVersion": "v1", "kind": "Service",
                                   "metadata": svc.metadata.model_dump(), "spec": spec})
