"""Told at once when a file is replaced in a directory: Linux inotify, through ctypes (the standard
library has no binding, and one small module is less to trust than a dependency).

The controller waits here for plan.json (the Lab replaces it, a temporary file renamed over it:
IN_MOVED_TO) and the SLB checkers' state files (replaced the same way), instead of looking at
them every 0.2 s. `wait` also returns when another thread calls `wake`, and at its deadline in
any case: the caller still looks then (the periodic look is the fallback for a missed event, and
the only way where inotify is missing or refused, e.g. at the per-user watch limit).

The directory is root's, but what inotify reports is read as untrusted input all the same: event
records are bounded by the bytes read, names are decoded without failing, and a record that does
not fit ends the batch as "anything may have changed" (as IN_Q_OVERFLOW does).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
from collections.abc import Iterable
from dataclasses import dataclass

LOG = logging.getLogger("kubevpc.controller")

IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
WATCHED = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")           # struct inotify_event: wd, mask, cookie, len (then the name)
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Changes:
    """What a wait saw: the paths replaced or written, and whether anything else may have changed
    (a wake-up, an overflow, a directory gone, or no inotify at all)."""

    paths: frozenset[str] = frozenset()
    anything: bool = False

    def touches(self, paths: Iterable[str]) -> bool:
        return self.anything or not self.paths.isdisjoint(paths)


def parse_events(data: bytes, dirs: dict[int, str]) -> Changes:
    """inotify's records (`dirs`: watch descriptor -> directory) as Changes."""
    paths, anything, offset = set(), False, 0
    while offset < len(data):
        if offset + _EVENT.size > len(data):
            return Changes(frozenset(paths), True)
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        if length > len(data) - offset:
            return Changes(frozenset(paths), True)
        name = data[offset:offset + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        offset += length
        if mask & (IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF) or wd not in dirs:
            anything = True
        elif name and "/" not in name:
            paths.add(os.path.join(dirs[wd], name))
    return Changes(frozenset(paths), anything)


class DirWatch:
    """inotify on some directories, and a pipe another thread writes to wake the waiter."""

    def __init__(self, dirs: Iterable[str]):
        self.fd: int | None = None
        self.dirs: dict[int, str] = {}
        self.problem = ""                   # why there is no notification ("" when there is)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._start(sorted(set(dirs)))
        except OSError as exc:
            self.problem = f"inotify: {exc}"
            self.close_inotify()
            LOG.warning("no notification of plan changes (%s): looking periodically", self.problem)

    def _start(self, dirs: list[str]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        for d in dirs:
            wd = libc.inotify_add_watch(fd, os.fsencode(d), WATCHED | IN_ONLYDIR | IN_DONT_FOLLOW)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"{d}: {os.strerror(ctypes.get_errno())}")
            self.dirs[wd] = d

    @property
    def notified(self) -> bool:
        """Does a change end a wait at once (inotify works)?"""
        return self.fd is not None

    def wake(self) -> None:
        """End the current (or next) wait at once, with `anything`."""
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass                            # a wake-up is pending already

    def wait(self, timeout: float) -> Changes:
        """Until a watched directory reports a change, `wake` is called, or `timeout` seconds pass
        (then: no change seen). Without inotify, every wait ends at its timeout with `anything`."""
        fds = [self._wake_r] + ([self.fd] if self.fd is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(timeout, 0))
        except InterruptedError:
            ready = []
        if not ready:
            return Changes(anything=self.fd is None)
        changes = Changes()
        if self._wake_r in ready:
            self._drain(self._wake_r)
            changes = Changes(anything=True)
        if self.fd is not None and self.fd in ready:
            seen = parse_events(self._drain(self.fd), self.dirs)
            changes = Changes(changes.paths | seen.paths, changes.anything or seen.anything)
        return changes

    @staticmethod
    def _drain(fd: int) -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not chunk:
                return out
            out += chunk
            if len(out) > 16 * READ_SIZE:   # a flood: no need to read it all to know to look
                return out

    def close_inotify(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.dirs = None, {}

    def close(self) -> None:
        self.close_inotify()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
