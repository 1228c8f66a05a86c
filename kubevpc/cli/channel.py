"""The commands that talk to a running scenario through its control channel (kubevpc/control.py):
the run they name and the options they share, their help's epilog, and how the run's errors
become messages and exit codes."""
from __future__ import annotations

import argparse
import functools
import sys

from rich.markup import escape

from ..control import ControlClient, ControlError
from .common import EXIT_RUNTIME, EXIT_USAGE, console
from .output import add_output
from .verbose import debug

CONTROL_EPILOG = ("RUN is the run's name (see `kubevpc list`). It may be left out when exactly one live run "
                  "serves a control channel, as `kubevpc run FILE --keep` or `--cli` does once its checks are "
                  "done, and `kubevpc up FILE` once the network is ready. Exit codes: 0 done; 2 bad usage: bad arguments, an invalid manifest, or a change the "
                  "planner rejects (nothing changed); 3 no such run, a run that does not serve, or a request the "
                  "run could not carry out (an unknown pod or Service, a change not programmed in time).")


def control_parser(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that changes or reads a running scenario: RUN first, the epilog above."""
    p = sub.add_parser(name, help=summary, description=description, epilog=CONTROL_EPILOG)
    p.add_argument("run", nargs="?", metavar="RUN", help="the run (default: the one live run that serves)")
    return p


def control_options(p: argparse.ArgumentParser) -> None:
    add_output(p, json_alias=True, help="table (default: the human output), json or yaml: the run's answer")
    p.add_argument("--timeout", type=float, default=150.0, metavar="S",
                   help="seconds to wait for the run's answer (default 150)")


def control_command(fn):
    """Run a control subcommand: the run's errors become messages and exit codes."""
    @functools.wraps(fn)
    def wrapper(args) -> int:
        try:
            return fn(args)
        except ControlError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            for p in exc.problems:         # one line each, never wrapped, as the scenario loader's
                sys.stderr.write(f"  {p}\n")
            return EXIT_USAGE if exc.kind == "usage" else EXIT_RUNTIME
    return wrapper


def control_client(args) -> ControlClient:
    client = ControlClient(args.run, timeout=args.timeout)
    debug("run %s: its control channel, answers awaited %.0f s at most", client.run, args.timeout)
    return client
