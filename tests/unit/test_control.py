"""The control channel (kubevpc/control.py) and its subcommands, without root.

The framing and the server run over real Unix sockets in a temporary state directory; the Lab
behind them is a real Lab of tests/e2e/data/services.yaml that is planned but never built, so
every call that would touch the network says "the lab is not up", while argument checks, the
whitelist, the views and the error messages are the real ones.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubevpc import cli, control, ledger
from kubevpc.cli.common import say
from kubevpc.control import (WHITELIST, ControlClient, ControlError, ControlServer, ProtocolError, diff, encode,
                             find_run, handle, read_manifests, read_message, request, socket_path, summary)
from kubevpc.lab import Lab
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

SERVICES = str(Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml")


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab(SERVICES, run="kvut")


def make_run(run: str, pid: int | None = None) -> str:
    """A run directory whose owner is `pid` (default: this process, so the run is live)."""
    pid = os.getpid() if pid is None else pid
    os.makedirs(ledger.run_dir(run))
    with open(os.path.join(ledger.run_dir(run), "owner"), "w", encoding="utf-8") as fh:
        fh.write(f"{pid} {ledger._start_time(pid) or 'gone'}\n")
    return run


@pytest.fixture
def served(state, lab):
    """A live run `kvsrv` serving the (unbuilt) lab on its control socket."""
    make_run("kvsrv")
    server = ControlServer(lab, socket_path("kvsrv"), read_deadline=0.5).start()
    yield server
    server.stop()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


# ----------------------------------------------------------------------------------- framing
def test_a_message_is_one_json_line_and_reads_back_whole():
    a, b = socket.socketpair()
    with a, b:
        msg = request("apply", {"metadata": {"name": "x\ny"}}, timeout=3)
        data = encode(msg)
        assert data.endswith(b"\n") and data.count(b"\n") == 1, "a newline inside a string is escaped"
        a.sendall(data[:5])
        threading.Timer(0.05, a.sendall, (data[5:],)).start()      # arrives in two pieces
        assert read_message(b, 2) == msg == {"v": 1, "method": "apply", "args": [{"metadata": {"name": "x\ny"}}],
                                             "kwargs": {"timeout": 3}}


@pytest.mark.parametrize("sent, error", [
    (b"not json\n", "the message is not JSON"),
    (b"[1, 2]\n", "expected a JSON object, got list"),
    (b"\xff\xfe\n", "the message is not JSON"),
    (b'{"v": 1', "the connection closed before a whole message"),
])
def test_malformed_messages_are_refused_with_a_reason(sent, error):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(sent)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ProtocolError, match=error):
            read_message(b, 2)


def test_reading_has_a_deadline_and_a_size_limit():
    a, b = socket.socketpair()
    with a, b:
        t0 = time.monotonic()
        with pytest.raises(ProtocolError, match="no whole message within 0.3 s"):
            read_message(b, 0.3)              # the peer sends nothing
        assert time.monotonic() - t0 < 1.5
        a.sendall(b"x" * 2000)
        with pytest.raises(ProtocolError, match="longer than the 1000 bytes allowed"):
            read_message(b, 2, limit=1000)
    with pytest.raises(ProtocolError, match="longer than"):
        encode({"big": "x" * control.MAX_MESSAGE})


def test_results_that_are_models_or_tuples_become_json(lab):
    svc = lab.service("web")
    back = json.loads(encode({"result": svc, "t": (1, 2)}))
    assert back["result"]["cluster_ip"] == svc.cluster_ip and back["t"] == [1, 2]


# ------------------------------------------------------------------------------- whitelist
def test_the_whitelist_names_public_lab_methods_and_views():
    assert WHITELIST == ("set_ready", "apply", "delete", "delete_service", "label", "set_network_policies", "scale",
                         "add_node", "add_pod_cidr", "stop_server", "start_server", "status", "dry_run", "describe",
                         "matrix")
    for name in control.LAB_METHODS:
        assert not name.startswith("_") and callable(getattr(Lab, name)), name
    assert set(control.DELETERS.values()) <= set(WHITELIST)


@pytest.mark.parametrize("method", ["down", "up", "exec", "__init__", "_update", "net", None])
def test_methods_outside_the_whitelist_are_refused(lab, method):
    answer = handle(lab, request(method))
    assert answer["ok"] is False and answer["kind"] == "usage"
    assert answer["error"] == (f"unknown method {method!r}; this run serves set_ready, apply, delete, delete_service, "
                               "label, set_network_policies, scale, add_node, add_pod_cidr, stop_server, start_server, "
                               "status, dry_run, "
                               "describe, matrix")


def test_a_whitelisted_view_answers(lab):
    answer = handle(lab, request("describe"))
    assert answer["ok"] is True and answer["changes"] == []
    d = answer["result"]
    assert (d["run"], d["mode"], d["controller"]) == ("kvut", "vxlan", {})
    web = next(s for s in d["services"] if s["key"] == "default/web")
    assert web["cluster_ip"] == "172.21.0.11" and [e["name"] for e in web["endpoints"]] == ["web-0", "web-1"]
    lb = next(s for s in d["slbs"] if s["service"] == "default/web-lb-local")
    assert [b["id"] for b in lb["listeners"][0]["backends"]] == ["node-1", "node-2", "node-3"]
    assert {b["status"] for b in lb["listeners"][0]["backends"]} == {"unknown"}, "no checker runs"


# ---------------------------------------------------------------------------------- requests
@pytest.mark.parametrize("message, error", [
    ({"v": 2, "method": "status"}, "protocol version 2 is not served; this run speaks 1"),
    ({"method": "status"}, "protocol version None is not served"),
    ({"v": 1, "method": "status", "argz": []}, "unknown request key(s) argz; expected v, method, args, kwargs"),
    ({"v": 1, "method": "status", "args": {}}, "args must be a JSON array and kwargs a JSON object"),
    ({"v": 1, "method": "status", "kwargs": []}, "args must be a JSON array and kwargs a JSON object"),
])
def test_badly_formed_requests_are_usage_errors(lab, message, error):
    answer = handle(lab, message)
    assert (answer["ok"], answer["kind"]) == (False, "usage")
    assert answer["error"].startswith(error), answer["error"]


def test_arguments_are_checked_against_the_signature_strictly(lab):
    answer = handle(lab, request("set_ready", "pod/web-0", "false"))
    assert (answer["ok"], answer["kind"]) == (False, "usage")
    assert answer["error"] == "bad arguments for set_ready(pod: str, ready: bool)"
    assert answer["problems"] == ["ready: Input should be a valid boolean (got 'false')"]
    answer = handle(lab, request("set_ready", "pod/web-0"))
    assert answer["problems"] == ["ready: Missing required argument"]
    answer = handle(lab, request("stop_server", "pod/web-0", progam="nodehealth"))
    assert answer["problems"] == ["progam: Unexpected keyword argument (got 'nodehealth')"]
    answer = handle(lab, request("apply", {"kind": "Service"}, "not a dict"))
    assert answer["problems"] == ["objects[1]: Input should be a valid dictionary (got 'not a dict')"]
    # twin: the same call with a bool gets past the checks, to the lab, which is not up
    answer = handle(lab, request("set_ready", "pod/web-0", False))
    assert (answer["ok"], answer["kind"], answer["error"]) == (False, "runtime", "set_ready: the lab is not up")


def test_methods_whose_annotations_cannot_be_checked_get_their_arity_checked(lab):
    class Stand:                       # a Lab method with an annotation pydantic cannot resolve
        plan = lab.plan

        def status(self, x: NotAType) -> dict:  # noqa: F821 -- never defined
            return {"x": x}
    assert handle(Stand(), request("status", 1))["result"] == {"x": 1}
    answer = handle(Stand(), request("status"))
    assert (answer["kind"], answer["error"]) == ("usage", "bad arguments for status(x: NotAType)")
    assert answer["problems"] == ["missing a required argument: 'x'"]


def test_the_labs_own_errors_come_back_as_messages(lab):
    answer = handle(lab, request("set_ready", "pod/nosuch", False))
    assert answer["kind"] == "runtime" and "Traceback" not in answer["error"]
    assert answer["error"].startswith("set_ready: no endpoint 'pod/nosuch'; expected pod/<namespace>/<name>")
    answer = handle(lab, request("set_ready", "ecs/node-1", True))
    assert answer["error"] == "set_ready: ecs/node-1 is not a pod"
    answer = handle(lab, request("delete_service", "nosuch"))
    assert answer["error"].startswith("delete_service: no Service 'nosuch'; this scenario has default/web, ")


def test_an_invalid_object_is_refused_with_its_paths(lab):
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 70000}]}}
    answer = handle(lab, request("apply", bad))
    assert answer["ok"] is False and answer["error"].startswith("apply: ")
    text = " ".join([answer["error"], *answer["problems"]])
    assert "port" in text and "less than or equal to 65535" in text and "Traceback" not in text


# ------------------------------------------------------------------------------ what changed
def test_changes_list_each_service_field_that_changed():
    loaded = load(SERVICES)
    before = summary(make_plan(loaded, "kvut"))
    after = summary(make_plan(loaded, "kvut", {"pod/default/web-1": False}))
    lines = diff(before, after)
    assert "default/web: endpoints web-0, web-1 -> web-0, web-1 (not ready)" in lines
    assert "default/web-lb-local: endpoints web-0, web-1 -> web-0, web-1 (not ready)" in lines
    assert not any(line.startswith(("default/empty", "default/ext", "kube-system/")) for line in lines), lines
    assert diff(before, before) == []
    gone = {k: v for k, v in before.items() if k != "default/web"}
    assert diff(before, gone)[0] == "default/web: deleted"
    assert diff(gone, before)[0] == ("default/web: created, ClusterIP 172.21.0.11, "
                                     "ports 80/TCP->http, 53/UDP->echo")


# ------------------------------------------------------------------------------------ server
def test_the_socket_is_private_and_answers_calls(served):
    mode = os.stat(served.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    client = ControlClient("kvsrv", timeout=10)
    assert client.describe()["run"] == "kvut"
    reply = client.request("status")
    assert reply.result == {} and reply.changes == () and reply.took_s >= 0
    with pytest.raises(ControlError, match="set_ready: the lab is not up") as err:
        client.set_ready("pod/web-0", True)
    assert err.value.kind == "runtime"
    with pytest.raises(AttributeError):
        client.down        # noqa: B018 -- not whitelisted, so not an attribute either


def test_a_silent_client_gets_an_error_after_the_read_deadline(served):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(served.path)
        t0 = time.monotonic()
        answer = read_message(s, 5)
    assert time.monotonic() - t0 < 2
    assert answer == {"v": 1, "ok": False, "kind": "usage", "error": "no whole message within 0.5 s",
                      "problems": []}


def test_calls_run_one_at_a_time(served):
    done = []
    served.lock.acquire()              # a call under way
    try:
        t = threading.Thread(target=lambda: done.append(ControlClient("kvsrv", timeout=10).describe()))
        t.start()
        time.sleep(0.4)
        assert not done, "a second call ran while the first held the lock"
    finally:
        served.lock.release()
    t.join(timeout=10)
    assert done and done[0]["run"] == "kvut"


def test_a_stopped_server_removes_its_socket(state, lab):
    make_run("kvstp")
    server = ControlServer(lab, socket_path("kvstp")).start()
    client = ControlClient("kvstp", timeout=10)
    assert client.status() == {}
    server.stop()
    assert not os.path.exists(socket_path("kvstp"))
    with pytest.raises(ControlError, match="run kvstp does not answer on its control socket") as err:
        client.status()
    assert err.value.kind == "unavailable"


def test_a_socket_path_too_long_for_unix_sockets_is_refused(lab, tmp_path):
    long = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(control.KubevpcError, match="longer than the 107 bytes a Unix socket allows"):
        ControlServer(lab, str(long)).start()


# --------------------------------------------------------------------------- finding the run
def test_finding_a_named_run(state, lab):
    with pytest.raises(ControlError, match=r"no run named kvno on this machine \(`kubevpc list` shows the runs\)"):
        find_run("kvno")
    make_run("kvold", dead_pid())
    with pytest.raises(ControlError, match=r"run kvold is a leftover: .*`kubevpc clean kvold` removes it"):
        find_run("kvold")
    make_run("kvlive")
    with pytest.raises(ControlError, match="run kvlive does not serve a control channel: only `kubevpc run FILE "
                                           "--keep` or `--cli` serves one"):
        find_run("kvlive")
    with pytest.raises(ControlError, match="'../x' is not a run name") as err:
        find_run("../x")
    assert err.value.kind == "usage"
    with ControlServer(lab, socket_path("kvlive")):
        assert find_run("kvlive") == "kvlive"


def test_the_run_may_be_left_out_when_exactly_one_serves(state, lab):
    with pytest.raises(ControlError, match="no run is live; start one with `kubevpc run FILE --keep`"):
        find_run()
    make_run("kvold", dead_pid())
    make_run("kva")
    with pytest.raises(ControlError, match=r"no live run serves a control channel \(live: kva\)"):
        find_run()
    with ControlServer(lab, socket_path("kva")):
        assert find_run() == "kva"
        make_run("kvb")
        with ControlServer(lab, socket_path("kvb")):
            with pytest.raises(ControlError, match=r"2 runs serve a control channel \(kva, kvb\): name one"):
                find_run()


# ---------------------------------------------------------------------------- manifest files
def test_manifest_files_are_checked_as_the_scenario_loader_checks_them(tmp_path):
    good = tmp_path / "two.yaml"
    good.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n"
                    "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 81}]}\n")
    assert [o["metadata"]["name"] for o in read_manifests([str(good)])] == ["a", "b"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n    - {port: 70000}\n"
                   "---\nkind: Gadget\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(control.ScenarioError) as err:
        read_manifests([str(bad), str(empty), str(tmp_path / "missing.yaml")])
    text = [str(p) for p in err.value.problems]
    assert text[0] == f"{bad}:6: spec.ports[0].port: 70000: Input should be less than or equal to 65535"
    assert text[1].startswith(f"{bad}:8: kind: 'Gadget': unsupported object; expected one of ")
    assert text[2] == f"{tmp_path}/missing.yaml: <top>: '{tmp_path}/missing.yaml': cannot read the file: " \
                      "No such file or directory"
    # an empty file is no problem beside others (as kubectl); no object at all is
    with pytest.raises(control.ScenarioError) as err:
        read_manifests([str(empty)])
    assert [str(p) for p in err.value.problems] == [f"{empty}: <top>: None: no objects; expected one or more "
                                                    "Kubernetes objects (YAML documents)"]


# ------------------------------------------------------------------------------- subcommands
@pytest.mark.parametrize("argv, want", [
    (["ready", "kvab", "pod/web-0", "false"], {"run": "kvab", "pod": "pod/web-0", "state": "false"}),
    (["ready", "pod/web-0", "true"], {"run": None, "pod": "pod/web-0", "state": "true"}),
    (["ready", "--json", "kvab", "pod/web-0", "true"], {"run": "kvab", "json": True}),
    (["apply", "-f", "a.yaml", "-f", "b.yaml"], {"run": None, "filename": ["a.yaml", "b.yaml"]}),
    (["apply", "kvab", "-f", "a.yaml"], {"run": "kvab", "filename": ["a.yaml"]}),
    (["delete", "kvab", "svc/default/web"], {"run": "kvab", "object": "svc/default/web"}),
    (["stop-server", "pod/web-0"], {"run": None, "endpoint": "pod/web-0", "program": "server"}),
    (["start-server", "kvab", "node/node-1", "--program", "nodehealth"], {"run": "kvab", "program": "nodehealth"}),
    (["status"], {"run": None, "json": False, "timeout": 150.0}),
    (["status", "kvab", "--json", "--timeout", "5"], {"run": "kvab", "json": True, "timeout": 5.0}),
])
def test_subcommand_arguments(argv, want):
    args = vars(cli.parser().parse_args(argv))
    assert {k: args[k] for k in want} == want


@pytest.mark.parametrize("argv", [
    ["ready", "kvab", "pod/web-0", "maybe"],            # true or false only
    ["ready", "kvab"],                                  # no pod
    ["apply", "kvab"],                                  # no -f
    ["stop-server", "pod/web-0", "--program", "dns"],   # server or nodehealth only
])
def test_bad_subcommand_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(argv)
    assert exc.value.code == 2
    assert "usage: kubevpc" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    for name in ("ready", "apply", "delete", "stop-server", "start-server", "add-node", "status"):
        with pytest.raises(SystemExit):
            cli.parser().parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert "RUN is the run's name" in text and "Exit codes: 0 done" in text, name


def test_cli_errors_and_exit_codes(state, tmp_path, capsys):
    assert cli.main(["status", "nosuch"]) == cli.EXIT_RUNTIME
    assert "error: no run named nosuch on this machine" in capsys.readouterr().err
    assert cli.main(["delete", "kvab", "rs/web"]) == cli.EXIT_USAGE
    assert "cannot delete 'rs/web': expected svc/<namespace>/<name>, svc/<name>" in capsys.readouterr().err
    assert cli.main(["scale", "kvab", "deploy/web", "--replicas", "-1"]) == cli.EXIT_USAGE
    assert "--replicas -1: expected 0 or more" in capsys.readouterr().err
    assert cli.main(["ready", "BAD", "pod/web-0", "true"]) == cli.EXIT_USAGE
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n    - {port: 0}\n")
    # the file is checked before any run is looked for: there is none, yet the answer is about the file
    assert cli.main(["apply", "-f", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid manifest (1 problem(s)); nothing was applied:" in err
    assert f"  {bad}:6: spec.ports[0].port: 0: Input should be greater than or equal to 1\n" in err


def test_cli_through_a_served_run(served, tmp_path, capsys):
    assert cli.main(["status", "kvsrv", "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["run"] == "kvut"
    assert cli.main(["status"]) == cli.EXIT_OK              # the one run that serves
    out = capsys.readouterr().out
    assert "run kvut: " in out and "default/web-lb-local" in out
    assert cli.main(["ready", "pod/nosuch", "false"]) == cli.EXIT_RUNTIME
    assert "error: set_ready: no endpoint 'pod/nosuch'" in capsys.readouterr().err
    assert cli.main(["stop-server", "kvsrv", "pod/web-0", "--program", "nodehealth"]) == cli.EXIT_RUNTIME
    assert "error: stop_server: the lab is not up" in capsys.readouterr().err
    good = tmp_path / "svc.yaml"
    good.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n")
    assert cli.main(["apply", "kvsrv", "-f", str(good)]) == cli.EXIT_RUNTIME
    assert "error: apply: the lab is not up" in capsys.readouterr().err


def test_progress_lines_are_not_wrapped_when_stderr_is_not_a_terminal(capsys):
    text = "building a scenario whose progress line is much longer than eighty columns " * 3
    say(text)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text.strip() in err
