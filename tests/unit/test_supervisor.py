"""The controller's supervisor and what the run says of its controller, with real short-lived
processes in place of the controller (no root, no Open vSwitch)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from controller.__main__ import UnixStream, remove_stale_socket
from controller.app import _previous_plan_version, hung_up, peer
from kubevpc.cli.observe import status_lines
from kubevpc.ledger import Ledger
from topologies.build import Network, unix_listening
from topologies.supervisor import MAX_DEATHS, ControllerSupervisor, ending

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)


def wait(test, deadline=5.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if test():
            return True
        time.sleep(0.01)
    return False


def test_a_dead_controller_is_noticed_within_a_second_and_started_again():
    said, spawned = [], []

    def spawn():
        spawned.append(sleeper())
        return spawned[-1]
    sup = ControllerSupervisor(spawn, said.append)
    try:
        first = sup.start()
        assert sup.alive() and sup.state()["restarts"] == 0
        first.kill()
        t0 = time.monotonic()
        assert wait(lambda: len(spawned) == 2)
        assert time.monotonic() - t0 < 1.0
        assert sup.alive() and sup.proc is spawned[1]
        state = sup.state()
        assert state["pid"] == spawned[1].pid and state["restarts"] == 1
        assert state["deaths"][0]["pid"] == first.pid and state["deaths"][0]["how"] == "killed by SIGKILL"
        assert said == [f"the controller (pid {first.pid}) killed by SIGKILL; starting it again",
                        f"controller restarted as pid {spawned[1].pid}; the bridges reconnect to it"]
    finally:
        sup.stop()
    assert all(p.poll() is not None for p in spawned)


def test_state_is_honest_before_the_supervisor_looks():
    sup = ControllerSupervisor(sleeper, poll=3600)       # it will not look on its own
    try:
        proc = sup.start()
        proc.kill()
        proc.wait(timeout=5)
        state = sup.state()
        assert not state["alive"] and state["dead"] == f"pid {proc.pid} killed by SIGKILL"
    finally:
        sup.stop()


def test_a_controller_that_keeps_dying_is_given_up():
    said = []
    sup = ControllerSupervisor(lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]), said.append,
                               poll=3600)
    try:
        sup.start()
        for _ in range(MAX_DEATHS + 2):
            sup.proc.wait(timeout=10)
            sup.check()
        state = sup.state()
        assert len(state["deaths"]) == MAX_DEATHS and state["restarts"] == MAX_DEATHS - 1
        assert state["gave_up"].startswith(f"the controller died {MAX_DEATHS} times within 60 s")
        assert "exited with 3" in state["gave_up"] and not state["alive"]
        assert said[-1] == state["gave_up"]
    finally:
        sup.stop()


def test_stop_means_no_more_restarts():
    spawned = []
    sup = ControllerSupervisor(lambda: spawned.append(sleeper()) or spawned[-1], poll=0.01)
    sup.start()
    sup.stop()
    time.sleep(0.1)
    assert len(spawned) == 1 and spawned[0].poll() is not None


def test_ending():
    assert ending(-9) == "killed by SIGKILL" and ending(1) == "exited with 1" and ending(-99) == "killed by signal 99"


# ------------------------------------------------------------------------- the run's own view
def network(tmp_path, status: dict, sup) -> Network:
    lg = Ledger("kvst")
    lg.dir = str(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps(status))
    return Network(plan=None, ledger=lg, datapath=None, supervisor=sup)


BRIDGES = {"kvst-n0": {"connected": True, "programmed": True, "plan_version": 4, "flows": 10},
           "kvst-vs0": {"connected": True, "programmed": True, "plan_version": 4, "flows": 5}}


def test_a_status_file_of_a_dead_controller_programs_nothing(tmp_path):
    sup = ControllerSupervisor(sleeper, poll=3600)
    try:
        proc = sup.start()
        net = network(tmp_path, {"pid": proc.pid, "plan_version": 4, "bridges": BRIDGES, "errors": []}, sup)
        st = net.controller_status()
        assert st["alive"] and all(b["programmed"] for b in st["bridges"].values())
        assert net.describe_controller() == ""
        proc.kill()
        proc.wait(timeout=5)
        st = net.controller_status()
        assert not st["alive"] and not any(b["programmed"] or b["connected"] for b in st["bridges"].values())
        assert "the controller is not running (pid" in net.describe_controller()
        lines = status_lines({"run": "kvst", "file": "f.yaml", "mode": "eni", "controller": st,
                              "controller_problem": net.describe_controller(),
                              "connected": {"kvst-n0": False, "kvst-vs0": False}, "servers": []})
        assert lines[1].startswith("controller: the controller is not running")
        assert "NOT RUNNING" in lines[2] and "0 of 2 bridges programmed, 0 of 2 connected" in lines[2]
    finally:
        sup.stop()


def test_a_status_file_of_the_controller_before_a_restart_programs_nothing(tmp_path):
    sup = ControllerSupervisor(sleeper, poll=3600)
    try:
        old = sup.start()
        net = network(tmp_path, {"pid": old.pid, "plan_version": 4, "bridges": BRIDGES}, sup)
        old.kill()
        old.wait(timeout=5)
        sup.check()                       # restarted; the new one has not written status.json yet
        st = net.controller_status()
        assert st["supervisor"]["restarts"] == 1 and not st["alive"]
        assert not any(b["programmed"] for b in st["bridges"].values())
        assert net.describe_controller().startswith(f"the controller died (pid {old.pid} killed by SIGKILL at ")
    finally:
        sup.stop()


def test_status_lines_name_refused_connections_and_servers_that_do_not_run():
    d = {"run": "kvx", "file": "s.yaml", "mode": "vxlan", "connected": {"kvx-n0": True},
         "controller": {"pid": 7, "plan_version": 2, "errors": [], "alive": True,
                        "bridges": {"kvx-n0": {"programmed": True, "plan_version": 2, "flows": 3}},
                        "refused": [{"time": 0, "pid": 99, "uid": 1000, "dpid": "0x1", "bridge": "kvx-n0",
                                     "why": "the peer is pid 99 (uid 1000), not ovs-vswitchd (pid 5)"}]},
         "servers": [{"endpoint": "pod/default/web-0", "program": "server", "pid": 11, "state": "dead", "how": ""},
                     {"endpoint": "pod/default/web-1", "program": "server", "pid": 12, "state": "running", "how": ""}]}
    lines = status_lines(d)
    assert "1 of 1 bridges programmed, 1 of 1 connected" in lines[1]
    assert any(line.startswith("REFUSED at ") and "pid 99 (uid 1000) claiming datapath 0x1" in line for line in lines)
    assert lines[-1] == "servers not running (1 of 2): pod/default/web-0 server pid 11 dead"


# ------------------------------------------------------------------ the controller's socket helpers
def test_peer_credentials_and_hang_up():
    a, b = socket.socketpair()
    try:
        assert peer(a) == (os.getpid(), os.getuid())
        assert not hung_up(a)
        b.sendall(b"unread data")
        b.close()
        assert hung_up(a), "a closed peer shows even with data left to read"
    finally:
        a.close()
    assert peer(object()) == (None, None)


def test_unix_stream_leaves_tcp_options_out():
    a, b = socket.socketpair()
    try:
        s = UnixStream(a)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)       # the socket itself would refuse it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.sendall(b"x")
        assert b.recv(1) == b"x" and s.family == socket.AF_UNIX
    finally:
        a.close()
        b.close()


def test_a_stale_socket_is_removed_but_nothing_else(tmp_path):
    path = str(tmp_path / "c.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    assert unix_listening(path)
    srv.close()
    assert not unix_listening(path) and os.path.exists(path)
    remove_stale_socket(path)
    assert not os.path.exists(path)
    other = tmp_path / "plain"
    other.write_text("x")
    remove_stale_socket(str(other))
    assert other.exists()


def test_plan_versions_go_on_after_a_restart(tmp_path):
    assert _previous_plan_version(str(tmp_path)) == 0
    (tmp_path / "status.json").write_text('{"plan_version": 7}')
    assert _previous_plan_version(str(tmp_path)) == 7
    (tmp_path / "status.json").write_text("[1]")
    assert _previous_plan_version(str(tmp_path)) == 0


def test_the_supervisor_is_signal_safe():
    """SIGTERM to a run ends it: the supervisor's thread does not keep the process alive."""
    # the pid is printed inside the try, so the signal cannot land before the finally is armed (it
    # did under load); SIGINT raises even when the test runner was started with it ignored
    code = ("import signal, sys, time; sys.path.insert(0, %r)\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from topologies.supervisor import ControllerSupervisor\n"
            "import subprocess\n"
            "s = ControllerSupervisor(lambda: subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']))\n"
            "p = s.start()\n"
            "try:\n    print(p.pid, flush=True)\n    time.sleep(30)\nfinally:\n    s.stop()\n") % REPO
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert wait(lambda: not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z")
