"""SLB (Alibaba Cloud CLB) listener settings from ACK Service annotations, and the configuration
of the SLB health checker (kubevpc.daemons.slb) they make.

``slb_config(annotations)`` reads the ``service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*``
annotations that ACK's cloud-controller-manager (CCM) turns into a CLB listener, applies the
defaults Alibaba applies when they are absent and checks the ranges Alibaba enforces.
:class:`CheckerConfig` is the checker's configuration file: listeners, their check, their backends.

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
* Recommended profile for TCP, HTTP and HTTPS listeners: response timeout 5 s, interval 2 s,
  healthy and unhealthy thresholds 3 (Alibaba Cloud, "FAQ about CLB health checks"); these are
  the defaults above.

Annotations of the prefix that kubevpc does not emulate (bandwidth, spec, acl-*, health-check-flag,
...) are ignored and reported in ``SlbConfig.warnings``: users paste production manifests.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kubevpc.errors import KubevpcError

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


def checker_config(slb: Any) -> dict:
    """The health checker's configuration for one SLB of the plan: every listener, probing each
    backend at its check port."""
    return {"listeners": [{"name": li.name, "check": slb.check,
                           "backends": [{"id": b.id, "ip": b.ip, "port": b.check_port} for b in li.backends]}
                          for li in slb.listeners]}
