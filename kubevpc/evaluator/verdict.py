"""The evaluator's answers: a Verdict (allowed or not, the reason, the client address the server
sees) and the chain of Steps that led to it, which `kubevpc explain` prints; a Wire is a packet as
the vSwitches see it. Shared by every part of the evaluator (kubevpc.evaluator)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One link of the evaluator's chain: where it looked (`stage`), what it found, and whether the
    connection passes there: True, False (it stops here), or None for a fact on the way (a route,
    a translation)."""

    stage: str
    text: str
    passes: bool | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    seen_source: str = ""       # the client address the server should see, when allowed
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Wire:
    """A packet as the vSwitches see it: source and destination address and their ports."""

    src_ip: str
    dst_ip: str
    proto: str                  # tcp | udp
    port: int
