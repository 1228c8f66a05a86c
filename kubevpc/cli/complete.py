"""Shell completion through argcomplete: commands, options and their choices from the parser, run
names from the ledger, scenario files from the directory being typed. The shell asks the `kubevpc`
command itself (`eval "$(register-python-argcomplete kubevpc)"`), which answers from `main` before
it parses anything and exits.

Arguments are completed by what they name, whichever command they belong to: `run`/`runs` (a run,
as `kubevpc list` shows them), `file` (a scenario), `what` (either).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import argcomplete
from argcomplete.completers import FilesCompleter

from ..ledger import list_runs

_yaml_files = FilesCompleter(allowednames=("yaml", "yml"), directories=True)


def run_names(prefix: str, **_: Any) -> list[str]:
    """The runs in the ledger (live or not: `down`, `clean` and `status` take either)."""
    try:
        return [r for r in list_runs() if r.startswith(prefix)]
    except OSError:              # the state directory is root's
        return []


def scenario_files(prefix: str, **_: Any) -> list[str]:
    """YAML files and directories under what has been typed."""
    return list(_yaml_files(prefix))


def runs_or_files(prefix: str, **kwargs: Any) -> list[str]:
    return run_names(prefix) + scenario_files(prefix)


COMPLETERS: dict[str, Callable[..., list[str]]] = {"run": run_names, "runs": run_names, "file": scenario_files,
                                                   "what": runs_or_files}


def attach(parser: argparse.ArgumentParser) -> None:
    """Give each positional argument that names a run or a scenario its completer, in every
    command (and in the commands of a command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                attach(sub)
        elif not action.option_strings and action.dest in COMPLETERS:
            action.completer = COMPLETERS[action.dest]      # type: ignore[attr-defined]


def autocomplete(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """Answer the shell's completion request and exit, when this is one (argcomplete's
    environment: _ARGCOMPLETE, COMP_LINE, COMP_POINT); otherwise return at once."""
    attach(parser)
    argcomplete.autocomplete(parser, **kwargs)
