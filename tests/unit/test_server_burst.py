"""The pods' server under a burst (issue 21): its listen backlog is BACKLOG, clamped by the kernel
to net.core.somaxconn of the socket's namespace, which it reads and never changes; hundreds of
connections arriving at once while its loop is busy all complete their handshake and are all
answered; with a small backlog they would not (the kernel drops SYNs past a full accept queue,
and the client tries again only after 1 s, past a probe's deadline). On loopback, no root."""
from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import sys
import time

import pytest

from kubevpc.daemons import server as srvmod
from kubevpc.daemons.server import BACKLOG, Listen, Server, listen_backlog

from .test_server_probe import LO, REPO, RUN, _env, free_port


def test_the_backlog_is_somaxconn_of_the_namespace_when_less(tmp_path, monkeypatch):
    somaxconn = tmp_path / "somaxconn"
    monkeypatch.setattr(srvmod, "SOMAXCONN", str(somaxconn))
    for text, want in (("128\n", 128), ("65535\n", BACKLOG), ("junk", BACKLOG)):
        somaxconn.write_text(text)
        assert listen_backlog() == want
    somaxconn.unlink()
    assert listen_backlog() == BACKLOG, "unreadable: asked for whole (the kernel clamps anyway)"


def _burst(count: int) -> tuple[int, list[dict]]:
    """`count` connections to a fresh server while its loop is held (as a loop busy with others is):
    how many completed their handshake within 0.5 s, then the answers of those, once it runs."""
    async def main():
        server = Server("pod-a", RUN, LO)
        socks = server.bind_all([Listen("TCP", free_port(socket.SOCK_STREAM))])
        await server.serve(socks)
        addr = socks[0][1].getsockname()
        clients = []
        for _ in range(count):                   # the loop does not run until the next await
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(addr)
            clients.append(c)
        done = _handshakes(clients, 0.5)
        loop = asyncio.get_running_loop()
        try:
            for c in done:
                c.send(b"kubevpc-probe\n")
            answers = await asyncio.wait_for(asyncio.gather(*(loop.sock_recv(c, 4096) for c in done)), 10)
            return len(done), [json.loads(a) for a in answers]
        finally:
            server.close()
            for c in clients:
                c.close()
    return asyncio.run(main())


def _handshakes(clients: list[socket.socket], within: float) -> list[socket.socket]:
    """The clients whose connect completed within `within` s (writable, no error)."""
    poller = select.poll()
    for c in clients:
        poller.register(c, select.POLLOUT)
    done: dict[int, socket.socket] = {}
    by_fd = {c.fileno(): c for c in clients}
    end = time.monotonic() + within
    while len(done) < len(clients) and (left := end - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            if by_fd[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done[fd] = by_fd[fd]
    return list(done.values())


def test_a_burst_of_300_connections_to_one_port_is_taken_whole_and_answered():
    if listen_backlog() < 300:
        pytest.skip(f"net.core.somaxconn here is {listen_backlog()}")
    connected, answers = _burst(300)
    assert connected == 300, "every SYN found room in the accept queue"
    assert len(answers) == 300 and {a["name"] for a in answers} == {"pod-a"}
    assert len({a["client"] for a in answers}) == 300


def test_past_a_small_backlog_the_kernel_drops_the_burst(tmp_path, monkeypatch):
    """What asyncio's default backlog of 100 did to a matrix: the SYNs past the accept queue are
    dropped (here at a backlog of 20, as a namespace's somaxconn of 20 would clamp it)."""
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("20\n")
    monkeypatch.setattr(srvmod, "SOMAXCONN", str(somaxconn))
    monkeypatch.setattr(srvmod, "_told_backlog", False)
    connected, answers = _burst(100)
    assert connected < 40 and len(answers) == connected


def test_a_clamped_backlog_is_said_once(tmp_path, monkeypatch, capsys):
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("64\n")
    monkeypatch.setattr(srvmod, "SOMAXCONN", str(somaxconn))
    monkeypatch.setattr(srvmod, "_told_backlog", False)

    async def main():
        for name in ("pod-a", "pod-b"):
            server = Server(name, RUN, LO)
            await server.serve(server.bind_all([Listen("TCP", free_port(socket.SOCK_STREAM))]))
            server.close()
    asyncio.run(main())
    err = capsys.readouterr().err
    assert err.count("listen backlog 64") == 1 and "pod-a" in err and "net.core.somaxconn" in err


def test_a_daemon_raises_its_open_files_limit_to_the_hard_one():
    code = ("import resource; from kubevpc.daemons.harness import raise_open_files; "
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
            "print(raise_open_files() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "True", out.stderr
