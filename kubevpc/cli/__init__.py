# PYTHON_ARGCOMPLETE_OK (argcomplete: this command answers shell completion, kubevpc/cli/complete.py)
"""The `kubevpc` command line. Library code raises; only this package exits.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or invalid scenario, 3 build or runtime error,
130 interrupted.

One module per group of commands: scenario.py (validate, plan, flows, explain, graph: a scenario
file, nothing built), run.py (run, check: build it), runtime.py (ready, scale, label, add-node,
add-pod-cidr, stop-server, start-server: change a running scenario through its control channel), apply.py (apply,
delete: the same, from manifests as kubectl reads them), observe.py
(trace, capture, flowlog, status, matrix, list, clean: look at runs), perf.py (the benchmark), schema.py
(the scenario's JSON Schema),
importcmd.py (import: a scenario from a cloud description). complete.py answers shell completion (argcomplete).
lifecycle.py (up, down: a run left running under a supervisor, supervise.py) and endpoints.py
(inspect, exec: a running scenario's endpoints).
common.py holds what they share; channel.py what the commands that talk to a run share; output.py
`-o table|json|yaml` and --version; junit.py the JUnit reports; verbose.py `-v`.
"""
from __future__ import annotations

import argparse
import signal
import sys

from ..errors import KubevpcError, ScenarioError
from . import (apply, complete, endpoints, importcmd, lifecycle, observe, perf, run, runtime, scenario, schema,
               verbose)
from .common import EXIT_CHECKS, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, console
from .output import VersionAction, resolve_json_alias

# every command: (the function that adds its parser, the function that runs it)
COMMANDS = {**scenario.COMMANDS, **run.COMMANDS, **runtime.COMMANDS, **apply.COMMANDS, **observe.COMMANDS,
            **perf.COMMANDS, **schema.COMMANDS, **importcmd.COMMANDS}
COMMANDS |= {**lifecycle.COMMANDS, **endpoints.COMMANDS}
# the order `kubevpc --help` lists them in: a scenario file, building it, a lab's lifecycle
# (containerlab's deploy, destroy, inspect, exec), changing and looking at a running one, the rest
ORDER = ("validate", "plan", "flows", "explain", "graph", "schema", "import",
         "run", "check", "up", "down", "inspect", "exec",
         "status", "list", "clean", "ready", "apply", "delete", "scale", "label", "add-node", "add-pod-cidr",
         "stop-server", "start-server", "matrix", "trace", "capture", "flowlog", "perf")

__all__ = ["COMMANDS", "EXIT_CHECKS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kubevpc", description="Emulate the container networking of managed "
                                 "Kubernetes in a cloud VPC with namespaces, Open vSwitch and os-ken.")
    ap.add_argument("--version", action=VersionAction, help="print the versions of kubevpc, os-ken, Open vSwitch "
                    "and Python, and exit")
    verbose.add_verbose(ap, top=True)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                            help="one of the commands below; `kubevpc COMMAND --help` shows its options")
    for name in ORDER:
        add, _ = COMMANDS[name]
        add(sub)
    for p in _commands(sub):
        verbose.add_verbose(p)
    return ap


def _commands(sub: argparse._SubParsersAction):
    """Every command's parser, nested ones (`import terraform`) too, so each takes -v."""
    for p in sub.choices.values():
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from _commands(action)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)      # `kubevpc flows FILE | head` ends quietly
    ap = parser()
    if argv is None:            # the command line: a shell asking for completions is answered here
        complete.autocomplete(ap)
    args = ap.parse_args(argv)
    _, command = COMMANDS[args.cmd]
    clash = resolve_json_alias(args)
    if clash:
        console.print(f"[red]error:[/red] {clash}", markup=True)
        return EXIT_USAGE
    verbose.setup(args.verbose)
    try:
        return command(args)
    except ScenarioError as exc:
        console.print(f"[red]invalid scenario[/red] ({len(exc.problems)} problem(s)); nothing was built:")
        for p in exc.problems:      # one line each, never wrapped, so they can be grepped
            sys.stderr.write(f"  {p}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("interrupted")
        return EXIT_INTERRUPTED
    except KubevpcError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True)
        return EXIT_RUNTIME
    finally:
        verbose.stop_all()
