"""make_plan: a validated scenario becomes a Plan, through a short sequence of named stages.

Pure: no side effects. Each stage takes what earlier ones made and returns its own part; every
problem is collected with the scenario file, line, path and value, and planning stops at a
checkpoint only where a later stage could not make sense of what is wrong so far. Nothing is built
from a scenario with a problem.
"""
from __future__ import annotations

from typing import Iterable

from .. import k8s
from ..errors import Problem, ScenarioError
from ..scenario.load import Loaded
from .bridges import has_csum_hops, plan_bridges, plan_groups, route_attachments, with_csum_hops
from .cloud import plan_addresses, plan_cloud
from .cluster import plan_cluster
from .context import Context, Problems, VSwitchPorts
from .eni import plan_eni
from .eniconfig import plan_eni_config
from .hostnet import check_host_ports
from .hosts import Wiring, plan_instances, plan_nodes, plan_pods
from .internet import plan_internet
from .model import Plan, resolve_endpoint
from .names import IFNAMSIZ, MAX_TAG, RUN_NAME, too_long
from .routes import check_route_tables, plan_peerings
from .services import plan_services
from .slbs import plan_slbs
from .workloads import check_policy_limits, expand_pods, namespace_labels, pod_networking


def make_plan(loaded: Loaded, run: str, ready: dict[str, bool] | None = None,
              labels: dict[str, dict[str, str | None]] | None = None, previous: Plan | None = None,
              terminating: Iterable[str] = (), deleted: Iterable[str] = (), now: float = 0.0,
              csum_hop: bool | None = None) -> Plan:
    """Changes made while the scenario runs, by pod key, override the manifests: `ready`, the
    pod's readiness; `labels`, labels set (a value) or removed (None), as `kubectl label` does.
    `previous`, the running scenario's plan: its pods stay on their nodes with their addresses,
    interfaces and ports, and new pods get none of those (kubevpc.lab.Lab._update).
    `terminating`: pods of `previous` deleted with a grace period, kept as they are (terminating
    endpoints) whatever the manifests say; `deleted`: pods of Deployments deleted now, which the
    Deployment replaces under new names (a StatefulSet, under the same names, in the change after);
    `now`: the wall-clock time of the change, by which the fixed addresses of StatefulSet pods that
    are gone are released (kubevpc/planning/eni.py); `csum_hop`: a checksum hop on every node bridge
    in vxlan mode (bridges.with_csum_hops), None: as `previous` has it (none without one)."""
    ctx = _context(loaded, run, ready, labels, previous, terminating, deleted, now)
    _check_run_name(ctx)
    cloud = plan_cloud(ctx)                                 # VPCs, vSwitches, security groups
    check_route_tables(ctx, cloud)                          # custom route tables and their vSwitches
    peerings = plan_peerings(ctx, cloud)                    # VPC peering connections
    ips, pool = plan_addresses(ctx, cloud)                  # ECS addresses; the vSwitch address pool
    cluster = plan_cluster(ctx, cloud)
    pods = expand_pods(ctx, cluster.nodes)                  # Kubernetes objects -> pods on nodes
    check_policy_limits(ctx)
    configs = plan_eni_config(ctx, cloud, cluster)          # Terway's eni-config, node by node
    networking = pod_networking(ctx, cluster, cloud, pods)
    ctx.problems.checkpoint()
    eni = plan_eni(ctx, cloud, cluster, pods, networking, configs, pool)     # eni pods' vSwitches and addresses
    ctx.problems.checkpoint()
    wiring = Wiring(ports=VSwitchPorts(previous))
    plan_instances(ctx, cloud, cluster, ips, wiring)
    nodes = plan_nodes(ctx, cloud, cluster, ips, pods, eni, configs, wiring)
    plan_pods(ctx, cloud, cluster, nodes, pods, eni, wiring)
    services, dns = plan_services(ctx, cluster.spec, wiring.hosts) if cluster.spec else ((), None)
    check_host_ports(ctx, cluster, pods, wiring.hosts, services)     # hostNetwork pods' ports on their nodes
    ctx.problems.checkpoint()
    slbs, internet_slbs = plan_slbs(ctx, cloud, cluster, nodes, services, pool, wiring)
    internet = plan_internet(ctx, cloud, cluster, ips, slbs, internet_slbs, wiring.hosts, pods)
    ctx.problems.checkpoint()
    bridges = plan_bridges(ctx, cloud, cluster, nodes, internet, wiring, peerings)   # with the route tables
    attachments = wiring.attachments + route_attachments(bridges.vpcs, wiring.attachments)
    sc, manifests = ctx.sc, [m.obj for m in loaded.manifests]
    plan = Plan(run=run, scenario=sc.name, file=loaded.file, cluster=cluster.plan(), vpcs=bridges.vpcs,
                vswitches=tuple(cloud.vswitches), bridges=bridges.bridges, hosts=tuple(wiring.hosts),
                nodes=tuple(nodes), attachments=tuple(attachments), groups=plan_groups(ctx, attachments),
                services=services, slbs=tuple(internet.slbs), dns=dns, internet=internet.plan, edges=internet.edges,
                eips=internet.eips, nat_gateways=internet.nat_gateways, peerings=tuple(peerings),
                network_policies=tuple(o for o in manifests if isinstance(o, k8s.NetworkPolicy)),
                namespaces=namespace_labels(ctx),
                ingresses=tuple(o for o in manifests if isinstance(o, k8s.Ingress)),
                secrets=tuple(o for o in manifests if isinstance(o, k8s.Secret)),
                expect=tuple(e.model_dump(by_alias=True, exclude={"family"} if e.family == 4 else None)
                             for e in sc.expect),
                flow_log_window=sc.cloud.flowLogs.window if sc.cloud.flowLogs.enabled else 0, fixed_ips=eni.fixed)
    if csum_hop or (csum_hop is None and previous is not None and has_csum_hops(previous)):
        plan = with_csum_hops(plan)
    _check_expectations(ctx, plan)
    _check_names(ctx, plan)
    ctx.problems.checkpoint()
    return plan


def _context(loaded: Loaded, run: str, ready, labels, previous: Plan | None, terminating, deleted,
             now: float) -> Context:
    """What the stages share, with what they keep of the running scenario's plan `previous`."""
    return Context(loaded=loaded, run=run, problems=Problems(loaded.source),
                  previous={h.key: h for h in previous.hosts} if previous is not None else {},
                  ready=dict(ready or {}), labels={k: dict(v) for k, v in (labels or {}).items()},
                  terminating=frozenset(terminating), deleted=frozenset(deleted),
                  previous_public={s.service: s.public_ip for s in previous.slbs if s.public_ip} if previous else {},
                  previous_pod_eips={e.name: e.target for e in previous.eips if e.bound == "pod"} if previous else {},
                  fixed={f.pod: f for f in previous.fixed_ips if not f.expired(now)} if previous else {}, now=now,
                  previous_nodes={n.name: n for n in previous.nodes} if previous else {},
                  previous_bridges={b.name: b.dpid for b in previous.bridges} if previous else {})


def _check_run_name(ctx: Context) -> None:
    if not RUN_NAME.match(ctx.run):
        ctx.problems.add(Problem(ctx.loaded.file, "<run name>", ctx.run,
                                 f"expected 1 to {MAX_TAG} lowercase letters and digits starting with a "
                                 f"letter: every interface name starts with it and must fit in {IFNAMSIZ} characters"))
        raise ScenarioError(ctx.problems.items)


def _check_names(ctx: Context, plan: Plan) -> None:
    name = too_long(plan)
    if name is not None:
        ctx.problems.add(Problem(ctx.loaded.file, "<run name>", ctx.run,
                                 f"interface name {name!r} would exceed {IFNAMSIZ} characters; "
                                 "expected a shorter run name or fewer objects"))


def _check_expectations(ctx: Context, plan: Plan) -> None:
    for i, e in enumerate(ctx.sc.expect):
        for field, ref in (("from", e.source), ("to", e.to)):
            try:
                if field == "to" and ref.startswith("svc/"):
                    plan.service(ref.removeprefix("svc/"))
                else:
                    resolve_endpoint(plan, ref)
            except KeyError:
                ctx.bad(("expect", i, field), ref, "no such endpoint; expected pod/<namespace>/<name>, "
                        "ecs/<name>, node/<name>" + (", svc/<namespace>/<name>" if field == "to" else "")
                        + " or resolver/<vpc> (a VPC's DNS, with cloud.internet) of this scenario")
