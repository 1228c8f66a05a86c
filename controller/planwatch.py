"""The controller's side of a change, a mixin of the os-ken application (controller/app.py): the
plan and the SLB checkers' health seen as soon as their files are replaced (controller/watch.py),
loaded and compiled, every connected bridge sent its difference, and, with KUBEVPC_PURGE=1, the
datapath's flow cache emptied once every bridge has taken it (controller/purge.py).

Loading and compiling run in the watcher's thread without the application's lock; taking the
new version and sending it hold the lock, as the OpenFlow handlers do.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import time

from os_ken.lib import hub

from kubevpc.observe.flowlog import Recorder
from kubevpc.planning import Plan
from kubevpc.rundir import RunDir

from . import reconcile
from .compile import compile_bridges, paused_gc
from .purge import purge_datapath
from .reconcile import Desired
from .slb import active_connections

LOG = logging.getLogger("kubevpc.controller")
WLC_REFRESH_S = 1.0      # how often the wlc listeners' connections are counted
# seconds between looks at plan.json and the SLB checkers' state files (a stat each) when inotify
# is missing (controller/watch.py): a backend that turns healthy is in its listener's group within
# this, plus the compile and the flow mods. 0.05 was tried and made the controller stall under
# back-to-back plan versions (docs/performance.md, "The SLB's window after a backend turns healthy")
WATCH_INTERVAL = 0.2
# with inotify a change is seen at once; this look is only the fallback for a missed event
LOOK_INTERVAL = 2.0
MAX_STATE_FILE = 1 << 20        # bytes of an SLB checker's state file read at most


def read_state(path: str) -> tuple[int, object]:
    """An SLB checker's state file: its mtime (0 when there is none) and its JSON document (None
    when it is not JSON, or nests too deep to read)."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return 0, None
    try:
        with open(path, encoding="utf-8") as fh:
            return stamp, json.loads(fh.read(MAX_STATE_FILE))
    except (OSError, ValueError, RecursionError):
        return stamp, None


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class PlanWatch:
    """What KubevpcController does when its inputs change (its attributes are the application's)."""

    def _health(self, plan: Plan) -> tuple[dict, tuple]:
        """The SLB health checkers' view: {listener: {"ip:port": healthy}}, and the files' stamps.
        A checker that has not written yet, or whose file is not what a checker writes, counts its
        backends as not yet healthy."""
        health, stamps = {}, []
        for slb in plan.slbs:
            path = RunDir(self.state_dir).slb_state(slb.service)
            stamp, doc = read_state(path)
            stamps.append(stamp)
            listeners = doc.get("listeners") if isinstance(doc, dict) else None
            for name, backends in (listeners.items() if isinstance(listeners, dict) else ()):
                if isinstance(backends, dict):
                    health[name] = {key: isinstance(b, dict) and bool(b.get("healthy")) for key, b in backends.items()}
        return health, tuple(stamps)

    def _watched(self) -> set[str]:
        """The files whose replacement may change what the bridges should hold."""
        plan = self.plan
        return {self.plan_path} | {RunDir(self.state_dir).slb_state(s.service) for s in (plan.slbs if plan else ())}

    def _load_plan(self) -> tuple | None:
        """(plan, mtime, SLB health, wlc loads, what status.json says of them) when plan.json, some
        backend's health or the wlc counts changed since the plan in force; None when nothing did,
        or the new plan does not load (an error)."""
        t0 = time.monotonic()
        try:
            mtime = os.stat(self.plan_path).st_mtime_ns
            if mtime == self.plan_mtime:
                if self.plan is None or not self.plan.slbs:
                    return None
                health, stamps = self._health(self.plan)
                if stamps == self.health_stamps and not self.loads_changed:
                    return None
                if health == self.health and not self.loads_changed:
                    # a checker rewrites its file after every probe; only a change of health
                    # is a new plan (else the bridges would be re-dumped every second)
                    self.health_stamps = stamps
                    return None
                plan = self.plan
            else:
                with open(self.plan_path, encoding="utf-8") as fh:
                    plan = Plan.model_validate_json(fh.read())
                health, stamps = self._health(plan)
            if health != self.health:
                LOG.info("SLB health: %s", json.dumps(health, sort_keys=True))
            self.health, self.health_stamps = health, stamps
            self.loads_changed = False
            loads = self.loads
            self.change_timing = {"started": t0, "load_ms": ms(time.monotonic() - t0)}
            # for status.json: health as this plan version puts the backends in rotation
            seen = {"slb_health": health, **({"wlc_connections": loads} if loads else {})}
        except Exception as exc:      # a bad plan keeps the last good one running
            LOG.error("plan %s not loaded: %s", self.plan_path, exc)
            with self.lock:
                self.status["errors"].append(f"plan not loaded: {exc}")
                self._write_status()
            return None
        return plan, mtime, health, loads, seen

    def _reload(self) -> bool:
        """Take a new plan version, if there is one, and send every connected bridge its
        difference (controller/reconcile.py: plan_changed). A read-back under way is for the
        plan before: its replies are ignored from now on.

        The garbage collector is held off throughout, and what the version leaves alive is then
        frozen (gc.freeze: out of every later collection). Its tens of thousands of flows are
        acyclic and long-lived, and the first collection after they are made walked the whole heap
        again: with 1,000 NetworkPolicies, about 400 ms of the 1.3 s a change took
        (docs/performance.md). What a later version replaces is freed by reference counting."""
        with paused_gc():
            if not self._load_and_send():
                return False
        gc.freeze()
        return True

    def _load_and_send(self) -> bool:
        """Each bridge is sent its difference as soon as its flows are compiled, so that Open vSwitch
        takes them while the next bridge is compiled (two processes, two cores: with 1,000
        NetworkPolicies the controller's and the switch's work had run one after the other). A plan
        that fails to compile half-way is rolled back: every bridge is sent the plan before again."""
        loaded = self._load_plan()
        if loaded is None:
            return False
        plan, mtime, health, loads, seen = loaded
        with self.lock:
            before = (self.plan, self.plan_mtime, self.status.get("plan_file"), self.desired, self.by_dpid)
            self._take_plan(plan, mtime, seen)
            version = self.status["plan_version"]
            self.purge.plan(version, [n for n, link in self.links.items() if link.dp is not None])
            bridges, compiling = compile_bridges(plan, health, loads), 0.0
            try:
                while True:
                    t = time.monotonic()
                    item = next(bridges, None)
                    compiling += time.monotonic() - t
                    if item is None:
                        break
                    self._take_bridge(item[0], Desired.of(version, item[1]))
                    self._send_change(item[0])
            except Exception as exc:        # noqa: BLE001 - whatever it is, the plan before stays in force
                self._roll_back(before, exc)
                return True
            for name in set(self.links) - set(self.desired):      # a bridge the plan no longer has: emptied
                self._send_change(name)
            LOG.info("plan v%d loaded: %d bridges, %d flows", version, len(self.desired),
                     sum(len(d.flows) for d in self.desired.values()))
            self._timed(compiling)
            self._purge_if_due()
        return True

    def _timed(self, compiling: float) -> None:
        timing = self.change_timing
        timing.update(compile_ms=ms(compiling), to_sent_ms=ms(time.monotonic() - timing["started"]))
        self.status["change_timing"] = {"plan_version": self.status["plan_version"],
                                        **{k: v for k, v in timing.items() if k != "started"}}
        self._write_status()

    def _take_plan(self, plan: Plan, mtime: float, seen: dict) -> None:
        """The new plan version; what each bridge should hold comes as it is compiled (_take_bridge)."""
        self.plan, self.plan_mtime = plan, mtime
        self.status.update(seen)
        # which plan.json this version compiles: a version raised by SLB health alone recompiles
        # the plan already loaded, and a caller waiting for its own plan must not take it for that
        self.status["plan_file"] = mtime
        if self.flowlog is None:
            self.flowlog = Recorder(plan, RunDir(self.state_dir).flowlog)
        self.flowlog.plan = plan
        self.by_dpid = {b.dpid: b.name for b in plan.bridges}
        self.status["plan_version"] += 1
        self.desired = {}
        for b in plan.bridges:
            self._bridge_status(b.name).update(programmed=False)

    def _bridge_status(self, name: str) -> dict:
        return self.status["bridges"].setdefault(name, {"connected": False, "programmed": False,
                                                        "packet_in": 0, "ttl_expired": 0})

    def _take_bridge(self, name: str, desired: Desired) -> None:
        """What bridge `name` should hold at the plan version in force."""
        self.desired[name] = desired
        self._bridge_status(name).update(flows=len(desired.flows), groups=len(desired.groups), programmed=False)

    def _send_change(self, name: str) -> None:
        """Send connected bridge `name` its difference to what it should hold now; a read-back under
        way is for the plan before, and its replies are ignored from now on."""
        link = self.links.get(name)
        if link is not None and link.dp is not None:
            link.dump_xids, link.groups, link.cookies = (None, None), None, None
            self._apply(name, link, link.dp, reconcile.plan_changed(link.state, self._desired(name)))

    def _roll_back(self, before: tuple, exc: Exception) -> None:
        """The new plan did not compile: the plan before is in force again, as a version of its own,
        and every connected bridge is sent its difference to it (the bridges sent the new plan's
        flows get the old ones back; the others only a barrier)."""
        LOG.exception("plan %s not compiled; the plan before stays in force", self.plan_path)
        self.status["errors"].append(f"plan not loaded: {type(exc).__name__}: {exc}")
        self.plan, self.plan_mtime, plan_file, desired, self.by_dpid = before
        self.status["plan_file"] = plan_file
        if self.flowlog is not None and self.plan is not None:
            self.flowlog.plan = self.plan
        self.status["plan_version"] += 1
        version = self.status["plan_version"]
        self.desired = {}
        for name, d in desired.items():
            self._take_bridge(name, Desired(version, d.flows, d.groups))
        self.purge.plan(version, [n for n, link in self.links.items() if link.dp is not None])
        for name in self.links:
            self._send_change(name)
        self._write_status()

    def _look_interval(self) -> float:
        return LOOK_INTERVAL if self.watch.notified else WATCH_INTERVAL

    def _watch_plan(self):
        """Wait until plan.json or an SLB checker's state file is replaced (inotify), or the wlc
        counts change (a wake-up); look anyway every _look_interval(). An error is reported and
        the watching goes on."""
        next_look = time.monotonic() + self._look_interval()
        while not self.stopped.is_set():
            changes = self.watch.wait(next_look - time.monotonic())
            now = time.monotonic()
            if not (now >= next_look or changes.touches(self._watched())):
                continue
            next_look = now + self._look_interval()
            try:
                self._reload()
            except Exception as exc:        # noqa: BLE001 - the watcher must outlive any one change
                LOG.exception("taking the plan failed")
                with self.lock:
                    self.status["errors"].append(f"taking the plan failed: {type(exc).__name__}: {exc}")
                    self._write_status()

    def _watch_loads(self):
        """wlc: count the listeners' established connections in the datapath's conntrack table;
        when a count changes, the next plan check recompiles (the groups' weights follow)."""
        while True:
            hub.sleep(WLC_REFRESH_S)
            plan = self.plan
            if plan is None or not any(s.scheduler == "wlc" for s in plan.slbs):
                continue
            try:
                dump = subprocess.run(["ovs-appctl", "--timeout=5", "dpctl/dump-conntrack"], capture_output=True,
                                      text=True, timeout=10, stdin=subprocess.DEVNULL, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                LOG.warning("wlc: could not read the conntrack table: %s", exc)
                continue
            loads = active_connections(plan, dump)
            if loads != self.loads:
                LOG.info("wlc connections: %s", json.dumps(loads, sort_keys=True))
                self.loads, self.loads_changed = loads, True
                self.watch.wake()

    # ------------------------------------------------------------------ the datapath follows
    def _purge_if_due(self) -> None:
        """Once every bridge a plan version touched has answered its barrier: with KUBEVPC_PURGE=1,
        empty the datapath's flow cache (in a thread: the handlers go on), then say in status.json
        which version the datapath follows (controller/purge.py)."""
        due = self.purge.due()
        if due is None or not self.purge.enabled:
            return
        if not due.purge:
            self._datapath_follows(due.version, False, "", 0.0)
            return
        hub.spawn(self._purge_datapath, due.version)

    def _purge_datapath(self, version: int) -> None:
        t0 = time.monotonic()
        error = purge_datapath()
        took = time.monotonic() - t0
        if error:
            LOG.warning("the datapath's flow cache was not emptied after plan v%d: %s", version, error)
        else:
            LOG.info("datapath flow cache emptied after plan v%d in %.0f ms", version, took * 1000)
        with self.lock:
            self._datapath_follows(version, not error, error, took)

    def _datapath_follows(self, version: int, purged: bool, error: str, took: float) -> None:
        before = self.status.get("datapath", {})
        if before.get("version", 0) > version:
            return
        self.status["datapath"] = {"version": version, "purged": purged, "error": error, "took_s": round(took, 4),
                                   "purges": before.get("purges", 0) + purged}
        self._write_status()
