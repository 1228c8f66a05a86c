"""Errors raised by library code. Only the command line turns them into exit codes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario: where it is, what it holds, what was expected."""

    file: str
    path: str          # dotted path into the document, e.g. cloud.vpcs[0].cidr
    value: object      # the offending value as written
    expected: str      # what would have been accepted, or why it is wrong
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        shown = repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{where}: {self.path or '<top>'}: {shown}: {self.expected}"


class KubevpcError(Exception):
    """Base class of every error this package raises on purpose."""


class ScenarioError(KubevpcError):
    """A scenario failed validation. Nothing was built."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BuildError(KubevpcError):
    """Building or starting part of the emulated network failed."""


class DeadlineError(KubevpcError):
    """Something we waited for did not happen in time."""
