"""Changing a running scenario from other processes, as a user would.

`kubevpc run tests/e2e/data/services.yaml --keep` runs in one process (vxlan mode: web-0 on
node-1, web-1 on node-2, client-1 on node-1); the `kubevpc ready|apply|delete|stop-server|
start-server|status` subcommands run in others, and what they change is checked with real probes
inside the pods' namespaces (`ip netns exec <run>-pod-... python -m kubevpc.probe`), never through
the Lab, which lives in the run's process. Every allowed path has a refused twin. The run ends
with SIGTERM and must leave nothing behind; with --cli the Mininet CLI and the control channel
work side by side; a run killed with -9 leaves a socket that `kubevpc clean` removes.
"""
from __future__ import annotations

import collections
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

from kubevpc.control import ControlClient, socket_path
from kubevpc.ledger import run_dir
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan, resolve_endpoint

from .conftest import assert_root_unchanged, root_state
from .test_cleanup import EMPTY, leftovers

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIO = os.path.join(TOP, "tests", "e2e", "data", "services.yaml")
KUBEVPC = [sys.executable, "-m", "kubevpc.cli"]
UP_DEADLINE = 120          # bring-up of services.yaml takes about 12 s on an idle machine


def kubevpc(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run(KUBEVPC + list(args), capture_output=True, text=True, cwd=TOP, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class Run:
    """A `kubevpc run` in a process of its own, with its output in a file."""

    def __init__(self, tmp, *flags: str, stdin=None, scenario: str = SCENARIO):
        self.name = "rc" + secrets.token_hex(2)
        self.plan = make_plan(load(scenario), self.name)
        self.log = tmp / f"{self.name}.log"
        with open(self.log, "w", encoding="utf-8") as fh:
            self.proc = subprocess.Popen(KUBEVPC + ["run", scenario, "--name", self.name, "--no-checks", *flags],
                                         stdout=fh, stderr=subprocess.STDOUT, stdin=stdin, text=True, cwd=TOP)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_serving(self) -> None:
        """Until the control channel answers (the build and the bring-up are done)."""
        deadline = time.monotonic() + UP_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the run exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if os.path.exists(socket_path(self.name)):
                try:
                    ControlClient(self.name, timeout=10).status()
                    return
                except Exception:
                    pass
            time.sleep(0.2)
        self.end(signal.SIGTERM)
        pytest.fail(f"the run did not serve within {UP_DEADLINE} s:\n{self.output()[-3000:]}")

    def end(self, sig: int, deadline: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"the run did not end within {deadline} s of signal {sig}")

    def cleanup(self) -> None:
        """Safety net after a failed test: end the run, then clean what it left."""
        if self.proc.poll() is None:
            self.end(signal.SIGTERM)
        if os.path.exists(run_dir(self.name)):
            kubevpc("clean", self.name)

    def client(self) -> ControlClient:
        return ControlClient(self.name, timeout=60)

    def describe(self) -> dict:
        return self.client().describe()

    def probe(self, source: str, dest: str, port: int, proto: str = "tcp", count: int = 1,
              timeout: float = 2.0) -> list[dict]:
        """Probes from inside the source's namespace, to an address or a Service (svc/<name>)."""
        netns = resolve_endpoint(self.plan, source).netns
        ip = self.cluster_ip(dest.removeprefix("svc/")) if dest.startswith("svc/") else dest
        res = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "kubevpc.probe", "--json",
                              "--timeout", str(timeout), *(f"{i}={proto}:{ip}:{port}" for i in range(count))],
                             capture_output=True, text=True, cwd=TOP, timeout=timeout * 4 + 30,
                             stdin=subprocess.DEVNULL)
        assert res.returncode in (0, 1), res.stderr
        return json.loads(res.stdout)

    def cluster_ip(self, name: str) -> str:
        """The ClusterIP the run has now (it is asked, not planned here)."""
        return next(s["cluster_ip"] for s in self.describe()["services"] if s["key"] == f"default/{name}")


def names(results: list[dict]) -> collections.Counter:
    return collections.Counter((r["answer"] or {}).get("name", r["outcome"]) for r in results)


def outcomes(results: list[dict]) -> set[str]:
    return {r["outcome"] for r in results}


def flows_ms(stdout: str) -> float:
    m = re.search(r"flows programmed in (\d+) ms", stdout)
    assert m, stdout
    return float(m.group(1))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    before = root_state()
    run = Run(tmp_path_factory.mktemp("runtime-cli"), "--keep")
    try:
        run.wait_serving()
        yield run
    finally:
        run.cleanup()
    assert_root_unchanged(before)


# ------------------------------------------------------------------------------------ status
def settle_slbs(run: Run) -> None:
    """Until every SLB backend has its lasting health, and the controller's plan has it in rotation
    or not accordingly: each change of health is a new plan."""
    for node in ("node-1", "node-2", "node-3"):
        wait_slb(run, "default/web-lb", node, "healthy", 30)
    for node, want in (("node-1", "healthy"), ("node-2", "healthy"), ("node-3", "unhealthy")):
        wait_slb(run, "default/web-lb-local", node, want, 30)
    end = time.monotonic() + 10
    while True:
        slbs = run.describe()["slbs"]
        backends = [b for slb in slbs for li in slb["listeners"] for b in li["backends"]]
        if all(b["in_rotation"] == (b["status"] == "healthy") for b in backends):
            return
        assert time.monotonic() < end, f"the controller's rotation differs from the checkers': {backends}"
        time.sleep(0.1)


def all_programmed(st: dict) -> bool:
    return all(b["programmed"] and b["plan_version"] == st["plan_version"] for b in st["bridges"].values())


def test_status_shows_the_controller_and_every_service_with_its_endpoints(live):
    settle_slbs(live)
    end = time.monotonic() + 10      # the last change of health is being programmed
    while True:
        res = kubevpc("status", live.name, "--json")
        assert res.returncode == 0, res.stderr
        d = json.loads(res.stdout)
        st = d["controller"]
        if all_programmed(st):
            break
        assert time.monotonic() < end, f"bridges not programmed at plan v{st['plan_version']}: {st['bridges']}"
        time.sleep(0.1)
    assert (d["run"], d["mode"]) == (live.name, "vxlan")
    assert st["errors"] == [] and st["bridges"]
    # the checkers rewrite their state after every probe (1 s apart); the same health is no new plan
    state = os.path.join(run_dir(live.name), "slb-default_web-lb.state.json")
    with open(state, encoding="utf-8") as fh:
        written = json.load(fh)["time"]
    time.sleep(2.5)
    with open(state, encoding="utf-8") as fh:
        assert json.load(fh)["time"] > written, "the checker wrote its state again"
    again = json.loads(kubevpc("status", live.name, "--json").stdout)["controller"]
    assert again["plan_version"] == st["plan_version"] and all_programmed(again)
    web = next(s for s in d["services"] if s["key"] == "default/web")
    assert web["cluster_ip"] == live.plan.service("web").cluster_ip
    assert [(e["name"], e["ready"]) for e in web["endpoints"]] == [("web-0", True), ("web-1", True)]
    table = kubevpc("status", live.name)
    assert table.returncode == 0
    assert f"run {live.name}: {SCENARIO}, mode vxlan" in table.stdout
    assert f"web-0 {live.plan.host('pod/default/web-0').ip}" in table.stdout
    # twin: a run that does not exist
    res = kubevpc("status", "nosuch")
    assert res.returncode == 3 and "no run named nosuch on this machine" in res.stderr


# ------------------------------------------------------------------------------ readiness
def test_a_pod_marked_not_ready_leaves_the_service_and_comes_back(live):
    assert set(names(live.probe("pod/client-1", "svc/web", 80, count=30))) == {"web-0", "web-1"}
    res = kubevpc("ready", live.name, "pod/default/web-1", "false")
    assert res.returncode == 0, res.stderr
    assert f"pod/default/web-1 marked not ready (run {live.name})" in res.stdout
    assert "default/web: endpoints web-0, web-1 -> web-0, web-1 (not ready)" in res.stdout
    assert flows_ms(res.stdout) < 1000, "kube-proxy's minimum sync period is 1 s"
    try:
        assert names(live.probe("pod/client-1", "svc/web", 80, count=20)) == {"web-0": 20}
        assert names(live.probe("pod/client-1", "svc/web", 53, "udp", count=10)) == {"web-0": 10}
        # the pod still runs and answers on its own address: only the Service left it
        direct = live.probe("pod/client-1", live.plan.host("pod/default/web-1").ip, 8080)
        assert names(direct) == {"web-1": 1}
    finally:
        res = kubevpc("ready", live.name, "pod/web-1", "true", "--json")
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert answer["result"]["flows_updated_s"] < 1.0
    assert "default/web: endpoints web-0, web-1 (not ready) -> web-0, web-1" in answer["changes"]
    # twin: ready again, both endpoints serve
    assert set(names(live.probe("pod/client-1", "svc/web", 80, count=30))) == {"web-0", "web-1"}


# ---------------------------------------------------------------------------------- apply
EMPTY_SVC = """apiVersion: v1
kind: Service
metadata: {{name: empty}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: tcp, port: 80, targetPort: 8080}}, {{name: udp, port: 53, protocol: UDP}}]
"""
STICKY_SVC = """apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_applying_changed_services(live, tmp_path):
    ip = live.cluster_ip("empty")
    first = live.probe("pod/client-1", "svc/empty", 80)[0]
    assert first["outcome"] == "refused" and first["elapsed_ms"] < 500, "no endpoint: refused at once"
    changed = tmp_path / "changed.yaml"
    changed.write_text(EMPTY_SVC.format(app="web") + "---\n" + STICKY_SVC)
    res = kubevpc("apply", live.name, "-f", str(changed))
    assert res.returncode == 0, res.stderr
    assert f"applied 2 object(s) from {changed} (run {live.name})" in res.stdout
    assert "default/empty: selector app=nothing -> app=web" in res.stdout
    assert "default/sticky: sessionAffinity ClientIP (3 s) -> None" in res.stdout
    assert flows_ms(res.stdout) < 1000
    try:
        assert live.cluster_ip("empty") == ip, "the ClusterIP is kept across an update"
        assert set(names(live.probe("pod/client-1", "svc/empty", 80, count=20))) == {"web-0", "web-1"}
    finally:
        back = tmp_path / "back.yaml"
        back.write_text(EMPTY_SVC.format(app="nothing"))
        res = kubevpc("apply", live.name, "-f", str(back))
    assert res.returncode == 0, res.stderr
    # twin: no endpoint again, refused again
    assert outcomes(live.probe("pod/client-1", "svc/empty", 80, count=3)) == {"refused"}


def test_scaling_and_pods_through_the_cli(live, tmp_path):
    res = kubevpc("scale", live.name, "deploy/default/web", "--replicas", "3")
    assert res.returncode == 0, res.stderr
    m = re.search(r"pod/default/web-2: created on node-3, (\S+)", res.stdout)
    assert m and f"deploy/default/web scaled to 3 (run {live.name})" in res.stdout, res.stdout
    assert "default/web: endpoints web-0, web-1 -> web-0, web-1, web-2" in res.stdout
    web2 = m.group(1)
    try:
        assert names(live.probe("pod/client-1", web2, 8080)) == {"web-2": 1}
        assert set(names(live.probe("pod/client-1", "svc/web", 80, count=40))) == {"web-0", "web-1", "web-2"}
        pod = tmp_path / "pod.yaml"
        pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: solo, labels: {app: solo}}\n"
                       "spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 9000}]}]}\n")
        res = kubevpc("apply", live.name, "-f", str(pod))
        assert res.returncode == 0 and "pod/default/solo: created on node-2" in res.stdout, res.stdout + res.stderr
        solo = re.search(r"pod/default/solo: created on node-2, (\S+)", res.stdout).group(1)
        assert names(live.probe("pod/client-3", solo, 9000)) == {"solo": 1}
        res = kubevpc("delete", live.name, "pod/default/solo", "--grace-period", "0")
        assert res.returncode == 0 and "pod/default/solo: deleted" in res.stdout, res.stdout + res.stderr
        assert outcomes(live.probe("pod/client-3", solo, 9000, timeout=1)) != {"answered"}
        # a pod of a Deployment is replaced, under a new name; with its grace period the old one
        # stays, terminating, and the command says until when
        res = kubevpc("delete", live.name, "pod/default/web-2", "--grace-period", "3")
        assert res.returncode == 0, res.stderr
        assert re.search(r"pod/default/web-3: created on node-\d, \S+", res.stdout), res.stdout
        assert re.search(r"pod/default/web-2 terminating: removed in [23] s", res.stdout), res.stdout
        assert set(names(live.probe("pod/client-1", "svc/web", 80, count=40))) == {"web-0", "web-1", "web-3"}
        assert names(live.probe("pod/client-1", web2, 8080)) == {"web-2": 1}, "terminating, it still serves"
        res = kubevpc("delete", live.name, "pod/default/web-2", "--grace-period", "0")
        assert res.returncode == 0 and "pod/default/web-2: deleted" in res.stdout, res.stdout + res.stderr
        res = kubevpc("delete", live.name, "pod/default/web-2", "--grace-period", "-1")
        assert res.returncode == 2 and "--grace-period -1: expected 0 or more seconds" in res.stderr, res.stderr
    finally:
        res = kubevpc("scale", live.name, "deploy/default/web", "--replicas", "2", "--grace-period", "0")
    assert res.returncode == 0 and "pod/default/web-3: deleted" in res.stdout, res.stdout + res.stderr
    # twin: web-2's address answers no more, the Service has its two pods again
    assert outcomes(live.probe("pod/client-1", web2, 8080, timeout=1)) != {"answered"}
    assert set(names(live.probe("pod/client-1", "svc/web", 80, count=20))) == {"web-0", "web-1"}


# ----------------------------------------------------------------------------- bad requests
def test_bad_requests_get_clear_errors_and_change_nothing(live, tmp_path):
    before = live.describe()
    res = kubevpc("ready", live.name, "pod/default/web-0", "maybe")
    assert res.returncode == 2 and "invalid choice: 'maybe'" in res.stderr
    res = kubevpc("ready", live.name, "pod/default/nosuch", "false")
    assert res.returncode == 3 and "error: set_ready: no endpoint 'pod/default/nosuch'" in res.stderr
    res = kubevpc("ready", live.name, "ecs/ecs-client", "false")
    assert res.returncode == 3 and "error: set_ready: ecs/ecs-client is not a pod" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  selector: {app: web}\n"
                   "  ports:\n    - {port: 70000}\n")
    res = kubevpc("apply", live.name, "-f", str(bad))
    assert res.returncode == 2
    assert f"  {bad}:7: spec.ports[0].port: 70000: Input should be less than or equal to 65535" in res.stderr
    taken = tmp_path / "taken.yaml"
    taken.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: thief}\nspec:\n  type: NodePort\n"
                     "  selector: {app: web}\n  ports: [{port: 80, nodePort: 30080}]\n")
    res = kubevpc("apply", live.name, "-f", str(taken))
    assert res.returncode == 2 and "apply: the change was rejected (1 problem(s)); nothing changed" in res.stderr
    assert "30080: provided port is already allocated (to Service default/web-np)" in res.stderr
    moved = tmp_path / "moved.yaml"
    moved.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: client-1, labels: {app: client}}\n"
                     "spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 7001}]}]}\n")
    res = kubevpc("apply", live.name, "-f", str(moved))
    assert res.returncode == 3 and "pod/default/client-1 would change its ports" in res.stderr, res.stderr
    res = kubevpc("delete", live.name, "svc/default/nosuch")
    assert res.returncode == 3 and "no Service" in res.stderr and "nosuch" in res.stderr
    res = kubevpc("delete", live.name, "rs/web")
    assert res.returncode == 2 and "cannot delete 'rs/web'" in res.stderr
    res = kubevpc("start-server", live.name, "pod/default/web-0")
    assert res.returncode == 3 and "error: start_server: the server of pod/default/web-0 is running" in res.stderr
    assert "Traceback" not in res.stderr
    # twin: the run is unchanged and still serves
    after = live.describe()
    assert after["services"] == before["services"]
    assert set(names(live.probe("pod/client-1", "svc/web", 80, count=20))) == {"web-0", "web-1"}


# -------------------------------------------------------------------------- servers and SLB
def test_stopping_and_starting_a_pods_server(live):
    web0, web1 = live.plan.host("pod/default/web-0").ip, live.plan.host("pod/default/web-1").ip
    res = kubevpc("stop-server", live.name, "pod/default/web-0")
    assert res.returncode == 0 and "the server of pod/default/web-0 stopped" in res.stdout, res.stderr
    try:
        assert outcomes(live.probe("pod/client-3", web0, 8080)) == {"refused"}
        assert names(live.probe("pod/client-3", web1, 8080)) == {"web-1": 1}        # twin: the other pod serves
    finally:
        res = kubevpc("start-server", live.name, "pod/default/web-0")
    assert res.returncode == 0 and "the server of pod/default/web-0 started and listening" in res.stdout
    assert names(live.probe("pod/client-3", web0, 8080)) == {"web-0": 1}


def slb_status(run: Run, slb: str, backend: str) -> str:
    d = run.describe()
    lb = next(s for s in d["slbs"] if s["service"] == slb)
    return next(b["status"] for b in lb["listeners"][0]["backends"] if b["id"] == backend)


def wait_slb(run: Run, slb: str, backend: str, want: str, deadline: float) -> float:
    t0 = time.monotonic()
    while (got := slb_status(run, slb, backend)) != want:
        assert time.monotonic() - t0 < deadline, f"{slb} {backend}: {got}, wanted {want} within {deadline} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_a_nodes_health_check_server_stopped_takes_it_out_of_the_slb(live):
    """web-lb-local checks node-1 at its healthCheckNodePort every 1 s, unhealthy after 2 failures."""
    wait_slb(live, "default/web-lb-local", "node-1", "healthy", 30)
    res = kubevpc("stop-server", live.name, "node/node-1", "--program", "nodehealth")
    assert res.returncode == 0, res.stderr
    try:
        took = wait_slb(live, "default/web-lb-local", "node-1", "unhealthy", 10)
        assert took < 2 * 1 + 1 + 1.5, f"failover took {took:.1f} s"
        assert slb_status(live, "default/web-lb-local", "node-2") == "healthy", "twin: node-2 stays in"
    finally:
        res = kubevpc("start-server", live.name, "node/node-1", "--program", "nodehealth")
    assert res.returncode == 0, res.stderr
    wait_slb(live, "default/web-lb-local", "node-1", "healthy", 10)


# --------------------------------------------------------------------------------- delete
def test_deleting_a_service_stops_its_clusterip(live, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec:\n  selector: {app: web}\n"
                     "  ports: [{name: http, port: 80, targetPort: http}]\n")
    res = kubevpc("apply", live.name, "-f", str(extra))
    assert res.returncode == 0, res.stderr
    ip = live.cluster_ip("extra")
    assert f"default/extra: created, ClusterIP {ip}, ports 80/TCP->http" in res.stdout
    assert set(names(live.probe("pod/client-1", ip, 80, count=10))) <= {"web-0", "web-1"}
    res = kubevpc("delete", live.name, "svc/default/extra")
    assert res.returncode == 0 and "default/extra: deleted" in res.stdout, res.stderr
    assert flows_ms(res.stdout) < 1000
    assert "default/extra" not in {s["key"] for s in live.describe()["services"]}
    # no Service holds the address any more: nothing answers (dropped, as with kube-proxy in iptables
    # mode, where the packet follows the node's routes and the VPC has no route to the service CIDR)
    assert outcomes(live.probe("pod/client-1", ip, 80, timeout=1, count=3)) == {"timeout"}
    assert outcomes(live.probe("node/node-1", ip, 80, timeout=1)) == {"timeout"}
    # twin: the other Services still answer
    assert outcomes(live.probe("pod/client-1", "svc/web", 80, count=5)) == {"answered"}


def test_deleting_a_service_keeps_the_others_addresses(live):
    kept = {s["key"]: (s["cluster_ip"], [p["node_port"] for p in s["ports"]]) for s in live.describe()["services"]
            if s["key"] != "default/web-itp"}
    ip = live.cluster_ip("web-itp")
    res = kubevpc("delete", live.name, "svc/web-itp")
    assert res.returncode == 0, res.stderr
    after = {s["key"]: (s["cluster_ip"], [p["node_port"] for p in s["ports"]]) for s in live.describe()["services"]}
    assert after == kept
    assert outcomes(live.probe("pod/client-1", ip, 80, timeout=1)) == {"timeout"}


# ------------------------------------------------------------------------------------ ending
def test_sigterm_ends_the_run_and_removes_everything(live):
    assert leftovers(live.name)["netns"], "the run is up"
    assert live.end(signal.SIGTERM) == 130, live.output()[-3000:]
    assert leftovers(live.name) == EMPTY
    assert not os.path.exists(socket_path(live.name)) and not os.path.exists(run_dir(live.name))
    assert "tearing down" in live.output()
    res = kubevpc("status", live.name)
    assert res.returncode == 3 and f"no run named {live.name} on this machine" in res.stderr


def test_the_mininet_cli_and_the_control_channel_together(tmp_path):
    before = root_state()
    run = Run(tmp_path, "--cli", stdin=subprocess.PIPE)
    try:
        run.wait_serving()
        res = kubevpc("ready", run.name, "pod/web-1", "false")
        assert res.returncode == 0, res.stderr
        assert names(run.probe("pod/client-1", "svc/web", 80, count=10)) == {"web-0": 10}
        run.proc.stdin.write("web-1 echo kvcli-$((6*7)) from $(hostname)\n")
        run.proc.stdin.flush()
        deadline = time.monotonic() + 30
        while "kvcli-42" not in run.output():
            assert time.monotonic() < deadline, run.output()[-3000:]
            time.sleep(0.2)
        # a pod added through the channel is known to the CLI at once, by its name
        res = kubevpc("scale", run.name, "deploy/default/web", "--replicas", "3")
        assert res.returncode == 0, res.stderr
        ip = re.search(r"pod/default/web-2: created on node-3, (\S+)", res.stdout).group(1)
        run.proc.stdin.write("web-2 ip -o -4 addr show dev eth0\n")
        run.proc.stdin.flush()
        deadline = time.monotonic() + 30
        while f"inet {ip}/" not in run.output():
            assert time.monotonic() < deadline, run.output()[-3000:]
            time.sleep(0.2)
        run.proc.stdin.write("exit\n")
        run.proc.stdin.flush()
        assert run.proc.wait(timeout=60) == 0, run.output()[-3000:]
        assert leftovers(run.name) == EMPTY and not os.path.exists(run_dir(run.name))
    finally:
        run.cleanup()
    assert_root_unchanged(before)


def test_a_run_killed_with_9_leaves_its_socket_to_clean(tmp_path):
    run = Run(tmp_path, "--keep")
    try:
        run.wait_serving()
        assert os.path.exists(socket_path(run.name))
        run.end(signal.SIGKILL)
        res = kubevpc("status", run.name)
        assert res.returncode == 3 and f"run {run.name} is a leftover" in res.stderr
        res = kubevpc("clean", run.name, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert leftovers(run.name) == EMPTY
        assert not os.path.exists(socket_path(run.name)) and not os.path.exists(run_dir(run.name))
    finally:
        run.cleanup()


# ------------------------------------------------------------------------------ NetworkPolicy
NETPOL = os.path.join(TOP, "tests", "e2e", "data", "netpol.yaml")


def test_networkpolicy_and_labels_through_the_cli(tmp_path):
    """apply a NetworkPolicy, see the live matrix refuse, relabel a pod into it, delete it."""
    before = root_state()
    run = Run(tmp_path, "--keep", scenario=NETPOL)
    try:
        run.wait_serving()
        policy = tmp_path / "policy.yaml"
        policy.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                          "metadata: {name: a-from-b, namespace: x}\n"
                          "spec:\n  podSelector: {matchLabels: {pod: a}}\n"
                          "  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]\n")
        res = kubevpc("apply", run.name, "-f", str(policy))
        assert res.returncode == 0 and "flows programmed in" in res.stdout, res.stdout + res.stderr

        def cells(*args: str) -> dict:
            res = kubevpc("matrix", run.name, "--between", "pod/y/*", "--to", "pod/x/a", "--ports", "80/tcp",
                          "--json", *args)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]      # 0: no difference
            doc = json.loads(res.stdout)
            return {c["source"]: c["observed"] for c in doc["cells"]}

        assert cells() == {"pod/y/a": False, "pod/y/b": True, "pod/y/c": False}
        res = kubevpc("label", run.name, "pod/y/c", "pod=b")
        assert res.returncode == 0, res.stderr
        assert cells() == {"pod/y/a": False, "pod/y/b": True, "pod/y/c": True}
        res = kubevpc("label", "pod/y/c", "pod-", "--json")      # RUN omitted: the one live run
        assert res.returncode == 0 and json.loads(res.stdout)["run"] == run.name, res.stderr
        bad = kubevpc("label", run.name, "pod/y/c", "=x")
        assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr
        res = kubevpc("delete", run.name, "netpol/x/a-from-b")
        assert res.returncode == 0, res.stderr
        assert cells() == {"pod/y/a": True, "pod/y/b": True, "pod/y/c": True}
        gone = kubevpc("delete", run.name, "netpol/x/a-from-b")
        assert gone.returncode == 3 and "no NetworkPolicy x/a-from-b" in gone.stderr
        assert run.end(signal.SIGTERM) == 130
    finally:
        run.cleanup()
    assert_root_unchanged(before)
