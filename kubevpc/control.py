"""The control channel of a running scenario: change it from another process.

`kubevpc run FILE --keep` (or `--cli`, or the supervisor of `kubevpc up`) owns the Lab that built
the network. After its checks (for `up`: once the network is ready) it serves a Unix socket,
`<run dir>/control.sock` (mode 0600, recorded in the run's ledger, removed at teardown and by
`kubevpc clean`). Other processes call a whitelist of Lab methods on it: the
`kubevpc ready|apply|delete|scale|label|add-node|add-pod-cidr|matrix|stop-server|start-server|status` subcommands, or
`ControlClient`. `dry_run` plans an apply or a delete and answers what it would change, changing
nothing (`kubevpc apply|delete --dry-run`).

Protocol: one request per connection, one JSON object on one line each way (JSON never holds a
raw newline). The client sends

    {"v": 1, "method": "set_ready", "args": ["pod/default/web-0", false], "kwargs": {}}

and the server answers, then closes the connection:

    {"v": 1, "ok": true, "result": {"flows_updated_s": 0.04, "datapath_s": 0.5},
     "changes": ["default/web: endpoints web-0, web-1 -> web-0 (not ready), web-1", ...], "took_s": 0.55}
    {"v": 1, "ok": false, "kind": "usage", "error": "...", "problems": ["file:line: path: value: ..."]}

`kind` is "usage" (a bad request, bad arguments or a change the planner rejects: nothing changed)
or "runtime" (the call failed while running). `changes` lists what the call changed in the
Services (endpoints, selector, affinity, ...), compared before and after. Every read on either
side has a deadline; a request is at most MAX_MESSAGE bytes. Calls run one at a time, under one
lock, because the Lab is not thread-safe.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import socket
import struct
import threading
import time
import traceback
from typing import Any, Callable

from pydantic import ValidationError, validate_call

from topologies.shell import bridge_connections

from .errors import KubevpcError, ScenarioError
from .ledger import MAX_TAG, RUN_NAME, list_runs, owner_alive, run_dir
from .scenario.load import dotted
from .scenario.manifests import read_manifests as scenario_manifests
from .observe.flowlog import top_drops
from .rundir import RunDir

PROTOCOL = 1
MAX_MESSAGE = 4 * 1024 * 1024      # bytes in one request or answer (manifests are small)
READ_DEADLINE = 5.0                # the server's wait for a whole request
CONNECT_DEADLINE = 5.0             # the client's wait to connect and send
LOCK_DEADLINE = 60.0               # the server's wait for the call before this one to end
CALL_DEADLINE = 150.0              # the client's wait for an answer (lock wait + the longest call)
MAX_CLIENTS = 8                    # connections read at once; more are turned away at once
SUN_PATH_MAX = 107                 # bytes in a Unix socket path, without the trailing NUL

# The Lab methods a client may call, by name: arguments and results are JSON. The arguments are
# checked against each method's signature and annotations (strictly: "false" is not a bool).
# To serve another Lab method, add its name here: nothing else in this module needs to change.
LAB_METHODS: tuple[str, ...] = ("set_ready", "apply", "delete", "delete_service", "label", "set_network_policies", "scale",
                                "add_node", "add_pod_cidr", "stop_server", "start_server", "status", "dry_run")


def describe(lab) -> dict:
    """The run, the controller's status (corrected by the run: a controller that is not running
    programs nothing), each bridge's connection as Open vSwitch reports it, every server and
    whether it runs, every Service with its endpoints, and each SLB with its backends as the
    health checker sees them."""
    plan = lab.plan
    return {"run": lab.run, "file": lab.file, "mode": plan.cluster.mode if plan.cluster else None,
            "controller": lab.status(), "controller_problem": lab.net.describe_controller() if lab.net else "",
            "connected": bridge_connections([b.name for b in plan.bridges]) if lab.net else {},
            "servers": lab.servers(),
            "terminating": lab.terminating.left() if hasattr(lab, "terminating") else {},
            "drops": _top_drops(lab),
            "services": [{"key": s.key, **s.model_dump(mode="json")} for s in plan.services],
            "slbs": [_slb_view(lab, slb) for slb in plan.slbs]}


def _top_drops(lab) -> dict:
    """The security group rules and NetworkPolicies that dropped the most packets (their flows'
    counters), or why they could not be read."""
    if lab.net is None:
        return {"top": [], "error": "the lab is not up"}
    try:
        return {"top": [dataclasses.asdict(c) for c in top_drops(lab.rule_counters())], "error": ""}
    except KubevpcError as exc:
        return {"top": [], "error": str(exc)}


def matrix(lab, sources: list[str], ports: list[list], dests: list[str] | None = None, timeout: float = 1.0) -> dict:
    """The reachability matrix of the running scenario (Lab.matrix), as JSON."""
    return lab.matrix(sources, [(int(p), str(proto)) for p, proto in ports], dests, timeout).as_dict()


# Views computed here from the Lab, for what it has no method of its own.
VIEWS: dict[str, Callable[..., Any]] = {"describe": describe, "matrix": matrix}
WHITELIST: tuple[str, ...] = LAB_METHODS + tuple(VIEWS)

# `kubevpc delete KIND/...`: the whitelisted method that deletes each kind
DELETERS: dict[str, str] = {"svc": "delete", "netpol": "delete", "ingress": "delete", "pod": "delete",
                             "deploy": "delete", "sts": "delete", "ds": "delete"}



class ControlError(KubevpcError):
    """A control request failed. `kind`: "usage" (nothing changed), "runtime", or "unavailable"
    (no such run, or it does not serve)."""

    def __init__(self, message: str, kind: str = "runtime", problems: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.problems = list(problems)


class ProtocolError(ControlError):
    def __init__(self, message: str):
        super().__init__(message, "usage")


@dataclasses.dataclass(frozen=True)
class Reply:
    result: Any
    changes: tuple[str, ...]
    took_s: float


def socket_path(run: str) -> str:
    return RunDir.of(run).control_socket


# ------------------------------------------------------------------------------------- framing
def encode(message: dict) -> bytes:
    """One message: compact JSON on one line. Pydantic models, dataclasses and tuples are
    turned into JSON; anything else unknown into its text."""
    text = json.dumps(message, separators=(",", ":"), default=_jsonable)
    data = text.encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes is longer than the {MAX_MESSAGE} allowed")
    return data


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def read_message(sock: socket.socket, deadline: float, limit: int = MAX_MESSAGE) -> dict:
    """Read one message (a JSON object ending with a newline) within `deadline` seconds in all."""
    end = time.monotonic() + deadline
    buf = bytearray()
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise ProtocolError(f"no whole message within {deadline:g} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise ProtocolError(f"no whole message within {deadline:g} s") from None
        if not chunk:
            raise ProtocolError("the connection closed before a whole message (one JSON object and a newline)")
        buf += chunk
        if len(buf) > limit:
            raise ProtocolError(f"message longer than the {limit} bytes allowed")
    line = bytes(buf).split(b"\n", 1)[0]
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def request(method: str, *args: Any, **kwargs: Any) -> dict:
    return {"v": PROTOCOL, "method": method, "args": list(args), "kwargs": kwargs}


# ------------------------------------------------------------------------------------ dispatch
def handle(lab, message: dict) -> dict:
    """Check one request, call the whitelisted method, and return the answer. Never raises for
    what a client sent: errors become answers with a message."""
    t0 = time.monotonic()
    try:
        method, args, kwargs = _parse_request(message)
        target = VIEWS[method].__get__(lab) if method in VIEWS else getattr(lab, method)
        before = summary(lab.plan)
        result = _call(method, target, args, kwargs)
        changes = diff(before, summary(lab.plan))
    except ControlError as exc:
        return {"v": PROTOCOL, "ok": False, "kind": exc.kind, "error": str(exc), "problems": exc.problems}
    except Exception as exc:          # a bug here: a message to the client, the traceback in the run's log
        traceback.print_exc()
        return {"v": PROTOCOL, "ok": False, "kind": "runtime", "problems": [],
                "error": f"the control channel failed: {type(exc).__name__}: {exc}"}
    return {"v": PROTOCOL, "ok": True, "result": result, "changes": changes, "took_s": time.monotonic() - t0}


def _parse_request(message: dict) -> tuple[str, list, dict]:
    if message.get("v") != PROTOCOL:
        raise ProtocolError(f"protocol version {message.get('v')!r} is not served; this run speaks {PROTOCOL}")
    unknown = set(message) - {"v", "method", "args", "kwargs"}
    if unknown:
        raise ProtocolError(f"unknown request key(s) {', '.join(sorted(unknown))}; expected v, method, args, kwargs")
    method, args, kwargs = message.get("method"), message.get("args", []), message.get("kwargs", {})
    if method not in WHITELIST:
        raise ProtocolError(f"unknown method {method!r}; this run serves {', '.join(WHITELIST)}")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ProtocolError("args must be a JSON array and kwargs a JSON object")
    return method, args, kwargs


def signature_of(method: str, target: Callable) -> str:
    sig = inspect.signature(target).replace(return_annotation=inspect.Signature.empty)
    return f"{method}{sig}".replace("'", "")


def _call(method: str, target: Callable, args: list, kwargs: dict) -> Any:
    """Call with the arguments checked strictly against the target's annotations."""
    try:
        checked = validate_call(target, config={"strict": True})
    except Exception:                 # annotations pydantic cannot check: the number and names only
        try:
            inspect.signature(target).bind(*args, **kwargs)
        except TypeError as exc:
            raise ControlError(f"bad arguments for {signature_of(method, target)}", "usage", [str(exc)]) from None
        checked = target
    try:
        return checked(*args, **kwargs)
    except ValidationError as exc:
        if exc.title in (getattr(target, "__name__", ""), getattr(target, "__qualname__", "")):  # the arguments
            sig = inspect.signature(target)
            raise ControlError(f"bad arguments for {signature_of(method, target)}",
                               "usage", [_argument_problem(sig, e) for e in exc.errors()]) from None
        raise ControlError(f"{method}: {exc.title} is not valid ({exc.error_count()} problem(s)); nothing changed",
                           "usage", [f"{_dotted(e['loc'])}: {e['msg']}" for e in exc.errors()]) from None
    except ScenarioError as exc:
        raise ControlError(f"{method}: the change was rejected ({len(exc.problems)} problem(s)); nothing changed",
                           "usage", [str(p) for p in exc.problems]) from None
    except ControlError:
        raise
    except KubevpcError as exc:
        raise ControlError(f"{method}: {exc}") from None
    except Exception as exc:          # a bug or a machine failure: a message here, the traceback in the run's log
        traceback.print_exc()
        raise ControlError(f"{method} failed: {type(exc).__name__}: {exc}") from None


def _argument_problem(sig: inspect.Signature, err: dict) -> str:
    loc = list(err["loc"])
    if loc and isinstance(loc[0], int):           # a positional argument: name it
        params = list(sig.parameters.values())
        index = loc[0]
        fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        rest = next((p for p in params if p.kind == p.VAR_POSITIONAL), None)
        if index < len(fixed):
            loc[0] = fixed[index].name
        else:
            loc[0] = f"{rest.name}[{index - len(fixed)}]" if rest else f"argument {index + 1}"
    value = "" if err["type"] in ("missing_argument", "missing") else f" (got {err.get('input')!r})"
    return f"{_dotted(loc)}: {err['msg']}{value}"


def _dotted(loc) -> str:
    return dotted(tuple(loc))


# -------------------------------------------------------------------------------- what changed
def summary(plan) -> dict[str, dict[str, str]]:
    """Each Service as a few comparable lines of text: what `changes` reports on."""
    slbs = {slb.service: slb for slb in plan.slbs}
    out = {}
    for svc in plan.services:
        ports = ", ".join(f"{p.port}/{p.protocol}->{p.target_port}"
                          + (f" node port {p.node_port}" if p.node_port else "") for p in svc.ports)
        row = {"type": svc.type + (" (headless)" if svc.headless else ""),
               "clusterIP": svc.cluster_ip or "None",
               "ports": ports,
               "selector": ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items())),
               "endpoints": ", ".join(e.name + (f" ({e.condition})" if e.condition else "") for e in svc.endpoints),
               "sessionAffinity": f"ClientIP ({svc.affinity_timeout} s)" if svc.session_affinity else "None",
               "externalTrafficPolicy": svc.external_traffic_policy,
               "internalTrafficPolicy": svc.internal_traffic_policy}
        if not svc.proxied:
            row["kube-proxy"] = f"off (labelled {svc.proxy_off_label()})"
        if svc.key in slbs:
            row["SLB backends"] = "; ".join(f"{li.port}/{li.protocol}: " + ", ".join(b.id for b in li.backends)
                                            for li in slbs[svc.key].listeners)
        out[svc.key] = row
    for h in plan.pods:          # pods come and go (they never move): created and deleted lines
        out[h.key] = {"type": "pod", "node": h.node, "ip": h.ip}
    if plan.cluster is not None and plan.cluster.mode != "eni":     # blocks are added (kubevpc add-pod-cidr)
        out[f"cluster/{plan.cluster.name}"] = {"type": "cluster", "pod CIDR blocks": ", ".join(plan.cluster.pod_cidrs)}
    for n in plan.nodes:         # nodes join (kubevpc add-node)
        out[f"node/{n.name}"] = {"type": "node", "node": n.vswitch, "ip": n.ip + (f", pod CIDR {n.pod_cidr}"
                                                                                  if n.pod_cidr else "")}
    return out


def diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            lines.append(f"{key}: deleted")
        elif key not in before and after[key]["type"] in ("pod", "node"):
            lines.append(f"{key}: created on {after[key]['node']}, {after[key]['ip']}")
        elif key not in before:
            lines.append(f"{key}: created, {after[key]['type']} {after[key]['clusterIP']}, ports {after[key]['ports']}")
        else:
            lines += [f"{key}: {field} {old or '-'} -> {after[key].get(field) or '-'}"
                      for field, old in before[key].items() if after[key].get(field) != old]
    return lines


def _slb_view(lab, slb) -> dict:
    """An SLB with its backends, each with the status its health checker last wrote and whether
    the controller's current plan has it in rotation (null before the controller read the checker)."""
    health = {}
    rotation = lab.status().get("slb_health", {})
    if lab.net is not None:
        try:
            with open(lab.net.rundir.slb_state(slb.service), encoding="utf-8") as fh:
                health = json.load(fh).get("listeners", {})
        except (OSError, json.JSONDecodeError):
            pass
    return {"service": slb.service, "vip": slb.vip, "vswitch": slb.vswitch, "scheduler": slb.scheduler,
            "check": slb.check,
            "listeners": [{"name": li.name, "port": li.port, "protocol": li.protocol,
                           "backends": [{**b.model_dump(mode="json"),
                                         "status": health.get(li.name, {}).get(f"{b.ip}:{b.check_port}", {})
                                         .get("status", "unknown"),
                                         "in_rotation": rotation.get(li.name, {}).get(f"{b.ip}:{b.check_port}")}
                                        for b in li.backends]}
                          for li in slb.listeners]}


# -------------------------------------------------------------------------------------- server
class ControlServer:
    """Serves the control socket from a thread; each connection is read in its own thread (with a
    deadline), and the calls run one at a time under `lock`."""

    def __init__(self, lab, path: str, say: Callable[[str], None] = lambda s: None,
                 read_deadline: float = READ_DEADLINE, lock_deadline: float = LOCK_DEADLINE):
        self.lab, self.path, self.say = lab, path, say
        self.read_deadline, self.lock_deadline = read_deadline, lock_deadline
        # the Lab's own lock when it has one: its grace period timer changes the run too
        self.lock = getattr(lab, "lock", None) or threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ControlServer":
        if len(self.path.encode()) > SUN_PATH_MAX:
            raise KubevpcError(f"the control socket path {self.path} is longer than the {SUN_PATH_MAX} bytes a "
                               "Unix socket allows; set KUBEVPC_STATE_DIR to a shorter directory")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)           # the socket is created 0600: no moment when others could connect
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise KubevpcError(f"cannot serve {self.path}: {exc.strerror}") from None
        finally:
            os.umask(umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.2)              # the accept loop looks at the stop flag this often
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="kubevpc-control", daemon=True)
        self._thread.start()
        return self

    def stop(self, deadline: float = 30.0) -> None:
        """Stop accepting, wait (with a deadline) for a call under way, remove the socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self.lock.acquire(timeout=deadline):
            self.lock.release()
        else:
            self.say(f"control: a call still runs after {deadline:g} s; tearing down anyway")

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._answer(conn, {"v": PROTOCOL, "ok": False, "kind": "runtime", "problems": [],
                                    "error": f"busy: {MAX_CLIENTS} requests are waiting already; try again"})
                continue
            threading.Thread(target=self._serve, args=(conn,), name="kubevpc-control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer(conn, self._reply(conn))
        finally:
            self._slots.release()

    def _reply(self, conn: socket.socket) -> dict:
        def refused(kind: str, error: str) -> dict:
            return {"v": PROTOCOL, "ok": False, "kind": kind, "error": error, "problems": []}
        pid, uid = peer(conn)
        if uid not in (0, os.getuid()):
            return refused("usage", f"uid {uid} may not change this run")
        try:
            message = read_message(conn, self.read_deadline)
        except ControlError as exc:
            return refused(exc.kind, str(exc))
        if not self.lock.acquire(timeout=self.lock_deadline):
            return refused("runtime", f"busy: the call before this one still runs after {self.lock_deadline:g} s")
        try:
            if self._stopping.is_set():
                return refused("runtime", "the run is ending")
            answer = handle(self.lab, message)
        finally:
            self.lock.release()
        args = message.get("args") if isinstance(message.get("args"), list) else []
        kwargs = message.get("kwargs") if isinstance(message.get("kwargs"), dict) else {}
        shown = [json.dumps(a, default=str)[:60] for a in args] + [f"{k}={json.dumps(v, default=str)[:60]}"
                                                                    for k, v in kwargs.items()]
        what = f"{message.get('method')}({', '.join(shown)})"
        if answer["ok"]:
            if message.get("method") not in ("status", "describe"):
                n = len(answer["changes"])
                self.say(f"control: {what} from pid {pid}: {f'{n} Service change(s)' if n else 'no Service changed'}"
                         f", answered in {answer['took_s'] * 1000:.0f} ms")
        else:
            self.say(f"control: {what} from pid {pid} failed: {answer['error']}")
        return answer

    def _answer(self, conn: socket.socket, answer: dict) -> None:
        try:
            try:
                data = encode(answer)
            except ProtocolError as exc:
                data = encode({"v": PROTOCOL, "ok": False, "kind": "runtime", "error": str(exc), "problems": []})
            conn.settimeout(self.read_deadline)
            conn.sendall(data)
        except OSError:
            pass                          # the client went away: nothing to tell it
        finally:
            conn.close()


def peer(conn: socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def serve(lab, say: Callable[[str], None] = lambda s: None) -> ControlServer | None:
    """Serve the control socket of a built Lab in its run directory, recorded in its ledger first.
    Returns None (and says why) when it cannot: the run goes on without it."""
    path = socket_path(lab.run)
    lab.net.ledger.record("file", path)
    try:
        server = ControlServer(lab, path, say).start()
    except KubevpcError as exc:
        say(f"control channel off: {exc}")
        return None
    say(f"control channel: {path} (`kubevpc status {lab.run}`, `kubevpc ready {lab.run} POD false`, ...)")
    return server


# -------------------------------------------------------------------------------------- client
def read_manifests(paths: list[str]) -> list[dict]:
    """The Kubernetes objects of manifest files, directories or `-` (kubevpc.scenario.manifests),
    checked as the scenario loader checks manifests; kinds that do not touch the network are left
    out. Raises ScenarioError with every problem found; the run is asked nothing then."""
    return scenario_manifests(paths).objects


def find_run(run: str | None = None) -> str:
    """The named run, checked to be live and serving; or, unnamed, the one live run that serves."""
    if run is not None:
        if not RUN_NAME.match(run):
            raise ControlError(f"{run!r} is not a run name: 1 to {MAX_TAG} lowercase letters and digits, starting with "
                               "a letter (`kubevpc list` shows the runs)", "usage")
        if not os.path.isdir(run_dir(run)):
            raise ControlError(f"no run named {run} on this machine (`kubevpc list` shows the runs)", "unavailable")
        if not owner_alive(run):
            raise ControlError(f"run {run} is a leftover: the process that made it is gone "
                               f"(`kubevpc clean {run}` removes it)", "unavailable")
        if not os.path.exists(socket_path(run)):
            raise ControlError(f"run {run} does not serve a control channel: only `kubevpc run FILE --keep` or "
                               "`--cli` serves one, once its checks are done, and `kubevpc up` once the network is "
                               "ready", "unavailable")
        return run
    live = [r for r in list_runs() if owner_alive(r)]
    serving = [r for r in live if os.path.exists(socket_path(r))]
    if len(serving) == 1:
        return serving[0]
    if serving:
        raise ControlError(f"{len(serving)} runs serve a control channel ({', '.join(serving)}): name one", "usage")
    if live:
        raise ControlError(f"no live run serves a control channel (live: {', '.join(live)}); start one with "
                           "`kubevpc run FILE --keep` or `--cli`, or `kubevpc up FILE`", "unavailable")
    raise ControlError("no run is live; start one with `kubevpc run FILE --keep` or `kubevpc up FILE`", "unavailable")


class ControlClient:
    """Calls a running scenario's Lab methods from another process:

        c = ControlClient("kvab12")            # or ControlClient() for the one run that serves
        c.set_ready("pod/default/web-0", False)  # -> {"flows_updated_s": ..., "datapath_s": ...}
        c.request("apply", service_dict)          # -> Reply(result, changes, took_s)

    Every whitelisted method is an attribute. Errors raise ControlError with the run's message."""

    def __init__(self, run: str | None = None, *, path: str | None = None, timeout: float = CALL_DEADLINE):
        self.run = None if path is not None else find_run(run)
        self.path = path or socket_path(self.run)
        self.timeout = timeout

    def request(self, method: str, *args: Any, **kwargs: Any) -> Reply:
        answer = self.exchange(request(method, *args, **kwargs))
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "the run answered with an error"), answer.get("kind", "runtime"),
                               answer.get("problems", []))
        return Reply(answer.get("result"), tuple(answer.get("changes", ())), float(answer.get("took_s", 0)))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.request(method, *args, **kwargs).result

    def __getattr__(self, name: str):
        if name in WHITELIST:
            return functools.partial(self.call, name)
        raise AttributeError(name)

    def exchange(self, message: dict) -> dict:
        """Send one message, read the one answer."""
        where = f"run {self.run}" if self.run else self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_DEADLINE)
            try:
                sock.connect(self.path)
                sock.sendall(encode(message))
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlError(f"{where} does not answer on its control socket (is it ending?)",
                                   "unavailable") from None
            except OSError as exc:
                raise ControlError(f"cannot reach {where}: {exc}", "unavailable") from None
            try:
                return read_message(sock, self.timeout)
            except ProtocolError as exc:
                raise ControlError(f"no answer from {where}: {exc}", "runtime") from None
        finally:
            sock.close()
