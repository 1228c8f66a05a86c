"""`kubevpc clean` takes only run names, removes only what a run can have made, and a live run
only with --force. No root needed: the runs directory is a temporary one, and the ledgers here
list files and names, not namespaces or bridges."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubevpc import cli, ledger
from kubevpc.ledger import Entry, Ledger, NotARun, clean_run


@pytest.fixture
def victim(tmp_path):
    """A directory and a file that no run made: nothing may remove them."""
    d = tmp_path / "x"
    d.mkdir()
    (d / "keep").write_text("mine")
    return d


def make_run(run: str, pid: int, entries: list[dict] = ()) -> Ledger:
    lg = Ledger(run)
    lg.create()
    with open(os.path.join(lg.dir, "owner"), "w", encoding="utf-8") as fh:
        fh.write(f"{pid} {ledger._start_time(pid) or 'gone'}\n")
    with open(lg.path, "w", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps({"token": "", **e}) + "\n")
    return lg


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


def test_a_path_is_not_a_run_name(state, victim, capsys):
    for name in (str(victim), os.path.relpath(victim, ledger.runs_dir()), "../../../../" + str(victim).lstrip("/"),
                 "/", "..", ".", "kvab/../..", "KV1", "a" * 7, ""):
        assert cli.main(["clean", name]) == cli.EXIT_USAGE, name
        assert "is not a run name" in capsys.readouterr().err
    assert (victim / "keep").read_text() == "mine"


def test_clean_run_itself_refuses_a_path(state, victim):
    with pytest.raises(NotARun):
        clean_run(str(victim))
    with pytest.raises(NotARun):
        clean_run("../x")
    assert (victim / "keep").exists()


def test_a_link_in_the_runs_directory_is_not_a_run(state, victim, capsys):
    Ledger("kvok").create()             # makes the runs directory
    os.symlink(victim, os.path.join(ledger.runs_dir(), "kvlnk"))
    assert ledger.list_runs() == ["kvok"]
    assert cli.main(["clean", "kvlnk"]) == cli.EXIT_USAGE
    assert "no run named kvlnk" in capsys.readouterr().err
    with pytest.raises(NotARun):
        clean_run("kvlnk")
    assert (victim / "keep").exists()


def test_an_unknown_run_is_refused(state, capsys):
    assert cli.main(["clean", "kvnone"]) == cli.EXIT_USAGE
    assert "no run named kvnone" in capsys.readouterr().err


def test_a_live_run_needs_force(state, capsys):
    lg = make_run("kvlive", os.getpid())
    assert cli.main(["clean", "kvlive"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"run kvlive is live: its owner, pid {os.getpid()}" in err and "--force" in err
    assert os.path.isdir(lg.dir)
    assert cli.main(["clean"]) == cli.EXIT_OK            # a live run is not a leftover
    assert os.path.isdir(lg.dir)
    assert cli.main(["clean", "--force", "kvlive"]) == cli.EXIT_OK
    assert not os.path.exists(lg.dir)
    make_run("kvlive", os.getpid())
    assert cli.main(["clean", "--all"]) == cli.EXIT_OK
    assert not os.path.exists(lg.dir)


def test_a_leftover_is_cleaned_by_name_and_without(state):
    a, b = make_run("kva", dead_pid()), make_run("kvb", dead_pid())
    assert cli.main(["clean", "kva"]) == cli.EXIT_OK
    assert not os.path.exists(a.dir) and os.path.isdir(b.dir)
    assert cli.main(["clean"]) == cli.EXIT_OK
    assert not os.path.exists(b.dir)


def test_one_bad_name_among_good_ones_removes_nothing(state):
    a = make_run("kva", dead_pid())
    assert cli.main(["clean", "kva", "/tmp"]) == cli.EXIT_USAGE
    assert os.path.isdir(a.dir)


def test_a_tampered_ledger_removes_only_what_the_run_could_have_made(state, victim, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    lg = make_run("kvt", dead_pid(), [
        {"kind": "file", "name": str(victim)}, {"kind": "file", "name": str(outside)},
        {"kind": "file", "name": os.path.join(ledger.run_dir("kvt"), "..", "..", "..", str(victim).lstrip("/"))},
        {"kind": "file", "name": "/etc/netns/other-ns"}, {"kind": "emptydir", "name": str(victim)},
        {"kind": "link", "name": "eth0"}, {"kind": "bridge", "name": "br-int"}, {"kind": "netns", "name": "other"},
        {"kind": "process", "name": "1", "token": ""}, {"kind": "process", "name": "init"},
        {"kind": "file", "name": os.path.join(ledger.run_dir("kvt"), "mine.txt")},
        {"kind": "file", "name": "/etc/netns/kvt-pod-default_web-0"}])
    entries = lg.entries()
    assert [e.name for e in entries] == [os.path.join(ledger.run_dir("kvt"), "mine.txt"),
                                        "/etc/netns/kvt-pod-default_web-0"]
    assert lg.foreign == 10
    said = []
    clean_run("kvt", said.append)
    assert (victim / "keep").read_text() == "mine" and outside.read_text() == "mine"
    assert said == ["kvt: 10 ledger entries name things this run cannot have made; left alone"]


def test_the_runs_directory_and_a_runs_directory_are_root_only(state):
    os.makedirs(ledger.runs_dir(), mode=0o755)
    os.chmod(ledger.runs_dir(), 0o755)          # as an older kubevpc left it
    lg = Ledger("kvp")
    lg.create()
    assert os.stat(ledger.runs_dir()).st_mode & 0o777 == 0o700
    assert os.stat(lg.dir).st_mode & 0o777 == 0o700


def test_owns():
    lg = Ledger("kvo")
    assert lg.owns(Entry("link", "kvo-n1")) and lg.owns(Entry("netns", "kvo-pod-x")) and lg.owns(Entry("bridge", "kvo-vs0"))
    assert not lg.owns(Entry("link", "kv-n1")) and not lg.owns(Entry("netns", "kvo/../x"))
    assert lg.owns(Entry("process", "123", "kvo")) and not lg.owns(Entry("process", "123", ""))
    assert not lg.owns(Entry("emptydir", "/tmp")) and lg.owns(Entry("emptydir", "/etc/netns"))
    assert not lg.owns(Entry("file", lg.dir)) and not lg.owns(Entry("file", lg.dir + "/a/../../x"))
    assert not lg.owns(Entry("file", "/etc/netns/kvox-a")) and lg.owns(Entry("file", "/etc/netns/kvo-a"))
    assert lg.owns(Entry("file", ledger.controller_socket("kvo")))
    assert not lg.owns(Entry("file", ledger.controller_socket("kvox"))) and not lg.owns(Entry("file", "/var/run/openvswitch/db.sock"))

