"""One server process for all the pods of a node, instead of a process per pod.

A forked pod server costs about 5 MiB (docs/performance.md, Scale): most of the memory of a pod.
This process serves every pod of its node with one asyncio loop and the pod server's own code
(kubevpc.daemons.server.Server), so each pod answers exactly as its own process would: its name,
the client address its socket saw, the same protocols and ports. A socket stays in the network
namespace it was made in, so for each pod the process enters the pod's namespace (`setns`), makes
and binds that pod's sockets, and comes back to its own (its node's) before anything else runs.
Each pod's server still stops and starts alone: on request the process closes one pod's sockets
(and ends its connections) or makes them again.

    python -m kubevpc.daemons.nodeserver --run RUN --node NODE

reads requests on standard input, one JSON object a line, and answers each on standard output:

    {"open": KEY, "id": N, "netns": PATH, "name": NAME, "listen": ["TCP:8080", "UDP:53", ...],
     "bind": "0.0.0.0", "bind6": "", "ready": PATH}      ->  {"id": N, "key": KEY, "open": true}
    {"close": KEY, "id": N}                               ->  {"id": N, "key": KEY, "closed": true}

or `{"id": N, "key": KEY, "error": "..."}`, also said on standard error (the run's servers.log).
`ready` is written (our pid, as a pod server writes its own) once the pod's sockets listen. It
exits on SIGTERM or SIGINT, or when its standard input closes (the run's owner is gone): every
socket is then closed. Its name in `ps` is `kv:NODE`. Stdlib only.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

from kubevpc.daemons.harness import STOP_SIGNALS, Daemon, raise_open_files, write_ready
from kubevpc.daemons.nsenter import entered, own_namespace
from kubevpc.daemons.server import Server, _check_duplicates, parse_listen

PR_SET_NAME = 15
MAX_REQUEST = 1 << 20               # bytes of one request line
PIPE_SIZE = 1 << 20                 # requests of ~3,000 pods fit in the pipe without waiting for the reader


class NodeServer:
    """The pods one node server serves: each a Server of kubevpc.daemons.server, by pod key."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.pods: dict[str, Server] = {}
        self.home = own_namespace()

    async def open(self, req: dict) -> None:
        """Make a pod's sockets in its namespace, serve them, then write its ready file."""
        key = str(req["open"])
        if key in self.pods:
            raise ValueError(f"{key} is served already")
        try:
            listens = [parse_listen(str(x)) for x in req["listen"]]
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
        _check_duplicates(listens, _refuse)
        server = Server(str(req["name"]), self.run, str(req.get("bind") or "0.0.0.0"), str(req.get("bind6") or ""))
        with entered(str(req["netns"]), self.home):
            socks = server.bind_all(listens)
        try:
            await server.serve(socks)
        except BaseException:
            server.close()
            for _, sock in socks:
                sock.close()
            raise
        self.pods[key] = server
        write_ready(req.get("ready"))

    def close(self, key: str) -> None:
        """Close a pod's sockets and end its connections (nothing to do if it is not served)."""
        server = self.pods.pop(key, None)
        if server is not None:
            server.close()

    def close_all(self) -> None:
        for key in list(self.pods):
            self.close(key)

    async def handle(self, line: bytes) -> dict:
        """One request line, carried out; its answer."""
        req: dict = {}
        try:
            parsed = json.loads(line)
            if not isinstance(parsed, dict):
                raise ValueError("a request is a JSON object")
            req = parsed
            if "close" in req:
                self.close(str(req["close"]))
                return {"id": req.get("id"), "key": req["close"], "closed": True}
            await self.open(req)
            return {"id": req.get("id"), "key": req["open"], "open": True}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            who = req.get("name") or req.get("open") or req.get("close") or "?"
            print(f"kubevpc.server: {who}: {text}", file=sys.stderr, flush=True)
            return {"id": req.get("id"), "key": req.get("open", req.get("close")), "error": text}

    async def follow(self, reader: asyncio.StreamReader, out: asyncio.WriteTransport) -> None:
        """Carry out requests until the end of the input; answers are buffered, never waited on."""
        while line := await reader.readline():
            if line.strip():
                out.write((json.dumps(await self.handle(line)) + "\n").encode())


def _refuse(message: str) -> None:
    raise ValueError(message)


def _name_process(name: str) -> None:
    """Our name in `ps -o comm` (at most 15 bytes)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class NodeServerDaemon(Daemon):
    """``python -m kubevpc.daemons.nodeserver``: serves requests until stopped or its input closes."""

    NAME = "nodeserver"
    DESCRIPTION = ("Serve the identity server of every pod of a node from one process, each pod's sockets "
                   "made in the pod's network namespace (JSON requests on standard input; see the module's "
                   "documentation).")

    @classmethod
    def arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", required=True, metavar="RUNTAG",
                       help="run tag, reported in answers and used by cleanup to find the process")
        p.add_argument("--node", required=True, help="the node it serves: its name in ps is kv:NODE")

    def run(self) -> int:
        _name_process(f"kv:{self.args.node}")
        raise_open_files()
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        node = NodeServer(self.args.run)
        stop = asyncio.Event()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        reader = asyncio.StreamReader(limit=MAX_REQUEST)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     open(0, "rb", buffering=0, closefd=False))
        out, _ = await loop.connect_write_pipe(asyncio.Protocol, open(1, "wb", buffering=0, closefd=False))
        tasks = {asyncio.ensure_future(node.follow(reader, out)), asyncio.ensure_future(stop.wait())}
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        node.close_all()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                print(f"kubevpc.nodeserver: {task.exception()!r}", file=sys.stderr, flush=True)
                return 1
        return 0


main = NodeServerDaemon.main


# ------------------------------------------------------------------------------ the caller's side
class NodeServerProcess:
    """The builder's handle on a running node server: it writes requests and reads the answers as
    they come, never waiting for them, so that the node servers of all nodes work at once. Pods
    are known by key and by the number of the request that opened them (a pod stopped and started
    again is a new server)."""

    def __init__(self, proc: subprocess.Popen, node: str) -> None:
        self.proc, self.node, self.pid = proc, node, proc.pid
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pods: dict[str, list] = {}      # key -> [request number, opening|open|closing|closed|failed]
        self._buf = b""
        os.set_blocking(proc.stdout.fileno(), False)
        try:
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, AttributeError):
            pass                              # the default 64 KiB: the writer waits for the reader

    def alive(self) -> bool:
        return self.proc.poll() is None

    def open(self, requests: list[dict]) -> list["PodServer"]:
        """Ask for these pods' servers (requests without "id"); their handles, in order."""
        with self._lock:
            handles = []
            for req in requests:
                n = next(self._ids)
                self._pods[req["open"]] = [n, "opening"]
                handles.append(PodServer(self, req["open"], n))
            self._send([{**req, "id": h.number} for req, h in zip(requests, handles)])
        return handles

    def close_pod(self, key: str, number: int) -> None:
        with self._lock:
            entry = self._pods.get(key)
            if entry and entry[0] == number and entry[1] in ("opening", "open"):
                entry[1] = "closing"
                self._send([{"close": key, "id": number}])

    def state(self, key: str, number: int) -> str:
        """opening, open, closing, or ended (closed, failed, or the process is gone)."""
        with self._lock:
            self._read()
            entry = self._pods.get(key)
            if entry is None or entry[0] != number or entry[1] in ("closed", "failed") or not self.alive():
                return "ended"
            return entry[1]

    def wait_answer(self, timeout: float) -> None:
        """Until an answer (or the end of the output) is there to read, or `timeout` s."""
        if self.proc.stdout.closed:      # stopped: only its end is waited for
            time.sleep(max(0.0, min(timeout, 0.05)))
            return
        poller = select.poll()          # not select(): a builder of 500 pods holds descriptors past 1024
        poller.register(self.proc.stdout.fileno(), select.POLLIN)
        poller.poll(max(0.0, timeout) * 1000)

    def stop(self) -> None:
        """Stop it, without waiting: its input closes and it is asked to end. Its answers are read
        no more (a pod's server in it has ended)."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.terminate()
        except ProcessLookupError:
            pass

    def _send(self, requests: list[dict]) -> None:
        try:
            self.proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass                            # it is gone: state() says so

    def _read(self) -> None:
        if self.proc.stdout.closed:
            return
        fd = self.proc.stdout.fileno()
        try:
            while chunk := os.read(fd, 1 << 16):
                self._buf += chunk
        except (BlockingIOError, OSError):
            pass
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                answer = json.loads(line)
                entry = self._pods.get(answer["key"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry is None or entry[0] != answer.get("id"):
                continue
            if answer.get("closed"):
                entry[1] = "closed"
            elif answer.get("error"):
                entry[1] = "failed"
            elif answer.get("open") and entry[1] == "opening":
                entry[1] = "open"


class PodServer:
    """One pod's server in a node server, with the parts of subprocess.Popen the builder and the Lab
    use, as a forked server has them (kubevpc.daemons.forkserver.ForkedProcess): its pid is the
    node server's; terminate and kill close the pod's sockets alone; it has ended (`returncode` -1)
    once they are closed, once they could not be made (servers.log says why), or once the node
    server is gone, which takes all the pods of the node with it."""

    def __init__(self, node: NodeServerProcess, key: str, number: int) -> None:
        self.node, self.key, self.number = node, key, number
        self.pid = node.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.node.state(self.key, self.number) == "ended":
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.05 if end is None else end - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"server of {self.key} (node server pid {self.pid})", timeout)
            self.node.wait_answer(min(left, 0.05))
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        """SIGTERM, SIGINT: close the pod's sockets. SIGKILL too, unless they were asked to close
        already and are not closed yet: the node server does not answer, and is killed (with the
        servers of all its pods, as a hung process is killed with its threads)."""
        if sig not in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            raise ValueError(f"a pod's server in a node server takes SIGTERM, SIGINT or SIGKILL, not {sig}")
        if self.poll() is not None:
            return
        if sig == signal.SIGKILL and self.node.state(self.key, self.number) == "closing":
            self.node.proc.kill()
        else:
            self.node.close_pod(self.key, self.number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
