"""The SLB health checker: ``python -m kubevpc.daemons.slb check`` probes the backends of every listener,
as the CLB nodes do, and keeps a state file saying which backends are in rotation. Its
configuration, and the listener settings of ACK's annotations, are kubevpc.render.slb's.

* HTTP check method: "HEAD (default) or GET" (Alibaba Cloud, "Configure and manage CLB health
  checks"); the annotation is health-check-method. The HTTP version is not documented for
  CLB: we send HTTP/1.0 with a Host header (the domain, or the backend's IP).
* Timing: "failure time window = response timeout x unhealthy threshold + interval x (unhealthy
  threshold - 1)" (help.aliyun.com, CLB health check time window). Checks of one backend are
  therefore sequential: the next one starts ``interval`` after the previous one ended. The
  checker does exactly that, per backend, so a slow backend never delays the others.
* A new backend: CLB's DescribeHealthStatus has normal, abnormal and "unavailable" (the check
  has not completed), and Alibaba's ALB documentation says a backend must pass the healthy
  threshold of consecutive checks before it is declared healthy. So a backend starts
  ``initial``, out of rotation, and becomes ``healthy`` after ``healthy_threshold`` consecutive
  successes (or ``unhealthy`` after ``unhealthy_threshold`` consecutive failures).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from kubevpc.daemons.harness import ConfigFile, Daemon, Refused, file_stamp, subcommands
from kubevpc.errors import KubevpcError
from kubevpc.render.slb import BackendSpec, CheckerConfig, CheckSpec, ListenerSpec, checker_config
from kubevpc.rundir import RunDir, atomic_write


# -- the configuration ------------------------------------------------------------------


class CheckerConfigError(KubevpcError):
    """The checker's configuration file is unreadable or invalid."""


def load_checker_config(path: Path) -> CheckerConfig:
    try:
        return CheckerConfig.model_validate(json.loads(path.read_text()))
    except OSError as exc:
        raise CheckerConfigError(f"{path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CheckerConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}"
                 for e in exc.errors()]
        raise CheckerConfigError("\n".join(lines)) from exc


# -- health state of one backend (pure) -------------------------------------------

Status = Literal["initial", "healthy", "unhealthy"]


@dataclass(frozen=True)
class Transition:
    """A backend entered ``status`` after ``count`` consecutive results of that kind."""

    status: Status
    count: int
    error: str  # the last failure's reason; empty on the way up


class Backend:
    """Consecutive-result thresholds of one backend. Time is passed in, never read."""

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int, now: float) -> None:
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.status: Status = "initial"
        self.since = now
        self.successes = 0  # consecutive
        self.failures = 0  # consecutive
        self.last_error = ""

    @property
    def healthy(self) -> bool:
        """In rotation: only after passing the healthy threshold."""
        return self.status == "healthy"

    def record(self, ok: bool, now: float, error: str = "") -> Transition | None:
        """Count one check result; return the transition it causes, if any."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.status != "healthy" and self.successes >= self.healthy_threshold:
                return self._enter("healthy", self.successes, "", now)
        else:
            self.failures += 1
            self.successes = 0
            self.last_error = error
            if self.status != "unhealthy" and self.failures >= self.unhealthy_threshold:
                return self._enter("unhealthy", self.failures, error, now)
        return None

    def _enter(self, status: Status, count: int, error: str, now: float) -> Transition:
        self.status = status
        self.since = now
        return Transition(status, count, error)

    def state(self) -> dict:
        return {
            "status": self.status,
            "healthy": self.healthy,
            "since": round(self.since, 3),
            "successes": self.successes,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def transition_line(listener: str, backend: str, t: Transition) -> str:
    """The log message of one transition (the logger adds the timestamp)."""
    if t.status == "healthy":
        return f"listener {listener} backend {backend} healthy after {t.count} successes"
    return (f"listener {listener} backend {backend} unhealthy after {t.count} failures"
            f" ({t.error})")


# -- probes -------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias since Python 3.10
        return "timeout"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def probe(check: CheckSpec, ip: str, port: int) -> str | None:
    """One check of one backend: None if it passed, else why not. Never outlasts its timeout."""
    deadline = time.monotonic() + check.probe_timeout
    try:
        with socket.create_connection((ip, port), timeout=check.probe_timeout) as sock:
            if check.type == "tcp":
                return None
            return _http_exchange(sock, check, ip, deadline)
    except OSError as exc:
        reason = _reason(exc)
        return f"timeout after {check.probe_timeout:g} s" if reason == "timeout" else reason


def _http_exchange(sock: socket.socket, check: CheckSpec, ip: str, deadline: float) -> str | None:
    """Send the request, read the status line; every socket wait is cut to the deadline."""
    request = (f"{check.method} {check.uri} HTTP/1.0\r\n"
               f"Host: {check.domain or ip}\r\n"
               "User-Agent: kubevpc-slb-healthcheck\r\n\r\n").encode()

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError()
        return left

    sock.settimeout(remaining())
    sock.sendall(request)
    head = b""
    while b"\n" not in head and len(head) < 1024:
        sock.settimeout(remaining())
        chunk = sock.recv(1024)
        if not chunk:
            break
        head += chunk
    match = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    if not match:
        return "no HTTP status line in the response"
    status = int(match.group(1))
    if f"http_{status // 100}xx" not in check.http_codes:
        return f"HTTP {status}, expected {'|'.join(check.http_codes)}"
    return None


# -- the checker process ------------------------------------------------------------

POLL = 0.1  # longest wait of the main loop: bounds the reaction to SIGTERM and config changes


@dataclass
class _Target:
    """A backend being checked: its spec, its health, when its next check is due."""

    spec: BackendSpec
    health: Backend
    due: float  # monotonic
    busy: bool = False


@dataclass
class _Listener:
    spec: ListenerSpec
    targets: dict[str, _Target]


class Checker:
    """Probes every backend of every listener in its own thread and keeps the state file.

    The main thread only schedules, counts results and writes files: it never waits on a probe.
    """

    def __init__(self, config_path: Path, state_path: Path, log: logging.Logger) -> None:
        self._config_path = config_path
        self._state_path = state_path
        self._log = log
        self._listeners: dict[str, _Listener] = {}
        self._results: queue.SimpleQueue[tuple[str, _Target, str | None, float]] = \
            queue.SimpleQueue()
        self._stopping = False
        self._stamp = file_stamp(config_path)
        self._apply(load_checker_config(config_path))

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler (sets a flag, takes no lock)."""
        self._stopping = True

    def run(self) -> None:
        next_config_poll = 0.0
        while not self._stopping:
            now = time.monotonic()
            changed = False
            if now >= next_config_poll:
                changed = self._poll_config()
                next_config_poll = now + POLL
            self._start_due_probes(now)
            changed = self._collect(self._wait_time()) or changed
            if changed:
                self.write_state()

    def write_state(self) -> None:
        atomic_write(str(self._state_path), json.dumps({
            "time": round(time.time(), 3),
            "listeners": {
                name: {key: {"id": t.spec.id, **t.health.state()} for key, t in lst.targets.items()}
                for name, lst in self._listeners.items()
            },
        }, indent=1, sort_keys=True) + "\n", 0o666, umask=True)

    # -- configuration --

    def _poll_config(self) -> bool:
        stamp = file_stamp(self._config_path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_checker_config(self._config_path)
        except CheckerConfigError as exc:
            self._log.error("config not reloaded, keeping the last good one: %s", exc)
            return False
        self._apply(config)
        return True

    def _apply(self, config: CheckerConfig) -> None:
        """Take a new configuration; backends already known keep their health."""
        mono, wall = time.monotonic(), time.time()
        old_count = sum(len(lst.targets) for lst in self._listeners.values())
        kept = 0
        listeners: dict[str, _Listener] = {}
        for spec in config.listeners:
            old = self._listeners.get(spec.name)
            targets: dict[str, _Target] = {}
            for b in spec.backends:
                target = old.targets.get(b.key) if old else None
                if target:
                    kept += 1
                    target.spec = b
                    target.health.healthy_threshold = spec.check.healthy_threshold
                    target.health.unhealthy_threshold = spec.check.unhealthy_threshold
                else:
                    health = Backend(spec.check.healthy_threshold,
                                     spec.check.unhealthy_threshold, wall)
                    target = _Target(b, health, due=mono)
                targets[b.key] = target
            listeners[spec.name] = _Listener(spec, targets)
        self._listeners = listeners
        count = sum(len(lst.targets) for lst in listeners.values())
        self._log.info("config %s: %d listener(s), %d backend(s) (%d added, %d removed)",
                       self._config_path, len(listeners), count, count - kept, old_count - kept)

    # -- probing --

    def _start_due_probes(self, now: float) -> None:
        for name, lst in self._listeners.items():
            for target in lst.targets.values():
                if not target.busy and target.due <= now:
                    target.busy = True
                    threading.Thread(target=self._probe, args=(name, lst.spec.check, target),
                                     daemon=True).start()

    def _probe(self, listener: str, check: CheckSpec, target: _Target) -> None:
        error = probe(check, target.spec.ip, target.spec.port)
        self._results.put((listener, target, error, time.monotonic()))

    def _wait_time(self) -> float:
        now = time.monotonic()
        dues = [t.due for lst in self._listeners.values() for t in lst.targets.values()
                if not t.busy]
        return max(0.0, min([POLL, *(d - now for d in dues)]))

    def _collect(self, wait: float) -> bool:
        """Count the results that arrive within ``wait`` seconds; True if any did."""
        try:
            item = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
        except queue.Empty:
            return False
        counted = False
        while True:
            counted = self._count(*item) or counted
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return counted

    def _count(self, listener: str, target: _Target, error: str | None, ended: float) -> bool:
        lst = self._listeners.get(listener)
        if lst is None or lst.targets.get(target.spec.key) is not target:
            return False  # removed from the configuration while its probe ran
        target.busy = False
        target.due = ended + lst.spec.check.interval  # Alibaba: interval after the last check
        transition = target.health.record(error is None, time.time(), error or "")
        if transition:
            self._log.info("%s", transition_line(listener, target.spec.key, transition))
        return True


class SlbChecker(Daemon):
    """``python -m kubevpc.daemons.slb check``: the checker's process around :class:`Checker`."""

    NAME = "slb"
    DESCRIPTION = "Alibaba Cloud SLB emulation: the backend health checker."
    LOG = "events"
    checker: Checker | None = None

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        (check,) = subcommands(p, (
            "check", "probe the backends of every listener and keep a state file of their health",
            "Probe every backend of every listener in the JSON config (TCP connect, or an HTTP "
            "request whose status must match the listener's http_codes), apply the healthy and "
            "unhealthy thresholds, log each transition and keep the state file current. The "
            "config is re-read when it changes; SIGTERM or SIGINT stops."))
        check.add_argument("--config", required=True, metavar="FILE", help="listeners and backends (JSON)")
        check.add_argument("--state", required=True, metavar="FILE", help="health state, rewritten atomically")
        check.add_argument("--log", metavar="FILE", help="transition log (default: standard error)")
        check.add_argument("--ready", metavar="FILE", help="once the first state is written, write our pid here")

    def start(self) -> None:
        try:
            self.checker = Checker(Path(self.args.config), Path(self.args.state), self.log)
        except CheckerConfigError as exc:
            raise Refused(2, str(exc)) from None
        self.checker.write_state()

    def stop(self) -> None:
        super().stop()
        if self.checker is not None:
            self.checker.stop()

    def serve(self) -> int:
        assert self.checker is not None
        self.checker.run()
        return 0


main = SlbChecker.main


# -- the builder's side ----------------------------------------------------------------


class CheckerFile(ConfigFile):
    """The checker's configuration file, slb-<namespace>_<name>.json in the run directory."""

    def __init__(self, rundir: RunDir, slb: Any) -> None:
        super().__init__(rundir.slb_config(slb.service))
        self.slb = slb

    def build(self) -> dict:
        return checker_config(self.slb)

    def dry_run(self, doc: object) -> None:
        CheckerConfig.model_validate(doc)


def write_slb_config(state_dir: str, slb: Any) -> None:
    """Write the configuration of an SLB's checker (``slb``: the plan's); a running one takes it."""
    CheckerFile(RunDir(state_dir), slb).write()


def checker_command(rundir: RunDir, service: str) -> list[str]:
    """The checker of a Service's SLB, without its ready file."""
    return SlbChecker.argv("check", "--config", rundir.slb_config(service), "--state", rundir.slb_state(service),
                           "--log", rundir.slb_log(service))

if __name__ == "__main__":
    sys.exit(main())
