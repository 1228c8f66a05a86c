"""`-v/--verbose`: debug output on stderr, and the controller's log as it is written.

Without -v the command line prints progress lines only (common.say). With -v:
- the `kubevpc.*` loggers of this process print their debug records on stderr, one line each
  (`HH:MM:SS debug kubevpc.shell: $ ovs-vsctl ...`: every command the build runs);
- a command that builds a run (run, check) streams its controller's log to stderr, each line
  prefixed `controller: `. The controller is a process of its own (topologies/supervisor.py keeps
  it alive) whose stdout and stderr go to controller.log in the run's directory
  (kubevpc/rundir.py); a thread here follows that file, and keeps it open, so the last lines
  written before teardown removes the directory are still printed.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading

from ..rundir import RunDir

PREFIX = "controller: "
HELP = "debug output on stderr, the controller's log among it (lines prefixed `controller:`)"
_tails: list["LogTail"] = []
_enabled = False


def add_verbose(p: argparse.ArgumentParser, top: bool = False) -> None:
    """-v on the top parser, and on each command's (so `kubevpc check -v FILE` works too; a
    command's own default must not undo the top one's)."""
    try:
        p.add_argument("-v", "--verbose", action="store_true", help=HELP,
                       **({} if top else {"default": argparse.SUPPRESS}))
    except argparse.ArgumentError:      # a command that already has its own -v keeps it
        pass


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment (pytest and redirect_stderr replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:       # noqa: BLE001 - logging must never end the command
            self.handleError(record)


def setup(verbose: bool) -> None:
    """Debug records of the `kubevpc` loggers on stderr when verbose; back to the default when not."""
    global _enabled
    log = logging.getLogger("kubevpc")
    for h in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
        log.removeHandler(h)
    _enabled = verbose
    if not verbose:
        log.setLevel(logging.NOTSET)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s debug %(name)s: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)


def enabled() -> bool:
    return _enabled


class LogTail(threading.Thread):
    """Follows a file that may not exist yet, writing each complete line to stderr with a prefix."""

    def __init__(self, path: str, prefix: str = PREFIX, poll: float = 0.2):
        super().__init__(name="kubevpc-logtail", daemon=True)
        self.path, self.prefix, self.poll = path, prefix, poll
        self._halt = threading.Event()
        self._fh = None
        self._partial = b""

    def run(self) -> None:
        while not self._halt.wait(self.poll):
            self._read(final=False)

    def _read(self, final: bool) -> None:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except OSError:
                return
        try:
            data = self._partial + self._fh.read()
        except OSError:
            return
        *lines, self._partial = data.split(b"\n")
        if final and self._partial:
            lines, self._partial = [*lines, self._partial], b""
        for line in lines:
            sys.stderr.write(self.prefix + line.decode("utf-8", "replace").rstrip("\r") + "\n")
        if lines:
            sys.stderr.flush()

    def stop(self) -> None:
        """Stop following, after printing what the file still holds."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
        self._read(final=True)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def follow_controller(run: str) -> LogTail | None:
    """With -v, stream run `run`'s controller log to stderr until stop_all()."""
    if not _enabled:
        return None
    tail = LogTail(RunDir.of(run).controller_log)
    _tails.append(tail)
    tail.start()
    return tail


def stop_all() -> None:
    while _tails:
        _tails.pop().stop()


def debug(message: str, *args) -> None:
    """A debug record of the command line's own (shown with -v)."""
    logging.getLogger("kubevpc.cli").debug(message, *args)


__all__ = ["LogTail", "add_verbose", "debug", "enabled", "follow_controller", "setup", "stop_all"]
