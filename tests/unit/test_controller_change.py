"""A change reaching the bridges (controller/planwatch.py, controller/watch.py, controller/purge.py,
controller/settings.py): the plan watcher is woken by the file's replacement, not a poll; a change
goes to a bridge that holds the plan before as its difference, in one write, inside one bundle
(or without, KUBEVPC_BUNDLE=0), then a barrier and a read-back; with KUBEVPC_PURGE=1 the
datapath's cache is emptied once, after every bridge has answered its barrier; bad settings and
hostile files in the run directory are reported, never fatal."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

import controller.planwatch as planwatch
from controller import purge as purge_module
from controller.compile import compile_plan
from controller.settings import setting, settings
from controller.watch import IN_MOVED_TO, IN_Q_OVERFLOW, Changes, DirWatch, parse_events
from kubevpc.errors import BuildError
from kubevpc.rundir import atomic_write
from tests.unit.osken_fake import disconnect, event, pump
from tests.unit.plans import DEFAULT, SERVICES
from tests.unit.test_controller_app import DNS_POD, kinds, plan_of, runs
from topologies import datapath as datapath_module
from topologies.supervisor import check_controller_settings


@pytest.fixture
def run(tmp_path, monkeypatch):
    yield from runs(tmp_path, monkeypatch)


def changed_plan(first):
    return plan_of(DEFAULT, ready={DNS_POD: False}, previous=first)


# ------------------------------------------------------------------------------------- sending
@pytest.mark.parametrize("bundle", ("1", "0", ""))
def test_a_change_goes_at_once_as_one_write_then_a_barrier_and_a_read_back(run, monkeypatch, bundle):
    monkeypatch.setenv("KUBEVPC_BUNDLE", bundle)
    first = plan_of(DEFAULT)
    r = run(first)
    r.connect_all()
    before = {name: (len(dp.sent), dp.writes) for name, dp in r.dps.items()}
    r.change(changed_plan(first))
    compiled = compile_plan(r.app_plan)
    touched = 0
    for name, dp in r.dps.items():
        seq = kinds(dp, before[name][0])
        mods = [k for k in seq if k not in ("{", "}", "barrier", "groups?", "flows?")]
        if mods:
            touched += 1
            inner = mods + ["barrier", "groups?", "flows?"]
            assert seq == (["{", *mods, "}", *inner[len(mods):]] if bundle != "0" else inner), name
            assert dp.writes - before[name][1] == 4           # the mods, the barrier, the two requests
        else:
            assert seq == ["barrier", "groups?", "flows?"], name
        assert set(r.switches[name].flows) == {f.cookie for f in compiled[name].flows}
        assert r.bridge(name)["programmed"] and r.bridge(name)["incremental"] == 1
    assert touched == len(first.nodes)
    assert r.app.status["settings"]["bundle"] is (bundle != "0")


def test_a_bundle_the_switch_refuses_changes_nothing_and_is_sent_again(run):
    """Open vSwitch applies a bundle whole or not at all: a refused flow keeps every other one out."""
    first = plan_of(DEFAULT)
    r = run(first)
    r.connect_all()
    node = first.nodes[0].bridge
    second = changed_plan(first)
    new = {f.cookie for f in compile_plan(second)[node].flows} - set(r.switches[node].flows)
    victim = sorted(new)[0]
    r.switches[node].refuse.add(victim)
    held = dict(r.switches[node].flows)
    r.change(second)
    assert r.switches[node].refused_bundles == 3 and r.switches[node].flows == held
    assert r.bridge(node)["programmed"] is False
    assert r.status_file()["errors"][-1].startswith(f"{node}: the flow table still differs from plan v2")


# ---------------------------------------------------------------------------------- notification
def watching(r):
    """The plan watcher in a thread of its own, its reloads recorded (each sets `called`)."""
    called, calls = threading.Event(), []

    def reload():
        calls.append(time.monotonic())
        called.set()
        return True
    r.app._reload = reload
    thread = threading.Thread(target=r.app._watch_plan, daemon=True)
    thread.start()
    return called, calls, thread


def stop(r, thread) -> None:
    r.app.stopped.set()
    r.app.watch.wake()
    thread.join(5)
    assert not thread.is_alive()


def test_a_plan_written_wakes_the_watcher_at_once_not_at_its_next_look(run, monkeypatch):
    monkeypatch.setattr(planwatch, "LOOK_INTERVAL", 3600.0)
    first = plan_of(DEFAULT)
    r = run(first)
    assert r.app.watch.notified and r.app.status["notified"] is True
    called, calls, thread = watching(r)
    try:
        atomic_write(str(r.dir / "status-of-something-else.json"), "{}")      # another file: no reload
        assert not called.wait(0.3)
        t0 = time.monotonic()
        atomic_write(str(r.plan_path), changed_plan(first).model_dump_json())  # as the Lab replaces it
        assert called.wait(10), "the watcher was not woken by the new plan.json"
        assert calls[0] - t0 < 10 < 3600
        called.clear()
        r.app.watch.wake()                                                       # the wlc counts changed
        assert called.wait(10)
    finally:
        stop(r, thread)


def test_an_slb_checkers_state_file_wakes_the_watcher(run, monkeypatch):
    monkeypatch.setattr(planwatch, "LOOK_INTERVAL", 3600.0)
    r = run(plan_of(SERVICES))
    called, _calls, thread = watching(r)
    try:
        slb = r.app_plan.slbs[0]
        atomic_write(str(r.dir / ("slb-" + slb.service.replace("/", "_") + ".state.json")), "{}")
        assert called.wait(10)
    finally:
        stop(r, thread)


def test_without_inotify_the_watcher_looks_every_watch_interval(run, monkeypatch):
    monkeypatch.setattr(planwatch, "WATCH_INTERVAL", 0.01)
    r = run(plan_of(DEFAULT))
    r.app.watch.close_inotify()
    assert not r.app.watch.notified
    called, calls, thread = watching(r)
    try:
        assert called.wait(10)
    finally:
        stop(r, thread)


def test_a_failing_reload_is_reported_and_the_watching_goes_on(run, monkeypatch):
    monkeypatch.setattr(planwatch, "WATCH_INTERVAL", 0.01)
    r = run(plan_of(DEFAULT))
    r.app.watch.close_inotify()
    seen = threading.Event()

    def broken():
        if seen.is_set():
            return False
        seen.set()
        raise RuntimeError("boom")
    r.app._reload = broken
    thread = threading.Thread(target=r.app._watch_plan, daemon=True)
    thread.start()
    try:
        assert seen.wait(10)
        time.sleep(0.1)
        assert thread.is_alive()
        assert "taking the plan failed: RuntimeError: boom" in r.app.status["errors"]
    finally:
        stop(r, thread)


def test_inotify_records_are_read_as_untrusted_input():
    def record(wd, mask, name=b"", length=None):
        name = name + b"\0" * (-len(name) % 16) if length is None else name
        return (wd.to_bytes(4, "little", signed=True) + mask.to_bytes(4, "little") + bytes(4)
                + (len(name) if length is None else length).to_bytes(4, "little") + name)
    dirs = {1: "/run/x"}
    assert parse_events(record(1, IN_MOVED_TO, b"plan.json"), dirs) == Changes(frozenset({"/run/x/plan.json"}))
    assert parse_events(record(1, IN_MOVED_TO, b"\xff\xfe"), dirs).paths == {"/run/x/\udcff\udcfe"}
    assert parse_events(record(1, IN_Q_OVERFLOW), dirs).anything
    assert parse_events(record(7, IN_MOVED_TO, b"plan.json"), dirs).anything          # an unknown watch
    assert parse_events(record(1, IN_MOVED_TO, b"plan", length=4096), dirs).anything  # longer than the data
    assert parse_events(b"\x01\x02\x03", dirs).anything                               # a cut record
    assert parse_events(record(1, IN_MOVED_TO, b"a/b"), dirs) == Changes()             # not a name of the directory
    assert Changes(frozenset({"/a"})).touches({"/a", "/b"}) and not Changes().touches({"/a"})


def test_a_dir_watch_that_cannot_start_says_why_and_every_wait_ends_at_its_deadline(tmp_path):
    watch = DirWatch([str(tmp_path / "missing")])
    try:
        assert not watch.notified and "inotify" in watch.problem
        t0 = time.monotonic()
        assert watch.wait(0.05) == Changes(anything=True)
        assert 0.04 < time.monotonic() - t0 < 5
        watch.wake()
        watch.wake()                    # a wake-up pending already: no error
        assert watch.wait(5).anything
    finally:
        watch.close()


def test_hostile_slb_state_files_count_their_backends_not_healthy(run):
    r = run(plan_of(SERVICES))
    slbs = r.app_plan.slbs
    bodies = ["[]", '{"listeners": []}', '{"listeners": {"l": 5}}', '{"listeners": {"l": {"1.2.3.4:80": 7}}}',
              "\xff" * 10, "{" * 100000, "[" * 100000, "x" * (2 << 20)]
    for body in bodies:
        for slb in slbs:
            (r.dir / ("slb-" + slb.service.replace("/", "_") + ".state.json")).write_text(body, errors="ignore")
        health, stamps = r.app._health(r.app_plan)
        assert all(not any(b.values()) for b in health.values()), body[:20]
        assert len(stamps) == len(slbs)


# ------------------------------------------------------------------------------------------ purge
@pytest.fixture
def purges(monkeypatch):
    """KUBEVPC_PURGE=1; the purge command recorded, not run; the purge thread run at once."""
    monkeypatch.setenv("KUBEVPC_PURGE", "1")
    calls: list[float] = []
    monkeypatch.setattr(planwatch, "purge_datapath", lambda: calls.append(time.monotonic()) or "")
    return calls


def sync_spawn(monkeypatch):
    monkeypatch.setattr(planwatch.hub, "spawn", lambda f, *a, **k: f(*a, **k))


def test_with_purge_the_cache_is_emptied_once_after_every_barrier_of_a_change(run, purges, monkeypatch):
    first = plan_of(DEFAULT)
    r = run(first)
    sync_spawn(monkeypatch)
    assert r.app.status["datapath"]["version"] == 1 and r.app.status["datapath"]["purged"] is False
    r.connect_all()
    assert purges == []                       # connecting bridges is no change
    late = first.nodes[-1].bridge
    r.switches[late].hold_barriers = True
    r.write(changed_plan(first))
    r.app._reload()
    for dp in r.dps.values():
        pump(r.app, dp)
    assert purges == [] and r.app.status["datapath"]["version"] == 1     # one bridge has not answered
    r.switches[late].hold_barriers = False
    for xid in r.switches[late].held:
        r.app._barrier(event(r.dps[late], xid=xid))
    pump(r.app, r.dps[late])
    assert len(purges) == 1
    st = r.status_file()["datapath"]
    assert (st["version"], st["purged"], st["error"], st["purges"]) == (2, True, "", 1)
    assert all(b["programmed"] for b in r.status_file()["bridges"].values())
    # a change that changes no flow and no group: nothing to empty
    r.change(changed_plan(first))
    assert len(purges) == 1 and r.app.status["datapath"]["version"] == 3
    assert r.app.status["datapath"]["purged"] is False


def test_a_purge_that_fails_is_reported_and_the_lab_can_fall_back(run, monkeypatch):
    monkeypatch.setenv("KUBEVPC_PURGE", "1")
    monkeypatch.setattr(planwatch, "purge_datapath", lambda: "ovs-appctl: exit 2: no")
    first = plan_of(DEFAULT)
    r = run(first)
    sync_spawn(monkeypatch)
    r.connect_all()
    r.change(changed_plan(first))
    st = r.status_file()["datapath"]
    assert (st["version"], st["purged"], st["error"]) == (2, False, "ovs-appctl: exit 2: no")
    assert st["error"] not in r.status_file()["errors"]       # not a programming error


def test_without_purge_nothing_is_purged_and_nothing_said(run, monkeypatch):
    monkeypatch.setenv("KUBEVPC_PURGE", "0")
    calls = []
    monkeypatch.setattr(planwatch, "purge_datapath", lambda: calls.append(1) or "")
    first = plan_of(DEFAULT)
    r = run(first)
    sync_spawn(monkeypatch)
    r.connect_all()
    r.change(changed_plan(first))
    assert calls == [] and "datapath" not in r.status_file()
    assert r.status_file()["settings"] == {"bundle": True, "purge": False}


def test_a_bridge_that_disconnects_is_not_waited_for(run, purges, monkeypatch):
    first = plan_of(DEFAULT)
    r = run(first)
    sync_spawn(monkeypatch)
    r.connect_all()
    late = first.nodes[0].bridge
    r.switches[late].hold_barriers = True
    r.change(changed_plan(first))
    assert purges == []
    disconnect(r.app, r.dps[late])
    assert len(purges) == 1 and r.app.status["datapath"]["version"] == 2


def test_the_purge_command_and_its_failures():
    seen = []
    assert purge_module.purge_datapath(lambda cmd, **kw: seen.append(cmd)) == ""
    assert seen == [["ovs-appctl", "--timeout=5", "revalidator/purge"]]

    def fails(cmd, **kw):
        raise subprocess.CalledProcessError(2, cmd, stderr="ovs-appctl: cannot connect\n")
    assert purge_module.purge_datapath(fails) == \
        "ovs-appctl --timeout=5 revalidator/purge: exit 2: ovs-appctl: cannot connect"

    def missing(cmd, **kw):
        raise FileNotFoundError(2, "No such file or directory", "ovs-appctl")
    assert "No such file or directory" in purge_module.purge_datapath(missing)


def test_the_purge_bookkeeping():
    p = purge_module.Purge(True)
    p.plan(2, ["a", "b"])
    assert p.due() is None
    p.changed()
    p.confirmed("a")
    assert p.due() is None
    p.confirmed("b")
    assert p.due() == purge_module.Due(2, True) and p.due() is None      # once
    p.plan(3, [])
    assert p.due() == purge_module.Due(3, False)
    off = purge_module.Purge(False)
    off.plan(4, [])
    off.changed()
    assert off.due() == purge_module.Due(4, False)


# --------------------------------------------------------------------------------------- settings
def test_settings_take_one_or_zero_and_default_when_unset():
    assert settings({}) == {"bundle": True, "purge": True}
    assert settings({"KUBEVPC_BUNDLE": "0", "KUBEVPC_PURGE": " 1 "}) == {"bundle": False, "purge": True}
    assert setting("KUBEVPC_PURGE", {"KUBEVPC_PURGE": ""}) is True
    assert setting("KUBEVPC_PURGE", {"KUBEVPC_PURGE": "0"}) is False


@pytest.mark.parametrize("name", ("KUBEVPC_BUNDLE", "KUBEVPC_PURGE"))
def test_a_bad_setting_is_refused_by_name_value_and_what_was_expected(name):
    with pytest.raises(ValueError, match=rf"environment variable {name}='yes': expected 1 \(.*\), 0 \(.*\) or unset"):
        settings({name: "yes"})
    with pytest.raises(BuildError, match=rf"{name}='on'"):
        check_controller_settings({name: "on"})
    assert check_controller_settings({name: "1"})[name.split("_")[1].lower()] is True


def test_a_controller_given_a_bad_setting_says_so_and_keeps_the_defaults(run, monkeypatch):
    monkeypatch.setenv("KUBEVPC_PURGE", "sometimes")
    r = run(plan_of(DEFAULT))
    assert r.app.settings == {"bundle": True, "purge": True}
    assert any("KUBEVPC_PURGE='sometimes'" in e for e in r.status_file()["errors"])
    assert json.loads((r.dir / "status.json").read_text())["settings"]["purge"] is True
    assert os.path.exists(r.dir / "status.json")


# ------------------------------------------------------------------------------------ the Lab's wait
@pytest.mark.parametrize("status, how, waits", [
    ({"plan_version": 4, "settings": {"purge": True}, "datapath": {"version": 4, "error": ""}}, "purged", 0),
    ({"plan_version": 4, "settings": {"purge": True}, "datapath": {"version": 4, "error": "no"}}, "revalidated", 2),
    ({"plan_version": 4, "settings": {"purge": True}, "datapath": {"version": 3, "error": ""}}, "revalidated", 2),
    ({"plan_version": 4, "settings": {"purge": False}}, "revalidated", 2),
    ({"plan_version": 4}, "revalidated", 2)])
def test_the_lab_waits_for_the_purge_or_for_two_revalidator_cycles(monkeypatch, status, how, waits):
    calls = []
    monkeypatch.setattr(datapath_module.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    assert datapath_module.wait_datapath(lambda: status, 0.05) == how
    assert calls == [["ovs-appctl", "--timeout=1", "revalidator/wait"]] * waits
