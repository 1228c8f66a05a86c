"""`kubevpc up` and `kubevpc down` (kubevpc/cli/lifecycle.py) and the supervisor they start
(kubevpc/cli/supervise.py), without root and without building anything.

The supervisor runs as the real background process `up` starts (its own session, a second fork,
the pipe, the log, the owner file, signals); only the Lab inside it is tests/unit/fakelab.py's,
which makes the run's directory, a file and a process but no namespace, bridge or link. One test
runs the supervisor with the real Lab on an invalid scenario, which is refused before anything
is built."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubevpc import cli, ledger
from kubevpc.cli import lifecycle, supervise
from kubevpc.ledger import clean_run, list_runs, owner_alive, owner_of, run_dir, same_process
from kubevpc.rundir import RunDir

from .fakelab import with_fake_lab

REPO = Path(__file__).resolve().parents[2]
SMALL = str(REPO / "tests" / "unit" / "data" / "small.yaml")
BAD = ("cloud:\n  vpcs:\n    - name: v\n      cidr: 10.0.0.0/16\n      vswitches:\n"
       "        - {name: a, cidr: 10.0.1.0/24}\n        - {name: b, cidr: 10.0.1.128/25}\n")
real_spawn = lifecycle.spawn


@pytest.fixture
def fake(state, monkeypatch):
    """`up` starts its supervisor with the fake Lab; every run left at the end is removed, its
    supervisor killed (only a process that is that run's supervisor)."""
    monkeypatch.setattr(lifecycle, "spawn", lambda argv, fd: real_spawn(with_fake_lab(argv), fd))
    monkeypatch.setenv("KUBEVPC_FAKE_LAB", "ok")
    yield monkeypatch
    for run in list_runs():
        owner = owner_of(run)
        if owner and same_process(*owner) and lifecycle._is_supervisor(owner[0], run):
            os.kill(owner[0], signal.SIGKILL)
        clean_run(run)


def supervisor_of(run: str) -> tuple[int, str]:
    owner = owner_of(run)
    assert owner and same_process(*owner) and lifecycle._is_supervisor(owner[0], run), owner
    return owner


def children_named(run: str) -> list[str]:
    """Processes whose command line carries the run's name (the fake Lab's child)."""
    out = subprocess.run(["pgrep", "-f", f"time.sleep\\(300\\).* {run}$"], capture_output=True, text=True).stdout
    return out.split()


def wait_for(cond, deadline: float = 10) -> bool:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def gone(owner: tuple[int, str], deadline: float = 10) -> bool:
    return wait_for(lambda: not same_process(*owner), deadline)


# ------------------------------------------------------------------------------------ parsing
def test_up_down_inspect_exec_parse():
    a = cli.parser().parse_args(["up", "x.yaml", "--mode", "eni", "--name", "kvx", "--datapath", "netdev",
                                 "--allow-dir", "d1", "--allow-dir", "d2", "--timeout", "5", "--json"])
    assert (a.cmd, a.file, a.mode, a.name, a.datapath, a.allow_dirs, a.timeout, a.json) == \
        ("up", "x.yaml", "eni", "kvx", "netdev", ["d1", "d2"], 5.0, True)
    assert cli.parser().parse_args(["up", "x.yaml"]).timeout == lifecycle.UP_DEADLINE
    a = cli.parser().parse_args(["down", "kvx", "--timeout", "3"])
    assert (a.cmd, a.run, a.timeout) == ("down", "kvx", 3.0)
    a = cli.parser().parse_args(["inspect", "kvx", "--json"])
    assert (a.cmd, a.run, a.json) == ("inspect", "kvx", True)
    assert cli.parser().parse_args(["inspect"]).run is None         # the one live run that serves
    a = cli.parser().parse_args(["exec", "kvx", "pod/x/a", "--", "sh", "-c", "exit 3", "--", "-x"])
    assert (a.cmd, a.run, a.endpoint, a.command) == ("exec", "kvx", "pod/x/a", ["sh", "-c", "exit 3", "--", "-x"])
    assert cli.parser().parse_args(["exec", "kvx", "ecs/db", "ip", "-br", "addr"]).command == ["ip", "-br", "addr"]


@pytest.mark.parametrize("argv", [["up"], ["down"], ["exec", "kvx"], ["up", "x.yaml", "--mode", "flat"],
                                  ["down", "kvx", "--timeout", "soon"]])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(argv)
    assert exc.value.code == 2


def test_the_supervisors_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = supervise.command("s.yaml", "kvab", "eni", "system", ["inc", "/abs"], 7, python="/py")
    assert argv == ["/py", "-m", "kubevpc.cli.supervise", "--run", "kvab", "--mode", "eni", "--datapath", "system",
                    "--allow-dir", str(tmp_path / "inc"), "--allow-dir", "/abs", "--notify-fd", "7", "--",
                    str(tmp_path / "s.yaml")]
    a = supervise.parser().parse_args(argv[3:])        # what the supervisor reads back
    assert (a.file, a.run, a.mode, a.datapath, a.allow_dirs, a.notify_fd) == \
        (str(tmp_path / "s.yaml"), "kvab", "eni", "system", [str(tmp_path / "inc"), "/abs"], 7)
    bare = supervise.command("s.yaml", "kvab", python="/py")
    assert bare == ["/py", "-m", "kubevpc.cli.supervise", "--run", "kvab", "--", str(tmp_path / "s.yaml")]
    assert supervise.parser().parse_args(bare[3:]).mode is None


def test_follow_relays_progress_and_reads_the_outcome():
    r, w = os.pipe()
    said: list[str] = []
    lines = [b'{"pid": 42}\n', b'{"say": "creating 3 namespaces"}\nnot json\n{"say"', b': "half and half"}\n',
             b'{"ready": {"run": "kvab"}}\n']

    def write():
        for chunk in lines:
            os.write(w, chunk)
            time.sleep(0.01)
        os.close(w)
    threading.Thread(target=write).start()
    o = lifecycle.follow(r, 5, said.append)
    os.close(r)
    assert (o.pid, o.ready, o.ended, o.error) == (42, {"run": "kvab"}, True, "")
    assert said == ["creating 3 namespaces", "not json", "half and half"]


def test_follow_has_a_deadline_and_reads_errors():
    r, w = os.pipe()
    os.write(w, b'{"error": "no", "problems": ["f:1: a: b"], "code": 2}\n')
    t0 = time.monotonic()
    o = lifecycle.follow(r, 0.3, lambda s: None)
    assert 0.25 < time.monotonic() - t0 < 3 and not o.ended, "the pipe is still open: the deadline ends the wait"
    assert (o.error, o.problems, o.code) == ("no", ["f:1: a: b"], 2)
    os.close(w)
    assert lifecycle.follow(r, 5, lambda s: None, o).ended
    os.close(r)


# --------------------------------------------------------------------------------- up: refusals
def test_up_of_an_invalid_scenario_starts_nothing(state, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    monkeypatch.setattr(lifecycle, "spawn", lambda *a: pytest.fail("a supervisor was started"))
    assert cli.main(["up", str(bad), "--name", "kvbad"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid scenario" in err and f"{bad}:7: cloud.vpcs[0].vswitches[1].cidr" in err
    assert list_runs() == []


def test_up_refuses_a_bad_or_taken_name(state, monkeypatch, capsys):
    monkeypatch.setattr(lifecycle, "spawn", lambda *a: pytest.fail("a supervisor was started"))
    assert cli.main(["up", SMALL, "--name", "../x"]) == cli.EXIT_USAGE
    assert "is not a run name" in capsys.readouterr().err
    ledger.Ledger("kvtak").create()
    assert cli.main(["up", SMALL, "--name", "kvtak"]) == cli.EXIT_USAGE
    assert "a run named kvtak exists already (`kubevpc down kvtak`" in capsys.readouterr().err


def test_the_real_supervisor_refuses_an_invalid_scenario_and_leaves_nothing(state, tmp_path):
    """The supervisor process as `up` starts it, with the real Lab: the error and every problem
    come back on the pipe, and no run directory is made."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    r, w = os.pipe()
    first = real_spawn(supervise.command(str(bad), "kvsup", notify_fd=w), w)
    os.close(w)
    assert first.wait(timeout=30) == 0, "the first process forks the supervisor and ends"
    o = lifecycle.follow(r, 30, lambda s: None)
    os.close(r)
    assert o.ended and o.ready is None and o.code == cli.EXIT_USAGE and o.pid and o.pid != first.pid
    assert o.error == "invalid scenario (1 problem(s)); nothing was built"
    assert o.problems and o.problems[0].startswith(f"{bad}:7: cloud.vpcs[0].vswitches[1].cidr")
    assert not os.path.exists(run_dir("kvsup"))


# ------------------------------------------------------------------------------ up, then down
def test_up_returns_ready_and_down_removes_everything(fake, capsys):
    assert cli.main(["up", SMALL, "--name", "kvup"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.strip() == "kvup", "the run's name alone on standard output"
    assert "creating 0 namespaces (a fake lab)" in captured.err, "the supervisor's progress relayed"
    assert "run kvup is up" in captured.err and "kubevpc exec kvup" in captured.err and "kubevpc down kvup" in captured.err
    owner = supervisor_of("kvup")
    assert owner_alive("kvup") and os.getsid(owner[0]) != os.getsid(0), "a session of its own"
    assert os.getsid(owner[0]) != owner[0], "no session leader: it can never take a terminal"
    assert os.path.exists(RunDir.of("kvup").control_socket), "it serves the control channel"
    log = Path(RunDir.of("kvup").supervisor_log)
    assert wait_for(lambda: "run kvup is up" in log.read_text()), "it says it is up in its log, after `up` returned"
    assert "run kvup: building" in log.read_text(), "with what it said before its directory existed"
    assert "creating 0 namespaces" in log.read_text()
    assert children_named("kvup"), "the fake Lab's process runs"
    assert "kvup: running" in (cli.main(["list"]), capsys.readouterr().out)[1]

    assert cli.main(["down", "kvup"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "kvup: removed 1 process(s), 1 file(s)" in captured.out, captured
    assert "asking the supervisor of kvup" in captured.err and "tearing down" in captured.err
    assert gone(owner) and not os.path.exists(run_dir("kvup")) and not children_named("kvup")


def test_down_after_the_supervisor_was_killed_cleans_from_the_ledger(fake, capsys):
    assert cli.main(["up", SMALL, "--name", "kvkil"]) == cli.EXIT_OK
    owner = supervisor_of("kvkil")
    os.kill(owner[0], signal.SIGKILL)
    assert gone(owner)
    assert children_named("kvkil"), "kill -9 leaves the run behind"
    capsys.readouterr()
    assert cli.main(["down", "kvkil"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "is gone: removing what its ledger lists" in captured.err
    assert "kvkil: removed 1 process(s)" in captured.out and "(from its ledger)" in captured.out
    assert not os.path.exists(run_dir("kvkil")) and not children_named("kvkil")


def test_down_kills_a_stuck_supervisor_at_its_deadline(fake, capsys):
    fake.setenv("KUBEVPC_FAKE_LAB", "stuck")          # its teardown never ends
    assert cli.main(["up", SMALL, "--name", "kvstk"]) == cli.EXIT_OK
    owner = supervisor_of("kvstk")
    capsys.readouterr()
    t0 = time.monotonic()
    assert cli.main(["down", "kvstk", "--timeout", "1"]) == cli.EXIT_OK
    assert time.monotonic() - t0 < 30
    captured = capsys.readouterr()
    assert "has not ended within 1 s" in captured.err and "(SIGKILL)" in captured.err
    assert "kvstk: removed 1 process(s)" in captured.out and "(from its ledger)" in captured.out
    assert gone(owner, 1) and not os.path.exists(run_dir("kvstk")) and not children_named("kvstk")


def test_a_failed_bring_up_leaves_nothing(fake, capsys):
    fake.setenv("KUBEVPC_FAKE_LAB", "fail")
    assert cli.main(["up", SMALL, "--name", "kvfail"]) == cli.EXIT_RUNTIME
    captured = capsys.readouterr()
    assert "error: the fake lab failed as asked" in captured.err and captured.out == ""
    assert not os.path.exists(run_dir("kvfail")) and not children_named("kvfail")


def test_up_tears_down_a_run_not_ready_in_time(fake, capsys):
    fake.setenv("KUBEVPC_FAKE_LAB", "slow")
    t0 = time.monotonic()
    assert cli.main(["up", SMALL, "--name", "kvslow", "--timeout", "1"]) == cli.EXIT_RUNTIME
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert "run kvslow was not ready within 1 s; tearing it down" in err
    assert not os.path.exists(run_dir("kvslow")) and not children_named("kvslow")


# ---------------------------------------------------------------------------- down: refusals
def test_down_of_an_unknown_run_or_a_bad_name(state, capsys):
    assert cli.main(["down", "kvnone"]) == cli.EXIT_USAGE
    assert "no run named kvnone on this machine" in capsys.readouterr().err
    assert cli.main(["down", "/etc"]) == cli.EXIT_USAGE
    assert "is not a run name" in capsys.readouterr().err


def test_down_leaves_a_run_whose_live_owner_is_no_supervisor(state, capsys):
    """A `run --keep` or a Lab in a script owns it: down signals nothing and removes nothing."""
    lg = ledger.Ledger("kvlab")
    lg.create()                                   # owned by this very process
    assert cli.main(["down", "kvlab"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"run kvlab was not started by `kubevpc up`: its owner, pid {os.getpid()}" in err
    assert "kubevpc clean --force kvlab" in err and os.path.isdir(lg.dir)


def test_down_of_a_leftover_removes_it(state, capsys):
    lg = ledger.Ledger("kvold")
    lg.create()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    with open(RunDir.of("kvold").owner, "w", encoding="utf-8") as fh:
        fh.write(f"{dead.pid} 1\n")
    assert cli.main(["down", "kvold"]) == cli.EXIT_OK
    assert "kvold: removed nothing left (from its ledger)" in capsys.readouterr().out
    assert "kvold" not in list_runs()
