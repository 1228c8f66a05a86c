"""The installed `kubevpc` command as an editor and a shell meet it: the schema it prints is the
published one, bash completes through the function `register-python-argcomplete` registers (and
completes nothing for a word no command starts with), argcomplete's global completion finds the
marker of the console script's module (and not that of a command without one), run names come
from this machine's ledger, and an unknown key's error names the key meant (the fixed file
validates). No network is built: this module needs only the installed command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubevpc.ledger import list_runs

TOP = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBEVPC = shutil.which("kubevpc", path=f"{BIN}:{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(KUBEVPC is None, reason="the kubevpc command is not installed (scripts/install.sh)")


def bash_complete(*lines: str) -> list[list[str]]:
    """What bash offers for each line, the way a user's shell asks after
    `eval "$(register-python-argcomplete kubevpc)"`."""
    register = shutil.which("register-python-argcomplete", path=f"{BIN}:{os.environ.get('PATH', '')}")
    assert register, "register-python-argcomplete comes with argcomplete"
    script = [f'eval "$({register} kubevpc)"', 'fn=$(complete -p kubevpc | sed -E "s/.* -F ([^ ]+) .*/\\1/")']
    for line in lines:
        words = line.split() + ([""] if line.endswith(" ") else [])
        script += [f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}',
                   "COMP_WORDS=(" + " ".join(f'"{w}"' for w in words) + f"); COMP_CWORD={len(words) - 1}",
                   '$fn kubevpc; echo "${COMPREPLY[*]}"']
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    res = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, env=env, timeout=120,
                         stdin=subprocess.DEVNULL, cwd=TOP)
    out = res.stdout.split("\n")[:len(lines)]
    return [sorted(w for w in line.split()) for line in out]


def test_the_installed_command_prints_the_published_schema():
    res = subprocess.run([KUBEVPC, "schema"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (TOP / "schema" / "kubevpc-scenario.schema.json").read_text()


def test_bash_completes_commands_options_and_files():
    sch, none, mode, files = bash_complete("kubevpc sch", "kubevpc zz", "kubevpc flows --mode v",
                                           "kubevpc validate scenarios/def")
    assert sch == ["schema"]
    assert none == []                                   # the twin: no command starts with zz
    assert mode == ["vpc-route", "vxlan"]
    assert files == ["scenarios/default.yaml"]


def test_run_names_complete_from_the_ledger():
    [offered] = bash_complete("kubevpc status ")
    assert [w for w in offered if not w.startswith("-")] == sorted(list_runs())


def test_global_completion_finds_the_marker_of_kubevpc_only():
    check = [sys.executable, "-m", "argcomplete._check_console_script"]
    res = subprocess.run(check + [KUBEVPC], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    other = shutil.which("pytest", path=str(BIN))
    if other:                                           # the twin: a console script without the marker
        assert subprocess.run(check + [other], capture_output=True, text=True, timeout=60).returncode != 0


def test_an_unknown_key_names_the_key_meant(tmp_path):
    text = (TOP / "scenarios" / "default.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("securityGroups:", "securityGroup:", 1))
    res = subprocess.run([KUBEVPC, "validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "'securityGroup': unknown key; did you mean `securityGroups`? expected one of vpcs," in res.stderr
    good = tmp_path / "good.yaml"
    good.write_text(text)
    res = subprocess.run([KUBEVPC, "validate", str(good)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
