"""Change -> datapath follows: the time until traffic really takes the new path, seen by probes.

The controller programming every bridge (the Lab's `flows_updated_s`) is not yet the datapath
doing it: Open vSwitch's datapath keeps forwarding by the flows cached before the change until
its revalidators have been through them (issue 21). So beside a change, a stream of new
connections (kubevpc/bench/follow_probe.py, in the client's namespace: one every 10 ms, each with
its own source port and a 0.3 s deadline) goes to a destination whose behaviour the change
moves: a NetworkPolicy that denies it or allows it again, an endpoint taken out of a Service.
Each probe is classified by `Classify`: the old behaviour, the new one, or neither (tells
nothing: an error, or an answer both would give). The datapath followed at the start of the
first probe after the last one that still behaved the old way, counted from the moment the
change was asked for, once the new behaviour has held for SETTLE_S of probe starts; a change
whose probes still see the old behaviour DEADLINE_S after it did not follow.

followed_at() and saw_old() are pure (unit-tested); Follower runs the stream beside a Lab.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from typing import Callable

from kubevpc.errors import KubevpcError
from kubevpc.lab.servers import ROOT

INTERVAL_S = 0.01           # between probe starts
PROBE_TIMEOUT_S = 0.3       # each probe's deadline: a dropped SYN is a timeout after this
SETTLE_S = 0.3              # the new behaviour held this long (of probe starts): the change is through
DEADLINE_S = 5.0            # after the change: not followed by then is a failure
LEAD_S = 3.0                # at most this long before the change, to see the old behaviour
MIN_OLD = 3                 # probes that behaved the old way before the change, at least
MARGIN_S = 0.1              # a probe has reported this long after its deadline (a busy machine)
MAX_PORTS = 1200            # source ports a stream may take from the Lab's blocks: a longer one probes less
                            # often, so that the blocks come round again only after conntrack forgot them
OLD, NEW = "old", "new"

Classify = Callable[[dict], "str | None"]


def connects(before: bool) -> Classify:
    """A change that stops (before=True) or starts (before=False) a connection: a probe that
    answered behaves as before if it connected before; an error tells nothing."""
    def classify(s: dict) -> str | None:
        if s.get("outcome") == "error":
            return None
        return OLD if bool(s.get("ok")) == before else NEW
    return classify


def not_answered_by(name: str) -> Classify:
    """An endpoint taken out of a Service: an answer from it is the old behaviour, an answer from
    another endpoint the new one (both come before the change too: the choice is random)."""
    def classify(s: dict) -> str | None:
        if not s.get("ok"):
            return None
        return OLD if s.get("name") == name else NEW
    return classify


def _classified(samples: list[dict], classify: Classify, horizon: float) -> list[tuple[float, str]]:
    """(start, class) of the probes started by `horizon` (all of them have reported by then), in
    order of start, those that tell something."""
    out = [(s["start"], classify(s)) for s in samples if s["start"] <= horizon]
    return sorted((t, c) for t, c in out if c is not None)


def saw_old(samples: list[dict], t0: float, classify: Classify, horizon: float, least: int = MIN_OLD) -> bool:
    """Did at least `least` probes started before t0 behave the old way (the change has something
    to move)?"""
    return sum(1 for t, c in _classified(samples, classify, min(horizon, t0)) if t < t0 and c == OLD) >= least


def followed_at(samples: list[dict], t0: float, classify: Classify, horizon: float,
                settle: float = SETTLE_S) -> float | None:
    """Seconds from t0 to the start of the first probe after the last one started at or after t0
    that behaved the old way (the first probe after t0 when none did), provided a probe started at
    least `settle` after that one behaved the new way; None while that is not so. Only probes
    started by `horizon` are judged: later ones may not have reported yet."""
    after = [(t, c) for t, c in _classified(samples, classify, horizon) if t >= t0]
    last_old = max((i for i, (_, c) in enumerate(after) if c == OLD), default=-1)
    rest = after[last_old + 1:]
    if not rest:
        return None
    first = rest[0][0]
    if not any(c == NEW and t >= first + settle for t, c in rest):
        return None
    return first - t0


class Follower:
    """The probe stream from `source` (an endpoint of the Lab) to proto:ip:port, beside one change."""

    def __init__(self, lab, source: str, ip: str, port: int, proto: str = "tcp", deadline: float = DEADLINE_S,
                 interval: float = INTERVAL_S, timeout: float = PROBE_TIMEOUT_S):
        self.lab, self.source, self.target = lab, source, f"{proto}:{ip}:{port}"
        self.duration = LEAD_S + deadline + SETTLE_S + timeout + 2       # it is stopped long before, mostly
        self.deadline, self.interval, self.timeout = deadline, max(interval, self.duration / MAX_PORTS), timeout
        self.samples: list[dict] = []

    def _start(self) -> subprocess.Popen:
        duration = self.duration
        first, last = self.lab.source_ports.take(math.ceil(duration / self.interval))
        proc = self.lab.popen(self.source, [
            sys.executable, "-m", "kubevpc.bench.follow_probe", "--interval", str(self.interval),
            "--timeout", str(self.timeout), "--duration", str(duration), "--source-ports", f"{first}:{last}",
            self.target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        return proc

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                self.samples.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def _horizon(self) -> float:
        return time.monotonic() - self.timeout - MARGIN_S

    def measure(self, change: Callable[[], dict], classify: Classify) -> dict:
        """Run `change` once the probes have seen the old behaviour; return its result with
        `follows_s` (None when the datapath did not follow within the deadline, and `follow_error`
        saying so). Fails (KubevpcError) when the old behaviour was never seen before the change."""
        proc = self._start()
        try:
            end = time.monotonic() + LEAD_S
            while not saw_old(self.samples, time.monotonic(), classify, self._horizon()):
                if time.monotonic() > end or proc.poll() is not None:
                    raise KubevpcError(f"probes {self.source} -> {self.target}: the behaviour the change should "
                                       f"move was not seen before it ({_outcomes(self.samples)}){_died(proc)}")
                time.sleep(0.02)
            t0 = time.monotonic()
            result = change()
            while (got := followed_at(self.samples, t0, classify, self._horizon())) is None:
                if time.monotonic() > t0 + self.deadline + SETTLE_S + self.timeout + MARGIN_S:
                    break
                time.sleep(0.02)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if got is None or got > self.deadline:
            return {**result, "follows_s": None, "follow_error": f"probes {self.source} -> {self.target} still saw "
                    f"the old behaviour {self.deadline:g} s after the change ({_outcomes(self.samples)})"}
        return {**result, "follows_s": got}


def _outcomes(samples: list[dict]) -> str:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.get("outcome", "?")] = counts.get(s.get("outcome", "?"), 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no probe reported"


def _died(proc: subprocess.Popen) -> str:
    """What a probe stream that ended before its time said (its last lines), or nothing."""
    if proc.poll() is None:
        return ""
    return f"; the probe stream exited {proc.returncode}: {proc.stderr.read()[-400:].strip()}"
