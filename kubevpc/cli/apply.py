"""`kubevpc apply` and `kubevpc delete`, with kubectl's input habits: `-f` names a file, a directory
(its *.yaml, *.yml and *.json files; its subdirectories too with -R) or `-` for standard input, each
holding one or more YAML documents or a `kind: List`; `--dry-run` asks the run to plan the change
and prints what would change, changing nothing. The manifests are read and checked here
(kubevpc.scenario.manifests) before the run is asked anything; objects of kinds that do not touch
the network are skipped with one warning line each."""
from __future__ import annotations

import sys

from ..control import DELETERS, ControlError
from ..errors import Problem, ScenarioError
from ..k8s import DaemonSet, Deployment, Ingress, NetworkPolicy, Pod, Service, StatefulSet
from ..scenario.manifests import STDIN, STDIN_NAME, Manifests, read_manifests
from .channel import control_client, control_command, control_options, control_parser
from .common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, console, out
from .output import emit
from .runtime import _changed

# what `delete -f` deletes, by kind: the reference `kubevpc delete KIND/...` takes
REF_KINDS = {Service: "svc", NetworkPolicy: "netpol", Ingress: "ingress", Pod: "pod", Deployment: "deploy",
             StatefulSet: "sts", DaemonSet: "ds"}
DRY_RUN = ("none", "client", "server")


def input_options(p, verb: str, required: bool) -> None:
    """-f, -R and --dry-run, as kubectl has them."""
    p.add_argument("-f", "--filename", action="append", required=required, metavar="FILE|DIR|-",
                   help=f"a manifest file, a directory of them (*.yaml, *.yml, *.json, sorted by name), or - for "
                        f"standard input; may be given several times. The objects to {verb}")
    p.add_argument("-R", "--recursive", action="store_true",
                   help="read the directories -f names and their subdirectories (default: the directory only)")
    p.add_argument("--dry-run", nargs="?", const="client", default="none", metavar="none|client|server",
                   help="plan the change in the run and print what would change, changing nothing (client and "
                        "server alike: the run is kubevpc's API server; --dry-run alone is --dry-run=client)")


def add_apply(sub) -> None:
    p = control_parser(sub, "apply", "create or replace Services, NetworkPolicies, Namespaces, Ingresses, Secrets, Pods, "
                       "Deployments, StatefulSets, DaemonSets and ConfigMaps in a running scenario",
                       "Create or replace the objects of manifests (files, directories or standard input; one or more "
                       "YAML documents each, or a kind: List) in a running scenario, as `kubectl apply -f` does. A "
                       "Service keeps its ClusterIP and NodePorts unless the file sets them. New pods (a new Pod, "
                       "Deployment or DaemonSet, more replicas) are started and join Services once their server listens; "
                       "pods that go are removed once no flow sends to them. A running pod keeps its node, address and "
                       "ports: changing those is refused. Terway's ConfigMaps (eni-config, a node's own) apply to new "
                       "pods; a pod vSwitch new to a node attaches an uplink (an ENI) to it. Objects of kinds that do "
                       "not touch the network (a ServiceAccount, a Role, a ConfigMap outside kube-system, ...) are "
                       "skipped with one warning line each. The manifests are checked as the scenario loader checks "
                       "manifests before the run is asked anything.")
    input_options(p, "apply", True)
    control_options(p)


def add_delete(sub) -> None:
    p = control_parser(sub, "delete", "delete Services, NetworkPolicies, Ingresses, Pods, Deployments, StatefulSets or "
                       "DaemonSets from a running scenario, by name or as manifests name them",
                       "Delete an object (OBJECT), or every object the manifests of -f name, as `kubectl delete` does, "
                       "from a running scenario. A Service's ClusterIP and NodePorts stop being served "
                       "(the other Services keep theirs); a NetworkPolicy's rules stop applying; an Ingress's hosts and "
                       "paths leave the ingress controllers' NGINX configuration; a Pod (or every pod of a Deployment, "
                       "StatefulSet or DaemonSet) terminates gracefully, as kubectl deletes it: for its grace period it "
                       "keeps running and serving, and is an endpoint that is serving and terminating but not ready "
                       "(kube-proxy uses it only when a Service has no ready one); then it leaves the Services' "
                       "endpoints, and its namespace, veth and processes are removed. The command returns at once; "
                       "`kubevpc status` shows the pods still terminating. A pod of a Deployment is replaced by a new "
                       "pod with a new name and address, as the ReplicaSet controller does; a pod of a StatefulSet or a "
                       "DaemonSet is created again under its own name once it is gone. With -f, objects of other kinds "
                       "(Namespaces, ConfigMaps, Secrets, ...) are left in place with a warning.")
    p.add_argument("object", nargs="?", metavar="OBJECT", help="KIND/<namespace>/<name> or KIND/<name> (namespace "
                   "default), KIND one of svc, netpol, ingress, pod, deploy, sts, ds; or -f instead")
    input_options(p, "delete", False)
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS",
                   help="seconds a deleted pod keeps running, terminating (default: the pod's "
                        "terminationGracePeriodSeconds, 30 unless set); 0 removes it at once. Deleting a terminating "
                        "pod again with a shorter one shortens what is left")
    control_options(p)


def positionals(args) -> None:
    """RUN and OBJECT as the user meant them. argparse gives a bare `--dry-run` the word after it,
    and the first word to RUN: a word that is not a dry-run mode is put back among the positional
    arguments, and a lone OBJECT (it holds a "/") taken for RUN is moved to OBJECT."""
    words = [args.run, getattr(args, "object", None)]
    if args.dry_run not in DRY_RUN:
        words, args.dry_run = [args.dry_run] + words, "client"
    words = [w for w in words if w is not None]
    if hasattr(args, "object") and len(words) == 1 and "/" in words[0]:
        words = [None, words[0]]
    if len(words) > (2 if hasattr(args, "object") else 1):
        raise ControlError(f"unexpected argument(s) {' '.join(words)}; --dry-run takes none, client or server", "usage")
    args.run = words[0] if words else None
    if hasattr(args, "object"):
        args.object = words[1] if len(words) > 1 else None


def read_input(args, verb: str) -> Manifests | None:
    """The manifests -f names, checked, with one warning line for each object skipped; None (with
    the problems printed) when they are not valid."""
    try:
        got = read_manifests(args.filename, args.recursive)
    except ScenarioError as exc:
        console.print(f"[red]invalid manifest[/red] ({len(exc.problems)} problem(s)); nothing was {verb}:")
        for p in exc.problems:           # one line each, never wrapped, so they can be grepped
            sys.stderr.write(f"  {p}\n")
        return None
    warn(got.warnings)
    return got


def warn(warnings: list[Problem] | list[str]) -> None:
    for w in warnings:
        sys.stderr.write(f"warning: {w}\n")


def origin(names: list[str]) -> str:
    return ", ".join(STDIN_NAME if n == STDIN else n for n in names)


@control_command
def cmd_apply(args) -> int:
    positionals(args)
    got = read_input(args, "applied")
    if got is None:
        return EXIT_USAGE
    if not got.objects:
        out.print("nothing to apply: every object was skipped")
        return EXIT_OK
    client = control_client(args)
    if args.dry_run != "none":
        return dry_run(client, client.request("dry_run", got.objects, [], origin=origin(args.filename)), args.output)
    reply = client.request("apply", *got.objects, origin=origin(args.filename))
    return _changed(client, f"applied {len(got.objects)} object(s) from {origin(args.filename)}", reply, args.output)


@control_command
def cmd_delete(args) -> int:
    positionals(args)
    if (args.object is None) == (not args.filename):
        raise ControlError("delete needs OBJECT or -f FILE|DIR|- (one of them)", "usage")
    if args.grace_period is not None and args.grace_period < 0:
        raise ControlError(f"--grace-period {args.grace_period}: expected 0 or more seconds", "usage")
    refs = [args.object] if args.object is not None else _refs(args)
    if refs is None:
        return EXIT_USAGE
    for ref in refs:
        kind, _, name = ref.partition("/")
        if kind not in DELETERS or not name:
            raise ControlError(f"cannot delete {ref!r}: expected " +
                               " or ".join(f"{k}/<namespace>/<name>, {k}/<name>" for k in DELETERS), "usage")
    if not refs:
        out.print("nothing to delete: no object of a kind `kubevpc delete` takes")
        return EXIT_OK
    grace = {"grace_period": args.grace_period} if args.grace_period is not None else {}
    client = control_client(args)
    if args.dry_run != "none":
        return dry_run(client, client.request("dry_run", [], refs, **grace), args.output)
    return _delete_each(client, refs, grace, args.output)


def _refs(args) -> list[str] | None:
    """What `delete -f` deletes: each object of the manifests, as KIND/<namespace>/<name>."""
    got = read_input(args, "deleted")
    if got is None:
        return None
    refs, kept = [], []
    for m in got.manifests:
        meta = m.obj.metadata
        kind = REF_KINDS.get(type(m.obj))
        if kind is None:
            kept.append(f"{m.file}: {m.path or '<top>'}: {type(m.obj).__name__}/{meta.name}: not deleted: a running "
                        "scenario deletes only Services, NetworkPolicies, Ingresses, Pods, Deployments, StatefulSets "
                        "and DaemonSets")
        else:
            refs.append(f"{kind}/{meta.namespace}/{meta.name}")
    warn(kept)
    return list(dict.fromkeys(refs))


def _delete_each(client, refs: list[str], grace: dict, fmt: str) -> int:
    """Each object deleted in turn, as kubectl deletes them: one that fails is told, and the others
    are deleted all the same; the exit code is the worst."""
    code, replies = EXIT_OK, []
    for ref in refs:
        try:
            reply = client.request(DELETERS[ref.partition("/")[0]], ref, **grace)
        except ControlError as exc:
            console.print(f"[red]error:[/red] {ref}: {exc}", markup=True, soft_wrap=True)
            for p in exc.problems:
                sys.stderr.write(f"  {p}\n")
            code = max(code, EXIT_USAGE if exc.kind == "usage" else EXIT_RUNTIME)
            continue
        if fmt != "table":
            replies.append({"object": ref, "result": reply.result, "changes": list(reply.changes),
                            "took_s": round(reply.took_s, 4)})
        else:
            _changed(client, f"{ref} deleted", reply, "table")
    if fmt != "table":
        emit({"run": client.run, "deleted": replies}, fmt)
    return code


def dry_run(client, reply, fmt: str) -> int:
    """What the run answered a dry run with, as kubectl prints one: `service/web configured (dry run)`."""
    result = reply.result
    if fmt != "table":
        emit({"run": client.run, **result}, fmt)
        return EXIT_OK
    warn(result.get("skipped", []))
    for o in result["objects"]:
        ns = f" -n {o['namespace']}" if o["namespace"] not in ("", "default") else ""
        out.print(f"{o['object']}{ns} {o['action']} (dry run)", markup=False)
    for p in result["pods_started"]:
        out.print(f"{p['pod']} would start on {p['node']}, {p['ip']} (dry run)", markup=False)
    for p in result["pods_removed"]:
        when = f"after terminating for {p['grace_period_s']} s (its grace period)" if p["grace_period_s"] else "at once"
        out.print(f"{p['pod']} would go from {p['node']} {when} (dry run)", markup=False)
    for u in result["uplinks"]:
        out.print(f"{u} would be attached (dry run)", markup=False)
    services = [line for line in result["changes"] if not line.startswith("pod/")]
    for line in services:
        out.print(f"  {line}", markup=False)
    out.print(f"dry run: {'no Service would change; ' if not services else ''}nothing was changed (run {client.run})",
              markup=False)
    return EXIT_OK


COMMANDS = {"apply": (add_apply, cmd_apply), "delete": (add_delete, cmd_delete)}
