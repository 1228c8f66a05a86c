"""Start the kubevpc controller: `python -m controller --plan PLAN --state DIR --socket PATH --run TAG`.

os-ken 4 no longer ships `osken-manager`, so this is the process entry point. The controller
listens on a Unix socket, never on TCP: any local user could connect to a TCP port and claim a
bridge (docs/design.md, "Who may program the bridges"). ovs-vswitchd connects only to sockets in
its own run directory, so the socket is there, created 0600 (this process's umask is 077):
connecting to a Unix socket needs write permission, so only root can. os-ken's StreamServer
listens on a Unix socket when `ofp-listen-host` is a path in an existing directory; its Datapath
sets TCP_NODELAY on every accepted socket, which a Unix socket refuses (EOPNOTSUPP), so accepted
sockets are handed to it behind UnixStream, which leaves TCP options out. The application
(controller/app.py) then accepts only connections from ovs-vswitchd itself.
"""
from __future__ import annotations

import os
import socket
import stat
import sys

from kubevpc.daemons.harness import log_records, parser


class UnixStream:
    """An accepted Unix socket as os-ken's Datapath uses a TCP one: TCP options are left out,
    everything else is the socket's own."""

    def __init__(self, sock):
        self._sock = sock

    def setsockopt(self, level, option, value, *rest):
        if level == socket.IPPROTO_TCP:
            return None
        return self._sock.setsockopt(level, option, value, *rest)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def serve_on_unix_sockets() -> None:
    """Hand os-ken's connection factory the accepted sockets behind UnixStream."""
    from os_ken.controller import controller
    factory = controller.datapath_connection_factory

    def unix_factory(sock, address):
        return factory(UnixStream(sock) if sock.family == socket.AF_UNIX else sock, address)
    controller.datapath_connection_factory = unix_factory


def remove_stale_socket(path: str) -> None:
    """A controller killed with -9 leaves its socket file behind; binding again needs it gone.
    Only a socket is removed, never a file of another kind."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = parser("controller", __doc__)
    ap.add_argument("--plan", required=True, help="the run's plan.json")
    ap.add_argument("--state", required=True, help="the run's state directory (status.json goes there)")
    ap.add_argument("--socket", required=True, help="the Unix socket to listen on (in Open vSwitch's run directory)")
    ap.add_argument("--run", required=True, help="the run's name (for recognising this process)")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)

    os.umask(0o077)               # the socket, status.json and the log: root's alone
    log_records(args.log)
    os.environ["KUBEVPC_PLAN"] = os.path.abspath(args.plan)
    os.environ["KUBEVPC_STATE"] = os.path.abspath(args.state)
    path = os.path.abspath(args.socket)
    if not os.path.isdir(os.path.dirname(path)):
        ap.error(f"--socket {path}: its directory does not exist")
    remove_stale_socket(path)

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    import os_ken.controller.controller  # noqa: F401  (registers the ofp-* options)

    cfg.CONF([], project="os_ken")
    cfg.CONF.set_override("ofp_listen_host", path)       # a path: os-ken listens on a Unix socket
    cfg.CONF.set_override("ofp_tcp_listen_port", 1)      # any port but 0, which would open 6633 and 6653 too
    serve_on_unix_sockets()
    AppManager.run_apps(["controller.app"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
