"""The lab lifecycle as users run it (containerlab's deploy, exec, inspect, destroy), in one mode,
with scenarios/quickstart.yaml: `kubevpc up` returns with the network ready and leaves it
running under its supervisor; `kubevpc exec` runs commands in a pod's and a node's namespace
(streams, exit status, the pod's resolv.conf), reaching a Service and refused by its twin
without endpoints, as the evaluator says; `kubevpc inspect` lists the pods; `kubevpc down` leaves
nothing. `up` of an invalid scenario builds nothing, and `down` after the supervisor was killed
with -9 still removes everything."""
from __future__ import annotations

import os
import json
import signal
import subprocess
import sys
import time

import pytest

from kubevpc.cli.common import run_plan
from kubevpc.evaluator.explain import explain
from kubevpc.ledger import owner_of, run_dir, same_process

from .conftest import assert_root_unchanged, root_state
from .test_cleanup import EMPTY, leftovers

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIO = os.path.join(TOP, "scenarios", "quickstart.yaml")
RUN = "kvupd"
# a TCP client: an HTTP request, the whole answer printed; a refusal or a timeout exits 1
CONNECT = ("import socket, sys\n"
           "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
           "s.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
           "data = b''\n"
           "while chunk := s.recv(65536):\n"
           "    data += chunk\n"
           "print(data.decode(errors='replace'))\n")
SOURCE_ADDRESS = ("import socket, sys\n"       # the address this namespace sends from (no packet is sent)
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "s.connect((sys.argv[1], 9))\n"
                  "print(s.getsockname()[0])\n")


def kubevpc(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubevpc.cli", *args], capture_output=True, text=True, cwd=TOP,
                          timeout=timeout, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def in_ns(endpoint: str, *command: str, stdin: str | None = None, run: str = RUN) -> subprocess.CompletedProcess:
    return kubevpc("exec", run, endpoint, "--", *command, stdin=stdin, timeout=60)


def gone(owner: tuple[int, str], deadline: float = 10) -> bool:
    end = time.monotonic() + deadline
    while same_process(*owner):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module", params=["vxlan"])
def up(request):
    """`kubevpc up` of the quick start scenario; `kubevpc down` at the end if a test did not."""
    before = root_state()
    res = kubevpc("up", SCENARIO, "--name", RUN, "--mode", request.param, "--timeout", "240")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    yield res
    if os.path.isdir(run_dir(RUN)):
        kubevpc("down", RUN)
    assert leftovers(RUN) == EMPTY
    assert_root_unchanged(before)


def test_up_returns_with_the_network_ready(up):
    assert up.stdout.strip() == RUN, "the run's name alone on standard output"
    assert "creating" in up.stderr and "namespaces" in up.stderr, "the bring-up's progress relayed"
    assert f"run {RUN} is up" in up.stderr and f"kubevpc down {RUN}" in up.stderr
    owner = owner_of(RUN)
    assert owner and same_process(*owner), "the supervisor owns the run"
    assert f"{RUN}: running" in kubevpc("list").stdout
    status = json.loads(kubevpc("status", RUN, "--json").stdout)
    bridges = status["controller"]["bridges"]
    assert bridges and all(b["programmed"] for b in bridges.values()), bridges
    assert {s["state"] for s in status["servers"]} == {"running"}, status["servers"]


def test_exec_reaches_a_service_and_is_refused_by_its_twin(up):
    """Straight after `up` returned: the Service answers from a web pod, its twin without
    endpoints refuses at once; the evaluator says the same of both."""
    plan = run_plan(RUN)
    web, idle = plan.service("default/web"), plan.service("default/idle")
    res = in_ns("pod/client", sys.executable, "-c", CONNECT, web.cluster_ip, "80")
    assert res.returncode == 0, res.stderr
    assert '"name": "web-' in res.stdout and f'"client": "{plan.host("pod/default/client").ip}:' in res.stdout
    t0 = time.monotonic()
    res = in_ns("pod/client", sys.executable, "-c", CONNECT, idle.cluster_ip, "80")
    assert res.returncode != 0 and "ConnectionRefusedError" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 10, "refused, not timed out"
    assert explain(plan, "pod/default/client", "svc/default/web", 80).allowed
    assert not explain(plan, "pod/default/client", "svc/default/idle", 80).allowed


def test_exec_has_the_pods_dns_and_namespace(up):
    plan = run_plan(RUN)
    web = plan.service("default/web")
    res = in_ns("pod/client", sys.executable, "-c", "import socket, sys; print(socket.gethostbyname(sys.argv[1]))",
                "web")
    assert (res.returncode, res.stdout.strip()) == (0, web.cluster_ip), "the pod's resolv.conf: search paths"
    res = in_ns("pod/client", sys.executable, "-c", "import socket, sys; socket.gethostbyname(sys.argv[1])",
                "nosuch.default.svc.cluster.local.")
    assert res.returncode != 0 and "gaierror" in res.stderr, "twin: a name the cluster DNS does not have"
    for endpoint, host in (("pod/client", "pod/default/client"), ("node/node-2", "ecs/node-2")):
        res = in_ns(endpoint, sys.executable, "-c", SOURCE_ADDRESS, web.cluster_ip)
        assert (res.returncode, res.stdout.strip()) == (0, plan.host(host).ip), endpoint


def test_exec_passes_streams_and_the_exit_status(up):
    res = in_ns("pod/client", "sh", "-c", "cat; echo to-stderr >&2; exit 7", stdin="hello\n")
    assert (res.returncode, res.stdout, res.stderr) == (7, "hello\n", "to-stderr\n")
    res = in_ns("pod/nope", "true")
    assert res.returncode == 2 and "no endpoint 'pod/nope'" in res.stderr


def test_inspect_lists_the_pods(up):
    plan = run_plan(RUN)
    res = kubevpc("inspect", RUN, "--json")
    assert res.returncode == 0, res.stderr
    rows = {e["endpoint"]: e for e in json.loads(res.stdout)["endpoints"]}
    assert {h.key for h in plan.pods} <= set(rows)
    assert rows["pod/default/client"]["netns"] == plan.host("pod/default/client").netns
    res = kubevpc("inspect", RUN)
    assert res.returncode == 0 and all(h.netns in res.stdout for h in plan.pods), res.stdout
    assert "default/web" in res.stdout, "and the Services, as `kubevpc status` shows them"


def test_down_leaves_nothing(up):
    owner = owner_of(RUN)
    assert leftovers(RUN)["netns"], "the run is up"
    res = kubevpc("down", RUN)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{RUN}: removed" in res.stdout and "netns" in res.stdout
    assert gone(owner), "the supervisor has ended"
    assert leftovers(RUN) == EMPTY and not os.path.exists(run_dir(RUN))
    assert RUN not in kubevpc("list").stdout


def test_up_of_an_invalid_scenario_builds_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(SCENARIO, encoding="utf-8").read().replace("replicas: 2", "replicas: -1"))
    res = kubevpc("up", str(bad), "--name", "kvupx")
    assert res.returncode == 2 and "invalid scenario" in res.stderr and "replicas" in res.stderr, res.stderr
    assert not os.path.exists(run_dir("kvupx")) and leftovers("kvupx") == EMPTY


def test_down_after_the_supervisor_was_killed_removes_everything():
    before = root_state()
    res = kubevpc("up", SCENARIO, "--name", "kvupk", "--mode", "vxlan", "--timeout", "240")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    owner = owner_of("kvupk")
    os.kill(owner[0], signal.SIGKILL)
    assert gone(owner)
    left = leftovers("kvupk")
    assert left["netns"] and left["bridges"] and left["processes"], "kill -9 leaves the network behind"
    assert "kvupk: leftover" in kubevpc("list").stdout
    res = kubevpc("down", "kvupk")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kvupk: removed" in res.stdout and "(from its ledger)" in res.stdout
    assert leftovers("kvupk") == EMPTY and not os.path.exists(run_dir("kvupk"))
    assert_root_unchanged(before)
