"""Entering a network namespace for a moment, from a thread of a process that stays in its own:
the node server makes each pod's listening sockets in the pod's namespace this way
(kubevpc.daemons.nodeserver), and the probe loop each probe's socket in its source's
(kubevpc.probeloop). A socket keeps the namespace it was made in: its bind, connect, routes and
addresses are that namespace's whatever thread uses it later. Stdlib only."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from typing import Iterator

CLONE_NEWNET = 0x40000000


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot enter the network namespace {what}: {os.strerror(err)}")


def _same_namespace(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def own_namespace() -> int:
    """A descriptor of the calling thread's network namespace: the `home` of entered()."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def entered(path: str, home: int, who: str = "the node server itself") -> Iterator[None]:
    """The calling thread in the network namespace `path` (/proc/PID/ns/net, /run/netns/NAME) for the
    block, then back in `home` (a descriptor of the thread's own, from own_namespace()). Nothing is
    entered when `path` is the namespace the thread is in already: a host-network pod's, which is
    its node's; the unit tests', which run without namespaces. Coming back cannot fail in a way we
    could go on from: a socket made afterwards would be in the wrong namespace, so the process
    ends (`who` names it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _same_namespace(os.fstat(fd), os.stat("/proc/thread-self/ns/net")):
            yield
            return
        _setns(fd, path)
        try:
            yield
        finally:
            try:
                _setns(home, f"of {who}")
            except OSError as exc:
                print(f"kubevpc: {exc}; stopping", file=sys.stderr, flush=True)
                os._exit(70)
    finally:
        os.close(fd)
