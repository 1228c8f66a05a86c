"""The targets of the performance issue judged in one benchmark run: each target's figure from this
run, the reference measured in the same run where the target is a ratio to one, and the verdict,
met or not met. Every benchmark ends with this table (`make perf`, `bench-change`, `bench-netpol`,
`bench-matrix`), so a run says by itself which targets it meets (docs/performance.md, "Targets").

Pure: figures in, verdict rows and their text out."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable

from rich.table import Table

AT_MOST, AT_LEAST = "<=", ">="
COLUMNS = ("target", "this run", "reference (this run)", "verdict")


@dataclass(frozen=True)
class Verdict:
    """One target judged: `figure` (None: not measured) against `limit` in the direction `op`."""

    target: str             # the words, with the limit: "vxlan: pod to pod across nodes / raw veth >= 0.4x"
    figure: float | None
    limit: float
    op: str                 # AT_MOST or AT_LEAST
    shown: str = ""         # the figure as printed, e.g. "0.45x (8.6 Gbit/s)"; default: the figure
    reference: str = "-"    # the reference of the same run, e.g. "raw veth 19.1 Gbit/s"
    why_not: str = ""       # why the target is not met whatever the figure (failed samples, wrong results)

    @property
    def met(self) -> bool:
        if self.figure is None or self.why_not or math.isnan(self.figure):
            return False
        return self.figure <= self.limit if self.op == AT_MOST else self.figure >= self.limit

    @property
    def word(self) -> str:
        """met, or not met with why: not measured, or the reason given."""
        if self.met:
            return "met"
        if self.why_not:
            return f"not met: {self.why_not}"
        return "not met" if self.figure is not None else "not met: not measured"

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met, "verdict": self.word}


def from_dict(d: dict) -> Verdict:
    """A Verdict back from as_dict() (a report read from JSON)."""
    return Verdict(d["target"], d.get("figure"), d["limit"], d["op"], d.get("shown", ""), d.get("reference", "-"),
                   d.get("why_not", ""))


def judge(target: str, figure: float | None, limit: float, op: str = AT_MOST, shown: str = "",
          reference: str = "-", why_not: str = "") -> Verdict:
    if op not in (AT_MOST, AT_LEAST):
        raise ValueError(f"op {op!r}: expected {AT_MOST!r} or {AT_LEAST!r}")
    if not shown:
        shown = "-" if figure is None else f"{figure:g}"
    return Verdict(target, figure, limit, op, shown, reference, why_not)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def percentile(values: Iterable[float], q: int) -> float | None:
    """The q-th percentile (1..99) of the values, interpolated between the samples (inclusive
    method: with fewer than 100 samples the 99th lies between the two highest); None if empty."""
    vals = sorted(values)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    return statistics.quantiles(vals, n=100, method="inclusive")[q - 1]


def rows(verdicts: Iterable[Verdict]) -> list[list[str]]:
    return [[v.target, v.shown, v.reference, v.word] for v in verdicts]


def lines(verdicts: Iterable[Verdict]) -> list[str]:
    """One line a target, for logs and the JSON-less terminal: `met: TARGET: FIGURE (reference ...)`."""
    out = []
    for v in verdicts:
        ref = f"; reference {v.reference}" if v.reference not in ("", "-") else ""
        out.append(f"{v.word}: {v.target}: {v.shown}{ref}")
    return out


def table(verdicts: Iterable[Verdict], title: str = "targets of this run") -> Table:
    """The verdict table every benchmark ends with; a met target green, a missed one red."""
    verdicts = list(verdicts)
    t = Table(title=title, title_justify="left")
    for col in COLUMNS:
        t.add_column(col, overflow="fold", justify="right" if col == "this run" else "left")
    for v, row in zip(verdicts, rows(verdicts)):
        style = "green" if v.met else "red"
        t.add_row(*row[:3], f"[{style}]{row[3]}[/{style}]")
    return t
