"""Only the run can change the run, and what the run says is what the bridges and processes hold.

One lab (the default scenario, vpc-route mode: none of this depends on the mode) for the module:
- a fake switch of an unprivileged user, and one of root that is not ovs-vswitchd, get no flow,
  and a NetworkPolicy applied afterwards is enforced on the real bridges;
- a second bridge that claims a connected bridge's datapath id is refused and reported;
- the run's files are root's alone;
- kill -9 of the controller: status is honest at once, the controller is back within seconds,
  a TCP connection open across it keeps working, and a policy applied after it is enforced;
- a hung controller: a change fails naming why, not only "not done within 10 s";
- a dead pod server is listed by status and named in the reasons of check and matrix;
- an Ingress with a snippet annotation is refused while the scenario does not allow them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kubevpc.cli.observe import status_lines
from kubevpc.control import describe
from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.evaluator.checks import Check
from kubevpc.lab import Lab
from kubevpc.lab.checks import run_checks
from topologies.build import bridge_connections

from .conftest import SCENARIO, as_user

FAKESWITCH = os.path.join(os.path.dirname(__file__), "fakeswitch.py")
CLIENT, WEB0, WEB2 = "pod/shop/client", "pod/default/web-0", "pod/default/web-2"
DENY_CLIENT = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-client", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Ingress"]}}


@pytest.fixture(scope="module")
def lab():
    the_lab = Lab(SCENARIO, mode="vpc-route").up()
    yield the_lab
    the_lab.down()


def wait(what: str, test, deadline: float = 15.0, interval: float = 0.05):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if test():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {deadline} s")


def programmed(lab: Lab) -> bool:
    st = lab.status()
    return st.get("alive") and all(b.get("programmed") and b.get("plan_version") == st["plan_version"]
                                   for b in st["bridges"].values())


def policy_is_enforced(lab: Lab) -> None:
    """web-0 reaches the client on 9000; with DENY_CLIENT applied it does not; without, again."""
    assert lab.connect(WEB0, CLIENT, 9000).ok, "allowed before the policy"
    lab.apply(DENY_CLIENT)
    try:
        assert lab.connect(WEB0, CLIENT, 9000, timeout=1.0).outcome == "timeout"
    finally:
        lab.delete("netpol/shop/deny-client")
    assert lab.connect(WEB0, CLIENT, 9000).ok


def listeners(pid: int) -> list[str]:
    """Every socket the process listens on, as fakeswitch targets (unix:PATH, tcp:HOST:PORT)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    with open("/proc/net/unix", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            f = line.split(None, 7)
            if len(f) == 8 and f[6] in inodes and int(f[3], 16) & 0x10000:
                out.append("unix:" + f[7].strip())
    for table, family in (("tcp", 4), ("tcp6", 6)):
        with open(f"/proc/{pid}/net/{table}", encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:          # LISTEN
                    port = int(f[1].split(":")[1], 16)
                    out.append(f"tcp:127.0.0.1:{port}" if family == 4 else f"tcp:[::1]:{port}")
    return out


def fake_switch(targets: list[str], dpid: int, user: str | None = None, seconds: float = 3.0) -> list[dict]:
    with open(FAKESWITCH, encoding="utf-8") as fh:
        code = fh.read()
    cmd = ["/usr/bin/python3", "-", "--dpid", hex(dpid), "--seconds", str(seconds), *targets]
    if user:
        res = as_user(user, cmd, stdin=code)
    else:
        res = subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def controller_pid(lab: Lab) -> int:
    return lab.net.controller.pid


# --------------------------------------------------------------------- only the run changes the run
def test_an_unprivileged_users_fake_switch_gets_no_flow(lab, unprivileged_user):
    targets = listeners(controller_pid(lab))
    assert targets, "the controller listens somewhere"
    assert not [t for t in targets if t.startswith("tcp:")], f"the controller listens on TCP: {targets}"
    node = next(b for b in lab.plan.bridges if b.role == "node")
    for r in fake_switch(targets, node.dpid, user=unprivileged_user):
        assert r["flow_mods"] == 0 and r["group_mods"] == 0, r
        assert not r["connected"] and r["error"] == "Permission denied", r
    assert programmed(lab)
    # Open vSwitch writes a controller's is_connected every few seconds
    wait("Open vSwitch reports every bridge connected",
         lambda: all(bridge_connections([b.name for b in lab.plan.bridges]).values()), deadline=10)
    policy_is_enforced(lab)


def test_a_root_process_that_is_not_ovs_vswitchd_gets_no_flow_and_is_reported(lab):
    node = next(b for b in lab.plan.bridges if b.role == "node")
    [r] = fake_switch([lab.net.controller_target], node.dpid)
    assert r["connected"] and r["closed"] and r["flow_mods"] == 0 and r["group_mods"] == 0, r
    refused = lab.status()["refused"]
    assert refused and refused[-1]["bridge"] == node.name and "not ovs-vswitchd" in refused[-1]["why"], refused
    assert any(line.startswith("REFUSED at ") for line in status_lines(describe(lab)))
    assert programmed(lab)
    policy_is_enforced(lab)


def test_a_second_bridge_claiming_a_connected_bridges_dpid_is_refused(lab):
    node = next(b for b in lab.plan.bridges if b.role == "node")
    dup = "kvdupe0"
    before = len(lab.status()["refused"])
    subprocess.run(["ovs-vsctl", "--timeout=10", "--", "add-br", dup, "--", "set", "bridge", dup, "datapath_type=netdev",
                    "fail_mode=secure", "protocols=OpenFlow13", f"other-config:datapath-id={node.dpid:016x}",
                    "--", "set-controller", dup, lab.net.controller_target], check=True)
    try:
        wait("the second connection refused", lambda: len(lab.status()["refused"]) > before)
        r = lab.status()["refused"][-1]
        assert r["bridge"] == node.name and "is connected already" in r["why"], r
        flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", dup], capture_output=True, text=True,
                               check=True).stdout
        assert "cookie=" not in flows, flows
        time.sleep(6)                # Open vSwitch writes a controller's is_connected every few seconds
        assert bridge_connections([node.name, dup]) == {node.name: True, dup: False}
        assert programmed(lab)
        policy_is_enforced(lab)
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", dup], check=True)


def test_the_runs_files_are_roots_alone(lab, unprivileged_user):
    d = lab.net.state_dir
    assert os.stat(d).st_mode & 0o777 == 0o700 and os.stat(os.path.dirname(d)).st_mode & 0o777 == 0o700
    res = as_user(unprivileged_user, ["cat", os.path.join(d, "plan.json")])
    assert res.returncode != 0 and "Permission denied" in res.stderr
    assert as_user(unprivileged_user, ["ls", d]).returncode != 0
    sock = lab.net.controller_socket
    assert os.stat(sock).st_mode & 0o777 == 0o700 and os.stat(sock).st_uid == 0


# ------------------------------------------------------------------------------ honest status, healing
ECHO_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7777)); srv.listen(1); print("listening", flush=True)
conn, _ = srv.accept()
while True:
    data = conn.recv(4096)
    if not data:
        break
    conn.sendall(data)
"""
ECHO_CLIENT = """
import json, socket, sys, time
sock = socket.create_connection((sys.argv[1], 7777), timeout=2)
sent = echoed = 0; error = ""; worst = 0.0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        sock.sendall(b"ping %d\\n" % sent); sent += 1
        got = b""
        while not got.endswith(b"\\n"):
            chunk = sock.recv(100)
            if not chunk:
                raise OSError("closed by the peer")
            got += chunk
        echoed += 1
    except OSError as exc:
        error = str(exc); break
    worst = max(worst, time.monotonic() - t0)
    time.sleep(0.05)
print(json.dumps({"sent": sent, "echoed": echoed, "error": error, "worst_s": worst}))
"""


def in_pod(lab: Lab, endpoint: str, code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["mnexec", "-a", str(lab.net.host_pid(lab.host(endpoint).key)), sys.executable, "-c", code,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_of_the_controller(lab):
    server = in_pod(lab, WEB2, ECHO_SERVER)
    try:
        assert server.stdout.readline().strip() == "listening"
        client = in_pod(lab, CLIENT, ECHO_CLIENT, lab.address(WEB2), "8")
        time.sleep(1.5)                    # the connection is up and echoing
        old = controller_pid(lab)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        # as soon as the process is gone (the signal takes a moment), before the supervisor has looked
        wait("status says the controller is not running", lambda: not lab.status()["alive"], deadline=0.5,
             interval=0.005)
        st = lab.status()
        assert not any(b["programmed"] for b in st["bridges"].values()), st
        lines = status_lines(describe(lab))
        assert "NOT RUNNING" in lines[2] or "runs again as pid" in lines[1], lines
        wait("the supervisor notices", lambda: lab.status()["supervisor"]["restarts"] == 1, deadline=1.0)
        assert time.monotonic() - t0 < 1.0
        death = lab.status()["supervisor"]["deaths"][-1]
        assert death["pid"] == old and death["how"] == "killed by SIGKILL"
        wait("the new controller programs every bridge", lambda: programmed(lab), deadline=15)
        assert controller_pid(lab) != old and lab.status()["pid"] == controller_pid(lab)
        assert f"pid {old} killed by SIGKILL" in status_lines(describe(lab))[1]
        out, err = client.communicate(timeout=30)
        result = json.loads(out)
        assert result["error"] == "" and result["sent"] == result["echoed"] and result["sent"] > 50, (result, err)
    finally:
        server.kill()
        server.wait(timeout=10)
    policy_is_enforced(lab)


def test_a_change_made_while_the_controller_is_dead_waits_for_the_new_one_and_says_so(lab):
    old, before = controller_pid(lab), lab.status()["plan_version"]
    os.kill(old, signal.SIGKILL)
    result = lab.set_ready(WEB0, False)
    try:
        assert f"pid {old} killed by SIGKILL" in result["controller"], result
        st = lab.status()
        assert st["plan_version"] > before and programmed(lab) and st["pid"] == controller_pid(lab) != old
    finally:
        lab.set_ready(WEB0, True)


def test_a_hung_controller_makes_a_change_fail_with_the_cause(lab):
    pid = controller_pid(lab)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(KubevpcError) as info:
            lab.set_ready(WEB0, False)
        text = str(info.value)
        assert text.startswith(f"the change was not programmed within 10 s: the controller (pid {pid}) has not taken "
                               "the changed plan: it is still at plan v"), text
        assert "(hung?)" in text, text
    finally:
        os.kill(pid, signal.SIGCONT)
    wait("the controller catches up", lambda: programmed(lab), deadline=30)
    lab.set_ready(WEB0, True)


# ---------------------------------------------------------------------------------- dead servers
def test_a_dead_pod_server_is_shown_and_named_in_the_reasons(lab):
    web1 = "pod/default/web-1"
    check = Check("pod to pod", CLIENT, web1, 8080, "tcp", True, "the evaluator's reason")
    [running] = run_checks(lab, [check])
    assert running.passed and running.note == ""
    proc = lab.net.servers[web1]
    os.kill(proc.pid, signal.SIGKILL)
    wait("the server is gone", lambda: proc.poll() is not None, deadline=5)
    try:
        [s] = [s for s in lab.servers() if s["endpoint"] == web1 and s["program"] == "server"]
        assert s["state"] == "dead", s
        assert any(line.startswith("servers not running (1 of") and web1 in line for line in status_lines(describe(lab)))
        [outcome] = run_checks(lab, [check])
        assert not outcome.passed and outcome.outcome == "refused"
        assert outcome.note == f"the server of {web1} is not running (pid {proc.pid})"
        assert outcome.why.endswith(f"; but the server of {web1} is not running (pid {proc.pid})")
        m = lab.matrix([CLIENT], [(8080, "tcp")], [web1, WEB0])
        assert "is not running" in m.cell(CLIENT, web1, 8080).reason
        assert "not running" not in m.cell(CLIENT, WEB0, 8080).reason
    finally:
        lab.start_server(web1)
    lab.stop_server(web1)
    try:
        [outcome] = run_checks(lab, [check])
        assert outcome.note == f"the server of {web1} was stopped (kubevpc stop-server)"
    finally:
        lab.start_server(web1)
    assert run_checks(lab, [check])[0].passed


# ------------------------------------------------------------------------------------- snippets
def test_an_ingress_snippet_is_refused_while_the_scenario_does_not_allow_it(lab):
    target = f"/tmp/kubevpc-snippet-{lab.run}"
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "snip", "annotations": {
               "nginx.ingress.kubernetes.io/configuration-snippet": f"access_log {target};"}},
           "spec": {"defaultBackend": {"service": {"name": "kube-dns", "port": {"number": 53}}}}}
    with pytest.raises(ScenarioError) as info:
        lab.apply(ing)
    assert "Snippet directives are disabled by the Ingress administrator" in str(info.value)
    assert not os.path.exists(target)
    assert "snip" not in {i.metadata.name for i in lab.plan.ingresses}


def test_the_control_channel_is_roots_alone(lab, unprivileged_user):
    from kubevpc.control import ControlClient, serve
    server = serve(lab)
    try:
        assert ControlClient(lab.run).describe()["run"] == lab.run
        code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
                "    print('connected')\nexcept OSError as exc:\n    print(exc.strerror)\n")
        res = as_user(unprivileged_user, ["/usr/bin/python3", "-c", code, server.path])
        assert res.stdout.strip() == "Permission denied", res
    finally:
        server.stop()
