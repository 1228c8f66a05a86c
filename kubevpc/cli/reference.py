"""docs/cli.md, the command reference: every command and option of `kubevpc`, read from its parser.

    python -m kubevpc.cli.reference > docs/cli.md        (or: make docs-cli)

The page is built from the argparse parser's actions (kubevpc.cli.parser), not from formatted
`--help` text, so it does not depend on the terminal's width (COLUMNS) and cannot drift from what
the command accepts: tests/unit/test_cli_reference.py fails when docs/cli.md differs from what this
module prints, and checks from `--help`'s own text that no command or option is left out.

argparse keeps what a parser holds in private attributes (_actions, _action_groups,
_choices_actions), which tools such as argcomplete and sphinx-argparse read too; the formatter's
own methods expand help strings (`%(default)s` and the like) and write metavars, so the page reads
as `--help` prints. Should a Python release format them differently, the unit test says so and
`make docs-cli` rewrites the page.
"""
from __future__ import annotations

import argparse
import re
import sys

from . import parser

WIDE = 1_000_000          # a formatter this wide never wraps: usage lines stay on one line
HEADER = ("| argument | value | default | description |", "|---|---|---|---|")
INTRO = """\
# kubevpc command reference

<!-- Generated from the parser by `python -m kubevpc.cli.reference > docs/cli.md` (make docs-cli): do not edit. -->

Every command and option of `kubevpc`, as `kubevpc COMMAND --help` prints them. This page is
generated from the command line's parser (`kubevpc/cli/reference.py`) by
`python -m kubevpc.cli.reference > docs/cli.md`, or `make docs-cli`; a unit test
(`tests/unit/test_cli_reference.py`) fails when it differs from what the parser says, so a change
to an option changes this page in the same commit. The README's
[Command line](../README.md#command-line) section explains the commands with examples.

Every command also takes `-h`/`--help`, which prints its help and exits. In the tables, **value**
says what an option takes (its metavar or its choices), or whether a positional argument may be
left out or repeated; **default** is the value an option that takes one has when it is not given.
"""
NARGS = {None: "", "?": "optional", "*": "any number", "+": "one or more",
         argparse.REMAINDER: "the rest of the command line", argparse.PARSER: "a command, below"}


def _formatter(p: argparse.ArgumentParser) -> argparse.HelpFormatter:
    """The parser's own formatter class, as wide as never to wrap."""
    return p.formatter_class(prog=p.prog, width=WIDE)


def _plain(text: str) -> str:
    """Text outside code spans: `\\`, `|`, `<`, `*` and a `_` at a word's edge escaped."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("*", "\\*")
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", text)


def escape(text: str, cell: bool = False) -> str:
    """Markdown of plain help text: characters markdown would take as markup are escaped outside
    `code` spans; `|` is escaped inside them too in a table cell (GitHub splits cells on it)."""
    if text.count("`") % 2:                 # an unpaired backtick opens no code span
        return _plain(text).replace("`", "\\`")
    parts = text.split("`")
    for i, part in enumerate(parts):
        parts[i] = (part.replace("|", "\\|") if cell else part) if i % 2 else _plain(part)
    return "`".join(parts)


def code(text: str) -> str:
    """A code span in a table cell."""
    return "`" + text.replace("|", "\\|") + "`" if text else ""


def usage(p: argparse.ArgumentParser) -> str:
    """The usage line argparse prints, on one line, without its `usage: ` prefix."""
    f = _formatter(p)
    f.add_usage(p.usage, p._actions, p._mutually_exclusive_groups, prefix="")
    return f.format_help().strip()


def help_text(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An action's help as `--help` prints it (`%(default)s` and the like expanded), on one line."""
    if not action.help:
        return ""
    text = _formatter(p)._expand_help(action)
    if issubclass(p.formatter_class, argparse.RawTextHelpFormatter):
        return "<br>".join(escape(line, cell=True) for line in text.splitlines())
    return escape(" ".join(text.split()), cell=True)


def prose(p: argparse.ArgumentParser, text: str | None) -> list[str]:
    """A description or an epilog: a paragraph, or a block where a raw formatter keeps the lines
    laid out by hand."""
    if not text:
        return []
    if "%(prog)" in text:
        text = text % {"prog": p.prog}
    raw = issubclass(p.formatter_class, argparse.RawDescriptionHelpFormatter)
    if raw and "\n" in text.strip():
        return ["```text", text.strip("\n"), "```", ""]
    return [escape(" ".join(text.split())), ""]


def default_text(action: argparse.Action) -> str:
    """The default of an option that takes a value; nothing for flags, None, False, SUPPRESS or empty."""
    d = action.default
    if action.nargs == 0 or d is None or d is False or d == argparse.SUPPRESS:
        return ""
    if isinstance(d, (list, tuple, set, str)) and not d:
        return ""
    return code(", ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d))


def row(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One table row: the option strings (or the positional's name), what it takes, its default, its help."""
    f = _formatter(p)
    if action.option_strings:
        name = ", ".join(code(s) for s in action.option_strings)
        value = code(f._format_args(action, f._get_default_metavar_for_optional(action))) if action.nargs != 0 else ""
    else:
        name = code(f._format_action_invocation(action))
        value = NARGS.get(action.nargs, f"{action.nargs} values")
        if action.choices and not isinstance(action, argparse._SubParsersAction) and action.metavar:
            value = ", ".join(filter(None, (value, "one of " + ", ".join(code(str(c)) for c in action.choices))))
    return f"| {name} | {value} | {default_text(action)} | {help_text(p, action)} |"


def shown(action: argparse.Action) -> bool:
    """Whether --help shows the action here: not hidden (SUPPRESS), not -h/--help (the intro says it)."""
    return action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def tables(p: argparse.ArgumentParser) -> list[str]:
    """One table per argument group with something to show, under the group's title, as --help groups them."""
    out = []
    for group in p._action_groups:
        actions = [a for a in group._group_actions if shown(a)]
        if not actions:
            continue
        out += [f"**{escape(group.title or '')}**", ""]
        out += prose(p, group.description)
        out += [*HEADER, *(row(p, a) for a in actions), ""]
    return out


def commands(p: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """The parser's commands, (name, help line, parser), in the order its --help lists them; a
    command listed without a help line comes after, an alias not at all, a hidden one (SUPPRESS) never."""
    out, seen = [], set()
    for action in p._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        listed = {c.dest: c.help for c in action._choices_actions}
        for name in [*listed, *action.choices]:
            sub = action.choices[name]
            if id(sub) in seen or listed.get(name) == argparse.SUPPRESS:
                continue
            seen.add(id(sub))
            out.append((name, listed.get(name) or "", sub))
    return out


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` dropped, spaces as `-`."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def command_list(p: argparse.ArgumentParser) -> list[str]:
    """The table of a parser's commands, each a link to its section."""
    found = commands(p)
    if not found:
        return []
    out = ["| command | what it does |", "|---|---|"]
    out += [f"| [`{sub.prog}`](#{anchor(sub.prog)}) | {escape(line, cell=True)} |" for _, line, sub in found]
    return [*out, ""]


def section(p: argparse.ArgumentParser, line: str, level: int, title: str) -> list[str]:
    """A command's section: heading, help line, description, usage, options, its commands, epilog."""
    out = ["#" * level + " " + title, ""]
    if line:
        out += [escape(" ".join(line.split())), ""]
    out += prose(p, p.description)
    out += ["```text", usage(p), "```", ""]
    return out + tables(p) + command_list(p) + prose(p, p.epilog)


def sections(p: argparse.ArgumentParser, line: str = "", depth: int = 0) -> list[str]:
    """The parser's section, then each of its commands' (nested ones one heading level down)."""
    title = f"Global options: `{p.prog}`" if depth == 0 else f"`{p.prog}`"
    out = section(p, line, max(2, depth + 1), title)
    for _, sub_line, sub in commands(p):
        out += sections(sub, sub_line, depth + 1)
    return out


def render(p: argparse.ArgumentParser) -> str:
    """docs/cli.md for the parser."""
    return "\n".join([INTRO, *sections(p)]).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(render(parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
