"""Teardown removes exactly what a run created: after a normal end, Ctrl-C, and kill -9 + clean."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from kubevpc.ledger import existing_bridges, existing_links, existing_netns, run_dir

from .conftest import SCENARIO, assert_root_unchanged, root_state

KUBEVPC = [sys.executable, "-m", "kubevpc.cli"]


def leftovers(run: str) -> dict:
    procs = subprocess.run(["pgrep", "-af", run], capture_output=True, text=True).stdout.splitlines()
    return {"netns": sorted(n for n in existing_netns() if n.startswith(run)),
            "bridges": sorted(b for b in existing_bridges() if b.startswith(run)),
            "links": sorted(l for l in existing_links() if l.startswith(run)),
            "processes": [p for p in procs if "pgrep" not in p]}


EMPTY = {"netns": [], "bridges": [], "links": [], "processes": []}


@pytest.fixture
def foreign_bridge():
    """A bridge that is not ours: cleanup must leave it alone."""
    name = "kvforeign0"
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev"],
                   check=True)
    yield name
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", name], check=True)


def _start(run: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(KUBEVPC + ["run", SCENARIO, "--name", run, "--keep", "--no-checks", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = os.path.join(run_dir(run), "ready")
        if os.path.isdir(st) and len(os.listdir(st)) >= 6:        # every server is up
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run did not come up within 60 s")


def test_sigint_tears_everything_down(foreign_bridge):
    before = root_state()
    proc = _start("kvint")
    assert leftovers("kvint")["netns"], "the run created namespaces"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert leftovers("kvint") == EMPTY
    assert not os.path.exists(run_dir("kvint"))
    assert foreign_bridge in existing_bridges()
    assert_root_unchanged(before)


def test_kill_9_then_clean(foreign_bridge):
    proc = _start("kvkil", "--mode", "vxlan")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    left = leftovers("kvkil")
    assert left["netns"] and left["bridges"] and left["links"], "kill -9 leaves the network behind"
    listed = subprocess.run(KUBEVPC + ["list"], capture_output=True, text=True).stdout
    assert "kvkil: leftover" in listed, listed
    res = subprocess.run(KUBEVPC + ["clean"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert leftovers("kvkil") == EMPTY
    assert foreign_bridge in existing_bridges(), "clean must not touch bridges it did not create"
    assert "kvkil" not in subprocess.run(KUBEVPC + ["list"], capture_output=True, text=True).stdout
