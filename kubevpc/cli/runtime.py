"""The commands that change a running scenario through its control channel: ready, scale, label,
add-node, add-pod-cidr, stop-server and start-server (apply and delete, which read manifests, are in apply.py).
Each prints what changed and how long the flows took to follow."""
from __future__ import annotations


from ..control import ControlError
from .channel import control_client, control_command, control_options, control_parser
from .common import EXIT_OK, out
from .output import emit


def add_ready(sub) -> None:
    p = control_parser(sub, "ready", "mark a pod ready or not ready in a running scenario",
                       "Mark a pod ready or not ready, as its readiness probe would. The Services' endpoints, select "
                       "groups, DNS answers (headless) and SLB backends (eni mode) follow; the pod keeps running. "
                       "Prints what changed and how long the controller took to program it.")
    p.add_argument("pod", metavar="POD", help="pod/<namespace>/<name> or pod/<name> (namespace default)")
    p.add_argument("state", metavar="true|false", choices=("true", "false"), help="ready (true) or not ready (false)")
    control_options(p)


def add_scale(sub) -> None:
    p = control_parser(sub, "scale", "set the number of replicas of a Deployment or a StatefulSet in a running scenario, "
                       "as kubectl scale",
                       "Set a Deployment's or a StatefulSet's replicas. A Deployment's pods are named <deployment>-<index>: "
                       "scaling up starts indexes above the highest (placed round-robin over the nodes by index, each "
                       "with a new address); a StatefulSet's are <name>-0 .. <name>-(replicas-1). Scaling down removes "
                       "the highest ones, which terminate gracefully, as `kubevpc delete` says. Services, DNS, SLB "
                       "backends and NetworkPolicy follow.")
    p.add_argument("deployment", metavar="WORKLOAD", help="deploy/<namespace>/<name>, deploy/<name>, "
                   "sts/<namespace>/<name> or sts/<name>")
    p.add_argument("--replicas", type=int, required=True, metavar="N", help="the number of pods wanted (0 or more)")
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS",
                   help="seconds the pods removed keep running, terminating (default: their own "
                        "terminationGracePeriodSeconds); 0 removes them at once")
    control_options(p)


def server_parser(name: str, verb: str):
    """The parser of stop-server (verb "stop") or start-server ("start")."""
    def add(sub) -> None:
        p = control_parser(sub, name, f"{verb} the server of a pod or ECS instance, or a node's health check server",
                           f"{verb.capitalize()} what runs in an endpoint: its server (connections to it are refused while "
                           "it is stopped), or with --program nodehealth a node's kube-proxy health check server (SLB "
                           "health checks against the node fail while it is stopped)." +
                           (" Waits until it listens again." if verb == "start" else ""))
        p.add_argument("endpoint", metavar="ENDPOINT",
                       help="pod/<namespace>/<name>, pod/<name>, ecs/<name> or node/<name>")
        p.add_argument("--program", choices=("server", "nodehealth"), default="server",
                       help="which program (default: server)")
        control_options(p)
    return add


def add_label(sub) -> None:
    p = control_parser(sub, "label", "set or remove labels of a pod or a namespace in a running scenario, as kubectl label",
                       "Set (KEY=VALUE) or remove (KEY-) labels of a pod or a namespace. Service endpoints and "
                       "NetworkPolicy (pod and namespace selectors) follow.")
    p.add_argument("target", metavar="TARGET", help="pod/<namespace>/<name> or namespace/<name>")
    p.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-", help="labels to set, or to remove (KEY-)")
    control_options(p)


def add_add_node(sub) -> None:
    p = control_parser(sub, "add-node", "add a node to a running scenario's cluster, as scaling out a node pool does",
                       "Add a node to the running cluster: a new ECS instance of the cluster's VPC on a vSwitch of it, "
                       "at --ip or the lowest free address, in the security groups given (default: the first "
                       "node's). It is planned as a node declared in the scenario: in vxlan and vpc-route mode it takes "
                       "the next free node CIDR, from podCIDR and then from cluster.additionalPodCIDRs in order (a "
                       "node's pod CIDR is fixed when it joins), and in vpc-route mode its route enters the VPC's route "
                       "table (within its quota); in vxlan mode the other nodes gain it as a VXLAN peer; in eni mode it "
                       "gets its uplinks as Terway's configuration says. Running pods stay on their nodes; pods "
                       "created afterwards (more replicas) may be placed on it. Refused, with nothing changed, when no "
                       "block has a free node CIDR (the error names each block), the vSwitch is full, or the name, "
                       "vSwitch or a group is wrong. Nodes cannot be removed while running.")
    p.add_argument("name", metavar="NAME", help="the new node's (ECS instance's) name")
    p.add_argument("--run", dest="run_option", metavar="RUN", default=None, help="the run, as the RUN argument")
    p.add_argument("--vswitch", required=True, metavar="VSW", help="its vSwitch, in the cluster's VPC")
    p.add_argument("--ip", default=None, metavar="IP", help="its primary address (default: the lowest free one)")
    p.add_argument("--security-group", dest="security_groups", action="append", default=None, metavar="SG",
                   help="a security group of the VPC; may be given several times (default: the first node's)")
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="KEY=VALUE",
                   help="a node label (Terway reads terway-config from one); may be given several times")
    control_options(p)


def add_add_pod_cidr(sub) -> None:
    p = control_parser(sub, "add-pod-cidr", "add a pod CIDR block to a running vpc-route cluster, as CCE adds a "
                       "container CIDR block",
                       "Add a pod CIDR block to the running cluster, after cluster.additionalPodCIDRs (vpc-route mode "
                       "only, as CCE adds container CIDR blocks to VPC network clusters; vxlan and eni are refused with "
                       "the loader's reasons). Running nodes keep their node CIDRs; nodes added afterwards (kubevpc "
                       "add-node) take theirs from it once the blocks before it are full. Refused, with nothing "
                       "changed, for a value that is not an IPv4 CIDR without host bits, a block smaller than one node "
                       "CIDR (cluster.nodeCIDRMaskSize), or one that overlaps the VPC, a peered VPC, serviceCIDR, "
                       "another pod CIDR block or what else the scenario keeps pod CIDR blocks from. A block cannot be "
                       "removed while running.")
    p.add_argument("cidr", metavar="CIDR", help="the block, e.g. 10.251.0.0/24")
    p.add_argument("--run", dest="run_option", metavar="RUN", default=None, help="the run, as the RUN argument")
    control_options(p)


def _run_named(args) -> None:
    """The run given as RUN or --run (add-node, add-pod-cidr), not both differently."""
    if args.run_option is not None:
        if args.run is not None and args.run != args.run_option:
            raise ControlError(f"the run is named twice ({args.run} and --run {args.run_option}); expected one", "usage")
        args.run = args.run_option


def _changed(client, headline: str, reply, fmt: str) -> int:
    if fmt != "table":
        emit({"run": client.run, "result": reply.result, "changes": list(reply.changes),
              "took_s": round(reply.took_s, 4)}, fmt)
        return EXIT_OK
    out.print(f"{headline} (run {client.run})", markup=False)
    for line in reply.changes:
        out.print(f"  {line}", markup=False)
    times = reply.result if isinstance(reply.result, dict) else {}
    for key, left in (times.get("terminating") or {}).items():
        out.print(f"  {key} terminating: removed in {left:.0f} s (its grace period)", markup=False)
    if "flows_updated_s" in times:
        if not reply.changes:
            out.print("  no Service changed")
        flows, cached = times["flows_updated_s"], times.get("datapath_s", 0.0)
        out.print(f"flows programmed in {flows * 1000:.0f} ms ({flows:.2f} of kube-proxy's 1 s minimum sync "
                  f"period), in the datapath's flow cache in {cached * 1000:.0f} ms")
        if times.get("controller"):
            out.print(f"note: since the last change, {times['controller']}", markup=False)
    else:
        out.print(f"done in {reply.took_s * 1000:.0f} ms")
    return EXIT_OK


@control_command
def cmd_ready(args) -> int:
    ready = args.state == "true"
    client = control_client(args)
    reply = client.request("set_ready", args.pod, ready)
    return _changed(client, f"{args.pod} marked {'ready' if ready else 'not ready'}", reply, args.output)


@control_command
def cmd_scale(args) -> int:
    if args.replicas < 0:
        raise ControlError(f"--replicas {args.replicas}: expected 0 or more", "usage")
    if args.grace_period is not None and args.grace_period < 0:
        raise ControlError(f"--grace-period {args.grace_period}: expected 0 or more seconds", "usage")
    client = control_client(args)
    grace = {"grace_period": args.grace_period} if args.grace_period is not None else {}
    reply = client.request("scale", args.deployment, args.replicas, **grace)
    return _changed(client, f"{args.deployment} scaled to {args.replicas}", reply, args.output)


def label_changes(items: list[str], error) -> dict[str, str | None]:
    """`KEY=VALUE` sets, `KEY-` removes, as `kubectl label` reads them."""
    key_value = [item.split("=", 1) if "=" in item else (item[:-1], None) if item.endswith("-") else ("", None)
                 for item in items]
    for item, (key, _) in zip(items, key_value):
        if not key:
            raise error(f"label {item!r}: expected KEY=VALUE to set or KEY- to remove", "usage")
    return dict(key_value)


@control_command
def cmd_label(args) -> int:
    if args.run and "/" in args.run:            # no RUN given: argparse took the target for it
        args.labels, args.target, args.run = [args.target, *args.labels], args.run, None
    client = control_client(args)
    reply = client.request("label", args.target, label_changes(args.labels, ControlError))
    return _changed(client, f"{args.target} labelled {' '.join(args.labels)}", reply, args.output)


@control_command
def cmd_add_node(args) -> int:
    _run_named(args)
    labels = label_changes(args.labels, ControlError)
    bad = [k for k, v in labels.items() if v is None]
    if bad:
        raise ControlError(f"--label {bad[0]}-: expected KEY=VALUE (a new node has no label to remove)", "usage")
    client = control_client(args)
    options = {k: v for k, v in (("security_groups", args.security_groups), ("ip", args.ip),
                                 ("labels", labels or None)) if v is not None}
    reply = client.request("add_node", args.name, args.vswitch, **options)
    return _changed(client, f"node {args.name} added on {args.vswitch}", reply, args.output)


@control_command
def cmd_add_pod_cidr(args) -> int:
    _run_named(args)
    client = control_client(args)
    reply = client.request("add_pod_cidr", args.cidr)
    return _changed(client, f"pod CIDR block {args.cidr} added", reply, args.output)


@control_command
def cmd_stop_server(args) -> int:
    client = control_client(args)
    reply = client.request("stop_server", args.endpoint, program=args.program)
    return _changed(client, f"the {args.program} of {args.endpoint} stopped", reply, args.output)


@control_command
def cmd_start_server(args) -> int:
    client = control_client(args)
    reply = client.request("start_server", args.endpoint, program=args.program)
    return _changed(client, f"the {args.program} of {args.endpoint} started and listening", reply, args.output)


COMMANDS = {"ready": (add_ready, cmd_ready),
            "scale": (add_scale, cmd_scale), "stop-server": (server_parser("stop-server", "stop"), cmd_stop_server),
            "start-server": (server_parser("start-server", "start"), cmd_start_server),
            "label": (add_label, cmd_label), "add-node": (add_add_node, cmd_add_node),
            "add-pod-cidr": (add_add_pod_cidr, cmd_add_pod_cidr)}
