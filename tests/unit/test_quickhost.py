"""Mininet hosts started side by side (topologies/hosts.py), outside any new namespace (no root):
they are Mininet hosts afterwards, and a shell that exits or stays silent fails by the deadline."""
from __future__ import annotations

import shutil
import time

import pytest

from topologies.hosts import HostStartError, quick_host_class, start_hosts

pytestmark = pytest.mark.skipif(shutil.which("mnexec") is None, reason="Mininet's mnexec is not installed")


def stop(hosts) -> None:
    for h in hosts:
        h.terminate()


def test_hosts_start_side_by_side_and_run_commands_as_mininet_hosts_do():
    seen = []
    hosts = start_hosts(["qa", "qb", "qc"], seen.append, timeout=20, in_namespace=False)
    try:
        assert seen == hosts and len({h.pid for h in hosts}) == 3
        for h in hosts:
            assert not h.waiting
            assert h.cmd("echo hello $((6 * 7))").strip() == "hello 42"
            assert h.cmd("echo $HISTFILE").strip() == ""        # Mininet's first command ran
    finally:
        stop(hosts)


def kind(popen_argv: list[str]) -> type:
    """A quick host whose 'shell' is another program (Mininet is imported here, in the test: at
    collection it would make every logger created afterwards Mininet's)."""
    class Fake(quick_host_class()):
        def _popen(self, cmd, **params):
            return super()._popen(popen_argv, **params)
    return Fake


SILENT = ["mnexec", "-cd", "sleep", "30"]                # never prints a prompt
EXITS = ["mnexec", "-cd", "sh", "-c", "exit 3"]          # exits at once


@pytest.mark.parametrize("argv, message", [(SILENT, "did not give its prompt in time"),
                                           (EXITS, "exited with status 3 before its prompt")])
def test_a_shell_that_does_not_come_up_fails_within_the_deadline(argv, message):
    made = []
    t0 = time.monotonic()
    with pytest.raises(HostStartError, match=message):
        start_hosts(["qx"], made.append, timeout=0.5, in_namespace=False, kind=kind(argv))
    assert time.monotonic() - t0 < 5
    assert len(made) == 1, "the caller was told of the process before the wait, to clean it up"
    stop(made)
