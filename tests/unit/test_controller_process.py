"""The controller as a process (python -m controller: os-ken, its threads, inotify), against fake
OpenFlow switches on its Unix socket (tests/unit/ofswitch.py), without root: every bridge is
programmed, each plan written is taken at once and sent as one bundle without a read-back first,
and the switches end holding a fresh compile of the last plan."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from controller.compile import compile_plan
from kubevpc.planning import make_plan
from kubevpc.rundir import atomic_write
from kubevpc.scenario.load import load
from tests.unit.ofswitch import OFSwitch
from tests.unit.plans import REPO, SERVICES


def programmed(state_dir: str, version: int, deadline: float = 30) -> dict:
    end = time.monotonic() + deadline
    while True:
        try:
            with open(os.path.join(state_dir, "status.json"), encoding="utf-8") as fh:
                st = json.load(fh)
        except (OSError, ValueError):
            st = {}
        if st.get("plan_version", 0) >= version and st.get("bridges") and all(
                b.get("programmed") and b.get("plan_version") == st["plan_version"] for b in st["bridges"].values()):
            return st
        assert time.monotonic() < end, f"not programmed at v{version} within {deadline} s: {st}"
        time.sleep(0.005)


@pytest.fixture
def controller(tmp_path, monkeypatch):
    """(start, state dir): start(plan) runs the controller on it and connects a switch per bridge."""
    short = tmp_path.joinpath("r")        # a short path: a socket's must fit in 107 bytes
    short.mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(short))
    monkeypatch.setenv("KUBEVPC_PURGE", "0")             # never the shared Open vSwitch's cache from a unit test
    (short / "ovs-vswitchd.pid").write_text(str(os.getpid()))     # the switches are this process
    procs, switches = [], {}

    def start(plan):
        atomic_write(str(short / "plan.json"), plan.model_dump_json())
        sock = str(short / "c.sock")
        procs.append(subprocess.Popen([sys.executable, "-m", "controller", "--plan", str(short / "plan.json"),
                                       "--state", str(short), "--socket", sock, "--run", plan.run,
                                       "--log", str(short / "controller.log")], cwd=REPO))
        end = time.monotonic() + 30
        while not os.path.exists(sock):
            assert procs[0].poll() is None and time.monotonic() < end, (short / "controller.log").read_text()
            time.sleep(0.02)
        for b in plan.bridges:
            switches[b.name] = OFSwitch(sock, b.dpid)
            switches[b.name].start()
        return switches
    yield start, str(short)
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.mark.parametrize("bundle", ("1", "0"))
def test_plans_written_are_taken_at_once_and_end_as_a_fresh_compile(controller, monkeypatch, bundle):
    monkeypatch.setenv("KUBEVPC_BUNDLE", bundle)           # the controller inherits it
    start, state = controller
    loaded = load(str(SERVICES), mode="vxlan")
    first = make_plan(loaded, "kvp")
    web = next(p.key for p in first.pods if "web" in p.key)
    switches = start(first)
    st = programmed(state, 1)
    assert st["errors"] == [] and st["notified"] is True and st["settings"]["bundle"] == (bundle == "1")
    plan = first
    for k in range(4):
        plan = make_plan(loaded, "kvp", ready={web: bool(k % 2)}, previous=first)
        t0 = time.monotonic()
        atomic_write(os.path.join(state, "plan.json"), plan.model_dump_json())
        st = programmed(state, 2 + k)
        assert time.monotonic() - t0 < 10
    assert st["errors"] == []
    assert {b: s["incremental"] for b, s in st["bridges"].items()} == {b.name: 4 for b in plan.bridges}
    for name, fs in compile_plan(plan, {}, {}).items():        # no SLB checker has written: none healthy
        sw = switches[name]
        assert set(sw.flows) == {f.cookie for f in fs.flows}, name
        assert sw.groups == set(fs.groups), name
        assert sw.counts["flow_dumps"] == 2 + 4, "on connecting: before and after; then only after each barrier"
        assert (sw.counts["bundles"] > 0) == (bundle == "1")
