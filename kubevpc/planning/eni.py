"""Stage "eni addresses": Terway's IPAM in eni mode. Every eni pod's vSwitch, address and security
groups are chosen here, in pod order, before the node bridges are planned: a node gets an uplink
(an ENI) to each vSwitch its pods take addresses from.

- A pod that runs (or terminates) keeps its vSwitch and address.
- A PodNetworking that selects a pod wins (planning/workloads.py): its vSwitchOptions of the node's
  zone and its security groups; otherwise the node's eni config (planning/eniconfig.py).
- The vSwitches are tried in order, the first with a free address taking the pod ("first"), or
  the one with the most free addresses ("most"); when all are full, the error names each of them.
- A StatefulSet's pod that a Fixed PodNetworking selects keeps its address across re-creation, as
  Terway's PodENI does ("Configure a static IP address ... for a pod"): the Plan's fixed_ips hold
  it while the pod runs and, once it is gone, nobody else takes it until `releaseAfter` has passed
  since (releaseStrategy TTL; counted from the plan the pod left, by the `now` the Lab gives) or
  for the rest of the run (Never).
"""
from __future__ import annotations

from dataclasses import dataclass

from .cloud import Cloud
from .cluster import Cluster
from .context import AddressPool, Context
from .eniconfig import NodeEni
from .model import FixedIP
from .workloads import PodNetworkingChoice, PodSpec


@dataclass(frozen=True)
class EniAddress:
    vswitch: str
    ip: str
    security_groups: tuple[str, ...]
    eni_type: str = "Default"               # the PodNetworking's eniOptions.eniType


@dataclass
class Eni:
    addresses: dict[str, EniAddress]        # by pod key
    fixed: tuple[FixedIP, ...]


def plan_eni(ctx: Context, cloud: Cloud, cluster: Cluster, pods: list[PodSpec],
             networking: dict[str, PodNetworkingChoice], configs: dict[str, NodeEni], pool: AddressPool) -> Eni:
    if cluster.mode != "eni":
        return Eni({}, ())
    addresses: dict[str, EniAddress] = {}
    fixed: list[FixedIP] = []
    for pod in pods:
        if pod.host_network:
            continue
        if pod.terminating is not None and pod.key in ctx.fixed:
            fixed.append(ctx.fixed[pod.key])          # still running out its grace period
        choice = networking.get(pod.key)
        address = _address(ctx, cloud, cluster, pod, choice, configs[pod.node], pool)
        if address is None:
            continue
        addresses[pod.key] = address
        if choice is not None and choice.allocation.type == "Fixed" and pod.owner == "StatefulSet":
            a = choice.allocation
            fixed.append(FixedIP(pod=pod.key, vswitch=address.vswitch, ip=address.ip, node=pod.node,
                                 pod_networking=choice.name, release_strategy=a.releaseStrategy,
                                 release_after=a.release_after if a.releaseStrategy == "TTL" else 0))
    present = {f.pod for f in fixed} | {p.key for p in pods}
    fixed += [f if f.gone_since else f.model_copy(update={"gone_since": ctx.now})
              for k, f in ctx.fixed.items() if k not in present]
    return Eni(addresses, tuple(fixed))


def _address(ctx: Context, cloud: Cloud, cluster: Cluster, pod: PodSpec, choice: PodNetworkingChoice | None,
             conf: NodeEni, pool: AddressPool) -> EniAddress | None:
    """The pod's vSwitch, address, groups and kind of ENI (None, with a problem, when no address is
    free). A running pod keeps the ENI it was given: Terway attaches it when the pod is created."""
    if pod.terminating is not None:          # as it runs, until it is gone
        h = pod.terminating
        return EniAddress(h.vswitch, h.ip, h.security_groups, h.eni_type)
    ecs = cluster.instances[pod.node]
    groups = choice.security_groups if choice is not None and choice.security_groups is not None else \
        conf.security_groups if conf.security_groups is not None else tuple(ecs.securityGroups)
    eni_type = choice.eni_type if choice is not None else "Default"
    old = ctx.previous.get(pod.key)
    if old is not None and old.vswitch and not old.host_network and old.node == pod.node:
        return EniAddress(old.vswitch, old.ip, groups, old.eni_type)     # it runs: what it holds stays
    held = ctx.fixed.get(pod.key)
    if held is not None and choice is not None and choice.allocation.type == "Fixed" and pod.owner == "StatefulSet":
        zone = cloud.vswitch(ecs.vswitch).zone
        if cloud.vswitch(held.vswitch).zone != zone:
            ctx.bad(pod.path, f"{pod.namespace}/{pod.name}", f"its fixed address {held.ip} is on vSwitch "
                    f"{held.vswitch} of zone {cloud.vswitch(held.vswitch).zone}, and node {pod.node} is in zone "
                    f"{zone}; expected a node of zone {cloud.vswitch(held.vswitch).zone} (Terway keeps a pod with a "
                    "fixed IP in its address's zone)", pod.source)
            return None
        return EniAddress(held.vswitch, held.ip, groups, eni_type)
    if choice is not None and choice.vswitches is not None:
        vsws, policy, hint = choice.vswitches, choice.policy, f"another vSwitch in PodNetworking {choice.name}'s " \
            f"vSwitchOptions for zone {cloud.vswitch(ecs.vswitch).zone}"
    else:
        vsws, policy, hint = conf.vswitches, conf.policy, f"another pod vSwitch for zone " \
            f"{cloud.vswitch(ecs.vswitch).zone} (from {conf.source})"
    got = pool.allocate_from(vsws, policy, pod.path, f"pod {pod.namespace}/{pod.name}", pod.source, hint)
    return EniAddress(got[0], got[1], groups, eni_type) if got else None
