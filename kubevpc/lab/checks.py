"""Running the checks of a scenario (kubevpc.evaluator.checks) on its network: every probe in
parallel, each outcome compared with what the evaluator expects, and with the client address the
server saw."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..evaluator.checks import Check
from .lab import Lab, Probe


@dataclass(frozen=True)
class Outcome:
    check: Check
    outcome: str            # answered | refused | timeout | ...
    connected: bool
    client: str             # the address the server saw
    elapsed_ms: float
    note: str = ""          # for a connection that failed: the destination's server is not running

    @property
    def why(self) -> str:
        """The evaluator's reason, and what the run knows of a failure besides."""
        return f"{self.check.reason}; but {self.note}" if self.note else self.check.reason

    @property
    def passed(self) -> bool:
        if self.connected != self.check.expect:
            return False
        return not self.connected or not self.check.seen_source or self.client == self.check.seen_source

    def as_dict(self) -> dict:
        return {**asdict(self.check), "outcome": self.outcome, "connected": self.connected,
                "client": self.client, "elapsed_ms": round(self.elapsed_ms, 1), "passed": self.passed,
                "note": self.note}


def run_checks(lab: Lab, checks: list[Check], timeout: float = 1.5) -> list[Outcome]:
    probes = [Probe(c.source, c.dest, c.port, c.proto, family=c.family) for c in checks]
    results = lab.probe(probes, timeout=timeout)
    out = []
    for c, r in zip(checks, results):
        client = (r.answer or {}).get("client", "")
        note = lab.down_reason(c.dest) if not r.ok else ""
        seen = client.rsplit(":", 1)[0].strip("[]") if client else ""
        out.append(Outcome(c, r.outcome, r.ok, seen, r.elapsed_ms, note))
    return out
