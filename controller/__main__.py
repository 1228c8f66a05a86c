"""Start the kubevpc controller: `python -m controller --plan PLAN --state DIR --port N --run TAG`.

os-ken 4 no longer ships `osken-manager`, so this is the process entry point: it sets os-ken's
listen address (loopback only) and port, then runs the application until it is terminated.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    ap.add_argument("--plan", required=True, help="the run's plan.json")
    ap.add_argument("--state", required=True, help="the run's state directory (status.json goes there)")
    ap.add_argument("--port", type=int, required=True, help="OpenFlow port to listen on, on 127.0.0.1")
    ap.add_argument("--run", required=True, help="the run's name (for recognising this process)")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)

    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ["KUBEVPC_PLAN"] = os.path.abspath(args.plan)
    os.environ["KUBEVPC_STATE"] = os.path.abspath(args.state)

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    import os_ken.controller.controller  # noqa: F401  (registers the ofp-* options)

    cfg.CONF([], project="os_ken")
    cfg.CONF.set_override("ofp_listen_host", "127.0.0.1")
    cfg.CONF.set_override("ofp_tcp_listen_port", args.port)
    AppManager.run_apps(["controller.app"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
