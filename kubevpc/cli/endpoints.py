"""A running scenario's endpoints: `kubevpc inspect` (the endpoint table, then what `status`
shows) and `kubevpc exec` (a command in a pod's, ECS instance's or node's network namespace, as
`kubectl exec` and `clab exec` run one in a container)."""
from __future__ import annotations

import os
import shutil
import sys

from rich.markup import escape
from rich.table import Table

from ..errors import KubevpcError
from ..ledger import Ledger, NotARun, check_run_name, list_runs, owner_alive
from ..planning import TERMINAL_PHASES, HostPlan, Plan, resolve_endpoint
from .channel import control_client, control_command, control_options, control_parser
from .output import emit
from .common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, console, out, run_plan
from .observe import cmd_status

NETNS_DIR = "/run/netns"          # where `ip netns attach` names a namespace (the builder names every one)
EXIT_NOT_FOUND = 127              # the command is not there, as a shell says


def add_inspect(sub) -> None:
    p = control_parser(sub, "inspect", "show a running scenario: its endpoints, then what `status` shows",
                       "Every ECS instance, node, pod (and SLB, internet host, VPC DNS resolver) with its network "
                       "namespace, addresses, node and what runs in it, from the run's plan as it is now; then the "
                       "controller, Services and SLBs as `kubevpc status` shows them. `--json`: the status document "
                       "with `endpoints` added.")
    control_options(p)


def add_exec(sub) -> None:
    p = sub.add_parser("exec", help="run a command in an endpoint's network namespace (as kubectl exec, clab exec)",
                       description="Run COMMAND in the network namespace of a pod, ECS instance or node of a live run, "
                       "with the namespace's resolv.conf (a pod's: the cluster DNS), as `ip netns exec` does. Only "
                       "the network namespace is entered: the namespaces share the machine's filesystem. A "
                       "host-network pod's is its node's. Standard input, output and error are the command's, and so "
                       "is the exit status. Exit codes otherwise: 2 bad usage, not a run's name, no such run or "
                       "endpoint; 3 a run that is not live, or a namespace that is gone; 127 no such command.")
    p.add_argument("run", metavar="RUN", help="the run (`kubevpc list` shows the runs)")
    p.add_argument("endpoint", metavar="ENDPOINT", help="pod/<namespace>/<name>, pod/<name> (namespace default), "
                   "ecs/<name> or node/<name>")
    p.add_argument("command", nargs="...", metavar="-- COMMAND", help="the command and its arguments, after --")


# ------------------------------------------------------------------------------------------ inspect
def _kind(h: HostPlan) -> str:
    if h.kind == "ecs":
        return "node" if h.node else "ECS"
    if h.kind == "pod":
        return "pod (hostNetwork)" if h.host_network else "pod"
    return {"slb": "SLB", "internet": "internet", "resolver": "VPC DNS"}.get(h.kind, h.kind)


def _runs(h: HostPlan) -> str:
    """What runs in it, with the ports it serves ("-": nothing); a pod's state when it is not
    plainly ready."""
    if h.phase in TERMINAL_PHASES:
        return f"nothing ({h.phase})"
    program = {"server": "server", "dns": "cluster DNS", "slb": "SLB health checker",
               "ingress": "NGINX ingress controller", "resolver": "VPC DNS resolver"}.get(h.app, h.app)
    ports = ", ".join(f"{_proto(s.name, s.protocol)}/{s.port}" for s in h.servers)
    what = f"{program} {ports}" if ports else "-" if h.app == "server" else program
    state = [w for w, on in (("not ready", h.kind == "pod" and not h.ready), ("terminating", h.terminating)) if on]
    return what + (f" ({', '.join(state)})" if state else "")


def _proto(name: str, protocol: str) -> str:
    """A port's protocol as its server speaks it: a port named http... answers HTTP."""
    return next((p for p in ("https", "http") if name.startswith(p)), protocol.lower())


def endpoint_rows(plan: Plan) -> list[dict]:
    """Every host of the plan: instances and nodes first, then pods, then the rest."""
    order = {"ecs": 0, "pod": 1}
    return [{"endpoint": h.key, "kind": _kind(h), "netns": plan.network_host(h).netns,
             "addresses": [a for a in (h.ip, h.ipv6) if a], "node": h.node, "vswitch": h.vswitch, "runs": _runs(h)}
            for h in sorted(plan.hosts, key=lambda h: order.get(h.kind, 2))]


@control_command
def cmd_inspect(args) -> int:
    client = control_client(args)          # the run named, or the one that serves; checked live
    rows = endpoint_rows(run_plan(client.run))
    if args.output != "table":
        emit({**client.call("describe"), "endpoints": rows}, args.output)
        return EXIT_OK
    t = Table(title=f"endpoints of run {client.run} (`kubevpc exec {client.run} ENDPOINT -- CMD`)")
    for col in ("endpoint", "kind", "network namespace", "address", "node", "runs"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["endpoint"], r["kind"], r["netns"], ", ".join(r["addresses"]) or "-", r["node"] or "-", r["runs"])
    out.print(t)
    args.run = client.run
    return cmd_status(args)


# --------------------------------------------------------------------------------------------- exec
def namespace_of(run: str, endpoint: str) -> str:
    """The named network namespace an endpoint of a live run runs in, checked to be in the run's
    ledger and to exist. Raises NotARun (bad usage: a bad name, no such run or endpoint) or
    KubevpcError (the run is not live, the namespace is gone)."""
    check_run_name(run)
    if run not in list_runs():
        raise NotARun(f"no run named {run} on this machine (`kubevpc list` shows the runs)")
    if not owner_alive(run):
        raise KubevpcError(f"run {run} is a leftover: the process that made it is gone (`kubevpc down {run}` "
                           "removes it)")
    plan = run_plan(run)
    try:
        h = resolve_endpoint(plan, endpoint)
    except KeyError:
        raise NotARun(f"no endpoint {endpoint!r} in run {run}; expected pod/<namespace>/<name>, pod/<name>, "
                      f"ecs/<name> or node/<name>; it has {', '.join(h.key for h in plan.hosts)}") from None
    netns = plan.network_host(h).netns
    if netns not in {e.name for e in Ledger(run).entries() if e.kind == "netns"}:
        raise KubevpcError(f"{h.key}'s namespace {netns} is not in run {run}'s ledger")
    if not os.path.exists(os.path.join(NETNS_DIR, netns)):
        raise KubevpcError(f"{h.key}'s namespace {netns} does not exist (any more)")
    return netns


def exec_argv(netns: str, command: list[str]) -> list[str]:
    """`ip netns exec`: the namespace entered, its /etc/netns/<netns>/resolv.conf bind-mounted over
    /etc/resolv.conf in a mount namespace of the command's own; then the command, exec'd."""
    return ["ip", "netns", "exec", netns, *command]


def cmd_exec(args) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if not command:
            raise NotARun("no command: expected `kubevpc exec RUN ENDPOINT -- COMMAND [ARG ...]`")
        netns = namespace_of(args.run, args.endpoint)
    except NotARun as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_RUNTIME
    if shutil.which(command[0]) is None:
        console.print(f"[red]error:[/red] {escape(command[0])}: command not found")
        return EXIT_NOT_FOUND
    sys.stdout.flush()
    sys.stderr.flush()
    argv = exec_argv(netns, command)
    try:
        os.execvp(argv[0], argv)    # this process becomes the command: its streams, signals and exit status
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot run {argv[0]}: {escape(exc.strerror or str(exc))}")
    return EXIT_RUNTIME


COMMANDS = {"inspect": (add_inspect, cmd_inspect), "exec": (add_exec, cmd_exec)}
