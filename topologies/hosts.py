"""Mininet hosts started many at once.

Mininet's Host spawns its shell (`mnexec -cdn bash`, in a new network namespace) and waits for the
shell's prompt before the constructor returns, then runs one command and waits again: hosts start
one after the other, and the machine's second core stays idle while each shell starts. A
`QuickHost` only spawns its shell in the constructor; `start_hosts` spawns every shell first,
then waits for each prompt, sends each its first command, and waits for those: the shells start
side by side. What a host is afterwards is exactly Mininet's Host (the same shell, prompt,
terminal settings and methods); only the waiting moved, and each wait has a deadline.

Mininet is imported on first use only (quick_host_class): importing it makes every logger created
afterwards one of Mininet's (its level and handler), which swallowed the kubevpc command's own
debug records (`-v`) when this module imported it at the top.
"""
from __future__ import annotations

import os
import pty
import select
import functools
import time
from collections.abc import Callable, Sequence

PROMPT = chr(127)           # Mininet's shells print this as their prompt and after every command
LOOK = 0.05                 # s between two looks at a starting shell's process
FIRST_COMMAND = "unset HISTFILE; stty -echo; set +m"     # what Mininet's startShell sends a new shell


class HostStartError(RuntimeError):
    """A host's shell did not come up (it exited, or said nothing) within the deadline."""


class QuickShell:
    """What makes a Mininet Host quick (quick_host_class): its constructor spawns the shell without
    waiting for it (see start_hosts)."""

    def startShell(self, mnopts=None):  # noqa: N802 - Mininet's name
        """Spawn the shell as Mininet's Node.startShell does (`mnexec -cd[n] env PS1=<127> bash
        --norc --noediting -is mininet:<name>` on a pseudo-terminal), without waiting for it."""
        opts = ("-cd" if mnopts is None else mnopts) + ("n" if self.inNamespace else "")
        cmd = ["mnexec", opts, "env", "PS1=" + PROMPT, "bash", "--norc", "--noediting", "-is", "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave, close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        # Mininet's pollOut also reports the terminal writable, at once: its waits block in read(),
        # without a deadline. This one reports output only.
        self.pollIn = select.poll()
        self.pollIn.register(self.stdout, select.POLLIN | select.POLLPRI)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed, self.lastCmd, self.lastPid, self.readbuf = False, None, None, ""
        self.waiting = True         # until its first prompt (await_prompt)

    def await_prompt(self, deadline: float) -> None:
        """Until the shell's first prompt; then send Mininet's first command (not waited for)."""
        seen = ""
        while not seen.endswith(PROMPT):
            self._wait_readable(deadline, "its prompt")
            seen += self.read(1024)
        self.waiting = False
        self.sendCmd(FIRST_COMMAND)

    def await_first_command(self, deadline: float) -> None:
        """Until the first command has run (its prompt came back)."""
        while self.waiting:
            self._wait_readable(deadline, f"its first command ({FIRST_COMMAND})")
            self.monitor(timeoutms=0)

    def _wait_readable(self, deadline: float, what: str) -> None:
        """Until the shell has output; looking at its process every LOOK seconds meanwhile (the
        pseudo-terminal stays open in this process, so a shell that dies does not close it)."""
        while not self.readbuf:
            if self.shell.poll() is not None:
                raise HostStartError(f"the shell of host {self.name} (pid {self.pid}) exited with status "
                                     f"{self.shell.returncode} before {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostStartError(f"the shell of host {self.name} (pid {self.pid}) did not give {what} "
                                     "in time")
            if self.pollIn.poll(max(1, int(min(left, LOOK) * 1000))):
                return


@functools.cache
def quick_host_class() -> type:
    """Mininet's Host with QuickShell's way of starting (Mininet imported here, on first use)."""
    from mininet.node import Host
    return type("QuickHost", (QuickShell, Host), {})


def start_hosts(names: Sequence[str], started: Callable, timeout: float, in_namespace: bool = True,
                kind: type | None = None) -> list:
    """A Mininet host (its own network namespace) for each name, their shells started side by
    side. `started(host)` is called as soon as each shell is spawned, before any is waited for
    (the caller records it for teardown). All must be ready within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    kind = kind or quick_host_class()
    hosts = []
    for name in names:
        host = kind(name, inNamespace=in_namespace)
        started(host)
        hosts.append(host)
    for host in hosts:
        host.await_prompt(deadline)
    for host in hosts:
        host.await_first_command(deadline)
    return hosts
