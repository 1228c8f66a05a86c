"""EIPs bound to pods (eni mode), by Terway's pod annotation.

A pod annotated `k8s.aliyun.com/pod-eip-instanceid: <name>` (Terway's; ack-extend-network-controller
reads it too, and `network.alibabacloud.com/pod-eip-instanceid`, its own) gets the scenario's EIP of
that name, which must be bound to nothing else: 1:1 NAT at the VPC's edge, both ways, as for an
instance. The EIP stands in for Alibaba's EIP instance ID.

What Alibaba Cloud documents ("Attach an independent EIP to a pod", ACK), and kubevpc follows:
- only with Terway: Flannel's pods have no address of the VPC (vxlan: an overlay address;
  vpc-route: a pod CIDR address behind its node's route), so outside eni mode it is refused;
- one EIP, one pod: "not applicable to multi-replica controllers", so two running pods naming
  one EIP are refused (a Deployment of one replica, or a Pod, may name it);
- "the EIP controller detaches the EIP after a pod exits. During this period, the same EIP
  instance cannot be used in a new container": a pod deleted with a grace period keeps its EIP
  while it terminates (the running plan's binding), and another pod naming the EIP waits, unbound,
  until it is gone; a pod deleted for good leaves the EIP unbound.
- kubevpc does not allocate EIPs: `k8s.aliyun.com/pod-with-eip: "true"` is refused with a
  pointer to the annotation above.
"""
from __future__ import annotations

from .cluster import Cluster
from .context import Context
from .model import EipPlan, HostPlan
from .workloads import PodSpec

POD_EIP_ANNOTATIONS = ("k8s.aliyun.com/pod-eip-instanceid", "network.alibabacloud.com/pod-eip-instanceid")
AUTO_EIP_ANNOTATIONS = ("k8s.aliyun.com/pod-with-eip", "network.alibabacloud.com/pod-with-eip")


def mode_refusal(mode: str) -> str:
    """Why a pod cannot be the target of an EIP or a DNAT entry in a Flannel mode (ACK's reason)."""
    where = {"vxlan": "an overlay address, behind VXLAN", "vpc-route": "an address of the pod CIDR, behind its "
             "node's route"}.get(mode, "no address of the VPC")
    return (f"in {mode} mode a pod has no address of the VPC to bind it to ({where}); on ACK an EIP or a NAT "
            "gateway entry for a pod is a Terway feature: expected cluster.mode eni")


def bind_pod_eips(ctx: Context, cluster: Cluster, pods: list[PodSpec], hosts: list[HostPlan],
                  eips: list[EipPlan]) -> list[EipPlan]:
    """The EIPs with those the pods' annotations name bound to them (vpc, target, private_ip)."""
    claims = _claims(ctx, cluster, pods, eips)
    if not claims and not ctx.previous_pod_eips:
        return eips
    by_key = {h.key: h for h in hosts if h.kind == "pod"}
    out = []
    for e in eips:
        holder = _holder(ctx, e.name, claims.get(e.name, []), by_key)
        out.append(e if holder is None else e.model_copy(update={
            "vpc": cluster.vpc, "bound": "pod", "target": holder.key, "private_ip": holder.ip}))
    return out


Claim = tuple[PodSpec, str]         # a pod, and the annotation with which it names an EIP


def _claims(ctx: Context, cluster: Cluster, pods: list[PodSpec], eips: list[EipPlan]) -> dict[str, list[Claim]]:
    """The pods that name each EIP, checked: eni mode, a pod of its own network, an EIP bound to nothing."""
    by_name = {e.name: e for e in eips}
    free = sorted(n for n, e in by_name.items() if not e.bound)
    out: dict[str, list[Claim]] = {}
    refused: set[tuple] = set()         # a Deployment's replicas share its annotations: one problem, not one each
    for pod in pods:
        at = pod.path + pod.meta_path + ("annotations",)
        if at in refused:
            continue
        before = len(ctx.problems.items)
        _claim(ctx, cluster, pod, at, by_name, free, out)
        if len(ctx.problems.items) > before:
            refused.add(at)
    return out


def _claim(ctx: Context, cluster: Cluster, pod: PodSpec, at: tuple, by_name: dict[str, EipPlan], free: list[str],
           out: dict[str, list[Claim]]) -> None:
    """The pod's claim on an EIP, checked, added to `out`."""
    for key in AUTO_EIP_ANNOTATIONS:
        if pod.annotations.get(key, "false").lower() == "true":
            ctx.bad(at + (key,), pod.annotations[key], "kubevpc does not allocate EIPs: declare one in cloud.eips, "
                    f"bound to nothing, and name it with {POD_EIP_ANNOTATIONS[0]}", pod.source)
    named = {k: pod.annotations[k] for k in POD_EIP_ANNOTATIONS if k in pod.annotations}
    if not named:
        return
    key, name = next(iter(named.items()))
    if len(set(named.values())) > 1:
        ctx.bad(at + (POD_EIP_ANNOTATIONS[1],), named[POD_EIP_ANNOTATIONS[1]],
                f"{key} names {name}: expected the same EIP in both annotations, or one of them", pod.source)
    elif cluster.mode != "eni":
        ctx.bad(at + (key,), name, "an EIP bound to a pod: " + mode_refusal(cluster.mode), pod.source)
    elif pod.host_network:
        ctx.bad(at + (key,), name, "a pod with hostNetwork has its node's address, no ENI of its own to bind an EIP "
                "to; expected the EIP bound to its node's instance (cloud.eips[].instance)", pod.source)
    elif name not in by_name:
        ctx.bad(at + (key,), name, f"no such EIP; expected one of cloud.eips bound to nothing: {free}", pod.source)
    elif by_name[name].bound:
        e = by_name[name]
        ctx.bad(at + (key,), name, f"EIP {name} is bound to {e.bound} {e.target}; expected an EIP bound to nothing, "
                f"which Terway associates with the pod: {free}", pod.source)
    else:
        out.setdefault(name, []).append((pod, key))


def _holder(ctx: Context, name: str, claims: list[Claim], pods: dict[str, HostPlan]) -> HostPlan | None:
    """The pod the EIP `name` is bound to: the one it was bound to while that pod still runs
    (terminating, or still naming it), else the one running pod that names it."""
    live = [(p, key) for p, key in claims if p.terminating is None and p.key in pods]
    holder = pods.get(ctx.previous_pod_eips.get(name, ""))
    if holder is None or not (holder.terminating or any(p.key == holder.key for p, _ in live)):
        holder = pods[live[0][0].key] if live else None
    others = [(p, key) for p, key in live if holder is None or p.key != holder.key]
    if others and not holder.terminating:
        pod, key = others[0]
        ctx.bad(pod.path + pod.meta_path + ("annotations", key), name,
                f"EIP {name} is bound to {holder.key} already: Terway associates an EIP with one pod, so not with a "
                "Deployment of several replicas; expected one pod per EIP", pod.source)
    return holder
