"""The ingress controller's work: keep one NGINX serving the configuration of the state file
(:class:`Controller`). Every configuration is tested with ``nginx -t`` before use; NGINX runs as
the controller's child, is reloaded gracefully on each change, and keeps the last good
configuration when a new one is rejected. Its command line is kubevpc.daemons.ingress's.
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time

from kubevpc.daemons.harness import file_stamp, iso_time
from kubevpc.ledger import Ledger, cmdline
from kubevpc.render.nginx import Rendered, hostport, render
from kubevpc.rundir import atomic_write

NGINX = "/usr/sbin/nginx"
WORKER_USERS = ("www-data", "nobody")     # NGINX's workers run as the first that exists (Debian's is www-data)


def worker_user() -> str | None:
    """The unprivileged user NGINX's workers run as, when the master runs as root."""
    import pwd
    for name in WORKER_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


POLL = 0.2                # seconds between checks of the state file and of NGINX
READY_DEADLINE = 10.0     # NGINX must accept connections within this after it starts
TEST_DEADLINE = 20.0      # nginx -t
RELOAD_DEADLINE = 5.0     # a reload must have replaced the workers within this
QUIT_DEADLINE = 5.0       # graceful stop (SIGQUIT), then fast stop (SIGTERM), then SIGKILL
PR_SET_PDEATHSIG = 1


class NginxError(Exception):
    """NGINX refused a configuration or could not be started."""


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (NGINX's workers, for the master)."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return kids


NGINX_ERROR = re.compile(r"\[(emerg|alert|crit)\] (?:\d+#\d+: )?(.*)")


def _nginx_errors(text: str) -> list[str]:
    """NGINX's serious messages in ``text``, without its time and pid prefix."""
    return [f"[{m[1]}] {m[2]}" for m in map(NGINX_ERROR.search, text.splitlines()) if m]


class Controller:
    """Keeps one NGINX serving the state file's configuration (``args``: the options of
    ``python -m kubevpc.daemons.ingress run``)."""

    def __init__(self, args: argparse.Namespace, log: logging.Logger) -> None:
        self.state_path: str = args.state
        self.dir = os.path.abspath(args.dir)
        self.run_name: str = args.run
        self.status_path: str | None = args.status
        self.nginx_bin: str = args.nginx
        self.ledger = None if args.no_ledger else Ledger(args.run)
        self.log = log
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.candidate = os.path.join(self.dir, "nginx.conf.candidate")
        self.error_log = os.path.join(self.dir, "error.log")
        self.user = worker_user() if os.geteuid() == 0 else None
        self.stopping = False     # set by the signal handler: a plain flag, no lock
        self.nginx: subprocess.Popen | None = None
        self.workers: set[int] = set()
        self.stamp = file_stamp(self.state_path)
        self.served: Rendered | None = None
        self.generation: int | None = None
        self.seen: int | None = None             # the last state generation handled, applied or not
        self.ok, self.error, self.warnings, self.reloads = True, "", [], 0

    def stop(self) -> None:
        """Ask the controller to stop (signal handler)."""
        self.stopping = True

    # -- configuration --

    def _nginx_cmd(self, conf: str, *extra: str) -> list[str]:
        # -g puts the run's name on NGINX's command line: the ledger's token, wherever --dir is
        return [self.nginx_bin, *extra, "-c", conf, "-p", self.dir + "/", "-g", f"env KUBEVPC_RUN={self.run_name};"]

    def _load(self) -> dict:
        """The state document; OSError or ValueError when it cannot be read or is not an object."""
        with open(self.state_path, encoding="utf-8") as fh:
            state = json.load(fh)
        if not isinstance(state, dict):
            raise ValueError("the state document is not a JSON object")
        return state

    def _install(self, rendered: Rendered) -> None:
        """Write the files and the configuration, test it with nginx -t, and only then move it
        into place as nginx.conf; NginxError with NGINX's complaint otherwise."""
        for path, data in rendered.files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                atomic_write(path, data, 0o600 if path.endswith(".key") else 0o644, umask=True)
        atomic_write(self.conf, rendered.text, 0o644, umask=True, tmp=self.candidate, check=self._test)

    def _test(self, conf: str) -> None:
        """nginx -t of a configuration file; NginxError with NGINX's complaint."""
        try:
            res = subprocess.run(self._nginx_cmd(conf, "-t", "-q"), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=TEST_DEADLINE)
        except subprocess.TimeoutExpired:
            raise NginxError(f"nginx -t did not finish within {TEST_DEADLINE:g} s") from None
        if res.returncode != 0:
            raise NginxError("; ".join(_nginx_errors(res.stderr) or res.stderr.splitlines()
                                       or [f"nginx -t exited {res.returncode}"]))

    def _prune(self, rendered: Rendered) -> None:
        """Remove certificate files the served configuration no longer names."""
        certs = os.path.join(self.dir, "certs")
        for name in os.listdir(certs) if os.path.isdir(certs) else []:
            path = os.path.join(certs, name)
            if path not in rendered.files:
                os.unlink(path)

    def _errors_since(self, offset: int) -> list[str]:
        try:
            with open(self.error_log, "rb") as fh:
                fh.seek(offset)
                return _nginx_errors(fh.read().decode(errors="replace"))
        except OSError:
            return []

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.error_log)
        except OSError:
            return 0

    # -- NGINX --

    def start(self) -> None:
        """Serve the state file: render, test, start NGINX and wait until it accepts connections.
        A first configuration that NGINX refuses is replaced by the same state without Ingresses
        (every request then gets the 404 default backend) and reported in the status."""
        os.makedirs(self.dir, exist_ok=True)
        state = self._load()
        rendered = render(state, self.dir, user=self.user)
        self.seen = rendered.generation
        try:
            self._install(rendered)
            self.generation, self.warnings = rendered.generation, rendered.warnings
        except NginxError as exc:
            self._failed(rendered, str(exc))
            rendered = render({**state, "ingresses": []}, self.dir, user=self.user)
            self._install(rendered)
        self._log_rendered(rendered)
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        with open(self.error_log, "ab") as errlog:
            # PR_SET_PDEATHSIG: NGINX gets a fast stop (SIGTERM) if the controller dies, even by SIGKILL
            self.nginx = subprocess.Popen(self._nginx_cmd(self.conf), stdin=subprocess.DEVNULL, stdout=errlog,
                                          stderr=errlog, cwd=self.dir,
                                          preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
        if self.ledger is not None:
            self.ledger.record("process", self.nginx.pid, token=self.run_name)
        self.log.info("nginx master pid %d: %s", self.nginx.pid, " ".join(self.nginx.args))
        self._wait_ready(rendered)
        self.served = rendered
        self._prune(rendered)
        self.workers = _children(self.nginx.pid)
        self.write_status()

    def _wait_ready(self, rendered: Rendered) -> None:
        """Until NGINX accepts a TCP connection on its first HTTP address (loopback for a
        wildcard one); NginxError if it exits or the deadline passes first."""
        ip = ipaddress.ip_address(rendered.listen[0])
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        address = hostport(str(ip), rendered.http_port)
        end = time.monotonic() + READY_DEADLINE
        assert self.nginx is not None
        while not self.stopping:
            if self.nginx.poll() is not None:
                raise NginxError(f"nginx exited with status {self.nginx.returncode}: "
                                 + ("; ".join(self._errors_since(0)[-3:]) or "no error logged"))
            try:
                socket.create_connection((str(ip), rendered.http_port), timeout=0.5).close()
                self.log.info("nginx accepts connections on %s", address)
                return
            except OSError:
                if time.monotonic() >= end:
                    raise NginxError(f"nginx does not accept connections on {address} "
                                     f"within {READY_DEADLINE:g} s") from None
            time.sleep(0.02)

    def _reload(self) -> None:
        """SIGHUP the master and wait until the new configuration takes every new connection: a
        new worker runs and each old one has gone or is shutting down (it then finishes its
        requests without accepting more). NginxError if NGINX refused the configuration."""
        assert self.nginx is not None
        before, offset = _children(self.nginx.pid), self._log_size()
        self.nginx.send_signal(signal.SIGHUP)
        end = time.monotonic() + RELOAD_DEADLINE
        while True:
            if self.nginx.poll() is not None:
                raise NginxError(f"nginx exited during the reload with status {self.nginx.returncode}")
            kids = _children(self.nginx.pid)
            if kids - before and all(b"shutting down" in cmdline(pid) for pid in kids & before):
                self.workers = kids
                return
            errors = self._errors_since(offset)
            if errors:
                raise NginxError("; ".join(errors))
            if time.monotonic() >= end:
                raise NginxError(f"nginx started no new worker within {RELOAD_DEADLINE:g} s of the reload")
            time.sleep(0.02)

    def apply(self) -> None:
        """Serve the state file's new content if NGINX accepts it; else keep the last good one."""
        try:
            rendered = render(self._load(), self.dir, user=self.user)
        except (OSError, ValueError) as exc:
            self._failed(None, f"state file {self.state_path}: {exc}")
            return
        self.seen = rendered.generation
        assert self.served is not None
        if rendered.text == self.served.text and rendered.files == self.served.files:
            self.generation, self.ok, self.error, self.warnings = rendered.generation, True, "", rendered.warnings
            self.log.info("generation %d: configuration unchanged", rendered.generation)
            self.write_status()
            return
        try:
            self._install(rendered)
            self._reload()
        except NginxError as exc:
            self._failed(rendered, str(exc))
            return
        self.served, self.generation, self.reloads = rendered, rendered.generation, self.reloads + 1
        self.ok, self.error, self.warnings = True, "", rendered.warnings
        self._prune(rendered)
        self.log.info("applied generation %d", rendered.generation)
        self._log_rendered(rendered)
        self.write_status()

    def _failed(self, rendered: Rendered | None, error: str) -> None:
        what = f"generation {rendered.generation}" if rendered else "the state"
        serving = "no Ingress" if self.generation is None else f"generation {self.generation}"
        self.ok, self.error = False, error
        self.warnings = rendered.warnings if rendered else self.warnings
        self.log.error("%s not applied, serving %s: %s", what, serving, error)
        self.write_status()

    def _log_rendered(self, rendered: Rendered) -> None:
        self.log.info("generation %d: %d server(s), %d location(s), %d certificate(s)", rendered.generation,
                      len(rendered.servers), sum(len(s.locations) for s in rendered.servers),
                      len(rendered.files) // 2)
        for warning in rendered.warnings:
            self.log.warning("warning: %s", warning)

    def write_status(self) -> None:
        if not self.status_path:
            return
        status = {"generation": self.generation, "seen": self.seen, "ok": self.ok, "error": self.error, "warnings": self.warnings,
                  "nginx_pid": self.nginx.pid if self.nginx else None, "reloads": self.reloads,
                  "time": iso_time(time.time())}
        atomic_write(self.status_path, json.dumps(status, indent=1) + "\n", 0o644, umask=True)

    def watch(self) -> int:
        """Follow the state file until asked to stop (0) or until NGINX dies (1)."""
        assert self.nginx is not None
        while not self.stopping:
            if self.nginx.poll() is not None:
                self.log.error("nginx (pid %d) exited unexpectedly with status %d: %s", self.nginx.pid,
                               self.nginx.returncode, "; ".join(self._errors_since(0)[-3:]) or "no error logged")
                self.ok, self.error = False, f"nginx exited with status {self.nginx.returncode}"
                self.write_status()
                self._stop_orphans()
                return 1
            stamp = file_stamp(self.state_path)
            if stamp is not None and stamp != self.stamp:
                self.stamp = stamp
                self.apply()
            time.sleep(POLL)
        self.shutdown()
        return 0

    def _stop_orphans(self) -> None:
        """Workers outlive a master killed with SIGKILL: stop those we know, still NGINX workers."""
        orphans = [pid for pid in self.workers if cmdline(pid).startswith(b"nginx: worker process")]
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        if orphans:
            self.log.info("killed orphaned nginx worker(s) %s", ", ".join(map(str, orphans)))

    def shutdown(self) -> None:
        """Stop NGINX: graceful quit, then fast stop, then SIGKILL, each after a deadline."""
        if self.nginx is None or self.nginx.poll() is not None:
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            self.nginx.send_signal(sig)
            try:
                self.nginx.wait(QUIT_DEADLINE)
                break
            except subprocess.TimeoutExpired:
                self.log.error("nginx (pid %d) still running %g s after %s", self.nginx.pid, QUIT_DEADLINE,
                               signal.Signals(sig).name)
        self.log.info("nginx (pid %d) stopped", self.nginx.pid)
