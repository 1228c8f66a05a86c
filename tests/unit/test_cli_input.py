"""`kubevpc apply` and `kubevpc delete` with kubectl's input habits (kubevpc/cli/apply.py), and the
dry run behind `--dry-run` (Lab.dry_run, kubevpc/lab/dryrun.py), without root: the Lab is a real Lab
of tests/e2e/data/services.yaml, planned and never built, served on a real control socket
(test_control's fixtures), so a dry run answers in full while a real change says "the lab is not
up"."""
from __future__ import annotations

import io
import json
import sys

import pytest
import yaml

from kubevpc import cli
from kubevpc.control import ControlServer, handle, request, socket_path
from kubevpc.lab import Lab

from .test_control import SERVICES, make_run

WEB = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
       "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                                                      {"name": "echo", "port": 53, "protocol": "UDP",
                                                       "targetPort": "echo"}]}}
AGENT = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 9100}]}]}}}}
SA = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}}


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab(SERVICES, run="kvut")


@pytest.fixture
def served(state, lab):
    """A live run `kvsrv` serving the (unbuilt) lab on its control socket."""
    make_run("kvsrv")
    server = ControlServer(lab, socket_path("kvsrv"), read_deadline=0.5).start()
    yield server
    server.stop()


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def docs(*objects) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("argv, want", [
    (["apply", "-f", "-"], {"run": None, "filename": ["-"], "recursive": False, "dry_run": "none"}),
    (["apply", "kvab", "-f", "dir", "-R", "--dry-run"], {"run": "kvab", "recursive": True, "dry_run": "client"}),
    (["apply", "-f", "a.yaml", "--dry-run=server"], {"dry_run": "server"}),
    (["apply", "-f", "a.yaml", "--dry-run=none"], {"dry_run": "none"}),
    (["delete", "-f", "a.yaml", "--grace-period", "0"], {"run": None, "object": None, "grace_period": 0}),
    (["delete", "kvab", "svc/web"], {"run": "kvab", "object": "svc/web", "filename": None}),
])
def test_arguments(argv, want):
    args = vars(cli.parser().parse_args(argv))
    assert {k: args[k] for k in want} == want


@pytest.mark.parametrize("argv, run, obj, mode", [
    (["delete", "svc/web"], None, "svc/web", "none"),                # a lone OBJECT is not a RUN
    (["delete", "--dry-run", "svc/web"], None, "svc/web", "client"),  # a bare --dry-run took the word after it
    (["delete", "--dry-run", "kvab", "svc/web"], "kvab", "svc/web", "client"),
    (["apply", "--dry-run", "kvab", "-f", "x"], "kvab", None, "client"),
])
def test_positional_arguments_are_put_back_where_they_belong(argv, run, obj, mode):
    from kubevpc.cli.apply import positionals
    args = cli.parser().parse_args(argv)
    positionals(args)
    assert (args.run, getattr(args, "object", None), args.dry_run) == (run, obj, mode)


@pytest.mark.parametrize("argv, error", [
    (["delete"], "delete needs OBJECT or -f FILE|DIR|- (one of them)"),
    (["delete", "kvab", "svc/web", "-f", "x.yaml"], "delete needs OBJECT or -f FILE|DIR|- (one of them)"),
    (["delete", "svc/web", "--grace-period", "-1"], "--grace-period -1: expected 0 or more seconds"),
    (["delete", "rs/web"], "cannot delete 'rs/web': expected svc/<namespace>/<name>"),
    (["apply", "kvab", "--dry-run=maybe", "-f", "x.yaml"], "unexpected argument(s) maybe kvab; --dry-run takes none, "
                                                           "client or server"),
])
def test_bad_usage_exits_2_before_any_run_is_asked(argv, error, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    assert error in capsys.readouterr().err


def test_invalid_manifests_from_standard_input_are_told_and_nothing_is_asked(monkeypatch, capsys):
    stdin(monkeypatch, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n    - {port: 0}\n")
    assert cli.main(["apply", "-f", "-"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid manifest (1 problem(s)); nothing was applied:" in err
    assert "  <stdin>:6: spec.ports[0].port: 0: Input should be greater than or equal to 1\n" in err


def test_only_skipped_objects_apply_nothing_with_one_warning_each(monkeypatch, capsys):
    stdin(monkeypatch, docs(SA, {**SA, "kind": "ServiceAccount", "metadata": {"name": "db"}}))
    assert cli.main(["apply", "-f", "-"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "warning: <stdin>:1: [0]: 'ServiceAccount/web': skipped: does not affect the network",
        "warning: <stdin>:6: [1]: 'ServiceAccount/db': skipped: does not affect the network"]
    assert "nothing to apply: every object was skipped" in captured.out


# ---------------------------------------------------------------------------------- through a served run
def test_apply_dry_run_from_standard_input_prints_what_would_change_and_changes_nothing(served, lab, monkeypatch,
                                                                                          capsys):
    plan, manifests = lab.plan, lab.loaded.manifests
    stdin(monkeypatch, docs(WEB, AGENT, SA))
    assert cli.main(["apply", "kvsrv", "-f", "-", "--dry-run=client"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:2] == ["service/web unchanged (dry run)", "daemonset.apps/agent created (dry run)"]
    for node in ("node-1", "node-2", "node-3"):
        assert any(line.startswith(f"pod/default/agent-{node} would start on {node}, ") for line in lines), lines
    assert lines[-1] == "dry run: no Service would change; nothing was changed (run kvsrv)"
    assert "warning: <stdin>:" in captured.err and "'ServiceAccount/web': skipped" in captured.err
    assert lab.plan is plan and lab.loaded.manifests == manifests
    # twin: without --dry-run the change is asked for, and this unbuilt lab cannot make it
    stdin(monkeypatch, docs(WEB))
    assert cli.main(["apply", "kvsrv", "-f", "-"]) == cli.EXIT_RUNTIME
    assert "error: apply: the lab is not up" in capsys.readouterr().err


def test_a_change_the_planner_rejects_is_rejected_by_the_dry_run_too(served, monkeypatch, capsys):
    taken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np2"},
             "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}}
    stdin(monkeypatch, docs(taken))
    assert cli.main(["apply", "kvsrv", "-f", "-", "--dry-run"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "error: dry_run: the change was rejected" in err and "30080" in err


def test_delete_dry_run_of_files_names_each_object_and_the_pods_that_would_go(served, lab, tmp_path, capsys):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w"}]}}}}
    (tmp_path / "app.yaml").write_text(docs(ns, {"apiVersion": "v1", "kind": "List", "items": [deploy, WEB]}))
    assert cli.main(["delete", "kvsrv", "-f", str(tmp_path), "--dry-run", "--grace-period", "5"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:2] == ["deployment.apps/web deleted (dry run)", "service/web deleted (dry run)"]
    assert "pod/default/web-0 would go from node-1 after terminating for 5 s (its grace period) (dry run)" in lines
    assert "  default/web: deleted" in lines
    assert "  default/web-np: endpoints web-0, web-1 -> web-0 (terminating), web-1 (terminating)" in lines
    assert "Namespace/web: not deleted: a running scenario deletes only Services" in captured.err
    assert {h.key for h in lab.plan.pods} >= {"pod/default/web-0", "pod/default/web-1"}
    # --json: the run's whole answer
    assert cli.main(["delete", "kvsrv", "svc/web-np", "--dry-run", "--json"]) == cli.EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["objects"] == [{"object": "service/web-np", "namespace": "default", "action": "deleted"}]
    assert answer["dry_run"] is True and answer["pods_removed"] == [] and answer["changes"] == ["default/web-np: deleted"]


def test_delete_of_files_asks_for_each_object_and_goes_on_after_one_fails(served, tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(docs(WEB, {**WEB, "metadata": {"name": "web-np"}}))
    assert cli.main(["delete", "kvsrv", "-f", str(tmp_path / "a.yaml")]) == cli.EXIT_RUNTIME
    err = capsys.readouterr().err
    assert "error: svc/default/web: delete: the lab is not up" in err
    assert "error: svc/default/web-np: delete: the lab is not up" in err


# ------------------------------------------------------------------------------------ the request itself
def test_the_dry_run_request_says_what_would_become_of_each_object(lab):
    changed = {**WEB, "spec": {**WEB["spec"], "sessionAffinity": "ClientIP"}}
    answer = handle(lab, request("dry_run", [changed, AGENT, SA], ["pod/default/client-1"], origin="<stdin>"))
    assert answer["ok"] is True and answer["changes"] == [], "the channel's own changes: nothing changed"
    result = answer["result"]
    assert result["objects"] == [{"object": "service/web", "namespace": "default", "action": "configured"},
                                 {"object": "daemonset.apps/agent", "namespace": "default", "action": "created"},
                                 {"object": "pod/client-1", "namespace": "default", "action": "deleted"}]
    assert result["skipped"] == ["<stdin>: ServiceAccount/web: skipped: does not affect the network"]
    assert [p["pod"] for p in result["pods_started"]] == [f"pod/default/agent-node-{i}" for i in (1, 2, 3)]
    assert result["pods_removed"] == [{"pod": "pod/default/client-1", "node": "node-1", "grace_period_s": 30}]
    assert "default/web: sessionAffinity None -> ClientIP (10800 s)" in result["changes"]


@pytest.mark.parametrize("args, kwargs, problem", [
    ([[{"apiVersion": "v1", "kind": "Service"}]], {}, None),               # invalid object: the apply error
    (["not a list"], {}, "objects: Input should be a valid list"),
    ([[1]], {}, "objects[0]: Input should be a valid dictionary"),
    ([[], "svc/web"], {}, "deletes: Input should be a valid list"),
    ([[], ["svc/" + "x" * 700]], {}, None),
    ([[], ["svc/web"]], {"grace_period": "5"}, "grace_period"),
    ([[]], {"shell": True}, "shell"),
])
def test_hostile_dry_run_requests_are_refused_and_change_nothing(lab, args, kwargs, problem):
    plan = lab.plan
    answer = handle(lab, request("dry_run", *args, **kwargs))
    assert answer["ok"] is False and lab.plan is plan
    if problem:
        assert answer["kind"] == "usage" and any(problem in p for p in answer["problems"]), answer
    else:
        assert answer["error"].startswith("dry_run: "), answer


def test_an_unknown_object_or_a_bad_grace_period_is_refused(lab):
    answer = handle(lab, request("dry_run", [], ["svc/nosuch"]))
    assert answer["ok"] is False and "no Service default/nosuch" in answer["error"]
    answer = handle(lab, request("dry_run", [], ["svc/web"], grace_period=-1))
    assert answer["ok"] is False and "grace" in answer["error"]
