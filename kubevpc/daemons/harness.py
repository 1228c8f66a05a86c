"""What every kubevpc daemon shares, so that each daemon's module holds only its own work.

A daemon's process is a :class:`Daemon`, whose life is the same for all:

    parse the command line → open the log → catch SIGTERM and SIGINT → start (load the
    configuration, bind) → write the ready file → serve until stopped → close

The ready file holds the daemon's pid, written atomically once the daemon serves: the builder
waits for it. A start that fails raises :class:`Refused`: its lines are said on standard error
after the daemon's name (or in its log), the process exits with its status, and no ready file
is written. Logs are one line an event, the time first: ISO UTC with milliseconds (``events``),
or Python's ``asctime name level`` (``records``: the DNS server's and the controller's).

On the builder's side, a daemon's configuration file is a :class:`ConfigFile`, made as
ipmininet's daemons make theirs: build (a document from the plan, pure) → dry run (the daemon's
own check of it, so that what it would refuse is refused before it is written) → render (the
text) → write (atomically). The daemon follows the file (:func:`file_stamp`) and takes each new
version.

Stdlib only: the daemons run inside the network namespaces, and the servers by the hundred.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import ClassVar, Sequence

from kubevpc.rundir import atomic_write

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RECORDS = "%(asctime)s %(name)s %(levelname)s %(message)s"


def parser(module: str, description: str) -> argparse.ArgumentParser:
    """The command line of ``python -m <module>``."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description)


def subcommands(p: argparse.ArgumentParser, *commands: tuple[str, str, str]) -> list[argparse.ArgumentParser]:
    """The parsers of a command line's subcommands, one required: (name, help, description) each."""
    sub = p.add_subparsers(dest="command", required=True)
    return [sub.add_parser(name, help=help, description=description) for name, help, description in commands]


def iso_time(t: float) -> str:
    """``2026-11-21T10:00:00.123Z`` for a Unix time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class IsoFormatter(logging.Formatter):
    """Formats ``%(asctime)s`` with :func:`iso_time` (UTC, milliseconds)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


def open_log(name: str, path: str | None) -> logging.Logger:
    """Logger ``name``: one line per event, ISO UTC timestamp first, to
    ``path`` or standard error; it does not propagate to the root logger."""
    log = logging.getLogger(name)
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(IsoFormatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def log_records(path: str | None) -> None:
    """Every logger of the process, as records (time, logger, level, message), to ``path`` or
    standard error."""
    logging.basicConfig(filename=path, level=logging.INFO, format=RECORDS)


def write_ready(path: str | None) -> None:
    """Write our pid to ``path``, if given, atomically: whoever waits for the file finds it whole."""
    if path:
        atomic_write(path, f"{os.getpid()}\n", 0o666, umask=True)


def raise_open_files() -> int:
    """The process's soft limit on open files raised to its hard limit (its own, no one else's):
    a node server holds every pod's listeners and, under a burst, hundreds of connections; the
    probe loop, thousands of probes' sockets. At the usual soft limit of 1024, asyncio stops
    accepting for a second when it runs out (EMFILE), past a probe's deadline. Returns the limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """What tells a poller that ``path`` changed (mtime, size, inode, so an
    atomic replace counts too); None while the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def seen_path(config: str) -> str:
    """Where a daemon says which version of the file `config` it has taken (its file_stamp, as JSON)."""
    return f"{config}.seen"


def write_seen(config: str, stamp: tuple[int, int, int] | None) -> None:
    """Say that the file `config` as of `stamp` now serves (or was refused, and the last good one
    still does): the Lab waits for this after a change (kubevpc.lab.servers)."""
    atomic_write(seen_path(config), json.dumps(stamp))


def taken(config: str) -> bool:
    """Has the daemon following `config` taken the file as it is now?"""
    try:
        with open(seen_path(config), encoding="utf-8") as fh:
            return json.load(fh) == json.loads(json.dumps(file_stamp(config)))
    except (OSError, ValueError):
        return False


class Refused(Exception):
    """A daemon that cannot start: why (lines; none when it said so itself) and its exit status."""

    def __init__(self, code: int, *lines: str) -> None:
        super().__init__(*lines)
        self.code, self.lines = code, lines


class Daemon:
    """One daemon process (see the module's documentation); a subclass fills in its options,
    start, serve and close. ``main`` is its ``python -m`` entry point."""

    NAME: ClassVar[str] = ""            # python -m kubevpc.daemons.<NAME>; logger and messages kubevpc.<NAME>
    DESCRIPTION: ClassVar[str] = ""
    LOG: ClassVar[str] = ""             # "events", "records", or "" (no log)
    REPORT: ClassVar[str] = "stderr"    # where a refusal is said: "stderr", or "log"

    def __init__(self, args: argparse.Namespace, log: logging.Logger | None) -> None:
        self.args, self.log = args, log
        self.stopping = False           # set by the signal handler: a plain flag, no lock

    # -- filled in by each daemon --
    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        """Add the daemon's options (a subcommand whose defaults hold ``tool`` is run instead of
        the daemon: tool(args) is its exit status)."""

    @classmethod
    def check(cls, args: argparse.Namespace, error) -> None:
        """Refuse, with error(message), what argparse lets through."""

    def start(self) -> None:
        """Load the configuration and bind; Refused when that fails."""

    def serve(self) -> int:
        """Until stopped: the exit status."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what start took (also after a refusal)."""

    def stop(self) -> None:
        """Ask the daemon to stop; called by the signal handler."""
        self.stopping = True

    # -- the same for all --
    def catch_signals(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: self.stop())

    def ready(self) -> None:
        write_ready(getattr(self.args, "ready", None))

    def run(self) -> int:
        self.catch_signals()
        self.start()
        if self.stopping:               # asked to stop while starting: nothing to serve
            self.close()
            return 0
        self.ready()
        code = self.serve()
        self.close()
        if self.log:
            self.log.info("stopped")
        return code

    def report(self, refused: Refused) -> None:
        for line in refused.lines:
            if self.REPORT == "log" and self.log:
                self.log.error("%s", line)
            else:
                print(f"kubevpc.{self.NAME}: {line}", file=sys.stderr)

    @classmethod
    def open_log(cls, args: argparse.Namespace) -> logging.Logger | None:
        if cls.LOG == "events":
            return open_log(f"kubevpc.{cls.NAME}", args.log)
        if cls.LOG == "records":
            log_records(args.log)
            return logging.getLogger(f"kubevpc.{cls.NAME}")
        return None

    @classmethod
    def argv(cls, *args: str) -> list[str]:
        """The command line that starts this daemon (the builder's)."""
        return [sys.executable, "-m", f"kubevpc.daemons.{cls.NAME}", *args]

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        p = parser(f"kubevpc.daemons.{cls.NAME}", cls.DESCRIPTION)
        cls.arguments(p)
        args = p.parse_args(argv)
        if getattr(args, "tool", None):
            return args.tool(args)
        cls.check(args, p.error)
        daemon = cls(args, cls.open_log(args))
        try:
            return daemon.run()
        except Refused as refused:
            daemon.close()
            daemon.report(refused)
            return refused.code


class ConfigFile:
    """A daemon's configuration file, on the builder's side: :meth:`write` builds its document,
    checks it as the daemon would, renders it and writes it atomically (0600)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def build(self) -> object:
        """The document, from the plan (pure)."""
        raise NotImplementedError

    def dry_run(self, doc: object) -> None:
        """The daemon's own check of a document: ValueError for what it would refuse."""

    def render(self, doc: object) -> str:
        return json.dumps(doc, indent=1)

    def write(self, doc: object = None) -> object:
        """Build (unless given the document), check, render and write the file; returns the document."""
        doc = self.build() if doc is None else doc
        self.dry_run(doc)
        atomic_write(self.path, self.render(doc))
        return doc
