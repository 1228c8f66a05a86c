"""`kubevpc exec` and `kubevpc inspect` (kubevpc/cli/endpoints.py), without root: a live run is
a run directory owned by this process, with the plan of tests/e2e/data/hostnet.yaml, a ledger
that lists its namespaces, and a directory standing for /run/netns. The process boundary is
faked: `ip netns exec` is a script that drops its first three arguments and runs the rest."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubevpc import cli
from kubevpc.cli import endpoints
from kubevpc.control import ControlServer, socket_path
from kubevpc.lab import Lab
from kubevpc.ledger import Ledger
from kubevpc.rundir import RunDir

from .plans import E2E_DATA, plan_of

HOSTNET = E2E_DATA / "hostnet.yaml"
REPO = Path(__file__).resolve().parents[2]


class Replaced(BaseException):
    """os.execvp, faked: this process would now be the command."""


@pytest.fixture
def run(state, tmp_path, monkeypatch):
    """Run kvex, live (owned by this process), its plan written, its namespaces in its ledger and
    named in a directory that stands for /run/netns."""
    plan = plan_of(HOSTNET, "vxlan", "kvex")
    lg = Ledger("kvex")
    lg.create()
    Path(RunDir.of("kvex").plan).write_text(plan.model_dump_json())
    netns = sorted({plan.network_host(h).netns for h in plan.hosts})
    lg.record("netns", *netns)
    named = tmp_path / "netns"
    named.mkdir()
    for n in netns:
        (named / n).touch()
    monkeypatch.setattr(endpoints, "NETNS_DIR", str(named))
    return named


@pytest.fixture
def execs(monkeypatch):
    """The argv each os.execvp was given."""
    calls: list[list[str]] = []

    def execvp(file, argv):
        calls.append(list(argv))
        raise Replaced
    monkeypatch.setattr(os, "execvp", execvp)
    return calls


@pytest.mark.parametrize("endpoint, netns", [
    ("pod/default/web-0", "kvex-pod-default_web-0"),
    ("pod/web-0", "kvex-pod-default_web-0"),                    # namespace default
    ("pod/kube-system/kube-dns-0", "kvex-pod-kube-system_kube-dns-0"),
    ("ecs/ecs-client", "kvex-ecs-ecs-client"),
    ("node/node-2", "kvex-ecs-node-2"),
    ("ecs/node-2", "kvex-ecs-node-2"),
    ("pod/hostweb-0", "kvex-ecs-node-2"),                       # a host-network pod: its node's namespace
])
def test_exec_enters_the_endpoints_named_namespace(run, execs, endpoint, netns):
    with pytest.raises(Replaced):
        cli.main(["exec", "kvex", endpoint, "--", "sh", "-c", "exit 3"])
    assert execs == [["ip", "netns", "exec", netns, "sh", "-c", "exit 3"]]
    assert endpoints.namespace_of("kvex", endpoint) == netns


def test_exec_passes_streams_and_the_exit_status_through(state, run, tmp_path):
    """The real os.execvp, in a child process: `ip` is a script that runs its arguments after
    `netns exec NAME` and notes the namespace it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(f'#!/bin/sh\necho "$3" > {tmp_path}/entered\nshift 3\nexec "$@"\n')
    (bin_dir / "ip").chmod(0o755)
    code = ("import sys; from kubevpc import cli; from kubevpc.cli import endpoints; "
            "endpoints.NETNS_DIR = sys.argv[1]; sys.exit(cli.main(sys.argv[2:]))")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBEVPC_STATE_DIR": state,
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, str(run), "exec", "kvex", "pod/client-1", "--", "sh", "-c",
                          "cat; echo to-stderr >&2; exit 7"], input="hello\n", capture_output=True, text=True,
                         env=env, timeout=60, cwd=REPO)
    assert (res.returncode, res.stdout, res.stderr) == (7, "hello\n", "to-stderr\n")
    assert (tmp_path / "entered").read_text() == "kvex-pod-default_client-1\n"


@pytest.mark.parametrize("argv, code, message", [
    (["exec", "kvex", "pod/nope", "--", "true"], cli.EXIT_USAGE,
     "no endpoint 'pod/nope' in run kvex; expected pod/<namespace>/<name>, pod/<name>, ecs/<name> or node/<name>; "
     "it has ecs/node-1, "),
    (["exec", "kvex", "pod/web-0"], cli.EXIT_USAGE, "no command: expected `kubevpc exec RUN ENDPOINT -- COMMAND"),
    (["exec", "kvex", "pod/web-0", "--"], cli.EXIT_USAGE, "no command"),
    (["exec", "kvzz", "pod/web-0", "--", "true"], cli.EXIT_USAGE, "no run named kvzz on this machine"),
    (["exec", "../kvex", "pod/web-0", "--", "true"], cli.EXIT_USAGE, "is not a run name"),
    (["exec", "kvex", "pod/web-0", "--", "no-such-command-kv"], endpoints.EXIT_NOT_FOUND,
     "no-such-command-kv: command not found"),
])
def test_exec_errors(run, execs, capsys, argv, code, message):
    assert cli.main(argv) == code
    assert message in capsys.readouterr().err
    assert execs == []


def test_exec_checks_the_namespace_is_the_runs_and_exists(run, execs, capsys):
    (run / "kvex-pod-default_web-0").unlink()
    assert cli.main(["exec", "kvex", "pod/web-0", "--", "true"]) == cli.EXIT_RUNTIME
    assert "pod/default/web-0's namespace kvex-pod-default_web-0 does not exist (any more)" in capsys.readouterr().err
    with open(RunDir.of("kvex").ledger, "w", encoding="utf-8") as fh:       # a ledger without it
        fh.write(json.dumps({"kind": "netns", "name": "kvex-ecs-node-1", "token": ""}) + "\n")
    assert cli.main(["exec", "kvex", "pod/client-1", "--", "true"]) == cli.EXIT_RUNTIME
    assert "namespace kvex-pod-default_client-1 is not in run kvex's ledger" in capsys.readouterr().err
    assert execs == []


def test_exec_refuses_a_leftover(run, execs, capsys):
    with open(RunDir.of("kvex").owner, "w", encoding="utf-8") as fh:
        fh.write("1 0\n")                                   # pid 1, with another start time: gone
    assert cli.main(["exec", "kvex", "pod/web-0", "--", "true"]) == cli.EXIT_RUNTIME
    assert "run kvex is a leftover" in capsys.readouterr().err and execs == []


def test_the_endpoint_table():
    rows = {r["endpoint"]: r for r in endpoints.endpoint_rows(plan_of(HOSTNET, "vxlan", "kvex"))}
    assert list(rows)[:4] == ["ecs/node-1", "ecs/node-2", "ecs/node-3", "ecs/ecs-client"], "instances first"
    assert rows["ecs/node-2"] == {"endpoint": "ecs/node-2", "kind": "node", "netns": "kvex-ecs-node-2",
                                  "addresses": ["192.168.1.2"], "node": "node-2", "vswitch": "vsw-a", "runs": "-"}
    assert rows["ecs/ecs-client"]["kind"] == "ECS"
    web = rows["pod/default/web-0"]
    assert (web["kind"], web["netns"], web["node"], web["runs"]) == ("pod", "kvex-pod-default_web-0", "node-1",
                                                                     "server http/8080")
    host = rows["pod/default/hostweb-0"]
    assert (host["kind"], host["netns"], host["addresses"]) == ("pod (hostNetwork)", "kvex-ecs-node-2", ["192.168.1.2"])
    assert rows["pod/kube-system/kube-dns-0"]["runs"] == "cluster DNS udp/53, tcp/53"


def test_a_pods_state_shows_in_the_table():
    plan = plan_of(HOSTNET, "vxlan", "kvex")
    web = plan.host("pod/default/web-0")
    assert endpoints._runs(web.model_copy(update={"ready": False, "terminating": True})) == \
        "server http/8080 (not ready, terminating)"
    assert endpoints._runs(web.model_copy(update={"phase": "Succeeded"})) == "nothing (Succeeded)"


@pytest.fixture
def served(run):
    """kvex serving an unbuilt Lab of the same scenario on its control socket."""
    lab = Lab(str(HOSTNET), mode="vxlan", run="kvex")
    server = ControlServer(lab, socket_path("kvex"), read_deadline=0.5).start()
    yield server
    server.stop()


def test_inspect_shows_the_endpoints_then_the_status(served, capsys):
    assert cli.main(["inspect", "kvex"]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "endpoints of run kvex" in printed and "kvex-pod-default_web-0" in printed and "hostNetwork" in printed
    assert "run kvex:" in printed and "Services" in printed, "then what `kubevpc status` shows"
    assert cli.main(["inspect", "--json"]) == cli.EXIT_OK                  # the one run that serves
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"] == "kvex" and {s["key"] for s in doc["services"]} >= {"default/hostweb"}
    assert doc["endpoints"] == endpoints.endpoint_rows(plan_of(HOSTNET, "vxlan", "kvex"))


def test_inspect_of_a_run_that_does_not_serve(run, capsys):
    assert cli.main(["inspect", "kvex"]) == cli.EXIT_RUNTIME
    assert "run kvex does not serve a control channel" in capsys.readouterr().err
