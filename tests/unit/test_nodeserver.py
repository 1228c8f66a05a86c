"""kubevpc.daemons.nodeserver: one process serving the pods of a node, on loopback, no root, no
namespaces (a pod's "namespace" is our own, which the node server does not need to enter).

Its answers are byte for byte those of a pod's own server (kubevpc.daemons.server), over TCP,
UDP and HTTP; each pod's server stops and starts alone; a failure or a crash ends what it should
and nothing else."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kubevpc.daemons import nsenter
from kubevpc.daemons.nodeserver import NodeServer, NodeServerDaemon, NodeServerProcess, entered

from .test_server_probe import LO, REPO, RUN, _env, free_port, start_server, stop, wait_ready

SELF_NS = f"/proc/{os.getpid()}/ns/net"     # the pods' namespace here: the node server's own


@pytest.fixture
def node(tmp_path: Path):
    """A node server process, as the builder starts it (without mnexec), and its log."""
    log = tmp_path / "servers.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(NodeServerDaemon.argv("--run", RUN, "--node", "node-1"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=_env())
    server = NodeServerProcess(proc, "node-1")
    server.log = log
    yield server
    server.stop()
    proc.wait(timeout=5)


def pod(tmp_path: Path, name: str, listens: list[str], bind: str = LO) -> dict:
    return {"open": f"pod/default/{name}", "netns": SELF_NS, "name": name, "listen": listens, "bind": bind,
            "bind6": "", "ready": str(tmp_path / f"{name}.ready")}


def ready(handle, path: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not os.path.exists(path):
        assert handle.poll() is None, f"{handle.key} ended; see the log"
        assert time.monotonic() < end, f"{handle.key} not ready within {deadline} s"
        time.sleep(0.01)


def exchange(proto: str, port: int, payload: bytes = b"") -> tuple[bytes, str]:
    """What a server answers, and our own address as it would see it."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(3)
        s.connect((LO, port))
        me = "%s:%d" % s.getsockname()
        if proto == "udp":
            s.send(payload)
            return s.recv(65536), me
        if payload:
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out, me


def normal(answer: bytes, me: str, port: int) -> bytes:
    """An answer with our address and the server's port written the same for every server."""
    return answer.replace(me.encode(), b"CLIENT").replace(f"{LO}:{port}".encode(), b"SERVER").replace(
        f'"port": {port}'.encode(), b'"port": PORT')


REQUESTS = [("tcp", b""), ("tcp", b"hello\n"), ("http", b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("http", b"HEAD / HTTP/1.1\r\n\r\n"), ("http", b"GET /healthz HTTP/1.1\r\n\r\n"), ("udp", b"ping")]


def test_a_pod_answers_byte_for_byte_as_its_own_server_would(tmp_path, node):
    ports = {"tcp": free_port(socket.SOCK_STREAM), "udp": free_port(socket.SOCK_DGRAM)}
    own, own_ready = start_server(tmp_path, [f"TCP:{ports['tcp']}", f"UDP:{ports['udp']}"], name="web-0")
    wait_ready(own, own_ready)
    mine = {"tcp": free_port(socket.SOCK_STREAM), "udp": free_port(socket.SOCK_DGRAM)}
    req = pod(tmp_path / "n", "web-0", [f"TCP:{mine['tcp']}", f"UDP:{mine['udp']}"])
    (tmp_path / "n").mkdir()
    (handle,) = node.open([req])
    ready(handle, req["ready"])
    try:
        for proto, payload in REQUESTS:
            kind = "udp" if proto == "udp" else "tcp"
            theirs, me1 = exchange(proto, ports[kind], payload)
            ours, me2 = exchange(proto, mine[kind], payload)
            assert theirs and normal(ours, me2, mine[kind]) == normal(theirs, me1, ports[kind]), (proto, payload)
        assert json.loads(exchange("tcp", mine["tcp"])[0])["name"] == "web-0"
        # its ready file, like a pod server's, holds the pid of the process that serves it
        assert Path(req["ready"]).read_text().strip() == str(node.pid) == str(handle.pid)
    finally:
        stop(own)


def test_each_pod_stops_and_starts_alone(tmp_path, node):
    a, b = (pod(tmp_path, n, [f"TCP:{free_port(socket.SOCK_STREAM)}"]) for n in ("web-0", "web-1"))
    ha, hb = node.open([a, b])
    ready(ha, a["ready"])
    ready(hb, b["ready"])
    port_a, port_b = (int(r["listen"][0].split(":")[1]) for r in (a, b))
    held = socket.create_connection((LO, port_a))        # a connection in progress: it ends with a's server
    ha.terminate()
    assert ha.wait(timeout=5) == -1 and hb.poll() is None and node.alive()
    with pytest.raises(ConnectionRefusedError):
        exchange("tcp", port_a)
    assert json.loads(exchange("tcp", port_b)[0])["name"] == "web-1", "twin: the other pod still answers"
    held.settimeout(0.9)                                   # less than the second a silent client gets
    try:
        assert held.recv(100) == b"", "the connection ended with the pod's server"
    except ConnectionResetError:
        pass                                               # not yet accepted when it closed: reset, as by a process's end
    held.close()
    os.unlink(a["ready"])
    (again,) = node.open([a])
    ready(again, a["ready"])
    assert json.loads(exchange("tcp", port_a)[0])["name"] == "web-0" and again.pid == ha.pid
    assert ha.poll() == -1, "the old handle stays ended: a server started again is another"
    hb.kill()
    assert hb.wait(timeout=5) == -1 and again.poll() is None


def test_a_pod_whose_sockets_cannot_be_made_ends_alone_and_says_why(tmp_path, node):
    with socket.socket() as taken:
        taken.bind((LO, 0))
        taken.listen()
        port = taken.getsockname()[1]
        good = pod(tmp_path, "web-0", [f"TCP:{free_port(socket.SOCK_STREAM)}"])
        bad = pod(tmp_path, "web-1", [f"UDP:{free_port(socket.SOCK_DGRAM)}", f"TCP:{port}"])
        dup = pod(tmp_path, "web-2", ["TCP:8080", "HTTP:8080"])
        hg, hb, hd = node.open([good, bad, dup])
        assert hb.wait(timeout=5) == -1 and hd.wait(timeout=5) == -1
        ready(hg, good["ready"])
    assert not os.path.exists(bad["ready"]) and node.alive()
    log = node.log.read_text()
    assert f"kubevpc.server: web-1: cannot listen on TCP:{port} (port {port}, bind {LO}): Address already in use" in log
    assert "kubevpc.server: web-2: --listen TCP:8080 and HTTP:8080 both use tcp port 8080" in log
    # the UDP socket made before the failure was let go: the port can be bound again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((LO, int(bad["listen"][0].split(":")[1])))


def test_a_dead_node_server_ends_every_pod_it_served(tmp_path, node):
    reqs = [pod(tmp_path, n, [f"TCP:{free_port(socket.SOCK_STREAM)}"]) for n in ("web-0", "web-1")]
    handles = node.open(reqs)
    for h, r in zip(handles, reqs):
        ready(h, r["ready"])
    os.kill(node.pid, signal.SIGKILL)
    assert [h.wait(timeout=5) for h in handles] == [-1, -1]
    assert not node.alive()


def test_the_node_server_ends_when_its_input_closes_or_on_sigterm(tmp_path, node):
    (h,) = node.open([pod(tmp_path, "web-0", [f"UDP:{free_port(socket.SOCK_DGRAM)}"])])
    ready(h, str(tmp_path / "web-0.ready"))
    node.proc.stdin.close()
    assert node.proc.wait(timeout=5) == 0 and h.poll() == -1
    (again,) = node.open([pod(tmp_path, "web-1", ["TCP:1"])])     # to a process that is gone: ended at once
    assert again.poll() == -1


def test_a_stopped_node_servers_pods_end_without_their_answers_being_read(tmp_path, node):
    """Teardown stops the node servers (their pipes closed), then waits for every pod's server."""
    (h,) = node.open([pod(tmp_path, "web-0", [f"TCP:{free_port(socket.SOCK_STREAM)}"])])
    ready(h, str(tmp_path / "web-0.ready"))
    node.stop()
    assert h.wait(timeout=5) == -1 and node.proc.wait(timeout=5) == 0
    node.stop()                                                  # twice is no error
    with open(node.log, "ab") as err:
        proc = subprocess.Popen(NodeServerDaemon.argv("--run", RUN, "--node", "node-2"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=_env())
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    proc.stdin.close()
    proc.stdout.close()


def test_requests_it_cannot_take_get_an_error_answer(tmp_path):
    async def run() -> list[dict]:
        ns = NodeServer(RUN)
        out = [await ns.handle(line) for line in (b"[1]", b"{bad", json.dumps({"close": "pod/x/y", "id": 3}).encode(),
                                                  json.dumps({"open": "pod/x/z", "id": 4, "name": "z"}).encode(),
                                                  json.dumps({**pod(tmp_path, "q", ["SCTP:1"]), "id": 5}).encode())]
        ns.close_all()
        return out
    answers = asyncio.run(run())
    assert [sorted(a) for a in answers] == [["error", "id", "key"]] * 2 + [["closed", "id", "key"]] + \
        [["error", "id", "key"]] * 2
    assert answers[2] == {"id": 3, "key": "pod/x/y", "closed": True}
    assert answers[3]["error"] == "'listen'" and "expected TCP:PORT" in answers[4]["error"]


def test_a_namespace_is_entered_only_when_it_is_another(tmp_path, monkeypatch):
    entered_ = []
    monkeypatch.setattr(nsenter, "_setns", lambda fd, what: entered_.append(what))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        with entered(SELF_NS, home):
            pass
        assert entered_ == [], "the namespace the thread is in is not entered again"
        other = tmp_path / "other-ns"       # stands for another namespace's file: another inode
        other.write_text("")
        with entered(str(other), home):
            assert entered_ == [str(other)]
        assert entered_ == [str(other), "of the node server itself"], "and back home after the block"
        with pytest.raises(FileNotFoundError):
            with entered(str(tmp_path / "gone"), home):
                pass
    finally:
        os.close(home)


def test_kill_after_an_unanswered_close_kills_the_node_server(tmp_path, node):
    """As SIGKILL after a SIGTERM a process did not heed: a node server that does not answer a close
    (stopped here) is killed, with every pod it served."""
    reqs = [pod(tmp_path, n, [f"TCP:{free_port(socket.SOCK_STREAM)}"]) for n in ("web-0", "web-1")]
    first, other = node.open(reqs)
    ready(first, reqs[0]["ready"])
    ready(other, reqs[1]["ready"])
    os.kill(node.pid, signal.SIGSTOP)
    first.terminate()
    with pytest.raises(subprocess.TimeoutExpired):
        first.wait(timeout=0.3)
    first.kill()
    assert first.wait(timeout=5) == -1 and other.wait(timeout=5) == -1 and not node.alive()
