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
import hashlib
import json
import logging
import os
import re
import sys
import time
from typing import Any

from kubevpc.daemons.harness import ConfigFile, Daemon, Refused, subcommands
from kubevpc.daemons.nginx import NGINX, Controller, NginxError
from kubevpc.k8s import self_signed
from kubevpc.render.ingress import state_document, tls_secrets, undeclared_tls
from kubevpc.render.nginx import State, render
from kubevpc.rundir import RunDir, atomic_write

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


# -- the builder's side ----------------------------------------------------------------


class StateFile(ConfigFile):
    """An ingress controller's state document, ingress-<namespace>_<pod>/state.json in the run
    directory; building it makes the self-signed certificates it needs (tls_certificate)."""

    def __init__(self, rundir: RunDir, plan: Any, h: Any) -> None:
        super().__init__(rundir.ingress_state(h.namespace, h.name))
        self.rundir, self.plan, self.h = rundir, plan, h

    def build(self) -> dict:
        secrets = tls_secrets(self.plan)
        for name, hosts in undeclared_tls(self.plan, secrets).items():
            crt, key = tls_certificate(self.rundir, name, hosts)
            with open(crt, encoding="ascii") as c, open(key, encoding="ascii") as k:
                secrets[name] = {"tls.crt": c.read(), "tls.key": k.read()}
        return state_document(self.plan, self.h.ip, secrets, time.time_ns() // 1_000_000)

    def dry_run(self, doc: object) -> None:
        State.model_validate(doc)

    def write(self, doc: object = None) -> object:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return super().write(doc)


def tls_certificate(rundir: RunDir, secret: str, hosts: list[str]) -> tuple[str, str]:
    """A self-signed certificate for an Ingress's TLS Secret that the scenario does not declare:
    made once per run and set of hosts, kept in <state>/tls/. Returns the PEM paths (cert, key)."""
    base = rundir.self_signed(secret, hashlib.sha256(",".join(sorted(hosts)).encode()).hexdigest()[:8])
    if not os.path.exists(base + ".crt"):
        os.makedirs(os.path.dirname(base), exist_ok=True)
        cert, key = self_signed(sorted(hosts))
        atomic_write(base + ".key", key)
        atomic_write(base + ".crt", cert)
    return base + ".crt", base + ".key"


def write_ingress_state(state_dir: str, plan: Any, h: Any) -> int:
    """What the ingress controller of pod ``h`` serves (the Ingresses, every Service's ready
    endpoints, the TLS Secrets, self-signed where the scenario has none). Returns the generation
    written; the controller reports it back once NGINX runs it."""
    return StateFile(RunDir(state_dir), plan, h).write()["generation"]


def ingress_status(state_dir: str, h: Any) -> dict:
    """The status the ingress controller of pod ``h`` last wrote ({} before it did)."""
    try:
        with open(RunDir(state_dir).ingress_status(h.namespace, h.name), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}


def ingress_command(rundir: RunDir, h: Any, run: str, ready: str) -> list[str]:
    """The ingress controller of pod ``h``, in run ``run``."""
    ns, pod = h.namespace, h.name
    return IngressController.argv("run", "--state", rundir.ingress_state(ns, pod), "--dir", rundir.ingress_nginx(ns, pod),
                                  "--run", run, "--log", rundir.ingress_log(ns, pod),
                                  "--status", rundir.ingress_status(ns, pod), "--ready", ready)

if __name__ == "__main__":
    sys.exit(main())
