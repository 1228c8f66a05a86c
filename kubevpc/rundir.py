"""The run directory, <state>/runs/<run>/: every file a run keeps, named in one place, and the one
way files there are written (atomic_write).

The run directory is a protocol between processes: the builder and the Lab write the plan and the
daemons' configuration files, the controller and the daemons write their state and status, and
the CLI, the control channel and the tests read them. docs/design.md, "The run directory", lists
every file with its writer, its readers and its format. Stdlib only: the daemons import it inside
the network namespaces.
"""
from __future__ import annotations

import os
import threading

STATE_ROOT = os.environ.get("KUBEVPC_STATE_DIR", "/var/lib/kubevpc")
FLOWLOG_FILE = "flowlog.jsonl"      # in the run directory; the previous generation is flowlog.jsonl.1


def runs_dir() -> str:
    return os.path.join(STATE_ROOT, "runs")


def run_dir(run: str) -> str:
    return os.path.join(runs_dir(), run)


def ovs_rundir() -> str:
    """Open vSwitch's run directory, as its programs find it: the only place ovs-vswitchd connects
    to a controller's Unix socket (anywhere else is "a possibility for remote exploit")."""
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


def controller_socket(run: str) -> str:
    """A run's OpenFlow controller socket: in Open vSwitch's run directory, mode 0600 (connecting
    to a Unix socket needs write permission, so only root can)."""
    return os.path.join(ovs_rundir(), f"kubevpc-{run}.sock")


def atomic_write(path: str, data: str | bytes, mode: int = 0o600, *, umask: bool = False,
                 tmp: str | None = None, check=None) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old file or the new one, never
    a part. The file gets ``mode`` whatever the umask (0600: the plan and the ingress controllers'
    state hold TLS private keys), or with ``umask`` the mode less the umask, as open() makes it.

    ``tmp`` names the file written first (default ``<path>.tmp.<pid>.<thread>``: two threads of
    one process may write the same file, as the controller's do with its status); ``check(tmp)`` may refuse
    it by raising, and the file then stays there, for inspection, and ``path`` is left as it was.
    A write that fails removes its temporary file."""
    tmp = tmp or f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fh = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode), "wb")
    try:
        with fh:
            if not umask:
                os.fchmod(fh.fileno(), mode)       # a leftover temporary file keeps its mode otherwise
            fh.write(data.encode() if isinstance(data, str) else data)
    except BaseException:
        os.unlink(tmp)
        raise
    if check is not None:
        check(tmp)
    os.replace(tmp, path)


def private_dir(path: str) -> str:
    """Make a directory only root can enter (0700), and every missing parent; an existing one is
    set to 0700 too. Returns the path."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _flat(name: str) -> str:
    """``namespace/name`` as one path component."""
    return name.replace("/", "_")


def _file(*parts: str, doc: str = "") -> property:
    """A file of the run directory, as a property of RunDir."""
    return property(lambda self: os.path.join(self.path, *parts), doc=doc)


class RunDir:
    """The files of one run's directory. Names that depend on an object take its identity as the
    plan spells it: a Service as ``namespace/name``, a node by name, a pod by namespace and name."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def of(cls, run: str) -> "RunDir":
        return cls(run_dir(run))

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    # the run: its ledger, its plan, its controller
    ledger = _file("ledger.jsonl", doc="What the run created, one JSON line each (kubevpc.ledger).")
    owner = _file("owner", doc="``<pid> <start time>`` of the process that made the run.")
    plan = _file("plan.json", doc="The Plan as JSON: what the controller compiles, rewritten on every change.")
    status = _file("status.json", doc="The controller's status: bridges, flows, plan version, errors.")
    controller_log = _file("controller.log")
    flowlog = _file(FLOWLOG_FILE, doc="The flow log records (JSON lines); the previous generation is flowlog.jsonl.1.")
    control_socket = _file("control.sock", doc="The control channel of `kubevpc ready|apply|...` (kubevpc.control).")
    supervisor_log = _file("supervisor.log", doc="What the supervisor of a run `kubevpc up` started said: the "
                                                 "bring-up, control calls, the teardown (kubevpc.cli.supervise).")
    # the servers, the fork server and the daemons: their output and their ready files
    servers_log = _file("servers.log", doc="Standard output and error of every server and daemon.")
    ready_dir = _file("ready")
    # the cluster DNS
    dns_zone = _file("dns-zone.json")
    dns_log = _file("dns.log")
    resolv_dir = _file("resolv")
    # the VPCs' DNS resolvers (with cloud.internet)
    resolver_zone = _file("resolver-zone.json", doc="The emulated internet's names, which every VPC's resolver serves.")
    tls_dir = _file("tls")

    def ready(self, netns: str, daemon: str = "") -> str:
        """The ready file of a namespace's server, or of a daemon in it (``<netns>-<daemon>``)."""
        return os.path.join(self.ready_dir, f"{netns}-{daemon}" if daemon else netns)

    def resolver_log(self, vpc: str) -> str:
        """``resolver-<vpc>.log``: what VPC `vpc`'s DNS resolver answered."""
        return os.path.join(self.path, f"resolver-{_flat(vpc)}.log")

    def resolv(self, netns: str) -> str:
        """A pod's resolv.conf, bind-mounted over its /etc/resolv.conf."""
        return os.path.join(self.resolv_dir, netns)

    def slb(self, service: str, suffix: str = "") -> str:
        """``slb-<namespace>_<name><suffix>``: an SLB checker's config (.json), state (.state.json), log (.log)."""
        return os.path.join(self.path, f"slb-{_flat(service)}{suffix}")

    def slb_config(self, service: str) -> str:
        return self.slb(service, ".json")

    def slb_state(self, service: str) -> str:
        return self.slb(service, ".state.json")

    def slb_log(self, service: str) -> str:
        return self.slb(service, ".log")

    def nodehealth(self, node: str, suffix: str = "") -> str:
        """``nodehealth-<node><suffix>``: a node's health check server's config (.json) and log (.log)."""
        return os.path.join(self.path, f"nodehealth-{node}{suffix}")

    def ingress(self, namespace: str, pod: str) -> str:
        """``ingress-<namespace>_<pod>/``: the directory of an ingress controller's files."""
        return os.path.join(self.path, f"ingress-{namespace}_{pod}")

    def ingress_state(self, namespace: str, pod: str) -> str:
        """The state document the controller serves (kubevpc.render.ingress)."""
        return os.path.join(self.ingress(namespace, pod), "state.json")

    def ingress_status(self, namespace: str, pod: str) -> str:
        """The controller's status: generation served and seen, ok, error, NGINX's pid."""
        return os.path.join(self.ingress(namespace, pod), "status.json")

    def ingress_log(self, namespace: str, pod: str) -> str:
        return os.path.join(self.ingress(namespace, pod), "controller.log")

    def ingress_nginx(self, namespace: str, pod: str) -> str:
        """NGINX's prefix: nginx.conf, nginx.conf.candidate, certs/, error.log, access.log, pid, temp files."""
        return os.path.join(self.ingress(namespace, pod), "nginx")

    def self_signed(self, secret: str, digest: str) -> str:
        """``tls/<namespace>_<name>-<digest>``, + .crt and .key: the certificate made for an
        Ingress's TLS Secret the scenario does not declare (``digest``: of its hosts)."""
        return os.path.join(self.tls_dir, f"{_flat(secret)}-{digest}")

    def certificate(self, secret: str) -> str:
        """``tls/<namespace>_<name>.pem``: a served certificate, written out for clients to trust."""
        return os.path.join(self.tls_dir, _flat(secret) + ".pem")
