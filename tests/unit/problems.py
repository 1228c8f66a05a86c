"""Assertions on scenario problems, shared by the validation tests."""
from __future__ import annotations

from pathlib import Path

from kubevpc.errors import Problem


def line_of(text: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first line holding `needle` (after the first line holding `after`)."""
    lines = text.splitlines()
    start = 0
    if after is not None:
        start = next(i for i, line in enumerate(lines) if after in line) + 1
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i + 1
    raise AssertionError(f"{needle!r} not in the written scenario")


def the(problems: list[Problem], path: str) -> Problem:
    """The one problem at `path`; fails with every problem shown if there is not exactly one."""
    hits = [p for p in problems if p.path == path]
    assert len(hits) == 1, f"expected one problem at {path}, got:\n" + "\n".join(map(str, problems))
    return hits[0]


def check(problem: Problem, file: Path, value: object, line: int, *words: str) -> None:
    """The problem names the file, the value, the line, and says what was expected."""
    assert problem.file == str(file)
    assert problem.value == value
    assert problem.line == line, f"line {problem.line}, expected {line}: {problem}"
    text = problem.expected.lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {problem.expected!r}"
    # the rendered form carries all of it, as the command line shows it
    shown = str(problem)
    assert f"{file}:{line}" in shown and problem.path in shown
