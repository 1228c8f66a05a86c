"""SLB (Alibaba Cloud CLB) listener settings from ACK Service annotations, and the health checker.

Two parts:

* ``slb_config(annotations)`` reads the ``service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*``
  annotations that ACK's cloud-controller-manager (CCM) turns into a CLB listener, applies the
  defaults Alibaba applies when they are absent and checks the ranges Alibaba enforces.
* ``python -m kubevpc.slb check`` probes the backends of every listener, as the CLB nodes do, and
  keeps a state file saying which backends are in rotation.

What this relies on, and where sources disagree:

* Annotation names, the legacy ``alicloud-`` spelling (still accepted; the ``alibaba-cloud-`` one
  wins when both are set), values, ranges and defaults: kubernetes/cloud-provider-alibaba-cloud,
  docs/usage.md ("Annotation list") and pkg/controller/service/reconcile/annotation/annotations.go.
  address-type internet|intranet, default internet. health-check-type tcp|http, default tcp.
  healthy-threshold and unhealthy-threshold 2-10, default 3. health-check-interval 1-50 s,
  default 2. health-check-connect-timeout and health-check-timeout 1-300 s, default 5; "if the
  timeout is less than the interval, the timeout is invalid and equals the interval".
  health-check-domain ``$_ip`` (the backend's private IP, also the default) or 1-80 letters,
  digits, '.' and '-'. health-check-connect-port -520 (the backend port) or 1-65535.
  health-check-httpcode http_2xx|http_3xx|http_4xx|http_5xx, comma-separated, default http_2xx.
* The same limits and defaults in the CLB API, CreateLoadBalancerTCPListener (the doc comments of
  the alibabacloud-go SDK): HealthCheckConnectTimeout 1-300 default 5, HealthCheckInterval 1-50,
  thresholds 2-10, HealthCheckHttpCode default http_2xx, HealthCheckURI starts with '/' and is at
  most 80 characters of letters, digits and ``-/.%#&``, but not '/' alone, and without it a TCP
  listener checks by TCP. We are laxer: we also accept ``?=_~`` (HTTP listeners' URIs) and '/',
  which is the default URI of an http check here (the server's homepage, as HTTP listeners
  check by default). A TCP listener (what a Service port becomes) has no HealthCheckTimeout: its HealthCheckConnectTimeout bounds HTTP checks too. So
  with health-check-type http and only health-check-connect-timeout set, that value is the HTTP
  timeout here; health-check-timeout, the HTTP listener's field, wins when set.
* Scheduler: usage.md and the API say the default is wrr, but the CCM code
  (clbv1/listeners.go, setDefaultValueForListener) sets rr when the annotation is absent ("when
  the weight values are equal, the rr algorithm is better than the wrr algorithm"). We follow
  the code: rr. Only rr, wrr and wlc are accepted (sch and tch exist only on high-performance
  instances).
* Healthy HTTP status codes: an older console page (doc-detail/55477) says http_2xx and
  http_3xx; the API, usage.md and the CCM annotation say http_2xx. We follow the API: http_2xx.
* HTTP check method: "HEAD (default) or GET" (Alibaba Cloud, "Configure and manage CLB health
  checks"); the annotation is health-check-method. The HTTP version is not documented for
  CLB: we send HTTP/1.0 with a Host header (the domain, or the backend's IP).
* Recommended profile for TCP, HTTP and HTTPS listeners: response timeout 5 s, interval 2 s,
  healthy and unhealthy thresholds 3 (Alibaba Cloud, "FAQ about CLB health checks"); these are
  the defaults above.
* Timing: "failure time window = response timeout x unhealthy threshold + interval x (unhealthy
  threshold - 1)" (help.aliyun.com, CLB health check time window). Checks of one backend are
  therefore sequential: the next one starts ``interval`` after the previous one ended. The
  checker does exactly that, per backend, so a slow backend never delays the others.
* A new backend: CLB's DescribeHealthStatus has normal, abnormal and "unavailable" (the check
  has not completed), and Alibaba's ALB documentation says a backend must pass the healthy
  threshold of consecutive checks before it is declared healthy. So a backend starts
  ``initial``, out of rotation, and becomes ``healthy`` after ``healthy_threshold`` consecutive
  successes (or ``unhealthy`` after ``unhealthy_threshold`` consecutive failures).

Annotations of the prefix that kubevpc does not emulate (bandwidth, spec, acl-*, health-check-flag,
...) are ignored and reported in ``SlbConfig.warnings``: users paste production manifests.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubevpc.errors import KubevpcError
from kubevpc.rundir import atomic_write
from kubevpc.server import file_stamp, open_log, write_ready_file

PREFIX = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
LEGACY_PREFIX = "service.beta.kubernetes.io/alicloud-loadbalancer-"

DEFAULT_INTERVAL = 2
DEFAULT_TIMEOUT = 5
DEFAULT_THRESHOLD = 3
HttpCode = Literal["http_2xx", "http_3xx", "http_4xx", "http_5xx"]
HTTP_CODES: tuple[str, ...] = get_args(HttpCode)
DEFAULT_HTTP_CODES: tuple[HttpCode, ...] = ("http_2xx",)


# -- annotations --------------------------------------------------------------


@dataclass(frozen=True)
class AnnotationProblem:
    """One invalid annotation: its full key, the value as written, what was expected."""

    key: str
    value: str
    expected: str

    @property
    def path(self) -> str:
        return f"metadata.annotations.{self.key}"

    def __str__(self) -> str:
        return f"{self.path}: {self.value!r}: {self.expected}"


class SlbAnnotationError(KubevpcError):
    """Every invalid SLB annotation of one Service, found in one pass."""

    def __init__(self, problems: Sequence[AnnotationProblem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SlbConfig(BaseModel):
    """The SLB listener settings of one LoadBalancer Service, Alibaba's defaults filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address_type: Literal["internet", "intranet"] = "internet"
    scheduler: Literal["rr", "wrr", "wlc"] = "rr"
    check_type: Literal["tcp", "http"] = "tcp"
    interval: int = Field(default=DEFAULT_INTERVAL, ge=1, le=50)
    connect_timeout: int = Field(default=DEFAULT_TIMEOUT, ge=1, le=300)
    timeout: int = Field(default=DEFAULT_TIMEOUT, ge=1, le=300)  # HTTP checks
    healthy_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=2, le=10)
    unhealthy_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=2, le=10)
    uri: str = "/"
    domain: str | None = None  # None: the backend's IP, like "$_ip"
    connect_port: int | None = Field(default=None, ge=1, le=65535)  # None: the backend port
    http_codes: tuple[HttpCode, ...] = DEFAULT_HTTP_CODES
    method: Literal["head", "get"] = "head"
    warnings: tuple[str, ...] = ()  # "path: value: why ignored", one per unused annotation

    def health_check(self) -> "CheckSpec":
        """The checker's settings, with Alibaba's rule that a timeout is at least the interval."""
        return CheckSpec(
            type=self.check_type,
            interval=self.interval,
            connect_timeout=max(self.connect_timeout, self.interval),
            timeout=max(self.timeout, self.interval),
            healthy_threshold=self.healthy_threshold,
            unhealthy_threshold=self.unhealthy_threshold,
            uri=self.uri,
            domain=self.domain or "",
            http_codes=self.http_codes,
            method=self.method.upper(),
        )


class _Invalid(ValueError):
    """A value parser's refusal; its message says what was expected."""


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise _Invalid(f"one of {', '.join(allowed)}")
        return value
    return parse


def _int_range(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    expected = f"an integer from {low} to {high}{' ' + unit if unit else ''}"

    def parse(value: str) -> int:
        if not re.fullmatch(r"[+-]?\d+", value) or not low <= int(value) <= high:
            raise _Invalid(expected)
        return int(value)
    return parse


URI = re.compile(r"/[A-Za-z0-9\-/.%#&?=_~]*")
DOMAIN = re.compile(r"[A-Za-z0-9.\-]{1,80}")


def _uri(value: str) -> str:
    if len(value) > 80 or not URI.fullmatch(value):
        raise _Invalid("a path starting with '/', at most 80 letters, digits and -/.%#&?=_~")
    return value


def _domain(value: str) -> str | None:
    if value == "$_ip":
        return None
    if not DOMAIN.fullmatch(value):
        raise _Invalid("$_ip, or a domain of 1 to 80 letters, digits, '.' and '-'")
    return value


def _connect_port(value: str) -> int | None:
    if value == "-520":
        return None  # Alibaba's spelling of "the backend port"
    try:
        return _int_range(1, 65535)(value)
    except _Invalid:
        raise _Invalid("-520 (the backend port) or an integer from 1 to 65535") from None


def _http_codes(value: str) -> tuple[str, ...]:
    codes = tuple(c.strip() for c in value.split(","))
    if not all(c in HTTP_CODES for c in codes):
        raise _Invalid(f"a comma-separated list of {', '.join(HTTP_CODES)}")
    return codes


# annotation suffix -> (SlbConfig field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "address-type": ("address_type", _choice("internet", "intranet")),
    "scheduler": ("scheduler", _choice("rr", "wrr", "wlc")),
    "health-check-type": ("check_type", _choice("tcp", "http")),
    "health-check-interval": ("interval", _int_range(1, 50, "(seconds)")),
    "health-check-connect-timeout": ("connect_timeout", _int_range(1, 300, "(seconds)")),
    "health-check-timeout": ("timeout", _int_range(1, 300, "(seconds)")),
    "healthy-threshold": ("healthy_threshold", _int_range(2, 10)),
    "unhealthy-threshold": ("unhealthy_threshold", _int_range(2, 10)),
    "health-check-uri": ("uri", _uri),
    "health-check-domain": ("domain", _domain),
    "health-check-connect-port": ("connect_port", _connect_port),
    "health-check-httpcode": ("http_codes", _http_codes),
    "health-check-method": ("method", _choice("head", "get")),
}
HTTP_ONLY = ("health-check-uri", "health-check-domain", "health-check-timeout",
             "health-check-httpcode", "health-check-method")


def _slb_annotations(annotations: dict[str, str]) -> dict[str, tuple[str, str]]:
    """suffix -> (full key, value) for every SLB annotation; the new prefix beats the legacy one."""
    found: dict[str, tuple[str, str]] = {}
    for prefix in (LEGACY_PREFIX, PREFIX):
        for key in sorted(annotations):
            if key.startswith(prefix):
                found[key[len(prefix):]] = (key, str(annotations[key]))
    return found


def slb_config(annotations: dict[str, str]) -> SlbConfig:
    """Read a Service's SLB annotations; raise SlbAnnotationError listing every bad one."""
    given = _slb_annotations(annotations)
    values: dict[str, object] = {}
    problems: list[AnnotationProblem] = []
    warnings: list[str] = []
    for suffix, (key, raw) in sorted(given.items()):
        if suffix not in _PARSERS:
            warnings.append(f"metadata.annotations.{key}: {raw!r}: not emulated by kubevpc, ignored")
            continue
        field, parse = _PARSERS[suffix]
        try:
            values[field] = parse(raw)
        except _Invalid as exc:
            problems.append(AnnotationProblem(key, raw, str(exc)))
    # With an invalid health-check-type we cannot tell which keys apply: that error suffices.
    type_invalid = "health-check-type" in given and "check_type" not in values
    if not type_invalid and values.get("check_type", "tcp") == "tcp":
        already = {p.key for p in problems}
        for suffix in HTTP_ONLY:
            if suffix in given and given[suffix][0] not in already:
                key, raw = given[suffix]
                problems.append(AnnotationProblem(
                    key, raw, "only valid with health-check-type http (this Service's is tcp)"))
    if problems:
        raise SlbAnnotationError(problems)
    if values.get("check_type") == "http" and "timeout" not in values and "connect_timeout" in values:
        values["timeout"] = values["connect_timeout"]  # a TCP listener's only HTTP timeout
    return SlbConfig(**values, warnings=tuple(warnings))


# -- the checker's configuration ------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckSpec(_Spec):
    """How one listener probes its backends. Seconds may be fractional, so tests run fast."""

    type: Literal["tcp", "http"] = "tcp"
    interval: float = Field(default=DEFAULT_INTERVAL, gt=0)
    connect_timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)  # tcp checks
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)  # http checks, the whole exchange
    healthy_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=1)
    unhealthy_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=1)
    uri: str = "/"
    domain: str = ""  # Host header; empty: the backend's IP
    http_codes: tuple[HttpCode, ...] = DEFAULT_HTTP_CODES
    method: Literal["HEAD", "GET"] = "HEAD"

    @property
    def probe_timeout(self) -> float:
        return self.timeout if self.type == "http" else self.connect_timeout


class BackendSpec(_Spec):
    id: str
    ip: str
    port: int = Field(ge=1, le=65535)  # the port probed: node port or health-check port

    @field_validator("ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        return str(ipaddress.IPv4Address(value))  # its ValueError is reported with the path

    @property
    def key(self) -> str:
        return f"{self.ip}:{self.port}"


class ListenerSpec(_Spec):
    name: str  # e.g. "ns/svc:80/TCP"
    check: CheckSpec = CheckSpec()
    backends: list[BackendSpec] = []

    @model_validator(mode="after")
    def _check(self) -> "ListenerSpec":
        keys = [b.key for b in self.backends]
        dups = sorted({k for k in keys if keys.count(k) > 1})
        if dups:
            raise ValueError(f"backend {dups[0]} is listed twice")
        return self


class CheckerConfig(_Spec):
    listeners: list[ListenerSpec] = []

    @model_validator(mode="after")
    def _check(self) -> "CheckerConfig":
        names = [lst.name for lst in self.listeners]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"listener {dups[0]!r} is listed twice")
        return self


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubevpc.slb",
        description="Alibaba Cloud SLB emulation: the backend health checker.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="probe the backends of every listener and keep a state file of their health",
        description=(
            "Probe every backend of every listener in the JSON config (TCP connect, or an HTTP "
            "request whose status must match the listener's http_codes), apply the healthy and "
            "unhealthy thresholds, log each transition and keep the state file current. The "
            "config is re-read when it changes; SIGTERM or SIGINT stops."
        ),
    )
    check.add_argument("--config", required=True, metavar="FILE", help="listeners and backends (JSON)")
    check.add_argument("--state", required=True, metavar="FILE", help="health state, rewritten atomically")
    check.add_argument("--log", metavar="FILE", help="transition log (default: standard error)")
    check.add_argument("--ready", metavar="FILE", help="once the first state is written, write our pid here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = open_log("kubevpc.slb", args.log)
    try:
        checker = Checker(Path(args.config), Path(args.state), log)
    except CheckerConfigError as exc:
        print(f"kubevpc.slb: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: checker.stop())
    checker.write_state()
    if args.ready:
        write_ready_file(args.ready)
    checker.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
