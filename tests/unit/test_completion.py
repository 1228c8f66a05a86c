"""Shell completion (kubevpc/cli/complete.py): a partial command line, given as the shell gives it
to argcomplete (COMP_LINE, COMP_POINT and _ARGCOMPLETE in the environment, the answers written to
an output stream), completes to the commands, options, choices, run names and scenario files it
should; and through bash itself, with the function `register-python-argcomplete kubevpc` prints."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubevpc import cli
from kubevpc.cli import complete

REPO = Path(__file__).resolve().parents[2]
IFS = "\013"


class Answered(Exception):
    """argcomplete's exit after it has answered."""


def completions(line: str, monkeypatch) -> list[str]:
    """What the shell would offer for `line` with the cursor at its end."""
    monkeypatch.setenv("_ARGCOMPLETE", "1")
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    monkeypatch.setenv("_ARGCOMPLETE_IFS", IFS)
    monkeypatch.delenv("_ARGCOMPLETE_STDOUT_FILENAME", raising=False)
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):       # argcomplete's debug stream is fd 9: not pytest's files
        if fd in (8, 9):
            raise OSError("no shell here")
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    out = io.StringIO()

    def done(code=0):
        raise Answered(code)

    with pytest.raises(Answered) as info:
        complete.autocomplete(cli.parser(), output_stream=out, exit_method=done)
    assert info.value.args == (0,)
    return sorted(c.strip() for c in out.getvalue().split(IFS) if c)


def words(offered: list[str]) -> list[str]:
    """The offers that are not options (an empty word is offered the options too)."""
    return [w for w in offered if not w.startswith("-")]


def test_a_partial_command_completes_to_the_commands(monkeypatch):
    assert completions("kubevpc pl", monkeypatch) == ["plan"]
    assert completions("kubevpc s", monkeypatch) == ["scale", "schema", "start-server", "status", "stop-server"]
    assert completions("kubevpc zz", monkeypatch) == []


def test_every_command_is_offered(monkeypatch):
    assert completions("kubevpc ", monkeypatch) == sorted(cli.ORDER + ("-h", "--help", "-v", "--verbose", "--version"))


def test_options_and_their_choices(monkeypatch):
    assert completions("kubevpc flows --m", monkeypatch) == ["--mode"]
    assert completions("kubevpc flows --mode ", monkeypatch) == ["eni", "vpc-route", "vxlan"]
    assert completions("kubevpc flows --mode v", monkeypatch) == ["vpc-route", "vxlan"]


def test_run_names_come_from_the_ledger(monkeypatch, state):
    runs = Path(state) / "runs"
    for name in ("kvab12", "kvab34", "other1"):
        (runs / name).mkdir(parents=True)
    (runs / "not a run").mkdir()
    assert completions("kubevpc clean kvab", monkeypatch) == ["kvab12", "kvab34"]
    assert words(completions("kubevpc status ", monkeypatch)) == ["kvab12", "kvab34", "other1"]
    assert completions("kubevpc status zz", monkeypatch) == []


def test_no_runs_no_names(monkeypatch, state):
    assert words(completions("kubevpc clean ", monkeypatch)) == []


def test_scenario_files_are_yaml_files_and_directories(monkeypatch, tmp_path):
    (tmp_path / "lab.yaml").write_text("{}")
    (tmp_path / "lab.yml").write_text("{}")
    (tmp_path / "lab.txt").write_text("")
    (tmp_path / "labs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert completions("kubevpc validate la", monkeypatch) == ["lab.yaml", "lab.yml", "labs/"]
    assert completions("kubevpc plan --mode eni la", monkeypatch) == ["lab.yaml", "lab.yml", "labs/"]


def test_graph_takes_a_scenario_or_a_run(monkeypatch, state, tmp_path):
    (Path(state) / "runs" / "lab1").mkdir(parents=True)
    (tmp_path / "lab.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert completions("kubevpc graph la", monkeypatch) == ["lab.yaml", "lab1"]


def test_a_run_completer_where_a_command_names_a_run():
    """Every positional argument called run/runs/file/what has its completer."""
    named: dict[str, list[str]] = {}
    parser = cli.parser()
    complete.attach(parser)
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if getattr(action, "completer", None):
                named.setdefault(action.completer.__name__, []).append(name)
    assert {"clean", "status"} <= set(named["run_names"])
    assert {"validate", "plan", "flows", "run", "check", "explain"} <= set(named["scenario_files"])


def test_without_a_shell_asking_main_just_runs(monkeypatch, capsys):
    monkeypatch.delenv("_ARGCOMPLETE", raising=False)
    monkeypatch.setattr(sys, "argv", ["kubevpc", "schema"])
    assert cli.main() == 0
    assert capsys.readouterr().out.startswith("{")


def test_the_entry_point_carries_the_argcomplete_marker():
    """activate-global-python-argcomplete completes only commands whose module says so in its
    first 1024 bytes."""
    for module in (cli.__file__, cli.__file__.replace("__init__.py", "__main__.py")):
        assert "PYTHON_ARGCOMPLETE_OK" in Path(module).read_text()[:1024], module


def test_bash_completes_through_the_registered_function(tmp_path):
    """What a user's shell does after `eval "$(register-python-argcomplete kubevpc)"`: bash calls
    the function with COMP_WORDS, and the function asks the kubevpc command (here a wrapper that
    runs this tree's code)."""
    register = shutil.which("register-python-argcomplete", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if register is None or shutil.which("bash") is None:
        pytest.skip("register-python-argcomplete or bash is not installed")
    wrapper = tmp_path / "kubevpc"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m kubevpc.cli \"$@\"\n")
    wrapper.chmod(0o755)
    script = (f'eval "$({register} kubevpc)"\n'
              'fn=$(complete -p kubevpc | sed -E "s/.* -F ([^ ]+) .*/\\1/")\n'
              'COMP_LINE="kubevpc sch"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(kubevpc sch); COMP_CWORD=1\n'
              '$fn kubevpc; echo "[${COMPREPLY[*]}]"\n'
              'COMP_LINE="kubevpc zz"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(kubevpc zz); COMP_CWORD=1\n'
              '$fn kubevpc; echo "[${COMPREPLY[*]}]"\n')
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env.pop("_ARGCOMPLETE", None)
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.stdout.split("\n")[:2] == ["[schema ]", "[]"], res.stdout + res.stderr
