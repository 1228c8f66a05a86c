"""docs/cli.md, the command reference (issue 20: "a page in docs/ covers every command and option and
stays in sync with --help; a test can compare the two").

Two checks, independent of each other: docs/cli.md is exactly what kubevpc/cli/reference.py makes
of the parser; and every command and option string that `kubevpc [COMMAND...] --help` prints (the
text argparse formats, read back here) stands in that command's section of the page. The second
would catch a generator that skipped an action. Both are shown to fail when the parser changes."""
from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from kubevpc.cli import parser
from kubevpc.cli.reference import escape, render

from .golden import REPO

DOC = REPO / "docs" / "cli.md"
REGENERATE = ("docs/cli.md is out of date: regenerate it with `make docs-cli` "
              "(python -m kubevpc.cli.reference > docs/cli.md)")
HEADING = re.compile(r"^#+ (?:.*: )?`([^`]+)`$", re.M)


def help_of(ap: argparse.ArgumentParser, path: tuple[str, ...]) -> str:
    """What `kubevpc PATH... --help` prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        ap.parse_args([*path, "--help"])
    return buf.getvalue()


def listed(text: str) -> tuple[list[str], list[str]]:
    """From a --help text: the commands its COMMAND list names (indented 4), and the argument
    entries (indented 2): each option string, and each positional's name. -h/--help is left out
    (the page says once that every command takes it)."""
    commands, entries, section = [], [], ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section = line
            continue
        m = re.match(r"^ {4}(\S+)", line)
        if m and section == "positional arguments:":
            commands.append(m.group(1))
            continue
        m = re.match(r"^ {2}(\S.*?)(?: {2,}|$)", line)
        if not m or (section != "positional arguments:" and not m.group(1).startswith("-")):
            continue
        invocation = m.group(1)
        if invocation.startswith("-") and not invocation.startswith("-- "):
            entries += [piece.split(" ")[0] for piece in invocation.split(", ")]
        else:
            entries.append(invocation)
    return commands, [e for e in entries if e not in ("-h", "--help")]


def doc_sections(text: str) -> dict[str, str]:
    """The page's sections, by the command (prog) their heading names."""
    heads = list(HEADING.finditer(text))
    ends = [h.start() for h in heads[1:]] + [len(text)]
    return {h.group(1): text[h.end():end].replace("\\|", "|") for h, end in zip(heads, ends)}


def missing(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """Every command and argument --help shows that the page does not have in the command's section."""
    sections, gaps, todo = doc_sections(text), [], [()]
    while todo:
        path = todo.pop(0)
        prog = " ".join(("kubevpc", *path))
        commands, entries = listed(help_of(ap, path))
        todo += [(*path, c) for c in commands]
        if prog not in sections:
            gaps.append(f"{prog}: no section")
            continue
        gaps += [f"{prog}: {e}" for e in entries if f"`{e}`" not in sections[prog]]
    return gaps


def test_docs_cli_md_is_what_the_parser_says():
    assert DOC.read_text() == render(parser()), REGENERATE


def test_every_command_and_option_of_help_is_in_its_section():
    text = DOC.read_text()
    assert missing(parser(), text) == []
    ap = parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    progs = {"kubevpc"} | {p.prog for p in sub.choices.values()} | {"kubevpc import terraform"}
    assert set(doc_sections(text)) == progs          # a section per command, none for a command gone


def test_the_help_check_reads_what_help_prints():
    """The reader of --help finds what it must: nested commands, positionals, every option string."""
    commands, entries = listed(help_of(parser(), ()))
    assert commands[:3] == ["validate", "plan", "flows"] and "start-server" in commands and "perf" in commands
    assert entries == ["COMMAND", "--version", "-v", "--verbose"]
    assert listed(help_of(parser(), ("import",)))[0] == ["terraform"]
    _, entries = listed(help_of(parser(), ("check",)))
    assert {"FILE", "-o", "--output", "--json", "--junit", "--matrix", "--family"} <= set(entries)
    assert "-- COMMAND" in listed(help_of(parser(), ("exec",)))[1]


def _mutated() -> argparse.ArgumentParser:
    """A parser of its own with one option more, on `plan`."""
    ap = parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["plan"].add_argument("--frobnicate", metavar="N", help="an option the page does not have")
    return ap


def test_a_new_option_makes_both_checks_fail():
    text = DOC.read_text()
    assert render(_mutated()) != text
    assert missing(_mutated(), text) == ["kubevpc plan: --frobnicate"]


def test_a_generator_that_skipped_an_action_would_be_caught():
    text = DOC.read_text()
    plan = text.index("## `kubevpc plan`")
    row = text.index("| `--allow-dir`", plan)
    skipped = text[:row] + text[text.index("\n", row) + 1:]
    assert missing(parser(), skipped) == ["kubevpc plan: --allow-dir"]


def test_the_page_does_not_depend_on_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render(parser())
    monkeypatch.setenv("COLUMNS", "400")
    assert render(parser()) == narrow
    assert max(len(line) for line in narrow.splitlines() if line.startswith("kubevpc check ")) > 200


def test_rows_defaults_hidden_options_and_aliases():
    """%(default)s expanded as argparse does, SUPPRESS left out, a deprecated alias kept, `|` escaped."""
    ap = argparse.ArgumentParser(prog="tool")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    p = sub.add_parser("go", help="go | somewhere", description="Go <there>.")
    p.add_argument("where", metavar="A|B", choices=["a", "b"], help="a or b")
    p.add_argument("--speed", type=int, default=3, metavar="N", help="how fast (default %(default)s)")
    p.add_argument("--secret", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="deprecated: the same as -o json")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="one of %(choices)s")
    text = render(ap)
    assert "| `--speed` | `N` | `3` | how fast (default 3) |" in text
    assert "| `-o`, `--output` | `{table,json}` | `table` | one of table, json |" in text
    assert "| `--json` |  |  | deprecated: the same as -o json |" in text
    assert "| `A\\|B` |  |  | a or b |" not in text and "| `A\\|B` | one of `a`, `b` |  | a or b |" in text
    assert "--secret" not in text
    assert "[`tool go`](#tool-go) | go \\| somewhere |" in text and "Go \\<there>." in text
    assert "tool go [-h] [--speed N] [--json] [-o {table,json}] A|B" in text


def test_escape_keeps_code_spans():
    assert escape("a|b `x|y` *c* <d> snake_case _e_") == "a\\|b `x|y` \\*c\\* \\<d> snake_case \\_e\\_"
    assert escape("`x|y`", cell=True) == "`x\\|y`"
    assert escape("one ` tick") == "one \\` tick"
