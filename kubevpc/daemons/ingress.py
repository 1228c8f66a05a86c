"""The NGINX ingress controller of the emulated cluster, as a command: its process around the
NGINX controller (kubevpc.daemons.nginx), and a tool that prints a state document's nginx.conf
(kubevpc.render.nginx makes it; the Ingress and Secret models are kubevpc.k8s's).

``python -m kubevpc.daemons.ingress run`` runs in the ingress pod's network namespace. It validates every
configuration with ``nginx -t`` before use, starts NGINX as its child, follows the state file and
reloads NGINX gracefully on each change, keeping the last good configuration serving when a new
one is rejected. ``python -m kubevpc.daemons.ingress render`` prints the nginx.conf of a state document.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from kubevpc.daemons.harness import Daemon, Refused, subcommands
from kubevpc.daemons.nginx import NGINX, Controller, NginxError
from kubevpc.render.nginx import render

RUN_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _run_name(text: str) -> str:
    if not RUN_TOKEN.match(text):
        raise argparse.ArgumentTypeError(f"bad --run {text!r}: letters, digits, '.', '_' and '-' only")
    return text


def print_config(args: argparse.Namespace) -> int:
    """``render``: the nginx.conf of a state document on standard output, its warnings on standard error."""
    with open(args.state, encoding="utf-8") as fh:
        rendered = render(json.load(fh), os.path.abspath(args.dir))
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(rendered.text)
    return 0


class IngressController(Daemon):
    """``run``: the controller's process around :class:`Controller`, which also watches the stop flag
    while NGINX starts."""

    NAME = "ingress"
    DESCRIPTION = "The NGINX ingress controller of the emulated cluster."
    LOG = "events"
    REPORT = "log"

    def __init__(self, args: argparse.Namespace, log: logging.Logger | None) -> None:
        super().__init__(args, log)
        self.controller = Controller(args, log)

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        run, show = subcommands(p, (
            "run", "serve a state document with NGINX, following its changes",
            "Render the JSON state document (Ingresses, Service endpoints, TLS Secrets) into DIR/nginx.conf, "
            "check it with nginx -t, start NGINX (daemon off) as a child and write the ready file once it "
            "accepts connections. Then poll the state file every 0.2 s: each change is rendered, tested with "
            "nginx -t and applied by a graceful reload; a configuration NGINX refuses is reported in the log "
            "and status file while the last good one keeps serving. SIGTERM or SIGINT stops NGINX (quit, "
            "then terminate) and exits 0; if NGINX dies, exits 1."), (
            "render", "print the nginx.conf of a state document, and its warnings",
            "Print the nginx.conf of a state document (warnings on standard error); nothing is written or started."))
        run.add_argument("--state", required=True, metavar="FILE", help="the JSON state document (replaced atomically)")
        run.add_argument("--dir", required=True, metavar="DIR",
                         help="NGINX's prefix: nginx.conf, certificates, logs, pid and temp files go here")
        run.add_argument("--run", required=True, type=_run_name, metavar="RUNNAME",
                         help="the run's name: the ledger to record NGINX in, and the token on its command line")
        run.add_argument("--log", metavar="FILE", help="event log (default: standard error)")
        run.add_argument("--ready", metavar="FILE", help="once NGINX accepts connections, write our pid here")
        run.add_argument("--status", metavar="FILE",
                         help="JSON status (generation, ok, error, warnings, nginx_pid, reloads, time), "
                              "rewritten atomically after each change")
        run.add_argument("--no-ledger", action="store_true", help="do not record NGINX in the run's ledger")
        run.add_argument("--nginx", default=NGINX, metavar="PATH", help=f"the NGINX binary (default {NGINX})")
        show.add_argument("--state", required=True, metavar="FILE", help="the JSON state document")
        show.add_argument("--dir", default="/tmp/kubevpc-ingress", metavar="DIR", help="the prefix paths refer to")
        show.set_defaults(tool=print_config)

    def stop(self) -> None:
        super().stop()
        self.controller.stop()

    def start(self) -> None:
        c = self.controller
        assert self.log is not None
        self.log.info("ingress controller pid %d: state %s, dir %s", os.getpid(), self.args.state, c.dir)
        try:
            c.start()
        except (OSError, ValueError, NginxError) as exc:
            self.log.error("cannot serve %s: %s", self.args.state, exc)
            c.ok, c.error = False, str(exc)
            c.write_status()
            raise Refused(1) from None

    def serve(self) -> int:
        return self.controller.watch()

    def close(self) -> None:
        self.controller.shutdown()


main = IngressController.main

if __name__ == "__main__":
    sys.exit(main())
